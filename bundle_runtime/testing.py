"""Run a bundle's task in-process against a fake supervisor: no gRPC, no subprocess.

For bundle authors' unit tests (go-plugin ships `testing.go`, dramatiq `brokers/stub.py` for the
same reason) and for ours:

    from bundle_runtime.testing import run_task
    result = run_task(bundle, "sales", "extract", connections={"warehouse": {"host": "db"}})
    assert result.state == "success" and result.return_value == {"rows": 42}

Every value crosses a JSON round trip as it would on the wire, so a test passes only if the
task's data survives the real protocol.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import serde
from ._proto import runtime_pb2 as pb
from .bundle import Bundle
from .context import Connection, Resume
from .exceptions import HostCallFailed
from .executor import Execution
from .host import ErrorInfo, LogRecord

#: TaskRunResult.state values, as Airflow names the resulting TI states.
SUCCESS, FAILED, SKIPPED = "success", "failed", "skipped"
UP_FOR_RESCHEDULE, DEFERRED = "up_for_reschedule", "deferred"


@dataclass(frozen=True)
class Deferral:
    """What a task that raised DeferTask handed to the triggerer."""

    trigger_classpath: str
    trigger_kwargs: dict[str, Any]
    method: str
    kwargs: dict[str, Any]
    timeout_s: float = 0.0


@dataclass
class TaskRunResult:
    """The outcome of `run_task` and everything the task did through its context."""

    #: success | failed | skipped | up_for_reschedule | deferred
    state: str
    #: The returned value after a JSON round trip (None when the task returned None).
    return_value: Any = None
    error: ErrorInfo | None = None
    #: For state "failed": False when the task asked not to be retried (FailTask).
    retryable: bool | None = None
    skip_reason: str = ""
    reschedule_date: datetime | None = None
    deferral: Deferral | None = None
    logs: list[LogRecord] = field(default_factory=list)
    #: XComs the task pushed with ctx.xcom.push (key -> value), minus those it deleted.
    pushed_xcoms: dict[str, Any] = field(default_factory=dict)
    #: Every Variable after the run (key -> stored string).
    variables: dict[str, str] = field(default_factory=dict)
    #: Values the task (or ctx.connections) asked to mask.
    masked: list[str] = field(default_factory=list)

    def log_events(self, logger: str | None = None) -> list[str]:
        """Event texts of the log, optionally of one logger ("task", "task.stdout", ...)."""
        return [r.event for r in self.logs if logger is None or r.logger == logger]


class FakeHost:
    """An in-memory supervisor: Variables, Connections and XComs in dicts; single-threaded use.

    `xcoms` keys are `(task_id, key)`; the task's own pushes are visible to its own pulls.
    """

    def __init__(
        self,
        task_id: str,
        *,
        variables: Mapping[str, Any] | None = None,
        connections: Mapping[str, Connection | Mapping[str, Any]] | None = None,
        xcoms: Mapping[tuple[str, str], Any] | None = None,
    ) -> None:
        self.task_id = task_id
        self.variables = {
            k: v if isinstance(v, str) else json.dumps(v) for k, v in (variables or {}).items()
        }
        self.connections = {k: _connection_dict(k, v) for k, v in (connections or {}).items()}
        self.xcoms: dict[tuple[str, str], Any] = dict(xcoms or {})
        self.pushed: dict[str, Any] = {}
        self.masked: list[str] = []
        self.logs: list[LogRecord] = []

    def log(self, record: LogRecord) -> None:
        self.logs.append(record)

    def call(self, kind: str, args: dict[str, Any]) -> Any:
        handler = getattr(self, f"_{kind}", None)
        if handler is None:
            raise HostCallFailed("invalid", f"unknown host call {kind!r}")
        return json.loads(json.dumps(handler(**args)))

    def _get_variable(self, key: str) -> Any:
        return self._lookup(self.variables, key, "variable")

    def _set_variable(self, key: str, value: str, description: str) -> None:
        self.variables[key] = value

    def _delete_variable(self, key: str) -> None:
        self._lookup(self.variables, key, "variable")
        del self.variables[key]

    def _get_connection(self, conn_id: str) -> Any:
        return self._lookup(self.connections, conn_id, "connection")

    def _get_xcom(self, key: str, task_id: str, **_ignored: Any) -> Any:
        return self._lookup(self.xcoms, (task_id, key), "xcom")

    def _set_xcom(self, key: str, value_json: str, mapped_length: int) -> None:
        self.pushed[key] = self.xcoms[(self.task_id, key)] = json.loads(value_json)

    def _delete_xcom(self, key: str) -> None:
        self._lookup(self.xcoms, (self.task_id, key), "xcom")
        del self.xcoms[(self.task_id, key)]
        self.pushed.pop(key, None)

    def _mask_secret(self, value: str) -> None:
        self.masked.append(value)

    @staticmethod
    def _lookup(store: Mapping[Any, Any], key: Any, what: str) -> Any:
        if key not in store:
            raise HostCallFailed("not_found", f"{what} {key!r} not found")
        return store[key]


def _connection_dict(conn_id: str, value: Connection | Mapping[str, Any]) -> dict[str, Any]:
    data = asdict(value) if isinstance(value, Connection) else dict(value)
    return {**data, "conn_id": conn_id}


def run_task(
    bundle: Bundle,
    dag_id: str,
    task_id: str,
    *,
    variables: Mapping[str, Any] | None = None,
    connections: Mapping[str, Connection | Mapping[str, Any]] | None = None,
    xcoms: Mapping[tuple[str, str], Any] | None = None,
    dag_run: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    try_number: int = 1,
    task_reschedule_count: int = 0,
    resume: Resume | None = None,
) -> TaskRunResult:
    """Run one registered task in this thread, exactly as a runtime would, and report it."""
    host = FakeHost(task_id, variables=variables, connections=connections, xcoms=xcoms)
    start = pb.Start(
        ti=pb.TaskInstance(
            id=f"test-{dag_id}-{task_id}",
            dag_id=dag_id,
            task_id=task_id,
            run_id="manual__test",
            try_number=try_number,
            map_index=-1,
        ),
        dag_run_json=json.dumps(dict(dag_run or {})),
        params_json=json.dumps(dict(params or {})),
        task_reschedule_count=task_reschedule_count,
    )
    if resume is not None:
        start.resume.next_method = resume.method
        start.resume.next_kwargs_json = json.dumps(serde.serialize(resume.kwargs))
    result = Execution(bundle, start, host).run()
    report = _from_result(result)
    report.logs, report.pushed_xcoms, report.masked = host.logs, host.pushed, host.masked
    report.variables = host.variables
    return report


def _from_result(result: pb.Result) -> TaskRunResult:
    kind = result.WhichOneof("outcome")
    if kind == "success":
        text = result.success.return_value_json
        return TaskRunResult(SUCCESS, return_value=json.loads(text) if text else None)
    if kind == "failed":
        e = result.failed.error
        error = ErrorInfo(e.type, e.message, e.traceback)
        return TaskRunResult(FAILED, error=error, retryable=result.failed.retryable)
    if kind == "skipped":
        return TaskRunResult(SKIPPED, skip_reason=result.skipped.reason)
    if kind == "rescheduled":
        when = result.rescheduled.reschedule_date.ToDatetime(tzinfo=UTC)
        return TaskRunResult(UP_FOR_RESCHEDULE, reschedule_date=when)
    d = result.deferred
    deferral = Deferral(
        d.trigger_classpath,
        json.loads(d.trigger_kwargs_json),
        d.next_method,
        json.loads(d.next_kwargs_json),
        d.timeout_s,
    )
    return TaskRunResult(DEFERRED, deferral=deferral)
