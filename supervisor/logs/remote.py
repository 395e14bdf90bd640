"""Remote task logs: after a TI's final state, its log goes where Airflow's remote handler reads.

With [logging] remote_logging on, Airflow's api-server reads `<remote_base_log_folder>/<log_path>`
(`os.path.join`, as S3TaskHandler and GCSTaskHandler do; reference §4.4). We write that object
with fsspec, so s3://, gs:// and plain or file:// paths take the same code; s3fs is a dependency,
gcsfs is not (install it to use gs://).

Credentials come from the Airflow connection [logging] remote_log_conn_id, fetched through the
Execution API with the TI's token and kept for `CONNECTION_TTL_S`, else from the environment
(botocore's chain: AWS_* variables, ~/.aws, instance roles). An aws connection maps as for XCom's
object storage (`supervisor/objectstore.py`, after Airflow's amazon provider): login = access key
id, password = secret access key, extra `endpoint_url` (or `service_config.s3.endpoint_url`),
`region_name`, `aws_session_token`, `config_kwargs`. An extra that is not a JSON object fails the
upload with a WARNING naming the connection.

Uploads run on a small thread pool, so a slow or failing store never holds a Celery slot; each
is retried `UPLOAD_ATTEMPTS` times and a final failure is a WARNING in the worker log, never a
task failure. `close()` waits for queued uploads. The local file is kept (the log server may still
be asked for it). The object is overwritten with the whole local file, which holds every part of
the attempt written on this host (a deferred task resumed here appends to it).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
from tenacity import Retrying, stop_after_attempt, wait_exponential

from supervisor.errors import ExecutionApiError
from supervisor.objectstore import S3_SCHEMES, connection_extra, s3_options

if TYPE_CHECKING:
    from supervisor.api.models import Connection
    from supervisor.config import Settings

log = logging.getLogger(__name__)

#: Tries per upload before giving up (a WARNING, the task keeps its state).
UPLOAD_ATTEMPTS = 5
#: Seconds between tries grow from this ...
RETRY_WAIT_MIN_S = 1.0
#: ... to at most this.
RETRY_WAIT_MAX_S = 30.0
#: Uploads at once; more queue up.
UPLOAD_THREADS = 2
#: Seconds a fetched connection is reused (one Execution API call per conn, not per task).
CONNECTION_TTL_S = 300.0
#: Seconds `close()` waits for queued uploads before warning and giving up on them.
CLOSE_GRACE_S = 60.0

#: Fetches a connection by id (a TI's `TaskApi.get_connection`).
ConnectionGetter = Callable[[str], "Connection"]


def remote_location(base: str, log_path: str) -> str:
    """Where Airflow's remote handler reads `log_path`: `os.path.join(base, log_path)`."""
    return os.path.join(base, log_path)


def storage_options(protocol: str, conn: Connection | None) -> dict[str, Any]:
    """fsspec options for `protocol` from an Airflow connection; {} means the environment's.

    S3 maps the connection exactly as XCom's object storage does (`objectstore.s3_options`).
    """
    if protocol in S3_SCHEMES:
        return s3_options(conn)
    if conn is None or protocol not in ("gs", "gcs"):
        return {}
    extra = connection_extra(conn)
    token = extra.get("keyfile_dict") or extra.get("key_path")
    if isinstance(token, str) and token.lstrip().startswith("{"):
        token = json.loads(token)
    return {"token": token, "project": extra.get("project")} if token else {}


def upload_file(local: Path, destination: str, options: dict[str, Any]) -> None:
    """Write `local` to `destination` (any fsspec URL or path), creating parent folders."""
    fs, path = fsspec.core.url_to_fs(destination, **options)
    if isinstance(fs, LocalFileSystem):  # object stores have no folders; buckets are not made here
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.put_file(str(local), path)


class RemoteLogs:
    """Uploads finished task logs; shared by every TI (thread-safe); a context manager.

    `upload()` only queues; the pool thread fetches the connection (cached), then writes with
    retries. Built from settings by `from_settings`, which returns None when remote logging is off.
    """

    def __init__(
        self,
        base: str,
        *,
        conn_id: str = "",
        attempts: int = UPLOAD_ATTEMPTS,
        wait_min_s: float = RETRY_WAIT_MIN_S,
        wait_max_s: float = RETRY_WAIT_MAX_S,
        uploader: Callable[[Path, str, dict[str, Any]], None] = upload_file,
    ) -> None:
        self.base = base
        self.conn_id = conn_id
        self.protocol = fsspec.core.split_protocol(base)[0] or "file"
        self._attempts = attempts
        self._wait = wait_exponential(min=wait_min_s, max=wait_max_s)
        self._uploader = uploader
        self._pool = ThreadPoolExecutor(UPLOAD_THREADS, thread_name_prefix="log-upload")
        self._conn_lock = threading.Lock()
        self._conn: tuple[float, Connection | None] | None = None
        self._pending: set[Future[bool]] = set()

    @classmethod
    def from_settings(cls, settings: Settings) -> RemoteLogs | None:
        own = settings.logging
        if not own.remote_logging or not own.remote_base_log_folder:
            return None
        return cls(own.remote_base_log_folder, conn_id=own.remote_log_conn_id)

    def upload(
        self,
        local: Path,
        log_path: str,
        *,
        get_connection: ConnectionGetter | None = None,
        context: dict[str, Any] | None = None,
    ) -> Future[bool]:
        """Queue `local` for `<base>/<log_path>`; the future says whether it got there."""
        future = self._pool.submit(self._upload, local, log_path, get_connection, context or {})
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)
        return future

    def _upload(
        self,
        local: Path,
        log_path: str,
        get_connection: ConnectionGetter | None,
        context: dict[str, Any],
    ) -> bool:
        destination = remote_location(self.base, log_path)
        started = time.monotonic()
        try:
            options = storage_options(self.protocol, self._connection(get_connection, context))
            for attempt in Retrying(
                stop=stop_after_attempt(self._attempts), wait=self._wait, reraise=True
            ):
                with attempt:
                    number = attempt.retry_state.attempt_number
                    if number > 1:
                        log.debug("log_upload.retry", extra={**context, "attempt": number})
                    self._uploader(local, destination, options)
        except Exception as exc:  # never fails the task: the TI's state is already reported
            log.warning(
                "log_upload.failed",
                extra={
                    **context,
                    "destination": destination,
                    "attempts": self._attempts,
                    "error": f"{type(exc).__name__}: {exc}",
                },
            )
            return False
        log.debug(
            "log_upload.done",
            extra={
                **context,
                "destination": destination,
                "ms": round((time.monotonic() - started) * 1000, 1),
            },
        )
        return True

    def _connection(
        self, get_connection: ConnectionGetter | None, context: dict[str, Any]
    ) -> Connection | None:
        """The remote_log_conn_id connection (cached), or None to use the environment."""
        if not self.conn_id or get_connection is None:
            return None
        with self._conn_lock:
            if self._conn and time.monotonic() - self._conn[0] < CONNECTION_TTL_S:
                return self._conn[1]
            try:
                conn = get_connection(self.conn_id)
            except ExecutionApiError as exc:
                # Not cached: the next upload asks again.
                log.warning(
                    "log_upload.no_connection",
                    extra={**context, "conn_id": self.conn_id, "error": str(exc)},
                )
                return None
            self._conn = (time.monotonic(), conn)
            return conn

    def close(self, grace_s: float = CLOSE_GRACE_S) -> None:
        """Wait up to `grace_s` for queued uploads, then stop the pool."""
        pending = list(self._pending)
        deadline = time.monotonic() + grace_s
        for future in pending:
            try:
                future.result(timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                log.warning("log_upload.abandoned", extra={"pending": len(self._pending)})
                break
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> RemoteLogs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
