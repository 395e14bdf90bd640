"""HostCalls from a task's runtime -> Execution API calls for that TI -> replies.

`ApiHost` is the `plugin.messages.Host` of one TI. Each HostCall kind (proto/bundle/v1
runtime.proto `HostCall`) has one small function here. The TI's identity comes from the
workload, never from the call, so a task can write and delete only its own XComs. API failures
become `HostCallError` kinds the runtime understands: 404 -> "not_found", Airflow unreachable ->
"unavailable", anything else Airflow refused -> "invalid" with its message. XComs go through the
configured `XComBackend` (supervisor/xcom/), whose object-storage failures are "unavailable".

Secrets the task asks to mask and connection passwords are collected in `ApiHost.secrets` (and
passed to `on_secret`) so the task log can mask them; masking itself is `logs/`' job.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from supervisor.errors import ApiUnavailable, ExecutionApiError, XComStorageError
from supervisor.plugin.messages import HostCallError, LogRecord
from supervisor.xcom.backend import DatabaseXCom, XComAddress

if TYPE_CHECKING:
    from supervisor.api.task import TaskApi
    from supervisor.workload import TaskInstance
    from supervisor.xcom.backend import XComBackend

#: proto HostError kinds, without the KIND_ prefix.
NOT_FOUND = "not_found"
INVALID = "invalid"
UNAVAILABLE = "unavailable"
#: SetXCom.mapped_length when the task did not set one.
MAPPED_LENGTH_UNSET = -1

Args = Mapping[str, Any]


class ApiHost:
    """Serves one TI's HostCalls over its `TaskApi`; forwards its log records to `log_sink`.

    Called from the one thread that drives the TI's Execute stream, one call at a time.
    """

    def __init__(
        self,
        api: TaskApi,
        ti: TaskInstance,
        *,
        log_sink: Callable[[LogRecord], None],
        on_secret: Callable[[str], None] | None = None,
        xcom: XComBackend | None = None,
    ) -> None:
        self.api = api
        self.ti = ti
        self.xcom: XComBackend = xcom or DatabaseXCom()
        self.secrets: set[str] = set()
        self._log_sink = log_sink
        self._on_secret = on_secret

    def call(self, kind: str, args: dict[str, Any]) -> Any:
        """Run one HostCall; return its JSON-able value or raise `HostCallError`."""
        handler = _HANDLERS.get(kind)
        if handler is None:
            raise HostCallError(INVALID, f"unknown host call {kind!r}; known: {sorted(_HANDLERS)}")
        try:
            return handler(self, args)
        except (ApiUnavailable, XComStorageError) as exc:
            raise HostCallError(UNAVAILABLE, str(exc)) from exc
        except ExecutionApiError as exc:
            kind_ = NOT_FOUND if exc.status_code == 404 else INVALID
            raise HostCallError(kind_, str(exc)) from exc

    def log(self, record: LogRecord) -> None:
        self._log_sink(record)

    def add_secret(self, value: str) -> None:
        """Remember a value to mask in logs (empty values would mask everything: ignored)."""
        if value and value not in self.secrets:
            self.secrets.add(value)
            if self._on_secret is not None:
                self._on_secret(value)


# -- one function per HostCall kind ------------------------------------------------------------


def get_variable(host: ApiHost, args: Args) -> str | None:
    return host.api.get_variable(_required(args, "key"))


def set_variable(host: ApiHost, args: Args) -> None:
    description = args.get("description") or None
    host.api.set_variable(_required(args, "key"), str(args.get("value", "")), description)


def delete_variable(host: ApiHost, args: Args) -> None:
    host.api.delete_variable(_required(args, "key"))


def get_connection(host: ApiHost, args: Args) -> dict[str, Any]:
    connection = host.api.get_connection(_required(args, "conn_id"))
    if connection.password:
        host.add_secret(connection.password)
    return connection.to_json()


def get_xcom(host: ApiHost, args: Args) -> Any:
    """Empty dag_id/run_id/task_id mean the TI's own; map_index -1 means its own map_index when
    reading its own task, "not mapped" for any other task (as Airflow's xcom_pull does)."""
    ti = host.ti
    dag_id = args.get("dag_id") or ti.dag_id
    run_id = args.get("run_id") or ti.run_id
    task_id = args.get("task_id") or ti.task_id
    map_index = int(args.get("map_index", -1))
    if map_index == -1 and (dag_id, run_id, task_id) == (ti.dag_id, ti.run_id, ti.task_id):
        map_index = ti.map_index
    where = XComAddress(dag_id, run_id, task_id, _required(args, "key"), map_index)
    include_prior_dates = bool(args.get("include_prior_dates", False))
    return host.xcom.get(host.api, where, include_prior_dates=include_prior_dates)


def set_xcom(host: ApiHost, args: Args) -> None:
    """Always the TI's own dag/run/task/map_index: a task writes only its own XComs."""
    value_json = str(args.get("value_json", ""))
    _check_json(value_json)
    mapped_length = int(args.get("mapped_length", MAPPED_LENGTH_UNSET))
    host.xcom.set_json(
        host.api,
        _own_xcom(host, _required(args, "key")),
        value_json,
        mapped_length=None if mapped_length == MAPPED_LENGTH_UNSET else mapped_length,
    )


def delete_xcom(host: ApiHost, args: Args) -> None:
    host.xcom.delete(host.api, _own_xcom(host, _required(args, "key")))


def _own_xcom(host: ApiHost, key: str) -> XComAddress:
    ti = host.ti
    return XComAddress(ti.dag_id, ti.run_id, ti.task_id, key, ti.map_index)


def mask_secret(host: ApiHost, args: Args) -> None:
    host.add_secret(str(args.get("value", "")))


_HANDLERS: dict[str, Callable[[ApiHost, Args], Any]] = {
    "get_variable": get_variable,
    "set_variable": set_variable,
    "delete_variable": delete_variable,
    "get_connection": get_connection,
    "get_xcom": get_xcom,
    "set_xcom": set_xcom,
    "delete_xcom": delete_xcom,
    "mask_secret": mask_secret,
}


# -- argument checks ---------------------------------------------------------------------------


def _required(args: Args, name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str) or not value:
        raise HostCallError(INVALID, f"host call needs a non-empty {name!r}, got {value!r}")
    return value


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _check_json(text: str) -> None:
    """Refuse what Airflow would store badly: invalid JSON, NaN and Infinity."""
    try:
        json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise HostCallError(INVALID, f"XCom value is not valid JSON: {exc}") from None
