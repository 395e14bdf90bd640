"""Context: what a task function receives, and its accessors over the Host seam.

Every accessor turns into one HostCall (variables, connections, XCom, secret masking) or one Log
record; the task never talks to Airflow directly. Accessors are safe to use from threads the task
starts; they block while the supervisor answers.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from . import serde
from .exceptions import ConnectionNotFound, HostCallFailed, VariableNotFound
from .host import Host, LogRecord, error_info

#: Logger name of records written with ctx.log.
TASK_LOGGER = "task"
_MISSING: Any = object()


@dataclass(frozen=True)
class TaskInstance:
    """The identity of the running task instance, as Airflow names it."""

    id: str
    dag_id: str
    task_id: str
    run_id: str
    try_number: int = 1
    #: -1 when the task is not mapped.
    map_index: int = -1
    queue: str = ""
    max_tries: int = 0
    #: How often this try was rescheduled already (0 on the first poke of a sensor-like task).
    task_reschedule_count: int = 0


@dataclass(frozen=True)
class Resume:
    """How a deferred task comes back: the method it named and the kwargs (with the event)."""

    method: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Connection:
    """An Airflow Connection as the supervisor fetched it; the password is already masked."""

    conn_id: str
    conn_type: str | None = None
    host: str | None = None
    schema: str | None = None
    login: str | None = None
    password: str | None = field(default=None, repr=False)
    port: int | None = None
    extra: str | None = None

    @property
    def extra_dejson(self) -> dict[str, Any]:
        """`extra` parsed as a JSON object; {} when empty or not an object."""
        if not self.extra:
            return {}
        try:
            value = json.loads(self.extra)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def get_uri(self) -> str:
        """The connection as a URI, in the shape Airflow's Connection.get_uri() builds."""
        scheme = (self.conn_type or "").lower().replace("_", "-")
        auth = ""
        if self.login is not None or self.password is not None:
            auth = quote(self.login or "", safe="")
            if self.password is not None:
                auth += ":" + quote(self.password, safe="")
            auth += "@"
        host = self.host or ""
        port = f":{self.port}" if self.port is not None else ""
        path = "/" + quote(self.schema, safe="") if self.schema else ""
        query = "?" + urlencode(self.extra_dejson) if self.extra_dejson else ""
        return f"{scheme}://{auth}{host}{port}{path}{query}"


class TaskLogger:
    """Structured task log: `ctx.log.info("rows loaded", count=3)`; fields must be JSON-able."""

    def __init__(self, host: Host) -> None:
        self._host = host

    def _emit(self, level: str, event: str, fields: dict[str, Any], exc: bool = False) -> None:
        error = None
        if exc:
            current = sys.exception()
            error = error_info(current) if current is not None else None
        self._host.log(LogRecord(level, str(event), TASK_LOGGER, fields, error))

    def debug(self, event: str, **fields: Any) -> None:
        self._emit("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit("error", event, fields)

    def critical(self, event: str, **fields: Any) -> None:
        self._emit("critical", event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        """Log at error level with the exception being handled attached."""
        self._emit("error", event, fields, exc=True)


class Variables:
    """Airflow Variables, read and written through the supervisor."""

    def __init__(self, host: Host) -> None:
        self._host = host

    def get(self, key: str, default: Any = _MISSING, *, deserialize_json: bool = False) -> Any:
        """The variable's value (parsed as JSON with deserialize_json), or `default`.

        Raises:
            VariableNotFound: missing and no default given.
            HostCallFailed: the supervisor could not ask Airflow.
        """
        try:
            value = self._host.call("get_variable", {"key": key})
        except HostCallFailed as exc:
            if exc.kind != "not_found":
                raise
            if default is not _MISSING:
                return default
            raise VariableNotFound(key, f"variable {key!r} does not exist") from None
        return json.loads(value) if deserialize_json else value

    def set(
        self,
        key: str,
        value: Any,
        *,
        description: str | None = None,
        serialize_json: bool = False,
    ) -> None:
        """Create or replace a variable; non-strings are str()'d unless serialize_json."""
        text = json.dumps(value, indent=2) if serialize_json else str(value)
        args = {"key": key, "value": text, "description": description or ""}
        self._host.call("set_variable", args)

    def delete(self, key: str) -> None:
        """Delete a variable; deleting one that does not exist is not an error."""
        _ignore_not_found(self._host, "delete_variable", {"key": key})


class Connections:
    """Airflow Connections, fetched through the supervisor; passwords are masked in logs."""

    def __init__(self, host: Host, mask: MaskSecret) -> None:
        self._host = host
        self._mask = mask

    def get(self, conn_id: str) -> Connection:
        """Raises ConnectionNotFound when it does not exist, HostCallFailed otherwise."""
        try:
            data = self._host.call("get_connection", {"conn_id": conn_id})
        except HostCallFailed as exc:
            if exc.kind != "not_found":
                raise
            raise ConnectionNotFound(conn_id, f"connection {conn_id!r} does not exist") from None
        data = data if isinstance(data, dict) else {}
        fields = {name: data.get(name) for name in Connection.__dataclass_fields__}
        fields["conn_id"] = fields["conn_id"] or conn_id
        if isinstance(fields["extra"], dict):
            fields["extra"] = json.dumps(fields["extra"])
        connection = Connection(**fields)
        if connection.password:
            self._mask(connection.password)
        return connection


class XCom:
    """XComs of this DAG run (or others) read, and this task's own written."""

    def __init__(self, host: Host, ti: TaskInstance) -> None:
        self._host = host
        self._ti = ti

    def pull(
        self,
        task_id: str | None = None,
        *,
        key: str = "return_value",
        dag_id: str | None = None,
        run_id: str | None = None,
        map_index: int | None = None,
        include_prior_dates: bool = False,
        default: Any = None,
    ) -> Any:
        """The XCom value, or `default` when it does not exist. task_id None means this task."""
        if map_index is None:
            map_index = self._ti.map_index if task_id is None else -1
        args = {
            "key": key,
            "task_id": task_id or self._ti.task_id,
            "dag_id": dag_id or "",
            "run_id": run_id or "",
            "map_index": map_index,
            "include_prior_dates": include_prior_dates,
        }
        try:
            return serde.deserialize(self._host.call("get_xcom", args))
        except HostCallFailed as exc:
            if exc.kind != "not_found":
                raise
            return default

    def push(self, key: str, value: Any) -> None:
        """Store `value` under `key` for this task instance (JSON types, tuple, datetime...)."""
        try:
            value_json = json.dumps(serde.serialize(value))
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"XCom {key!r}: value of type {type(value).__qualname__} is not JSON-able: {exc}"
            ) from exc
        args = {"key": key, "value_json": value_json, "mapped_length": -1}
        self._host.call("set_xcom", args)

    def delete(self, key: str) -> None:
        """Delete this task instance's XCom `key`; a missing one is not an error."""
        _ignore_not_found(self._host, "delete_xcom", {"key": key})


class MaskSecret:
    """Callable that tells the supervisor to mask a value in every later log line."""

    def __init__(self, host: Host) -> None:
        self._host = host

    def __call__(self, value: Any) -> None:
        if isinstance(value, dict):
            for item in value.values():
                self(item)
        elif isinstance(value, list | tuple | set | frozenset):
            for item in value:
                self(item)
        elif value is not None and str(value):
            self._host.call("mask_secret", {"value": str(value)})


class Context:
    """Everything a task function may use: identity, run data, Airflow objects, log.

    Built by the runtime for one task instance; do not keep it after the task returns.
    """

    def __init__(
        self,
        host: Host,
        ti: TaskInstance,
        *,
        dag_run: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        resume: Resume | None = None,
    ) -> None:
        self.ti = ti
        self.dag_run: dict[str, Any] = dag_run or {}
        self.params: dict[str, Any] = params or {}
        self.resume = resume
        self.log = TaskLogger(host)
        self.mask_secret = MaskSecret(host)
        self.variables = Variables(host)
        self.connections = Connections(host, self.mask_secret)
        self.xcom = XCom(host, ti)

    def __repr__(self) -> str:
        return f"<Context {self.ti.dag_id}.{self.ti.task_id} run={self.ti.run_id!r}>"


def _ignore_not_found(host: Host, kind: str, args: dict[str, Any]) -> None:
    try:
        host.call(kind, args)
    except HostCallFailed as exc:
        if exc.kind != "not_found":
            raise
