"""A runtime that starts correctly and then speaks nonsense: `python -m tests.plugin.bogus_runtime
MODE`.

It does the handshake as docs/protocol.md asks (cookie, socket in the private dir, health SERVING,
one line on stdout, exit on stdin EOF or Shutdown), so the supervisor's start succeeds; what its
`Describe` and `Execute` answer is chosen by MODE (see `EXECUTE` and `DESCRIBE`). Responses are
serialised by hand (raw bytes through generic handlers), so it can send what no generated code
would: garbage bytes, invalid UTF-8 in a string field, unknown oneof members, oversize messages.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from bundle_runtime import protocol
from bundle_runtime._proto import health_pb2_grpc, runtime_pb2
from bundle_runtime.health import SERVING, HealthServicer

#: The label and version this runtime claims in a sane Describe.
NAME, VERSION = "bogus-bundle", "6.6.6"
SERVICE = "bundle.v1.BundleRuntime"

Requests = Iterator[runtime_pb2.HostMessage]
Responses = Iterator[bytes]


# -- hand-made protobuf -------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited field (wire type 2): a string, bytes or a sub-message."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _message(**kind: Any) -> bytes:
    return runtime_pb2.RuntimeMessage(**kind).SerializeToString()


def _success(value_json: str = "") -> bytes:
    return _message(result=runtime_pb2.Result(success=runtime_pb2.Success(
        return_value_json=value_json)))  # fmt: skip


def _log(event: str, **fields: Any) -> bytes:
    return _message(log=runtime_pb2.Log(level="info", event=event, logger="task", **fields))


# -- Execute modes: each gets the request stream after Start --------------------------------------


def no_result(requests: Requests) -> Responses:
    yield _log("about to leave without a Result")


def two_results(requests: Requests) -> Responses:
    yield _success('"first"')
    yield _message(result=runtime_pb2.Result(failed=runtime_pb2.Failed(retryable=False)))


def unknown_host_call(requests: Requests) -> Responses:
    """A HostCall whose oneof member (field 99) the supervisor has never heard of; the Result
    reports the HostReply it got, so the test can see what the host answered."""
    call = runtime_pb2.HostCall(call_id=7).SerializeToString() + _field(99, b"\x0a\x03abc")
    yield _field(2, call)  # RuntimeMessage.host_call
    reply = next(requests).host_reply
    answer = {
        "call_id": reply.call_id,
        "kind": runtime_pb2.HostError.Kind.Name(reply.error.kind),
        "message": reply.error.message,
    }
    yield _success(json.dumps(answer))


def garbage_bytes(requests: Requests) -> Responses:
    yield b"\xff\xff\xff\xff\x0f this is not protobuf"


def invalid_utf8(requests: Requests) -> Responses:
    log = _field(2, b"info") + _field(3, b"caf\xe9 \xff\xfe")  # Log.level, Log.event
    yield _field(1, log)  # RuntimeMessage.log


def oversize(requests: Requests) -> Responses:
    yield _log("x" * (protocol.MAX_MESSAGE_BYTES + 1024))


def exit_midway(requests: Requests) -> Responses:
    yield _log("exiting with code 3 mid-task")
    sys.stderr.write("bogus runtime: exiting mid-task on purpose\n")
    sys.stderr.flush()
    os._exit(3)


def abort_with_status(requests: Requests) -> Responses:
    raise _Abort(grpc.StatusCode.INTERNAL, "the bogus runtime aborts the stream")
    yield b""  # pragma: no cover - makes this a generator


def bad_return_json(requests: Requests) -> Responses:
    yield _success("{not json")


def bad_trigger_kwargs(requests: Requests) -> Responses:
    deferred = runtime_pb2.Deferred(
        trigger_classpath="x.Trigger", trigger_kwargs_json="[1, 2]", next_method="resume"
    )
    yield _message(result=runtime_pb2.Result(deferred=deferred))


def bad_reschedule_date(requests: Requests) -> Responses:
    when = Timestamp(seconds=2**62)  # far past year 9999: no datetime can hold it
    yield _message(result=runtime_pb2.Result(rescheduled=runtime_pb2.Rescheduled(
        reschedule_date=when)))  # fmt: skip


def bad_log_fields(requests: Requests) -> Responses:
    yield _log("fields that are not JSON", fields_json="{oops")
    yield _log("fields that are not an object", fields_json="[1, 2]")
    yield _log("a date no datetime can hold", timestamp=Timestamp(seconds=-(2**62)))
    yield _success('"still fine"')


def silent(requests: Requests) -> Responses:
    """One Log to say it has the task, then nothing: ignores Cancel, Shutdown and SIGTERM, so
    only SIGKILL ends it."""
    yield _log("got the task; not another word")
    for _ in requests:
        pass
    threading.Event().wait()


EXECUTE: dict[str, Callable[[Requests], Responses]] = {
    f.__name__: f
    for f in (no_result, two_results, unknown_host_call, garbage_bytes, invalid_utf8, oversize,
              exit_midway, abort_with_status, bad_return_json, bad_trigger_kwargs,
              bad_reschedule_date, bad_log_fields, silent)
}  # fmt: skip


# -- Describe modes -----------------------------------------------------------------------------


def _describe(mode: str) -> bytes:
    if mode == "describe_garbage":
        return b"\x0a\xff\xff\xff\xff\xff"
    if mode == "describe_junk":
        junk = runtime_pb2.DescribeResponse(
            bundle_name="",
            bundle_version="",
            protocol_version=99,
            tasks=[
                runtime_pb2.TaskSpec(dag_id="", task_id="t"),
                runtime_pb2.TaskSpec(dag_id="d", task_id="t", timeout_s=float("nan")),
                runtime_pb2.TaskSpec(dag_id="d", task_id="t", timeout_s=-5),
            ],
        )
        return junk.SerializeToString()
    sane = runtime_pb2.DescribeResponse(
        bundle_name=NAME, bundle_version=VERSION, runtime_version="0", protocol_version=1,
        python_version=sys.version.split()[0],
        tasks=[runtime_pb2.TaskSpec(dag_id="bogus", task_id="task")],
    )  # fmt: skip
    return sane.SerializeToString()


# -- the server ---------------------------------------------------------------------------------


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


def _handlers(mode: str, shutdown: threading.Event) -> grpc.GenericRpcHandler:
    def execute(requests: Requests, context: grpc.ServicerContext) -> Responses:
        start = next(requests)
        assert start.WhichOneof("kind") == "start"
        try:
            yield from EXECUTE.get(mode, no_result)(requests)
        except _Abort as exc:
            context.abort(exc.code, exc.details)

    def describe(request: Any, context: grpc.ServicerContext) -> bytes:
        return _describe(mode)

    def do_shutdown(request: Any, context: grpc.ServicerContext) -> bytes:
        if mode != "silent":
            shutdown.set()
        return b""

    raw = {"response_serializer": None}
    return grpc.method_handlers_generic_handler(SERVICE, {
        "Execute": grpc.stream_stream_rpc_method_handler(
            execute, request_deserializer=runtime_pb2.HostMessage.FromString, **raw),
        "Describe": grpc.unary_unary_rpc_method_handler(describe, **raw),
        "Shutdown": grpc.unary_unary_rpc_method_handler(do_shutdown, **raw),
    })  # fmt: skip


def main() -> None:
    mode = sys.argv[1]
    if os.environ.get(protocol.MAGIC_COOKIE_KEY) != protocol.MAGIC_COOKIE_VALUE:
        sys.exit("not started by the supervisor")
    socket_path = os.path.join(os.environ[protocol.SOCKET_DIR_ENV], protocol.SOCKET_NAME)
    shutdown = threading.Event()
    if mode == "silent":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *_: shutdown.set())
    threading.Thread(target=_exit_on_stdin_eof, name="stdin-watch", daemon=True).start()

    server = grpc.server(ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers((_handlers(mode, shutdown),))
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    server.add_insecure_port(f"unix:{socket_path}")
    server.start()
    health.set(protocol.HEALTH_SERVICE, SERVING)
    sys.stdout.write(protocol.format_handshake(1, socket_path) + "\n")
    sys.stdout.flush()
    shutdown.wait()
    server.stop(0)
    os._exit(0)


def _exit_on_stdin_eof() -> None:
    while os.read(0, 4096):
        pass
    os._exit(0)


if __name__ == "__main__":
    main()
