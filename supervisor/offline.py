"""An in-memory `Host` for `supervisor bundle test`: a task runs in its real runtime, no Airflow.

Variables, connections and XComs come from the command line and live in dicts; whatever the task
writes stays there for the caller to print. Connections are given as Airflow connection URIs and
parsed the way Airflow parses `AIRFLOW_CONN_*` values, so a URI that works here works there.
Secrets the task marks (and connection passwords) are masked in the collected logs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from supervisor.plugin.messages import HostCallError, LogRecord, TaskStart

#: Replaces a masked secret in printed logs, as Airflow's masker does.
MASK = "***"

#: XCom identity: (dag_id, run_id, task_id, map_index, key).
XComKey = tuple[str, str, str, int, str]


def parse_connection_uri(conn_id: str, uri: str) -> dict[str, Any]:
    """An Airflow connection URI as the GetConnection reply fields.

    Follows Airflow's `Connection._parse_from_uri`: scheme -> conn_type ("postgresql" ->
    "postgres", "-" -> "_"), percent-decoded host, login, password and schema (the path), and the
    query as `extra` JSON text (or the raw `__extra__` value when that is the only parameter).

    Raises:
        ValueError: the URI has no scheme or an invalid port.
    """
    parts = urlsplit(uri)
    if not parts.scheme:
        raise ValueError(f"connection {conn_id!r}: {uri!r} is not a URI (no scheme://)")
    conn_type = "postgres" if parts.scheme == "postgresql" else parts.scheme.replace("-", "_")
    return {
        "conn_id": conn_id,
        "conn_type": conn_type,
        "host": unquote(parts.hostname) if parts.hostname else None,
        "schema": unquote(parts.path[1:]) if parts.path else None,
        "login": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
        "port": parts.port,
        "extra": _extra_json(parts.query),
    }


def _extra_json(query: str) -> str | None:
    if not query:
        return None
    pairs = dict(parse_qsl(query, keep_blank_values=True))
    if list(pairs) == ["__extra__"]:
        return pairs["__extra__"]
    return json.dumps(pairs)


@dataclass
class OfflineHost:
    """Answers a task's HostCalls from memory and collects its log records.

    One per task run; not thread-safe, which the Host protocol does not ask for (calls arrive one
    at a time from the thread driving the Execute stream).
    """

    start: TaskStart
    variables: dict[str, str] = field(default_factory=dict)
    connections: dict[str, dict[str, Any]] = field(default_factory=dict)
    xcoms: dict[XComKey, Any] = field(default_factory=dict)
    #: Called with each record as it arrives (live printing); records are kept either way.
    on_log: Callable[[LogRecord], None] | None = None
    logs: list[LogRecord] = field(default_factory=list)
    secrets: set[str] = field(default_factory=set)
    #: XComs this task pushed, by key (what `bundle test` reports).
    pushed: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.secrets |= {c["password"] for c in self.connections.values() if c.get("password")}

    def call(self, kind: str, args: dict[str, Any]) -> Any:
        handler = getattr(self, f"_{kind}", None)
        if handler is None:
            raise HostCallError("invalid", f"bundle test does not support host call {kind!r}")
        return handler(args)

    def log(self, record: LogRecord) -> None:
        self.logs.append(record)
        if self.on_log is not None:
            self.on_log(record)

    def mask(self, text: str) -> str:
        """`text` with every known secret replaced by MASK."""
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, MASK)
        return text

    def mask_value(self, value: Any) -> Any:
        """`value` with secrets masked in every string it holds (lists and dicts walked)."""
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, dict):
            return {k: self.mask_value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.mask_value(v) for v in value]
        return value

    def seed_xcom(self, task_id: str, key: str, value: Any) -> None:
        """An XCom of another task in this run, as if it had already run (`--xcom`)."""
        self.xcoms[(self.start.dag_id, self.start.run_id, task_id, -1, key)] = value

    # -- one method per HostCall kind (proto/bundle/v1/runtime.proto) ------------------------

    def _get_variable(self, args: Mapping[str, Any]) -> str:
        try:
            return self.variables[args["key"]]
        except KeyError:
            raise HostCallError("not_found", f"variable {args['key']!r} is not set") from None

    def _set_variable(self, args: Mapping[str, Any]) -> None:
        self.variables[args["key"]] = args["value"]

    def _delete_variable(self, args: Mapping[str, Any]) -> None:
        self.variables.pop(args["key"], None)

    def _get_connection(self, args: Mapping[str, Any]) -> dict[str, Any]:
        try:
            return self.connections[args["conn_id"]]
        except KeyError:
            raise HostCallError(
                "not_found", f"connection {args['conn_id']!r} is not set (use --conn)"
            ) from None

    def _get_xcom(self, args: Mapping[str, Any]) -> Any:
        key = (
            args.get("dag_id") or self.start.dag_id,
            args.get("run_id") or self.start.run_id,
            args.get("task_id") or self.start.task_id,
            int(args.get("map_index", -1)),
            args["key"],
        )
        if key not in self.xcoms:
            raise HostCallError("not_found", f"no XCom {key[4]!r} from task {key[2]!r}")
        return self.xcoms[key]

    def _set_xcom(self, args: Mapping[str, Any]) -> None:
        value = json.loads(args["value_json"]) if args.get("value_json") else None
        self.xcoms[self._own(args["key"])] = value
        self.pushed[args["key"]] = value

    def _delete_xcom(self, args: Mapping[str, Any]) -> None:
        self.xcoms.pop(self._own(args["key"]), None)
        self.pushed.pop(args["key"], None)

    def _mask_secret(self, args: Mapping[str, Any]) -> None:
        if args.get("value"):
            self.secrets.add(str(args["value"]))

    def _own(self, key: str) -> XComKey:
        s = self.start
        return (s.dag_id, s.run_id, s.task_id, s.map_index, key)
