"""Celery intake: the only module that imports celery.

Airflow's CeleryExecutor sends every workload as task `execute_workload` with one positional
argument, the workload JSON string. We run Celery's own worker (not a hand-made Redis loop) so acks,
prefetch, remote control (`celery inspect`, Flower) and warm shutdown behave as operators know them,
configured like Airflow's provider does it (default_celery.py): JSON only, acks late, prefetch 1,
track started. The pool is `threads`: each task thread only drives a TI while the task code runs in
a bundle runtime process, and forking after gRPC is initialised is unsafe (grpc/grpc#4113).

The Celery result is written when `handle` returns, i.e. after the TI's final state reached the
Execution API: SUCCESS when the TI was handled (whatever its Airflow state), FAILURE when it could
not be run. A duplicate delivery of a TI that is already running is ignored (no result), as
Airflow's own worker does. So is a TI whose final state is still waiting for an unreachable API
when the worker stops: the journal keeps it, and the next start sends it and writes the result
(`result_writer`); a result written before Airflow has the state would fail the TI. A message
whose `/run` never got through goes back to the queue for another worker.

Shutdown: SIGTERM and SIGINT both start Celery's warm shutdown and the drain's grace
(drain.py); a second SIGTERM or SIGINT ends the grace at once. SIGQUIT stays Celery's cold
shutdown.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

from celery import Celery, signals, states
from celery.apps.worker import install_worker_term_handler
from celery.exceptions import Ignore, Reject

from supervisor.config import Settings
from supervisor.drain import Drain
from supervisor.errors import AlreadyRunning, SupervisorError, WorkloadError
from supervisor.recovery import DeliveryPending, NotStarted
from supervisor.workload import Workload, parse_celery_args

log = logging.getLogger(__name__)

#: The task name Airflow 3 uses for every workload.
TASK_NAME = "execute_workload"
#: Airflow's app name (celery_app_name); it only shows in banners and events.
APP_NAME = "airflow.providers.celery.executors.celery_executor"
#: Errors that are an outcome of bad input rather than a worker bug (WorkloadError, BundleError and
#: the rest of the tree): logged as one line at ERROR, recorded as FAILURE, without a traceback.
EXPECTED_ERRORS = (SupervisorError,)

Handler = Callable[[Workload, str], None]
#: Told the Celery id of every message whose result Celery has just stored.
ResultHook = Callable[[str], None]


def _transport_options(settings: Settings) -> dict[str, Any]:
    """visibility_timeout for the brokers that have one, as Airflow's provider decides it
    (default_celery.py): kombu's SQLAlchemy transport hands every option to create_engine()."""
    if settings.celery.broker_url.startswith(("redis://", "rediss://", "sqs://", "sentinel://")):
        return {"visibility_timeout": settings.celery.visibility_timeout}
    return {}


def create_app(
    settings: Settings, handle: Handler, *, on_result: ResultHook | None = None
) -> Celery:
    """A Celery app configured as Airflow's, with `execute_workload` bound to `handle`."""
    app = Celery(APP_NAME)
    app.conf.update(
        broker_url=settings.celery.broker_url,
        result_backend=settings.result_backend,
        accept_content=["json"],
        task_serializer="json",
        result_serializer="json",
        event_serializer="json",
        worker_prefetch_multiplier=1,
        task_acks_late=True,
        task_track_started=True,
        task_default_queue=settings.operators.default_queue,
        broker_connection_retry_on_startup=True,
        broker_transport_options=_transport_options(settings),
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_send_task_events=True,
        worker_enable_remote_control=True,
    )

    def after_return(task: Any, status: str, *_: Any) -> None:
        if on_result is not None and status in states.READY_STATES:
            on_result(str(task.request.id))

    @app.task(name=TASK_NAME, bind=True, throws=EXPECTED_ERRORS, after_return=after_return)
    def execute_workload(task: Any, *args: Any, **kwargs: Any) -> None:
        celery_id = str(task.request.id)
        try:
            workload = parse_celery_args(args, kwargs)
        except WorkloadError as exc:
            log.error("workload.rejected", extra={"celery_id": celery_id, "reason": str(exc)})
            raise
        ids = {"celery_id": celery_id, "ti_id": workload.ti.id}
        try:
            handle(workload, celery_id)
        except AlreadyRunning:
            log.info("workload.duplicate", extra=ids)
            raise Ignore() from None
        except NotStarted:
            log.warning("workload.requeued", extra=ids)
            raise Reject(requeue=True) from None
        except DeliveryPending:
            log.warning("workload.pending", extra=ids)
            raise Ignore() from None

    return app


def result_writer(app: Celery) -> ResultHook:
    """Writes SUCCESS for a message handled by an earlier process (journal recovery)."""

    def write(celery_id: str) -> None:
        app.backend.store_result(celery_id, None, states.SUCCESS)

    return write


def run_worker(
    app: Celery,
    *,
    queues: list[str],
    concurrency: int,
    drain: Drain | None = None,
    hostname: str | None = None,
    loglevel: str = "INFO",
) -> int:
    """Run Celery's worker in this (main) thread until warm shutdown; return its exit code.

    SIGTERM or SIGINT starts a warm shutdown: no new messages, running TIs finish within the
    drain's grace; a second one ends the grace.
    """

    def shutting_down(sig: str = "", **_: Any) -> None:
        if drain is not None:
            drain.signal(sig)

    signals.worker_shutting_down.connect(shutting_down, weak=False)

    class Worker(app.Worker):  # type: ignore[name-defined,misc]
        def install_platform_tweaks(self, worker: Any) -> None:
            super().install_platform_tweaks(worker)
            # Celery turns a second SIGINT into a cold shutdown, which requeues the messages of
            # TIs that are still running; we want it to shorten the drain, like SIGTERM.
            install_worker_term_handler(worker, sig="SIGINT")

    worker = Worker(
        hostname=hostname or f"supervisor@{socket.gethostname()}",
        queues=queues,
        concurrency=concurrency,
        pool="threads",
        loglevel=loglevel,
        quiet=True,
        task_events=True,
        optimization="fair",
    )
    try:
        worker.start()
    finally:
        signals.worker_shutting_down.disconnect(shutting_down)
    return int(worker.exitcode or 0)
