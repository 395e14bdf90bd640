"""The gRPC side of one runtime: channel, health wait, Describe, the Execute stream, Shutdown.

The only supervisor module that imports grpc and the generated code: protobuf messages become the
plain values of messages.py here, and every grpc.RpcError becomes one of our errors (`from exc`).
gRPC status codes mean transport trouble only; a task that raised arrives as a `Failed` outcome.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Final

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from bundle_runtime import protocol
from bundle_runtime._proto import health_pb2, health_pb2_grpc, runtime_pb2, runtime_pb2_grpc
from supervisor.errors import RuntimeLost, RuntimeProtocolError, StartTimeout
from supervisor.plugin.messages import (
    Deferred,
    ErrorInfo,
    Failed,
    Host,
    HostCallError,
    LogRecord,
    Outcome,
    Rescheduled,
    RuntimeDescription,
    Skipped,
    Succeeded,
    TaskSpec,
    TaskStart,
)

logger = logging.getLogger(__name__)

#: Pause between health checks that answered NOT_SERVING.
HEALTH_RETRY_S = 0.05
DESCRIBE_TIMEOUT_S = 10.0
SHUTDOWN_TIMEOUT_S = 1.0
#: How often the request stream looks at the cancel event while it has nothing else to send.
CANCEL_POLL_S = 0.1
#: How long a runtime may keep the stream open after its Result before we cancel the call.
AFTER_RESULT_S = 5.0

_HOST_ERROR_KINDS = {
    "not_found": runtime_pb2.HostError.KIND_NOT_FOUND,
    "invalid": runtime_pb2.HostError.KIND_INVALID,
    "unavailable": runtime_pb2.HostError.KIND_UNAVAILABLE,
}
_END: Final = object()
#: Longest piece of a malformed value quoted in a protocol error or warning.
_MAX_QUOTED = 80
#: Longest unreadable Log.fields_json kept, as text, on the task log line.
_MAX_KEPT = 1000


class RuntimeClient:
    """A gRPC channel to one runtime's Unix socket.

    Thread-safe for `abort()` and `shutdown()` from other threads while `execute()` runs; the
    runtime itself runs one task at a time, so one `execute()` at a time. Call `close()`.
    """

    def __init__(self, socket_path: str, *, bundle: str, pid: int | None = None) -> None:
        self.bundle = bundle
        self.pid = pid
        self._channel = grpc.insecure_channel(
            f"unix:{socket_path}",
            options=[
                ("grpc.max_receive_message_length", protocol.MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", protocol.MAX_MESSAGE_BYTES),
            ],
        )
        self._runtime = runtime_pb2_grpc.BundleRuntimeStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._lock = threading.Lock()
        self._call: grpc.Future | None = None
        self._aborted = False

    def wait_healthy(self, deadline: float, *, abort: threading.Event | None = None) -> bool:
        """Check health of HEALTH_SERVICE until SERVING; False if `abort` was set first.

        Raises:
            StartTimeout: not SERVING by `deadline` (time.monotonic()); quotes the last answer.
        """
        stop = abort or threading.Event()
        last = "no answer"
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StartTimeout(
                    f"bundle {self.bundle}: runtime (pid {self.pid}) did not report health "
                    f"SERVING for {protocol.HEALTH_SERVICE!r} in time; last answer: {last}",
                    bundle=self.bundle,
                    pid=self.pid,
                )
            status = self._check_health(min(remaining, 1.0))
            if status == "SERVING":
                return True
            last = status
            stop.wait(min(HEALTH_RETRY_S, remaining))
        return False

    def _check_health(self, timeout: float) -> str:
        request = health_pb2.HealthCheckRequest(service=protocol.HEALTH_SERVICE)
        try:
            response = self._health.Check(request, timeout=timeout, wait_for_ready=True)
        except grpc.RpcError as exc:
            return _rpc_error_text(exc)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def describe(self) -> RuntimeDescription:
        """What the runtime serves.

        Raises:
            RuntimeLost: the call failed (the runtime is gone or broken).
        """
        try:
            response = self._runtime.Describe(
                runtime_pb2.DescribeRequest(), timeout=DESCRIBE_TIMEOUT_S
            )
        except grpc.RpcError as exc:
            raise self._lost(f"Describe failed: {_rpc_error_text(exc)}") from exc
        try:
            return _description(response)
        except _Malformed as exc:
            raise RuntimeProtocolError(
                f"bundle {self.bundle}: runtime answered Describe with nonsense: {exc}",
                bundle=self.bundle,
                pid=self.pid,
            ) from None

    def execute(
        self, start: TaskStart, host: Host, *, cancel: threading.Event | None = None
    ) -> Outcome:
        """Run one task instance on its own Execute stream and return its outcome.

        Host calls and log records are handed to `host` on this thread, in stream order. When
        `cancel` is set, one Cancel is sent; the runtime still ends with a Result.

        Raises:
            RuntimeLost: the stream failed.
            RuntimeProtocolError: the runtime broke the stream's rules: it ended without a
                Result, sent two, or sent one that cannot be read.
        """
        stream = _ExecuteStream(start, host, cancel, bundle=self.bundle)
        call = self._runtime.Execute(stream.requests())
        with self._lock:
            self._call = call
            if self._aborted:
                call.cancel()
        try:
            return stream.drive(call)
        except grpc.RpcError as exc:
            raise self._lost(
                f"Execute stream of ti {start.ti_id} failed: {_rpc_error_text(exc)}"
            ) from exc
        except _Malformed as exc:
            raise RuntimeProtocolError(
                f"bundle {self.bundle}: runtime broke the Execute protocol for ti "
                f"{start.ti_id}: {exc}",
                bundle=self.bundle,
                pid=self.pid,
            ) from None
        finally:
            stream.close()
            with self._lock:
                self._call = None
            call.cancel()  # no-op when the call has finished

    def abort(self) -> None:
        """Cancel the Execute in flight and any later one: the runtime process is gone."""
        with self._lock:
            self._aborted = True
            call = self._call
        if call is not None:
            call.cancel()

    def shutdown(self) -> bool:
        """Ask the runtime to exit (short deadline); False if it could not be asked."""
        try:
            self._runtime.Shutdown(runtime_pb2.ShutdownRequest(), timeout=SHUTDOWN_TIMEOUT_S)
        except grpc.RpcError as exc:
            logger.debug(
                "runtime.shutdown_rpc_failed",
                extra={"bundle": self.bundle, "pid": self.pid, "error": _rpc_error_text(exc)},
            )
            return False
        return True

    def close(self) -> None:
        self._channel.close()

    def _lost(self, what: str) -> RuntimeLost:
        return RuntimeLost(f"bundle {self.bundle}: {what}", bundle=self.bundle, pid=self.pid)


class _Malformed(Exception):
    """A message that breaks the protocol; the text says how, for RuntimeProtocolError."""


class _ExecuteStream:
    """One Execute call: the request iterator (fed from a queue) and the response loop."""

    def __init__(
        self, start: TaskStart, host: Host, cancel: threading.Event | None, *, bundle: str
    ) -> None:
        self._start = start
        self._bundle = bundle
        self._host = host
        self._cancel = cancel
        self._queue: queue.Queue[object] = queue.Queue()

    def requests(self) -> Iterator[runtime_pb2.HostMessage]:
        """Start, then host replies; one Cancel once `cancel` is set; ends at `close()`."""
        yield runtime_pb2.HostMessage(start=_start_message(self._start))
        cancel_pending = self._cancel is not None
        while True:
            if cancel_pending and self._cancel is not None and self._cancel.is_set():
                cancel_pending = False
                reason = "cancelled by the supervisor"
                yield runtime_pb2.HostMessage(cancel=runtime_pb2.Cancel(reason=reason))
            try:
                item = self._queue.get(timeout=CANCEL_POLL_S if cancel_pending else None)
            except queue.Empty:
                continue
            if item is _END:
                return
            assert isinstance(item, runtime_pb2.HostMessage)
            yield item

    def close(self) -> None:
        """Half-close the request side; lets the gRPC thread consuming `requests()` finish."""
        self._queue.put(_END)

    def drive(self, call: Iterator[runtime_pb2.RuntimeMessage]) -> Outcome:
        """Handle messages until the Result; raises _Malformed when the protocol is broken."""
        for message in call:
            kind = message.WhichOneof("kind")
            if kind == "log":
                self._log(message.log)
            elif kind == "host_call":
                self._queue.put(runtime_pb2.HostMessage(host_reply=self._reply(message.host_call)))
            elif kind == "result":
                outcome = _outcome(message.result)
                self._finish(call, outcome)
                return outcome
            else:
                logger.warning("runtime.unknown_message", extra=self._extra())
        raise _Malformed("the stream ended without a Result")

    def _finish(self, call: Iterator[runtime_pb2.RuntimeMessage], outcome: Outcome) -> None:
        """Read the stream to its end, so the runtime is idle again before the next task.

        Other messages after the Result are logged and ignored (docs/protocol.md §6); a second
        Result is not: two outcomes for one try leave no way to tell which is true.
        """
        self.close()
        timer = threading.Timer(AFTER_RESULT_S, call.cancel)  # type: ignore[attr-defined]
        timer.daemon = True
        timer.start()
        try:
            for message in call:
                kind = message.WhichOneof("kind")
                if kind == "result":
                    raise _Malformed(
                        f"it sent a second Result ({message.result.WhichOneof('outcome')}) after "
                        f"its first ({type(outcome).__name__})"
                    )
                logger.warning(
                    "runtime.message_after_result", extra={**self._extra(), "kind": kind}
                )
        except grpc.RpcError as exc:
            logger.debug("runtime.stream_end_after_result", extra={"error": _rpc_error_text(exc)})
        finally:
            timer.cancel()

    def _extra(self) -> dict[str, str]:
        return {"ti_id": self._start.ti_id, "bundle": self._bundle}

    def _log(self, log: runtime_pb2.Log) -> None:
        record, problem = _log_record(log)
        if problem:
            # A bad log record is the runtime's bug, not worth failing the task: keep the line.
            logger.warning("runtime.bad_log_record", extra={**self._extra(), "problem": problem})
        try:
            self._host.log(record)
        except Exception:
            # A broken log sink must not fail the task; the worker log shows the bug.
            logger.exception("host.log_failed", extra={"ti_id": self._start.ti_id})

    def _reply(self, call: runtime_pb2.HostCall) -> runtime_pb2.HostReply:
        reply = runtime_pb2.HostReply(call_id=call.call_id)
        kind = call.WhichOneof("call")
        if kind is None:
            reply.error.kind = runtime_pb2.HostError.KIND_INVALID
            reply.error.message = "unknown host call (the runtime is newer than the supervisor)"
            return reply
        try:
            value = self._host.call(kind, _fields(getattr(call, kind)))
            reply.value_json = json.dumps(value)
        except HostCallError as exc:
            kind_pb = _HOST_ERROR_KINDS.get(exc.kind, runtime_pb2.HostError.KIND_UNAVAILABLE)
            reply.error.kind = kind_pb
            reply.error.message = exc.message
        except Exception as exc:
            logger.exception("host.call_failed", extra={"ti_id": self._start.ti_id, "kind": kind})
            reply.error.kind = runtime_pb2.HostError.KIND_UNAVAILABLE
            reply.error.message = f"the supervisor failed to handle {kind}: {type(exc).__name__}"
        return reply


# Conversions: protobuf <-> plain values.


def _start_message(start: TaskStart) -> runtime_pb2.Start:
    message = runtime_pb2.Start(
        ti=runtime_pb2.TaskInstance(
            id=start.ti_id,
            dag_id=start.dag_id,
            task_id=start.task_id,
            run_id=start.run_id,
            try_number=start.try_number,
            map_index=start.map_index,
            queue=start.queue,
        ),
        dag_run_json=json.dumps(start.dag_run),
        params_json=json.dumps(start.params),
        max_tries=start.max_tries,
        timeout_s=start.timeout_s,
        task_reschedule_count=start.task_reschedule_count,
    )
    if start.next_method is not None:
        message.resume.next_method = start.next_method
        message.resume.next_kwargs_json = json.dumps(start.next_kwargs or {})
    return message


def _fields(message: Message) -> dict[str, Any]:
    """A HostCall payload as {proto field name: value}, defaults included.

    Not json_format.MessageToDict: its defaults flag was renamed across protobuf 5.x releases
    (including_default_value_fields, always_print_fields_with_primitives, ..._with_no_presence)
    and it turns int64 fields (SetXCom.mapped_length) into strings.
    """
    result: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        repeated = _is_repeated(field)
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            value = [_fields(v) for v in value] if repeated else _fields(value)
        elif repeated:
            value = list(value)
        result[field.name] = value
    return result


def _is_repeated(field: FieldDescriptor) -> bool:
    # `is_repeated` is the newer spelling; `label` was removed in protobuf 7.
    flag = getattr(field, "is_repeated", None)
    if flag is not None:
        return bool(flag)
    return bool(field.label == FieldDescriptor.LABEL_REPEATED)


def _timestamp(message: Any, what: str) -> datetime:
    """A Timestamp as an aware datetime; _Malformed when no datetime can hold it."""
    try:
        return message.ToDatetime(tzinfo=UTC)  # type: ignore[no-any-return]
    except (ValueError, OverflowError, OSError) as exc:
        raise _Malformed(
            f"{what} ({message.seconds} s, {message.nanos} ns) is not a representable date: {exc}"
        ) from None


def _json(text: str, what: str, *, want_object: bool = False) -> Any:
    """Parse JSON text the runtime sent; _Malformed (quoting its start) when it is not JSON."""
    try:
        value = json.loads(text)
    except ValueError as exc:  # JSONDecodeError, and too-long integers
        raise _Malformed(f"{what} is not JSON ({exc}): {_quote(text)}") from None
    except RecursionError:
        raise _Malformed(f"{what} is nested too deeply to read") from None
    if want_object and not isinstance(value, dict):
        raise _Malformed(f"{what} must be a JSON object, got {_quote(text)}")
    return value


def _quote(text: str) -> str:
    return repr(text if len(text) <= _MAX_QUOTED else text[:_MAX_QUOTED] + "...")


def _error_info(error: runtime_pb2.ErrorInfo) -> ErrorInfo:
    return ErrorInfo(type=error.type, message=error.message, traceback=error.traceback)


def _log_record(log: runtime_pb2.Log) -> tuple[LogRecord, str | None]:
    """The record, and what was wrong with it: a bad date becomes now, bad fields are kept as
    text under `fields_json`, so the line still reaches the task log."""
    problems = []
    timestamp = datetime.now(UTC)
    fields: dict[str, Any] = {}
    try:
        if log.HasField("timestamp"):
            timestamp = _timestamp(log.timestamp, "Log.timestamp")
    except _Malformed as exc:
        problems.append(str(exc))
    try:
        if log.fields_json:
            fields = _json(log.fields_json, "Log.fields_json", want_object=True)
    except _Malformed as exc:
        problems.append(str(exc))
        fields = {"fields_json": log.fields_json[:_MAX_KEPT]}
    record = LogRecord(
        timestamp=timestamp,
        level=log.level,
        event=log.event,
        logger=log.logger,
        fields=fields,
        error=_error_info(log.error) if log.HasField("error") else None,
    )
    return record, "; ".join(problems) or None


def _outcome(result: runtime_pb2.Result) -> Outcome:
    """The Result as a value; _Malformed when its JSON or dates cannot be read."""
    kind = result.WhichOneof("outcome")
    if kind == "success":
        value_json = result.success.return_value_json or None
        if value_json is not None:
            _json(value_json, "Success.return_value_json")  # else the XCom push fails later
        return Succeeded(return_value_json=value_json)
    if kind == "failed":
        failed = result.failed
        error = _error_info(failed.error) if failed.HasField("error") else None
        return Failed(retryable=failed.retryable, error=error)
    if kind == "skipped":
        return Skipped(reason=result.skipped.reason)
    if kind == "rescheduled":
        when = _timestamp(result.rescheduled.reschedule_date, "Rescheduled.reschedule_date")
        return Rescheduled(reschedule_date=when)
    if kind == "deferred":
        deferred = result.deferred
        return Deferred(
            trigger_classpath=deferred.trigger_classpath,
            trigger_kwargs=_json(
                deferred.trigger_kwargs_json or "{}",
                "Deferred.trigger_kwargs_json",
                want_object=True,
            ),
            next_method=deferred.next_method,
            next_kwargs=_json(
                deferred.next_kwargs_json or "{}", "Deferred.next_kwargs_json", want_object=True
            ),
            timeout_s=deferred.timeout_s,
        )
    # A Result with no outcome breaks the contract: treat as a retryable failure, not a crash.
    return Failed(
        retryable=True,
        error=ErrorInfo(type="ProtocolError", message="runtime sent a Result with no outcome"),
    )


def _description(response: runtime_pb2.DescribeResponse) -> RuntimeDescription:
    """The Describe answer as a value; _Malformed naming every problem when it is unusable."""
    problems = _description_problems(response)
    if problems:
        raise _Malformed("; ".join(problems))
    return RuntimeDescription(
        bundle_name=response.bundle_name,
        bundle_version=response.bundle_version,
        runtime_version=response.runtime_version,
        protocol_version=response.protocol_version,
        python_version=response.python_version,
        tasks=tuple(
            TaskSpec(dag_id=t.dag_id, task_id=t.task_id, timeout_s=t.timeout_s, doc=t.doc)
            for t in response.tasks
        ),
    )


def _description_problems(response: runtime_pb2.DescribeResponse) -> list[str]:
    problems = []
    if not response.bundle_name or not response.bundle_version:
        problems.append(
            f"bundle name {response.bundle_name!r} and version {response.bundle_version!r} "
            "must both be set"
        )
    if response.protocol_version not in protocol.APP_PROTOCOL_VERSIONS:
        problems.append(
            f"protocol_version {response.protocol_version} is not one this supervisor speaks "
            f"{list(protocol.APP_PROTOCOL_VERSIONS)}"
        )
    seen: set[tuple[str, str]] = set()
    for task in response.tasks:
        name = f"task ({task.dag_id!r}, {task.task_id!r})"
        if not task.dag_id or not task.task_id:
            problems.append(f"{name} has an empty dag_id or task_id")
        elif (task.dag_id, task.task_id) in seen:
            problems.append(f"{name} is listed twice")
        if not (math.isfinite(task.timeout_s) and task.timeout_s >= 0):
            problems.append(f"{name} has timeout_s {task.timeout_s}, not a duration")
        seen.add((task.dag_id, task.task_id))
    return problems


def _rpc_error_text(exc: grpc.RpcError) -> str:
    code = exc.code() if isinstance(exc, grpc.Call) else None
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    return f"{code.name if code else 'UNKNOWN'}: {details}"
