"""Composes `supervisor serve`: components start in the order listed and stop in reverse.

    journal -> <home>/run/journals/<hostname>-<queues>.sqlite3, what each TI still owes
               Airflow (journal.py); its lock keeps this same worker from running twice
    store   -> installed bundles on disk (read-only here)
    xcom    -> the XCom backend of [core] xcom_backend (supervisor/xcom/); bad settings stop us
    pool    -> warm runtimes per bundle version
    metrics -> Prometheus /metrics on supervisor.metrics_port (metrics.py), unless 0
    logs    -> the log server on [logging] worker_log_server_port (logs/server.py), unless off
    api     -> one Execution API client (one connection pool) for every TI
    uploads -> remote log uploads after each TI (logs/remote.py), when remote_logging is on
    control -> <home>/run/control.sock, what `supervisor status` reads (control.py)
    settle  -> in the background, what the previous process left in the journal (recovery.py)
    runner  -> drives each TI (taskrun)
    intake  -> Celery's worker; blocks in the main thread until warm shutdown

Celery's warm shutdown (SIGTERM or SIGINT) stops consuming and lets running TIs finish within
supervisor.drain_grace_s (a second signal ends the grace: drain.py); then queued log uploads
finish (they may need the API client), the API client closes, the log server stops, and the
pool stops every runtime (Shutdown -> SIGTERM -> SIGKILL). A state Airflow could not be told
stays in the journal for the next start.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext

from supervisor.api.client import ExecutionApiClient
from supervisor.config import Settings
from supervisor.control import ControlServer, RunningTasks, StatusSources
from supervisor.drain import Drain
from supervisor.intake import create_app, result_writer, run_worker
from supervisor.journal import Journal, journal_path
from supervisor.logs.remote import RemoteLogs
from supervisor.logs.server import LogServer
from supervisor.metrics import Metrics, MetricsServer
from supervisor.pool import RuntimePool
from supervisor.recovery import Settler
from supervisor.store import BundleStore
from supervisor.taskrun import TaskRunner
from supervisor.xcom import backend_from_settings

log = logging.getLogger(__name__)


def serve(settings: Settings) -> int:
    """Run the worker until it is told to stop; returns the process exit code."""
    own = settings.supervisor
    # Refuses to run twice: the same hostname and queues on one home would share a journal.
    journal = Journal(journal_path(own.home, own.hostname, own.queues))
    drain = Drain(own.drain_grace_s)
    store = BundleStore(own.home)
    xcom = backend_from_settings(settings)  # a bad [common.io] setting stops us here
    metrics, running = Metrics(), RunningTasks()
    pool = _pool(settings, metrics)
    metrics.watch(pool=pool, store=store, journal=journal)
    try:
        log.debug("serve.start", extra={"component": "logs"})
        settler: Settler | None = None
        with (
            _metrics_server(settings, metrics) as metrics_server,
            _log_server(settings),
            ExecutionApiClient.from_settings(settings, metrics=metrics) as api,
            RemoteLogs.from_settings(settings) or nullcontext() as remote_logs,
            ControlServer(StatusSources(settings, pool, store, running, metrics_server)),
        ):
            runner = TaskRunner(
                settings=settings,
                api=api,
                store=store,
                pool=pool,
                remote_logs=remote_logs,
                xcom=xcom,
                metrics=metrics,
                running=running,
                journal=journal,
                drain=drain,
                give_up=drain.expired,
            )
            app = create_app(settings, runner.handle, on_result=runner.result_written)
            settler = Settler(
                journal,
                api,
                base_log_folder=settings.logging.base_log_folder,
                write_result=result_writer(app),
                give_up=drain.expired,
            ).start(own.home)
            _log_ready(settings, store, metrics_server)
            return run_worker(
                app,
                queues=list(own.queues),
                concurrency=settings.celery.worker_concurrency,
                drain=drain,
                hostname=f"supervisor@{own.hostname}",
            )
    finally:
        drain.expired.set()  # anything still waiting on the API gives up to the journal
        if settler is not None:
            settler.join(timeout=5)
        log.debug("serve.stop", extra={"component": "pool"})
        pool.close()
        journal.close()
        log.info("serve.stopped")


def _pool(settings: Settings, metrics: Metrics) -> RuntimePool:
    own = settings.supervisor
    log.debug("serve.start", extra={"component": "pool"})
    return RuntimePool(
        max_tasks_per_runtime=own.max_tasks_per_runtime,
        rss_limit_bytes=own.runtime_rss_limit_mb * 1024 * 1024 or None,
        idle_timeout_s=own.runtime_idle_timeout_s,
        spare_idle_timeout_s=own.runtime_spare_idle_timeout_s,
        max_runtimes=own.max_runtimes or None,
        metrics=metrics,
    )


def _log_ready(
    settings: Settings, store: BundleStore, metrics_server: MetricsServer | None
) -> None:
    """One INFO line that says what this worker will do."""
    log.info(
        "serve.ready",
        extra={
            "queues": ",".join(settings.supervisor.queues),
            "concurrency": settings.celery.worker_concurrency,
            "bundles": ", ".join(b.label for b in store.list()) or "none",
            "execution_api": settings.core.execution_api_server_url,
            "xcom_backend": settings.core.xcom_backend,
            "metrics": metrics_server.url if metrics_server else "off",
        },
    )


def _metrics_server(
    settings: Settings, metrics: Metrics
) -> AbstractContextManager[MetricsServer | None]:
    """/metrics on supervisor.metrics_port, or nothing when the port is 0."""
    own = settings.supervisor
    if not own.metrics_port:
        return nullcontext()
    return MetricsServer(metrics, host=own.metrics_host, port=own.metrics_port)


def _log_server(settings: Settings) -> AbstractContextManager[object]:
    """The log server, or nothing when it is off or could not check any token."""
    if settings.supervisor.skip_serve_logs:
        return nullcontext()
    secret = settings.api.secret_key
    if secret is None or not secret.get_secret_value():
        log.warning(
            "log_server.off",
            extra={"reason": "[api] secret_key (AIRFLOW__API__SECRET_KEY) is not set"},
        )
        return nullcontext()
    return LogServer(
        settings.logging.base_log_folder,
        secret_key=secret.get_secret_value(),
        host=settings.supervisor.log_server_host,
        port=settings.logging.worker_log_server_port,
    )
