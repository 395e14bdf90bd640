"""Composes `supervisor serve`: components start in the order listed and stop in reverse.

    store   -> installed bundles on disk (read-only here)
    pool    -> warm runtimes per bundle version
    logs    -> the log server on [logging] worker_log_server_port (logs/server.py), unless off
    api     -> one Execution API client (one connection pool) for every TI
    uploads -> remote log uploads after each TI (logs/remote.py), when remote_logging is on
    runner  -> drives each TI (taskrun)
    intake  -> Celery's worker; blocks in the main thread until warm shutdown

Celery's warm shutdown (SIGTERM, first SIGINT) stops consuming and lets running TIs finish;
then queued log uploads finish (they may need the API client), the API client closes, the log
server stops, and the pool stops every runtime (Shutdown -> SIGTERM -> SIGKILL).
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext

from supervisor.api.client import ExecutionApiClient
from supervisor.config import Settings
from supervisor.intake import create_app, run_worker
from supervisor.logs.remote import RemoteLogs
from supervisor.logs.server import LogServer
from supervisor.pool import RuntimePool
from supervisor.store import BundleStore
from supervisor.taskrun import TaskRunner

log = logging.getLogger(__name__)


def serve(settings: Settings) -> int:
    """Run the worker until it is told to stop; returns the process exit code."""
    own = settings.supervisor
    store = BundleStore(own.home)
    log.debug("serve.start", extra={"component": "pool"})
    pool = RuntimePool(
        max_tasks_per_runtime=own.max_tasks_per_runtime,
        rss_limit_bytes=own.runtime_rss_limit_mb * 1024 * 1024
        if own.runtime_rss_limit_mb
        else None,
        idle_timeout_s=own.runtime_idle_timeout_s,
        max_runtimes=own.max_runtimes or None,
    )
    try:
        log.debug("serve.start", extra={"component": "logs"})
        with (
            _log_server(settings),
            ExecutionApiClient.from_settings(settings) as api,
            RemoteLogs.from_settings(settings) or nullcontext() as remote_logs,
        ):
            runner = TaskRunner(
                settings=settings, api=api, store=store, pool=pool, remote_logs=remote_logs
            )
            app = create_app(settings, runner.handle)
            installed = ", ".join(b.label for b in store.list()) or "none"
            log.info(
                "serve.ready",
                extra={
                    "queues": ",".join(own.queues),
                    "concurrency": settings.celery.worker_concurrency,
                    "bundles": installed,
                    "execution_api": settings.core.execution_api_server_url,
                },
            )
            return run_worker(
                app,
                queues=list(own.queues),
                concurrency=settings.celery.worker_concurrency,
                hostname=f"supervisor@{own.hostname}",
            )
    finally:
        log.debug("serve.stop", extra={"component": "pool"})
        pool.close()
        log.info("serve.stopped")


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
