"""A real runtime process over real gRPC: handshake, health, Describe, Execute, Shutdown."""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import stat

import grpc
import pytest

import bundle_runtime
from bundle_runtime import protocol
from bundle_runtime._proto import health_pb2
from bundle_runtime._proto import runtime_pb2 as pb

from .conftest import Runtime, make_start
from .sample_bundle import HOSTCALL_FAILED_MARKER, SLEEPING

SERVING = health_pb2.HealthCheckResponse.SERVING


def test_handshake_line_is_the_only_stdout_and_import_prints_go_to_stderr(runtime: Runtime):
    socket = os.path.join(runtime.socket_dir, protocol.SOCKET_NAME)
    assert runtime.handshake == f"1|1|unix|{socket}|grpc|\n"
    assert stat.S_IMODE(os.stat(socket).st_mode) == 0o600
    runtime.stub.Shutdown(pb.ShutdownRequest())
    assert runtime.wait() == 0
    assert runtime.proc.stdout.read() == b""
    stderr = runtime.stderr.join()
    assert "sample_bundle imported" in stderr
    assert "sample_bundle raw write to fd 1" in stderr


def test_health_is_serving_for_the_service_and_overall(runtime: Runtime):
    for service in ("", protocol.HEALTH_SERVICE):
        reply = runtime.health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == SERVING
    with pytest.raises(grpc.RpcError) as info:
        runtime.health.Check(health_pb2.HealthCheckRequest(service="nope"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    watch = runtime.health.Watch(health_pb2.HealthCheckRequest(service=protocol.HEALTH_SERVICE))
    assert next(watch).status == SERVING
    watch.cancel()


def test_describe(runtime: Runtime):
    reply = runtime.stub.Describe(pb.DescribeRequest())
    assert (reply.bundle_name, reply.bundle_version) == ("sample", "1.0.0")
    assert reply.runtime_version == bundle_runtime.__version__
    assert reply.protocol_version == 1
    assert reply.python_version == platform.python_version()
    ok = reply.tasks[0]
    assert (ok.dag_id, ok.task_id, ok.timeout_s, ok.doc) == (
        "sample",
        "ok",
        30.0,
        "Return a fixed value.",
    )
    assert ("sample", "sleep", 0.0) in [(t.dag_id, t.task_id, t.timeout_s) for t in reply.tasks]


def test_execute_success_ends_with_one_result(runtime: Runtime):
    stream = runtime.execute("ok")
    _, result = stream.until("result")
    assert json.loads(result.result.success.return_value_json) == {"rows": 42, "ti": "ok"}
    assert stream.rest() == []


def test_execute_host_call_round_trip(runtime: Runtime):
    stream = runtime.execute("hostcall")
    _, message = stream.until("host_call")
    call = message.host_call
    assert (call.WhichOneof("call"), call.get_variable.key) == ("get_variable", "answer")
    reply = pb.HostReply(call_id=call.call_id, value_json=json.dumps('{"n": 42}'))
    stream.send(pb.HostMessage(host_reply=reply))
    _, result = stream.until("result")
    assert json.loads(result.result.success.return_value_json) == {"n": 42}


def test_host_error_reply_becomes_a_task_failure(runtime: Runtime):
    stream = runtime.execute("hostcall")
    _, message = stream.until("host_call")
    error = pb.HostError(kind=pb.HostError.KIND_UNAVAILABLE, message="api down")
    stream.send(
        pb.HostMessage(host_reply=pb.HostReply(call_id=message.host_call.call_id, error=error))
    )
    _, result = stream.until("result")
    failed = result.result.failed
    assert (failed.retryable, failed.error.type) == (
        True,
        "bundle_runtime.exceptions.HostCallFailed",
    )
    assert failed.error.message == "api down"


def test_logs_from_print_logging_and_ctx_log_are_tagged(runtime: Runtime):
    stream = runtime.execute("output")
    before, result = stream.until("result")
    assert result.result.WhichOneof("outcome") == "success"
    logs = [(m.log.logger, m.log.level, m.log.event) for m in before]
    assert ("task.stdout", "info", "hello from print") in logs
    assert ("task.stderr", "error", "line on stderr") in logs
    assert ("sample.lib", "info", "from logging module") in logs
    structured = next(m.log for m in before if m.log.event == "structured")
    assert (structured.logger, json.loads(structured.fields_json)) == (
        "task",
        {"rows": 3, "table": "sales"},
    )
    assert structured.timestamp.seconds > 0
    handled = next(m.log for m in before if m.log.event == "handled with logging")
    assert handled.error.type == "KeyError"


def test_cancel_of_a_sleeping_task_ends_with_one_result(runtime: Runtime):
    stream = runtime.execute("sleep")
    _, first = stream.until("log")
    assert first.log.event == SLEEPING
    stream.send(pb.HostMessage(cancel=pb.Cancel(reason="execution timeout")))
    _, result = stream.until("result")
    failed = result.result.failed
    assert failed.error.type == "bundle_runtime.exceptions.TaskCancelled"
    assert "execution timeout" in failed.error.message
    assert stream.rest() == []
    # The runtime is free again for the next task.
    _, again = runtime.execute("ok").until("result")
    assert again.result.WhichOneof("outcome") == "success"


def test_concurrent_execute_is_resource_exhausted(runtime: Runtime):
    busy = runtime.execute("sleep", ti_id="ti-busy")
    busy.until("log")
    second = runtime.execute("ok", ti_id="ti-second")
    with pytest.raises(grpc.RpcError) as info:
        second.next()
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "ti-busy" in info.value.details()
    busy.send(pb.HostMessage(cancel=pb.Cancel(reason="test over")))
    busy.until("result")


def test_execute_must_start_with_start(runtime: Runtime):
    stream = runtime.execute("ok")
    stream.call.cancel()
    bad = runtime.stub.Execute(iter([pb.HostMessage(cancel=pb.Cancel(reason="x"))]))
    with pytest.raises(grpc.RpcError) as info:
        next(bad)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_broken_stream_fails_pending_host_calls(runtime: Runtime):
    stream = runtime.execute("orphan")
    stream.until("host_call")
    stream.call.cancel()  # the supervisor's side of the stream goes away mid-call
    assert "kind=unavailable" in runtime.stderr.wait_for(HOSTCALL_FAILED_MARKER)
    runtime.stub.Shutdown(pb.ShutdownRequest())
    assert runtime.wait() == 0


def test_shutdown_exits_zero(runtime: Runtime):
    assert runtime.stub.Shutdown(pb.ShutdownRequest()) == pb.ShutdownResponse()
    assert runtime.wait() == 0


def test_sigterm_cancels_the_running_task_reports_it_and_exits_zero(runtime: Runtime):
    stream = runtime.execute("sleep")
    stream.until("log")
    runtime.proc.send_signal(signal.SIGTERM)
    _, result = stream.until("result")
    assert "SIGTERM" in result.result.failed.error.message
    assert runtime.wait() == 0


def test_sigint_is_ignored(runtime: Runtime):
    runtime.proc.send_signal(signal.SIGINT)
    reply = runtime.health.Check(health_pb2.HealthCheckRequest(service=protocol.HEALTH_SERVICE))
    assert reply.status == SERVING
    assert runtime.proc.poll() is None


def test_runtime_dies_when_its_stdin_closes(runtime: Runtime):
    runtime.proc.stdin.close()  # what the supervisor's death looks like from here
    assert runtime.wait() == -signal.SIGKILL


def test_diagnostics_on_stderr_are_json_lines(runtime: Runtime):
    line = runtime.stderr.wait_for("runtime serving")
    record = json.loads(line)
    assert record["@level"] == "info" and record["@module"] == "bundle_runtime.server"
    assert re.match(r"\d{4}-\d\d-\d\dT.*Z$", record["@timestamp"])
    assert record["pid"] == runtime.proc.pid


def test_start_message_is_echoed_into_context(runtime: Runtime):
    start = make_start("context")
    stream = runtime.execute("context", ti_id="ti-ctx")
    _, result = stream.until("result")
    value = json.loads(result.result.success.return_value_json)
    assert value["ti"] == ["sample", "context", start.ti.run_id, 1, -1]
