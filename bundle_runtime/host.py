"""The seam between a running task and whoever hosts it, as plain values.

A task's context speaks to a `Host`: `call` for the HostCall kinds of the Execute stream, `log` for
log records. `service.py` implements it over gRPC, `testing.py` in memory; context, stdio and the
executor see only this module's values, never protobuf (dagster keeps `_grpc/types.py` apart from
its servicer the same way).
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class ErrorInfo:
    """An exception as data: qualified type name, message, formatted traceback."""

    type: str
    message: str
    traceback: str = ""


@dataclass(frozen=True)
class LogRecord:
    """One line of the task's log (proto Log)."""

    level: str
    event: str
    logger: str
    fields: dict[str, Any] = field(default_factory=dict)
    error: ErrorInfo | None = None
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))


class Host(Protocol):
    """What a running task may ask of its supervisor.

    `call` gets a HostCall oneof field name ("get_variable", "set_xcom", ...) and that message's
    fields as a dict (proto names, every field present). It returns the reply's value decoded from
    JSON, or raises `HostCallFailed` whose `kind` is "not_found", "invalid" or "unavailable".
    Both methods may be called from any thread the task starts.
    """

    def call(self, kind: str, args: dict[str, Any]) -> Any: ...

    def log(self, record: LogRecord) -> None: ...


def qualified_name(cls: type) -> str:
    """`ValueError` for builtins, `package.module.Name` for everything else."""
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def error_info(exc: BaseException) -> ErrorInfo:
    """The exception as data, with its full formatted traceback."""
    return ErrorInfo(
        type=qualified_name(type(exc)),
        message=str(exc),
        traceback="".join(traceback.format_exception(exc)),
    )
