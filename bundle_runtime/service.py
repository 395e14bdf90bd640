"""The bundle.v1.BundleRuntime gRPC servicer: a thin adapter between the wire and the executor.

Execute is the only stateful RPC. Per stream: the handler thread yields RuntimeMessages from a
queue, a reader thread ("execute-reader:<ti_id>") consumes HostMessages (HostReply -> the waiting
host call, Cancel -> the task), and the task runs on its own thread ("task:<ti_id>"). The process
runs one task at a time; the slot is released when the task thread ends, just before its Result is
queued, so a supervisor that starts the next task on receiving a Result never sees
RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import itertools
import json
import logging
import queue
import threading
from collections.abc import Iterator
from typing import Any

import grpc

from . import __version__
from ._proto import runtime_pb2 as pb
from ._proto import runtime_pb2_grpc as pb_grpc
from .bundle import Bundle
from .exceptions import HostCallFailed, TaskCancelled
from .executor import Execution
from .host import ErrorInfo, LogRecord, qualified_name

logger = logging.getLogger(__name__)

#: How long a cancelled task may take to stop before the stream ends without it.
DEFAULT_CANCEL_GRACE_S = 5.0
#: A host call waits in slices so that a cancel can be delivered into a waiting task.
_WAIT_SLICE_S = 0.2
_END = object()
_HOST_ERROR_KINDS = {
    pb.HostError.KIND_NOT_FOUND: "not_found",
    pb.HostError.KIND_INVALID: "invalid",
    pb.HostError.KIND_UNAVAILABLE: "unavailable",
}


class _PendingCall:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.reply: pb.HostReply | None = None
        self.error: HostCallFailed | None = None


class StreamHost:
    """The Host of one Execute stream: HostCalls out, HostReplies in, Logs out.

    Thread-safe; once closed (stream gone) every pending and later call raises HostCallFailed.
    """

    def __init__(self, out: queue.SimpleQueue[Any]) -> None:
        self._out = out
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._pending: dict[int, _PendingCall] = {}
        self._closed: str | None = None

    def call(self, kind: str, args: dict[str, Any]) -> Any:
        pending = _PendingCall()
        with self._lock:
            if self._closed is not None:
                raise HostCallFailed("unavailable", self._closed)
            call_id = next(self._ids)
            self._pending[call_id] = pending
        try:
            self._out.put(pb.RuntimeMessage(host_call=pb.HostCall(call_id=call_id, **{kind: args})))
            while not pending.done.wait(_WAIT_SLICE_S):
                pass
        finally:
            with self._lock:
                self._pending.pop(call_id, None)
        return _reply_value(pending)

    def log(self, record: LogRecord) -> None:
        self._out.put(pb.RuntimeMessage(log=_log_message(record)))

    def deliver(self, reply: pb.HostReply) -> None:
        with self._lock:
            pending = self._pending.pop(reply.call_id, None)
        if pending is None:
            logger.warning("host reply for unknown call", extra={"call_id": reply.call_id})
            return
        pending.reply = reply
        pending.done.set()

    def close(self, reason: str) -> None:
        with self._lock:
            self._closed = self._closed or reason
            pending, self._pending = list(self._pending.values()), {}
        for call in pending:
            call.error = HostCallFailed("unavailable", reason)
            call.done.set()


def _reply_value(pending: _PendingCall) -> Any:
    if pending.error is not None:
        raise pending.error
    reply = pending.reply
    assert reply is not None
    if reply.WhichOneof("outcome") == "error":
        kind = _HOST_ERROR_KINDS.get(reply.error.kind, "invalid")
        raise HostCallFailed(kind, reply.error.message or kind.replace("_", " "))
    return json.loads(reply.value_json) if reply.value_json else None


def _log_message(record: LogRecord) -> pb.Log:
    message = pb.Log(
        level=record.level,
        event=record.event,
        logger=record.logger,
        fields_json=json.dumps(record.fields, default=repr) if record.fields else "",
    )
    message.timestamp.FromDatetime(record.timestamp)
    if record.error is not None:
        message.error.CopyFrom(_error_message(record.error))
    return message


def _error_message(info: ErrorInfo) -> pb.ErrorInfo:
    return pb.ErrorInfo(type=info.type, message=info.message, traceback=info.traceback)


class _Session:
    """One Execute stream: its queue, host, execution, and the one-Result rule."""

    def __init__(self, bundle: Bundle, start: pb.Start, cancel_grace_s: float) -> None:
        self.ti_id = start.ti.id
        self.out: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.host = StreamHost(self.out)
        self.execution = Execution(bundle, start, self.host)
        self.task_done = threading.Event()
        self._cancel_grace_s = cancel_grace_s
        self._lock = threading.Lock()
        self._finished = False
        self._grace_timer: threading.Timer | None = None

    def finish(self, result: pb.Result) -> None:
        """Queue the stream's one Result; later calls are ignored."""
        with self._lock:
            if self._finished:
                return
            self._finished = True
            if self._grace_timer is not None:
                self._grace_timer.cancel()
        self.out.put(pb.RuntimeMessage(result=result))
        self.out.put(_END)

    def responses(self) -> Iterator[pb.RuntimeMessage]:
        while (message := self.out.get()) is not _END:
            yield message

    def cancel(self, reason: str) -> None:
        self.execution.cancel(reason)
        with self._lock:
            if self._finished or self._grace_timer is not None:
                return
            timer = threading.Timer(self._cancel_grace_s, self._grace_expired, (reason,))
            timer.name, timer.daemon = f"cancel-grace:{self.ti_id}", True
            self._grace_timer = timer
        timer.start()

    def _grace_expired(self, reason: str) -> None:
        if self.task_done.is_set():
            return
        logger.warning("task ignored cancel", extra={"ti_id": self.ti_id, "reason": reason})
        message = (
            f"task cancelled by the supervisor ({reason}) but still running after "
            f"{self._cancel_grace_s:g}s; the runtime stays busy until it returns"
        )
        error = pb.ErrorInfo(type=qualified_name(TaskCancelled), message=message)
        self.finish(pb.Result(failed=pb.Failed(retryable=True, error=error)))

    def on_rpc_done(self) -> None:
        """The stream ended (normally or broken): fail pending calls, stop an orphaned task.

        An orphan first sees its host calls fail (HostCallFailed) and may end on its own; it is
        cancelled only if still running after the cancel grace, so the slot frees up either way.
        """
        reason = "the supervisor closed the Execute stream"
        self.host.close(reason)
        with self._lock:
            orphaned = not self._finished
        if orphaned:
            logger.warning("execute stream broke mid-task", extra={"ti_id": self.ti_id})
            self.out.put(_END)
            timer = threading.Timer(self._cancel_grace_s, self.execution.cancel, (reason,))
            timer.name, timer.daemon = f"orphan-cancel:{self.ti_id}", True
            timer.start()

    def read(self, requests: Iterator[pb.HostMessage]) -> None:
        """Reader thread: dispatch HostReply and Cancel until the request stream ends."""
        try:
            for message in requests:
                kind = message.WhichOneof("kind")
                if kind == "host_reply":
                    self.host.deliver(message.host_reply)
                elif kind == "cancel":
                    self.cancel(message.cancel.reason or "cancel requested")
                else:
                    logger.warning("unexpected host message", extra={"kind": kind})
        except grpc.RpcError:
            pass  # the stream broke; on_rpc_done handles it
        self.host.close("the supervisor stopped sending on the Execute stream")


class BundleRuntimeServicer(pb_grpc.BundleRuntimeServicer):
    """bundle.v1.BundleRuntime for one loaded bundle; one task at a time.

    `shutdown` is set by the Shutdown RPC; server.py waits on it, then on `wait_idle()`.
    """

    def __init__(
        self,
        bundle: Bundle,
        protocol_version: int,
        shutdown: threading.Event,
        *,
        cancel_grace_s: float = DEFAULT_CANCEL_GRACE_S,
    ) -> None:
        self._bundle = bundle
        self._protocol_version = protocol_version
        self._shutdown = shutdown
        self._cancel_grace_s = cancel_grace_s
        self._slot = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self._current: _Session | None = None

    def Describe(self, request: pb.DescribeRequest, context: Any) -> pb.DescribeResponse:
        import platform  # noqa: PLC0415 - not needed at start-up

        tasks = [
            pb.TaskSpec(dag_id=t.dag_id, task_id=t.task_id, timeout_s=t.timeout_s or 0.0, doc=t.doc)
            for t in self._bundle.tasks.values()
        ]
        return pb.DescribeResponse(
            bundle_name=self._bundle.name,
            bundle_version=self._bundle.version,
            runtime_version=__version__,
            protocol_version=self._protocol_version,
            python_version=platform.python_version(),
            tasks=tasks,
        )

    def Execute(
        self, request_iterator: Iterator[pb.HostMessage], context: Any
    ) -> Iterator[pb.RuntimeMessage]:
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("kind") != "start":
            got = "nothing" if first is None else first.WhichOneof("kind")
            message = f"Execute must begin with Start, got {got}"
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
        if not self._slot.acquire(blocking=False):
            busy = self._current.ti_id if self._current else "?"
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"runtime is already running task instance {busy}; one task at a time",
            )
        session = self._begin(first.start)
        if not context.add_callback(session.on_rpc_done):
            session.on_rpc_done()  # the RPC already ended: treat the stream as broken
        _start_thread(f"execute-reader:{session.ti_id}", session.read, request_iterator)
        _start_thread(f"task:{session.ti_id}", self._run_task, session)
        yield from session.responses()

    def Shutdown(self, request: pb.ShutdownRequest, context: Any) -> pb.ShutdownResponse:
        logger.info("shutdown requested")
        self._shutdown.set()
        return pb.ShutdownResponse()

    def wait_idle(self, timeout_s: float | None = None) -> bool:
        """Wait until no task runs; True when idle."""
        return self._idle.wait(timeout_s)

    def cancel_current(self, reason: str) -> None:
        session = self._current
        if session is not None:
            session.cancel(reason)

    def _begin(self, start: pb.Start) -> _Session:
        self._idle.clear()
        session = _Session(self._bundle, start, self._cancel_grace_s)
        self._current = session
        logger.debug("task starting", extra={"ti_id": start.ti.id})
        return session

    def _run_task(self, session: _Session) -> None:
        try:
            result = session.execution.run()
        except BaseException as exc:  # never leave the stream without a Result
            logger.exception("executor failed", extra={"ti_id": session.ti_id})
            error = pb.ErrorInfo(type=type(exc).__name__, message=f"runtime bug: {exc}")
            result = pb.Result(failed=pb.Failed(retryable=True, error=error))
        session.task_done.set()
        self._current = None
        self._slot.release()
        self._idle.set()
        session.finish(result)


def _start_thread(name: str, target: Any, *args: Any) -> None:
    threading.Thread(target=target, args=args, name=name, daemon=True).start()
