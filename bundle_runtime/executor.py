"""Runs one task instance: Start -> Context -> the task function -> Result.

No gRPC here: the caller (service.py over the wire, testing.py in memory) hands in a `Host` and a
`Start` message and gets exactly one `Result` back, whatever the task does. What the task raised
travels as data in the Result (dagster's SerializableErrorInfo idea); nothing escapes `run()`.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from . import serde
from ._proto import runtime_pb2 as pb
from .bundle import Bundle, TaskDefinition
from .context import Context, Resume, TaskInstance
from .exceptions import DeferTask, FailTask, RescheduleTask, SkipTask, TaskCancelled
from .host import ErrorInfo, Host, LogRecord, error_info, qualified_name
from .stdio import capture_task_output

#: next_method Airflow sets when a trigger failed or timed out: fail without calling user code.
FAIL_METHOD = "__fail__"
_EXECUTOR_LOGGER = "task"


class Execution:
    """One run of one task instance.

    `run()` is called once, on the thread that should execute the task; `cancel()` may be called
    from any thread, any number of times, and raises TaskCancelled into the task at most once.
    """

    def __init__(self, bundle: Bundle, start: pb.Start, host: Host) -> None:
        self._bundle = bundle
        self._start = start
        self._host = host
        self._lock = threading.Lock()
        self._thread_id: int | None = None
        self._in_user_code = False
        self._raised = False
        self._cancel_reason: str | None = None

    def run(self) -> pb.Result:
        """Run the task and return its Result; never raises."""
        self._thread_id = threading.get_ident()
        try:
            return self._run()
        except TaskCancelled as exc:
            return self._failed(_cancelled_info(exc, self._cancel_reason), retryable=True)

    def cancel(self, reason: str) -> None:
        """Stop the task: before it starts, it never starts; while it runs, TaskCancelled."""
        with self._lock:
            self._cancel_reason = self._cancel_reason or reason or "cancelled"
            if self._in_user_code and not self._raised and self._thread_id is not None:
                self._raised = _async_raise(self._thread_id, TaskCancelled)

    def _run(self) -> pb.Result:
        start = self._start
        task = self._bundle.get_task(start.ti.dag_id, start.ti.task_id)
        if task is None:
            return self._failed(self._not_found_info(), retryable=False)
        try:
            ctx = self._build_context()
        except ValueError as exc:
            info = ErrorInfo("ValueError", f"Start message for {_ti_label(start)}: {exc}")
            return self._failed(info, retryable=False)
        if ctx.resume is not None and ctx.resume.method == FAIL_METHOD:
            return self._failed(_trigger_failure_info(ctx.resume.kwargs), retryable=True)
        with capture_task_output(self._host.log):
            return self._call(task, ctx)

    def _call(self, task: TaskDefinition, ctx: Context) -> pb.Result:
        with self._lock:
            if self._cancel_reason is not None:
                raise TaskCancelled(self._cancel_reason)
            self._in_user_code = True
        try:
            value = task.fn(ctx)
        except TaskCancelled:
            raise
        except BaseException as exc:  # a task's SystemExit is an outcome too
            self._leave_user_code()
            return self._from_exception(exc)
        finally:
            self._leave_user_code()
        return self._success(task, value)

    def _leave_user_code(self) -> None:
        """Close the window in which cancel() may raise, dropping an undelivered raise."""
        with self._lock:
            if self._in_user_code and self._raised and self._thread_id is not None:
                _async_raise(self._thread_id, None)
            self._in_user_code = False

    def _build_context(self) -> Context:
        start = self._start
        ti = TaskInstance(
            id=start.ti.id,
            dag_id=start.ti.dag_id,
            task_id=start.ti.task_id,
            run_id=start.ti.run_id,
            try_number=start.ti.try_number,
            map_index=start.ti.map_index,
            queue=start.ti.queue,
            max_tries=start.max_tries,
            task_reschedule_count=start.task_reschedule_count,
        )
        resume = None
        if start.HasField("resume") and start.resume.next_method:
            kwargs = _json_object(start.resume.next_kwargs_json, "resume.next_kwargs_json")
            resume = Resume(start.resume.next_method, serde.deserialize(kwargs))
        return Context(
            self._host,
            ti,
            dag_run=_json_object(start.dag_run_json, "dag_run_json"),
            params=_json_object(start.params_json, "params_json"),
            resume=resume,
        )

    def _success(self, task: TaskDefinition, value: Any) -> pb.Result:
        if value is None:
            return pb.Result(success=pb.Success(return_value_json=""))
        try:
            text = json.dumps(serde.serialize(value))
        except (TypeError, ValueError) as exc:
            message = (
                f"task {task.dag_id}.{task.task_id} returned a {qualified_name(type(value))}, "
                f"which cannot be stored as the return_value XCom ({exc})"
            )
            return self._failed(ErrorInfo("TypeError", message), retryable=True)
        return pb.Result(success=pb.Success(return_value_json=text))

    def _from_exception(self, exc: BaseException) -> pb.Result:
        if isinstance(exc, SkipTask):
            self._log("info", "task skipped", reason=exc.reason)
            return pb.Result(skipped=pb.Skipped(reason=exc.reason))
        if isinstance(exc, FailTask):
            return self._failed(error_info(exc), retryable=False)
        if isinstance(exc, RescheduleTask):
            return pb.Result(rescheduled=_rescheduled(exc))
        if isinstance(exc, DeferTask):
            try:
                return pb.Result(deferred=_deferred(exc))
            except (TypeError, ValueError) as bad:
                return self._failed(error_info(bad), retryable=True)
        return self._failed(error_info(exc), retryable=True)

    def _failed(self, info: ErrorInfo, *, retryable: bool) -> pb.Result:
        event = "task failed" if retryable else "task failed without retry"
        self._host.log(LogRecord("error", event, _EXECUTOR_LOGGER, error=info))
        failed = pb.Failed(retryable=retryable, error=pb.ErrorInfo(**vars(info)))
        return pb.Result(failed=failed)

    def _log(self, level: str, event: str, **fields: Any) -> None:
        self._host.log(LogRecord(level, event, _EXECUTOR_LOGGER, fields))

    def _not_found_info(self) -> ErrorInfo:
        known = sorted(f"{d}.{t}" for d, t in self._bundle.tasks)
        message = (
            f"bundle {self._bundle.name}=={self._bundle.version} has no task "
            f"{self._start.ti.dag_id}.{self._start.ti.task_id}; it registers: {known or 'none'}"
        )
        return ErrorInfo("LookupError", message)


def _ti_label(start: pb.Start) -> str:
    return f"{start.ti.dag_id}.{start.ti.task_id} (ti {start.ti.id})"


def _json_object(text: str, what: str) -> dict[str, Any]:
    if not text:
        return {}
    value = json.loads(text)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object, got {text[:80]!r}")
    return value


def _trigger_failure_info(kwargs: dict[str, Any]) -> ErrorInfo:
    """What Airflow passes in next_kwargs when the trigger failed or timed out."""
    error = str(kwargs.get("error") or "trigger failed")
    trace = kwargs.get("traceback") or ""
    if isinstance(trace, list):
        trace = "".join(str(line) for line in trace)
    kind = "TaskDeferralTimeout" if "timeout" in error.lower() else "TaskDeferralError"
    return ErrorInfo(kind, f"deferred task did not resume: {error}", str(trace))


def _cancelled_info(exc: TaskCancelled, reason: str | None) -> ErrorInfo:
    info = error_info(exc)
    message = f"task cancelled by the supervisor: {reason or exc or 'no reason given'}"
    return ErrorInfo(info.type, message, info.traceback)


def _rescheduled(exc: RescheduleTask) -> pb.Rescheduled:
    when = exc.reschedule_date
    if isinstance(when, timedelta):
        when = datetime.now(UTC) + when
    elif when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    message = pb.Rescheduled()
    message.reschedule_date.FromDatetime(when.astimezone(UTC))
    return message


def _deferred(exc: DeferTask) -> pb.Deferred:
    timeout = exc.timeout
    timeout_s = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout or 0)
    return pb.Deferred(
        trigger_classpath=exc.trigger_classpath,
        trigger_kwargs_json=json.dumps(serde.serialize(exc.trigger_kwargs)),
        next_method=exc.method_name,
        next_kwargs_json=json.dumps(serde.serialize(exc.kwargs or {})),
        timeout_s=timeout_s,
    )


def _async_raise(thread_id: int, exc_type: type[BaseException] | None) -> bool:
    """Raise `exc_type` in another thread at its next bytecode (None clears a pending one).

    CPython delivers it only while that thread runs Python code: a task blocked in a long C call
    (time.sleep(600)) sees it when the call returns.
    """
    import ctypes  # noqa: PLC0415 - only on cancel

    target = ctypes.py_object(exc_type) if exc_type is not None else None
    changed = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), target)
    return bool(changed == 1)
