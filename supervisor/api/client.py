"""A thin client of Airflow's Task Execution API on httpx (reference §1), the only httpx user.

`ExecutionApiClient` owns one connection pool per process, shared by every TI and thread.
`TaskApi` (from `client.for_task`) acts for one TI and holds its token: the workload token from
the Celery message is good only for `PATCH /run`; the `Refreshed-API-Token` header of every reply
(the /run reply's is the execution token) replaces the token for later calls.

Every request carries `Airflow-API-Version: 2026-06-30` (Airflow 3.3; request payloads are strict
at that version, so bodies hold exactly its fields). Network errors and 5xx are retried with a
random exponential wait, as Airflow's own client does; 4xx never are. Failures become our errors:
404/409/410 on a TI route -> `TaskInstanceGone` (`AlreadyRunning` for /run's 409
previous_state=running), other 4xx -> `ExecutionApiError`, retries used up -> `ApiUnavailable`.
Tokens are never logged and never put in an error message.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from uuid import UUID

import httpx
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from supervisor.api.task import ApiCall, TaskApi, TaskTokens
from supervisor.errors import AlreadyRunning, ApiUnavailable, ExecutionApiError, TaskInstanceGone
from supervisor.metrics import Metrics

if TYPE_CHECKING:
    from supervisor.config import Settings

__all__ = ["API_VERSION", "ExecutionApiClient", "TaskApi"]

log = logging.getLogger(__name__)

#: The API version we speak; the server answers older dates with older shapes (reference §1.2).
API_VERSION = "2026-06-30"
VERSION_HEADER = "Airflow-API-Version"
REFRESH_HEADER = "Refreshed-API-Token"
#: Statuses on TI routes that mean "Airflow moved the TI on": stop and report nothing.
GONE_STATUSES = frozenset({404, 409, 410})

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_RETRIES = 5
DEFAULT_RETRY_WAIT_MIN_S = 1.0
DEFAULT_RETRY_WAIT_MAX_S = 90.0


class _ServerError(Exception):
    """A 5xx reply, raised inside the retry loop so tenacity retries it."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response.status_code)
        self.response = response


class ExecutionApiClient:
    """The process-wide Execution API client: one connection pool, shared by all task threads.

    Thread-safe. Close it (or use it as a context manager) when the worker stops; closing also
    ends any retry wait at once with `ApiUnavailable`.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
        retry_wait_min_s: float = DEFAULT_RETRY_WAIT_MIN_S,
        retry_wait_max_s: float = DEFAULT_RETRY_WAIT_MAX_S,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._metrics = metrics or Metrics()
        self._http = httpx.Client(
            base_url=base_url,
            timeout=httpx.Timeout(timeout_s),
            headers={VERSION_HEADER: API_VERSION, "Accept": "application/json"},
            transport=transport,
        )
        self._timeout_s = timeout_s
        self._retries = retries
        self._wait = wait_random_exponential(min=retry_wait_min_s, max=retry_wait_max_s)
        self._closed = threading.Event()
        self._sleep = sleep or self._interruptible_sleep

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        transport: httpx.BaseTransport | None = None,
        metrics: Metrics | None = None,
    ) -> ExecutionApiClient:
        """A client configured from [core] and [workers] as Airflow's own worker would be."""
        workers = settings.workers
        return cls(
            settings.core.execution_api_server_url,
            timeout_s=workers.execution_api_timeout,
            retries=workers.execution_api_retries,
            retry_wait_min_s=workers.execution_api_retry_wait_min,
            retry_wait_max_s=workers.execution_api_retry_wait_max,
            transport=transport,
            metrics=metrics,
        )

    def for_task(
        self,
        ti_id: UUID | str,
        workload_token: str,
        *,
        on_refresh: Callable[[str], None] | None = None,
    ) -> TaskApi:
        """A `TaskApi` for a TI about to start; its first call must be `run`.

        `on_refresh` is told each new execution token (the journal keeps the latest).
        """
        tokens = TaskTokens(workload=workload_token, on_refresh=on_refresh)
        return TaskApi(self, str(ti_id), tokens)

    def resume_task(self, ti_id: UUID | str, execution_token: str) -> TaskApi:
        """A `TaskApi` for a TI already running, e.g. one the journal settles after a restart."""
        return TaskApi(self, str(ti_id), TaskTokens(execution=execution_token))

    def close(self) -> None:
        self._closed.set()
        self._http.close()

    def __enter__(self) -> ExecutionApiClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- one request, with retries and error mapping -------------------------------------------

    def send(self, call: ApiCall, token: Callable[[], str], on_reply: Callable[[str], None]) -> Any:
        """Send `call`; return the reply's JSON (None when empty).

        `token` is read again for each attempt (another thread may have swapped it) and
        `on_reply` gets every `Refreshed-API-Token`, from every reply whatever its status.
        Every error raised is counted in the metrics by route and status.
        """
        try:
            return self._send(call, token, on_reply)
        except ExecutionApiError as exc:
            self._metrics.api_error(call.method, call.path, exc.status_code)
            raise

    def _send(
        self, call: ApiCall, token: Callable[[], str], on_reply: Callable[[str], None]
    ) -> Any:
        if self._closed.is_set():
            raise ApiUnavailable(f"{call.method} {call.path}: the Execution API client is closed")
        retrying = Retrying(
            stop=stop_after_attempt(self._retries),
            wait=self._wait,
            retry=retry_if_exception(_retryable),
            sleep=self._sleep,
            before_sleep=lambda state: _log_retry(call, state.attempt_number, state.outcome),
            reraise=True,
        )
        try:
            response = retrying(self._attempt, call, token, on_reply)
        except _ServerError as exc:
            raise self._unavailable(call, exc.response.status_code, _detail(exc.response)) from None
        except httpx.TimeoutException as exc:
            raise self._unavailable(call, None, f"timed out after {self._timeout_s:g}s") from exc
        except httpx.TransportError as exc:
            raise self._unavailable(call, None, f"{type(exc).__name__}: {exc}") from exc
        if response.status_code >= 400:
            raise _client_error(call, response)
        return _json_of(call, response)

    def _attempt(
        self, call: ApiCall, token: Callable[[], str], on_reply: Callable[[str], None]
    ) -> httpx.Response:
        started = time.monotonic()
        response = self._http.request(
            call.method,
            call.path,
            json=call.body,
            content=call.content,
            params=call.params,
            headers=_headers(token(), has_content=call.content is not None),
        )
        refreshed = response.headers.get(REFRESH_HEADER)
        if refreshed:
            on_reply(refreshed)
        log.debug(
            "api.request method=%s path=%s status=%s ms=%.1f token_refreshed=%s",
            call.method, call.path, response.status_code,
            (time.monotonic() - started) * 1000, bool(refreshed),
        )  # fmt: skip
        if response.status_code >= 500:
            raise _ServerError(response)
        return response

    def _unavailable(self, call: ApiCall, status: int | None, detail: Any) -> ApiUnavailable:
        shown = f"{status} {_summary(detail)}" if status else str(detail)
        return ApiUnavailable(
            f"{call.method} {call.path}: Execution API unavailable after {self._retries} "
            f"attempts ({shown}); check [core] execution_api_server_url and the API server",
            method=call.method,
            path=call.path,
            status_code=status,
            detail=detail,
        )

    def _interruptible_sleep(self, seconds: float) -> None:
        if self._closed.wait(seconds):
            raise ApiUnavailable("Execution API client closed while waiting to retry")


# -- helpers -----------------------------------------------------------------------------------


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, _ServerError | httpx.TransportError)


def _log_retry(call: ApiCall, attempt: int, outcome: Any) -> None:
    exc = outcome.exception() if outcome is not None else None
    reason = exc.response.status_code if isinstance(exc, _ServerError) else type(exc).__name__
    log.warning(
        "api.retry method=%s path=%s attempt=%d reason=%s", call.method, call.path, attempt, reason
    )


def _client_error(call: ApiCall, response: httpx.Response) -> ExecutionApiError:
    status, detail = response.status_code, _detail(response)
    message = f"{call.method} {call.path}: Execution API answered {status} {_summary(detail)}"
    fields = {"method": call.method, "path": call.path, "status_code": status, "detail": detail}
    if call.ti_route and status in GONE_STATUSES:
        running = isinstance(detail, dict) and detail.get("previous_state") == "running"
        if running and call.path.endswith("/run"):
            return AlreadyRunning(message + "; another worker already runs this TI", **fields)
        return TaskInstanceGone(message, **fields)
    return ExecutionApiError(message, **fields)


def _json_of(call: ApiCall, response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        raise ExecutionApiError(
            f"{call.method} {call.path}: Execution API answered {response.status_code} with a "
            f"body that is not JSON: {response.text[:80]!r}",
            method=call.method,
            path=call.path,
            status_code=response.status_code,
        ) from None


def _detail(response: httpx.Response) -> Any:
    """FastAPI's `detail` (dict, list or str), without validation `input`s, which may be secret."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list):
        return [
            {k: v for k, v in item.items() if k not in ("input", "ctx")}
            if isinstance(item, dict)
            else item
            for item in detail
        ]
    return detail


def _summary(detail: Any) -> str:
    if isinstance(detail, dict):
        head = " ".join(str(detail[k]) for k in ("reason", "message") if detail.get(k))
        rest = ", ".join(f"{k}={v!r}" for k, v in detail.items() if k not in ("reason", "message"))
        return f"{head} ({rest})" if rest else head
    if isinstance(detail, list):
        return "; ".join(
            f"{'.'.join(map(str, item.get('loc', ())))}: {item.get('msg')}"
            if isinstance(item, dict) else str(item)
            for item in detail
        )  # fmt: skip
    return str(detail)


def _headers(token: str, *, has_content: bool) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    if has_content:
        headers["Content-Type"] = "application/json"
    return headers
