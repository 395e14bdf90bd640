"""Fixtures for runtime tests: a real `python -m bundle_runtime` process and a gRPC client."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from bundle_runtime import protocol
from bundle_runtime._proto import health_pb2_grpc
from bundle_runtime._proto import runtime_pb2 as pb
from bundle_runtime._proto import runtime_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[2]
PYTHON = ROOT / ".venv" / "bin" / "python"
SAMPLE_SPEC = "tests.runtime.sample_bundle:bundle"
#: Seconds any single wait in these tests may take before the test fails.
WAIT_S = 15


class StderrTail:
    """Reads a process's stderr on a thread; tests wait for a line instead of sleeping."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for raw in stream:
            with self._changed:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def wait_for(self, text: str, timeout: float = WAIT_S) -> str:
        def found() -> str | None:
            return next((line for line in self.lines if text in line), None)

        with self._changed:
            self._changed.wait_for(lambda: found() is not None or self._closed, timeout)
            line = found()
        assert line is not None, f"{text!r} not on stderr; got:\n" + self.text()
        return line

    def text(self) -> str:
        self._thread.join(timeout=0 if not self._closed else WAIT_S)
        return "\n".join(self.lines)

    def join(self) -> str:
        self._thread.join(WAIT_S)
        return "\n".join(self.lines)


def runtime_env(socket_dir: str, **overrides: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            protocol.MAGIC_COOKIE_KEY: protocol.MAGIC_COOKIE_VALUE,
            protocol.PROTOCOL_VERSIONS_ENV: "1",
            protocol.SOCKET_DIR_ENV: socket_dir,
            protocol.BUNDLE_ENV: SAMPLE_SPEC,
            "PYTHONPATH": str(ROOT),
        }
    )
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def spawn(env: dict[str, str], *, stdin: Any = subprocess.PIPE) -> subprocess.Popen[bytes]:
    """Start the runtime the way the supervisor does: own session, stdin a pipe we hold."""
    return subprocess.Popen(
        [str(PYTHON), "-m", "bundle_runtime"],
        cwd=ROOT,
        env=env,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        close_fds=True,
    )


def make_start(task_id: str, *, ti_id: str | None = None, **fields: Any) -> pb.Start:
    ti = pb.TaskInstance(
        id=ti_id or f"ti-{task_id}",
        dag_id="sample",
        task_id=task_id,
        run_id="manual__1",
        try_number=1,
        map_index=-1,
        queue="bundles",
    )
    return pb.Start(ti=ti, dag_run_json="{}", params_json="{}", **fields)


class ExecuteStream:
    """One Execute call: send HostMessages whenever, read RuntimeMessages in order."""

    _END = object()

    def __init__(self, stub: pb_grpc.BundleRuntimeStub, start: pb.Start) -> None:
        self._requests: queue.Queue[Any] = queue.Queue()
        self._requests.put(pb.HostMessage(start=start))
        self.call = stub.Execute(iter(self._requests.get, self._END), timeout=WAIT_S * 2)

    def send(self, message: pb.HostMessage) -> None:
        self._requests.put(message)

    def close(self) -> None:
        self._requests.put(self._END)

    def next(self) -> pb.RuntimeMessage:
        return next(self.call)

    def until(self, kind: str) -> tuple[list[pb.RuntimeMessage], pb.RuntimeMessage]:
        """Messages before the first of `kind`, and that message."""
        before = []
        for message in self.call:
            if message.WhichOneof("kind") == kind:
                return before, message
            before.append(message)
        raise AssertionError(f"stream ended without {kind}; got {before}")

    def rest(self) -> list[pb.RuntimeMessage]:
        return list(self.call)


class Runtime:
    """A started runtime process with a connected channel."""

    def __init__(self, proc: subprocess.Popen[bytes], socket_dir: str) -> None:
        self.proc = proc
        self.socket_dir = socket_dir
        self.stderr = StderrTail(proc.stderr)
        self.handshake = proc.stdout.readline().decode()
        assert self.handshake, "runtime exited before its handshake:\n" + self.stderr.join()
        address = protocol.parse_handshake(self.handshake).address
        self.channel = grpc.insecure_channel(f"unix:{address}")
        grpc.channel_ready_future(self.channel).result(timeout=WAIT_S)
        self.stub = pb_grpc.BundleRuntimeStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self._streams: list[ExecuteStream] = []

    def execute(self, task_id: str, **kwargs: Any) -> ExecuteStream:
        stream = ExecuteStream(self.stub, make_start(task_id, **kwargs))
        self._streams.append(stream)
        return stream

    def wait(self, timeout: float = WAIT_S) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        for stream in self._streams:
            stream.close()
        self.channel.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(WAIT_S)
        self.stderr.join()
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def socket_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="brt-", dir="/tmp")
    os.chmod(path, 0o700)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def start_runtime(socket_dir: str) -> Iterator[Any]:
    """Factory: start_runtime(**env_overrides) -> Runtime; all are killed at teardown."""
    started: list[Runtime] = []

    def start(**overrides: str | None) -> Runtime:
        runtime = Runtime(spawn(runtime_env(socket_dir, **overrides)), socket_dir)
        started.append(runtime)
        return runtime

    yield start
    for runtime in started:
        runtime.close()


@pytest.fixture
def runtime(start_runtime: Any) -> Runtime:
    return start_runtime()


@pytest.fixture(autouse=True)
def _no_stray_output() -> Iterator[None]:
    yield
    sys.stdout.flush()
