"""The servicer in this process over a real Unix-socket gRPC server: what needs its internals."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from bundle_runtime._proto import runtime_pb2 as pb
from bundle_runtime._proto import runtime_pb2_grpc as pb_grpc
from bundle_runtime.service import BundleRuntimeServicer

from . import sample_bundle
from .conftest import WAIT_S, ExecuteStream, make_start


@pytest.fixture
def served(socket_dir: str) -> Iterator[tuple[BundleRuntimeServicer, pb_grpc.BundleRuntimeStub]]:
    servicer = BundleRuntimeServicer(sample_bundle.bundle, 1, threading.Event(), cancel_grace_s=0.2)
    server = grpc.server(ThreadPoolExecutor(4))
    pb_grpc.add_BundleRuntimeServicer_to_server(servicer, server)
    server.add_insecure_port(f"unix:{socket_dir}/runtime.sock")
    server.start()
    channel = grpc.insecure_channel(f"unix:{socket_dir}/runtime.sock")
    sample_bundle.RELEASE.clear()
    yield servicer, pb_grpc.BundleRuntimeStub(channel)
    sample_bundle.RELEASE.set()
    assert servicer.wait_idle(WAIT_S)
    channel.close()
    server.stop(0).wait()


def test_task_that_ignores_cancel_still_ends_the_stream_and_keeps_the_slot(served):
    servicer, stub = served
    stream = ExecuteStream(stub, make_start("block"))
    stream.until("log")
    stream.send(pb.HostMessage(cancel=pb.Cancel(reason="timeout")))
    _, result = stream.until("result")
    assert "still running after 0.2s" in result.result.failed.error.message
    assert stream.rest() == []
    stream.close()
    # The task thread is still blocked: the runtime must say it is busy, not run two tasks.
    busy = ExecuteStream(stub, make_start("ok", ti_id="ti-next"))
    with pytest.raises(grpc.RpcError) as info:
        busy.next()
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    busy.close()
    sample_bundle.RELEASE.set()
    assert servicer.wait_idle(WAIT_S)
    after = ExecuteStream(stub, make_start("ok", ti_id="ti-after"))
    _, result = after.until("result")
    assert result.result.WhichOneof("outcome") == "success"
    after.close()


def test_shutdown_sets_the_event_and_returns_at_once():
    shutdown = threading.Event()
    servicer = BundleRuntimeServicer(sample_bundle.bundle, 1, shutdown)
    assert servicer.Shutdown(pb.ShutdownRequest(), None) == pb.ShutdownResponse()
    assert shutdown.is_set()
