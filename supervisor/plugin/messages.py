"""Plain values for the supervisor's side of the Execute stream (no grpc, no protobuf here).

`plugin/client.py` turns protobuf messages into these and back; taskrun, hostcalls and the CLI see
only these. Names follow proto/bundle/v1/runtime.proto.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class TaskStart:
    """What the supervisor tells a runtime about the task instance it must run."""

    ti_id: str
    dag_id: str
    task_id: str
    run_id: str
    try_number: int = 1
    map_index: int = -1
    queue: str = ""
    #: TIRunContext.dag_run as returned by /run (JSON-able dict).
    dag_run: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    max_tries: int = 0
    timeout_s: float = 0.0
    task_reschedule_count: int = 0
    #: Set when resuming after a deferral.
    next_method: str | None = None
    next_kwargs: dict[str, Any] | None = None


@dataclass(frozen=True)
class ErrorInfo:
    """An exception as data (type, message, formatted traceback)."""

    type: str
    message: str
    traceback: str = ""


@dataclass(frozen=True)
class LogRecord:
    """One task log line from the runtime."""

    timestamp: datetime
    level: str
    event: str
    logger: str
    fields: dict[str, Any] = field(default_factory=dict)
    error: ErrorInfo | None = None


# Outcomes: exactly one ends every Execute stream.


@dataclass(frozen=True)
class Succeeded:
    #: The return value as JSON text, or None when the task returned None (no XCom is pushed).
    return_value_json: str | None = None


@dataclass(frozen=True)
class Failed:
    #: False means "fail without retry" (AirflowFailException-like).
    retryable: bool
    error: ErrorInfo | None = None


@dataclass(frozen=True)
class Skipped:
    reason: str = ""


@dataclass(frozen=True)
class Rescheduled:
    reschedule_date: datetime


@dataclass(frozen=True)
class Deferred:
    trigger_classpath: str
    trigger_kwargs: dict[str, Any]
    next_method: str
    next_kwargs: dict[str, Any]
    timeout_s: float = 0.0


Outcome = Succeeded | Failed | Skipped | Rescheduled | Deferred


class HostCallError(Exception):
    """Raised by a Host to answer a HostCall with an error instead of a value.

    `kind` is one of "not_found", "invalid", "unavailable" (HostError.Kind without the prefix).
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class Host(Protocol):
    """What a runtime's task may ask of the supervisor while it runs.

    `call` gets the HostCall oneof field name ("get_variable", "set_xcom", ...) and its fields as
    a dict (proto field names, defaults included); it returns a JSON-able value or raises
    HostCallError. `log` receives every log record in order. Both are called from the thread that
    drives the Execute stream, one at a time.
    """

    def call(self, kind: str, args: dict[str, Any]) -> Any: ...

    def log(self, record: LogRecord) -> None: ...


@dataclass(frozen=True)
class TaskSpec:
    """One task a bundle registered (DescribeResponse.tasks)."""

    dag_id: str
    task_id: str
    timeout_s: float = 0.0
    doc: str = ""


@dataclass(frozen=True)
class RuntimeDescription:
    """What a runtime says it serves (DescribeResponse); the store keeps it as the manifest."""

    bundle_name: str
    bundle_version: str
    runtime_version: str
    protocol_version: int
    python_version: str
    tasks: tuple[TaskSpec, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "bundle_name": self.bundle_name,
            "bundle_version": self.bundle_version,
            "runtime_version": self.runtime_version,
            "protocol_version": self.protocol_version,
            "python_version": self.python_version,
            "tasks": [vars(t) for t in self.tasks],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RuntimeDescription:
        tasks = tuple(TaskSpec(**t) for t in data.get("tasks", ()))
        return cls(**{**data, "tasks": tasks})

    def find_task(self, dag_id: str, task_id: str) -> TaskSpec | None:
        return next((t for t in self.tasks if (t.dag_id, t.task_id) == (dag_id, task_id)), None)
