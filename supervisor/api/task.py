"""One TI's view of the Execution API: its token and one method per endpoint it uses.

`TaskApi` builds each request body exactly as the 2026-06-30 payload models define it (they are
strict: an unknown field is a 422) and hands it to the shared `ExecutionApiClient`, which sends
it with retries and maps failures to our errors. `TaskTokens` keeps the workload token for /run
only and swaps in every `Refreshed-API-Token` (the /run reply carries the first execution token).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from supervisor.api.models import Connection, TIRunContext, VariableReply, XComReply
from supervisor.errors import ExecutionApiError

if TYPE_CHECKING:
    from supervisor.api.client import ExecutionApiClient

#: States `finish` may send; "success" has its own call, others would make the server fail the TI.
FINISH_STATES = frozenset({"failed", "skipped", "removed", "upstream_failed"})
#: The server rejects longer retry reasons (422).
MAX_RETRY_REASON = 500


@dataclass(frozen=True)
class ApiCall:
    """One logical request; retried attempts rebuild the HTTP request from it."""

    method: str
    path: str
    ti_route: bool = False
    body: Any = None
    content: bytes | None = None
    params: Mapping[str, Any] | None = None


class TaskTokens:
    """One TI's tokens: the workload token until /run succeeds, then the latest execution token."""

    def __init__(
        self,
        *,
        workload: str | None = None,
        execution: str | None = None,
        on_refresh: Callable[[str], None] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._workload = workload
        self._execution = execution
        #: Told every new execution token (the journal keeps the latest for a restart).
        self._on_refresh = on_refresh

    def for_run(self) -> str:
        with self._lock:
            token = self._workload or self._execution
        if token is None:
            raise RuntimeError("no token for /run")
        return token

    def for_call(self) -> str:
        with self._lock:
            token = self._execution
        if token is None:
            raise RuntimeError("TaskApi: call run() first; the workload token is only for /run")
        return token

    def refreshed(self, token: str) -> None:
        with self._lock:
            changed, self._execution = token != self._execution, token
        if changed and self._on_refresh is not None:
            self._on_refresh(token)

    def run_succeeded(self) -> bool:
        """Drop the workload token; False when /run gave us no execution token to use instead."""
        with self._lock:
            self._workload = None
            return self._execution is not None

    @property
    def execution(self) -> str | None:
        with self._lock:
            return self._execution


class TaskApi:
    """The Execution API as one TI sees it; holds and refreshes that TI's token.

    Thread-safe: the heartbeat thread and the thread serving the task's host calls share it.
    Datetimes must be timezone-aware (the server rejects naive ones with 422).
    """

    def __init__(self, client: ExecutionApiClient, ti_id: str, tokens: TaskTokens) -> None:
        self._client = client
        self._tokens = tokens
        self.ti_id = ti_id
        #: Sends every final-state body; taskrun replaces it to journal the state first and to
        #: keep sending through an outage (recovery.deliver). Defaults to one `send_state`.
        self.state_sender: Callable[[dict[str, Any]], None] = self.send_state

    @property
    def execution_token(self) -> str | None:
        """The current execution token, for the journal only; never log it."""
        return self._tokens.execution

    # -- lifecycle -----------------------------------------------------------------------------

    def run(self, *, hostname: str, unixname: str, pid: int, start_date: datetime) -> TIRunContext:
        """`PATCH /run` with the workload token: the TI becomes running; returns its context.

        Raises:
            AlreadyRunning: 409 previous_state=running (a duplicate delivery: ignore it).
            TaskInstanceGone: 404/409/410 otherwise. ExecutionApiError, ApiUnavailable.
        """
        body = {
            "state": "running",
            "hostname": hostname,
            "unixname": unixname,
            "pid": pid,
            "start_date": _iso(start_date),
        }
        reply = self._send("PATCH", self._ti_path("run"), body=body, for_run=True)
        if not self._tokens.run_succeeded():
            raise ExecutionApiError(
                f"PATCH {self._ti_path('run')}: the reply carried no Refreshed-API-Token "
                "header, so there is no execution token for later calls",
                method="PATCH",
                path=self._ti_path("run"),
                status_code=200,
            )
        return TIRunContext.model_validate(reply)

    def heartbeat(self, *, hostname: str, pid: int) -> None:
        """`PUT /heartbeat` with the hostname and pid sent to /run."""
        self._send("PUT", self._ti_path("heartbeat"), body={"hostname": hostname, "pid": pid})

    def finish_success(
        self,
        *,
        end_date: datetime,
        task_outlets: Iterable[Mapping[str, Any]] = (),
        outlet_events: Iterable[Mapping[str, Any]] = (),
        rendered_map_index: str | None = None,
    ) -> None:
        body = {
            "state": "success",
            "end_date": _iso(end_date),
            "task_outlets": [dict(o) for o in task_outlets],
            "outlet_events": [dict(e) for e in outlet_events],
        }
        self._set_state(body, rendered_map_index=rendered_map_index)

    def finish(
        self, state: str, *, end_date: datetime, rendered_map_index: str | None = None
    ) -> None:
        """A terminal state without extra fields: failed, skipped, removed or upstream_failed."""
        if state not in FINISH_STATES:
            raise ValueError(f"finish() takes one of {sorted(FINISH_STATES)}, not {state!r}")
        self._set_state(
            {"state": state, "end_date": _iso(end_date)}, rendered_map_index=rendered_map_index
        )

    def retry(
        self,
        *,
        end_date: datetime,
        retry_reason: str | None = None,
        retry_delay_s: float | None = None,
        rendered_map_index: str | None = None,
    ) -> None:
        """up_for_retry; send it only when /run said `should_retry` (the server does not check)."""
        body: dict[str, Any] = {"state": "up_for_retry", "end_date": _iso(end_date)}
        if retry_reason:
            body["retry_reason"] = retry_reason[:MAX_RETRY_REASON]
        if retry_delay_s is not None:
            body["retry_delay_seconds"] = retry_delay_s
        self._set_state(body, rendered_map_index=rendered_map_index)

    def reschedule(self, *, reschedule_date: datetime, end_date: datetime) -> None:
        body = {
            "state": "up_for_reschedule",
            "reschedule_date": _iso(reschedule_date),
            "end_date": _iso(end_date),
        }
        self._set_state(body)

    def defer(
        self,
        *,
        classpath: str,
        trigger_kwargs: Mapping[str, Any] | str,
        next_method: str,
        next_kwargs: Mapping[str, Any],
        trigger_timeout_s: float | None = None,
        queue: str | None = None,
        rendered_map_index: str | None = None,
    ) -> None:
        """deferred: the triggerer runs `classpath`; Airflow then resumes at `next_method`."""
        body: dict[str, Any] = {
            "state": "deferred",
            "classpath": classpath,
            "trigger_kwargs": trigger_kwargs
            if isinstance(trigger_kwargs, str)
            else dict(trigger_kwargs),
            "next_method": next_method,
            "next_kwargs": dict(next_kwargs),
        }
        if trigger_timeout_s is not None:
            body["trigger_timeout"] = trigger_timeout_s
        if queue is not None:
            body["queue"] = queue
        self._set_state(body, rendered_map_index=rendered_map_index)

    # -- variables, connections, XComs ---------------------------------------------------------

    def get_variable(self, key: str) -> str | None:
        """The raw string value. Raises ExecutionApiError with status_code 404 when missing."""
        reply = self._send("GET", f"variables/{_seg(key)}")
        return VariableReply.model_validate(reply).value

    def set_variable(self, key: str, value: str | None, description: str | None = None) -> None:
        body = {"val": value, "description": description}
        self._send("PUT", f"variables/{_seg(key)}", body=body)

    def delete_variable(self, key: str) -> None:
        self._send("DELETE", f"variables/{_seg(key)}")

    def get_connection(self, conn_id: str) -> Connection:
        """Raises ExecutionApiError with status_code 404 when missing."""
        return Connection.model_validate(self._send("GET", f"connections/{_seg(conn_id)}"))

    def get_xcom(
        self,
        *,
        dag_id: str,
        run_id: str,
        task_id: str,
        key: str,
        map_index: int = -1,
        include_prior_dates: bool = False,
    ) -> Any:
        """The stored JSON value. Raises ExecutionApiError with status_code 404 when missing."""
        params = {"map_index": map_index, "include_prior_dates": include_prior_dates}
        reply = self._send("GET", _xcom_path(dag_id, run_id, task_id, key), params=params)
        return XComReply.model_validate(reply).value

    def set_xcom(
        self,
        *,
        dag_id: str,
        run_id: str,
        task_id: str,
        key: str,
        value: Any,
        map_index: int = -1,
        mapped_length: int | None = None,
    ) -> None:
        """Push a JSON-able value (the whole request body is the value, so None is `null`)."""
        self.set_xcom_json(
            dag_id=dag_id,
            run_id=run_id,
            task_id=task_id,
            key=key,
            value_json=json.dumps(value, allow_nan=False),
            map_index=map_index,
            mapped_length=mapped_length,
        )

    def set_xcom_json(
        self,
        *,
        dag_id: str,
        run_id: str,
        task_id: str,
        key: str,
        value_json: str,
        map_index: int = -1,
        mapped_length: int | None = None,
    ) -> None:
        """Push a value that is already JSON text (a runtime's return value), sent unchanged."""
        path = _xcom_path(dag_id, run_id, task_id, key)
        params = _xcom_params(map_index, mapped_length)
        self._send("POST", path, content=value_json.encode("utf-8"), params=params)

    def delete_xcom(
        self, *, dag_id: str, run_id: str, task_id: str, key: str, map_index: int = -1
    ) -> None:
        path = _xcom_path(dag_id, run_id, task_id, key)
        self._send("DELETE", path, params={"map_index": map_index})

    # -- plumbing ------------------------------------------------------------------------------

    def _ti_path(self, leaf: str) -> str:
        return f"task-instances/{_seg(self.ti_id)}/{leaf}"

    def send_state(self, body: Mapping[str, Any]) -> None:
        """`PATCH /state` with a finished body (recovery re-sends the ones it journaled)."""
        self._send("PATCH", self._ti_path("state"), body=dict(body))

    def _set_state(self, body: dict[str, Any], *, rendered_map_index: str | None = None) -> None:
        if rendered_map_index is not None:
            body["rendered_map_index"] = rendered_map_index
        self.state_sender(body)

    def _send(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content: bytes | None = None,
        params: Mapping[str, Any] | None = None,
        for_run: bool = False,
    ) -> Any:
        call = ApiCall(method, path, path.startswith("task-instances/"), body, content, params)
        token = self._tokens.for_run if for_run else self._tokens.for_call
        return self._client.send(call, token, self._tokens.refreshed)


# -- helpers -----------------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment!r}: the Execution API needs a timezone")
    return moment.isoformat()


def _seg(value: str) -> str:
    """One path segment, percent-encoded (run ids hold ':' and '+')."""
    return quote(value, safe="")


def _xcom_path(dag_id: str, run_id: str, task_id: str, key: str) -> str:
    # The key may contain '/', which the route accepts as part of the key.
    return f"xcoms/{_seg(dag_id)}/{_seg(run_id)}/{_seg(task_id)}/{quote(key, safe='/')}"


def _xcom_params(map_index: int, mapped_length: int | None) -> dict[str, int]:
    params = {"map_index": map_index}
    if mapped_length is not None:
        params["mapped_length"] = mapped_length
    return params
