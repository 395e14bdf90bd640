"""stdout/stderr handling and small values, over real pipes and threads (no runtime needed)."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from supervisor.plugin.handshake import StdoutReader
from supervisor.plugin.launch import RuntimeSpec, make_socket_dir, runtime_env
from supervisor.plugin.process import describe_exit
from supervisor.plugin.stderr import TAIL_LINES, StderrPump


@pytest.fixture
def pipe() -> Iterator[tuple[IO[bytes], IO[bytes]]]:
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "rb") as reader, os.fdopen(write_fd, "wb") as writer:
        yield reader, writer


def test_stderr_json_lines_become_log_records(
    pipe: tuple[IO[bytes], IO[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    reader, writer = pipe
    pump = StderrPump(reader, bundle="etl==2.0.0", pid=4242).start()
    lines = [
        {"@level": "debug", "@message": "socket bound", "@timestamp": "t", "path": "/x"},
        {"@level": "warn", "@message": "slow import", "@timestamp": "t", "module": "pandas"},
        {"@level": "error", "@message": "clash", "name": "n", "bundle": "b"},
    ]
    with caplog.at_level(logging.DEBUG, logger="supervisor.runtime"):
        writer.write(b"".join(json.dumps(line).encode() + b"\n" for line in lines))
        writer.write(b"Fatal Python error: Segmentation fault\n")
        writer.close()
        assert pump.join(5)

    records = [r for r in caplog.records if r.name == "supervisor.runtime"]
    assert [(r.levelno, r.getMessage()) for r in records] == [
        (logging.DEBUG, "socket bound"),
        (logging.WARNING, "slow import"),
        (logging.ERROR, "clash"),
        (logging.WARNING, "Fatal Python error: Segmentation fault"),
    ]
    assert all((r.bundle, r.pid) == ("etl==2.0.0", 4242) for r in records)  # type: ignore[attr-defined]
    assert records[0].path == "/x"  # type: ignore[attr-defined]
    # Keys that collide with LogRecord attributes or our own context are renamed, not dropped.
    assert (records[2].runtime_name, records[2].runtime_bundle) == ("n", "b")  # type: ignore[attr-defined]
    assert pump.last_problem() == "Fatal Python error: Segmentation fault"
    assert pump.tail().splitlines()[:2] == [
        "debug: socket bound path='/x'",
        "warn: slow import module='pandas'",
    ]


def test_stderr_tail_keeps_the_last_lines(pipe: tuple[IO[bytes], IO[bytes]]) -> None:
    reader, writer = pipe
    pump = StderrPump(reader, bundle="b==1", pid=1).start()
    writer.write(b"".join(f"line {i}\n".encode() for i in range(TAIL_LINES + 10)))
    writer.close()
    assert pump.join(5)

    tail = pump.tail().splitlines()
    assert len(tail) == TAIL_LINES
    assert (tail[0], tail[-1]) == ("line 10", f"line {TAIL_LINES + 9}")


def test_stdout_after_the_handshake_is_logged_verbatim(
    pipe: tuple[IO[bytes], IO[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    reader, writer = pipe
    stdout = StdoutReader(reader, bundle="b==1", pid=7).start()
    with caplog.at_level(logging.WARNING, logger="supervisor.runtime"):
        writer.write(b"1|1|unix|/tmp/s/runtime.sock|grpc|\nstray output from C\n")
        writer.close()
        first = stdout.next_event(5)
        assert stdout.join(5)

    assert first == "1|1|unix|/tmp/s/runtime.sock|grpc|"
    assert [r.getMessage() for r in caplog.records] == ["stray output from C"]


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (0, "exited with code 0"),
        (3, "exited with code 3"),
        (
            -signal.SIGKILL,
            "killed by SIGKILL (signal 9, possibly the kernel's OOM killer "
            "or the task memory limit)",
        ),
        (-signal.SIGSEGV, "died with SIGSEGV (signal 11, a segfault in native code)"),
        (-signal.SIGTERM, "killed by SIGTERM (signal 15, asked to stop)"),
        (-signal.SIGUSR1, "killed by SIGUSR1 (signal 10)"),
        (-99, "died with signal 99"),
    ],
)
def test_describe_exit(code: int, text: str) -> None:
    assert describe_exit(code) == text


def test_runtime_spec_is_a_hashable_immutable_key() -> None:
    env = {"A": "1"}
    one = RuntimeSpec(bundle="b==1", argv=("x",), bundle_env="b", env=env)
    env["A"] = "2"

    assert one == RuntimeSpec(bundle="b==1", argv=("x",), bundle_env="b", env={"A": "1"})
    assert {one: 1}[RuntimeSpec(bundle="b==1", argv=("x",), bundle_env="b", env={"A": "1"})] == 1
    assert one != RuntimeSpec(bundle="b==2", argv=("x",), bundle_env="b", env={"A": "1"})
    with pytest.raises(TypeError):
        one.env["A"] = "3"  # type: ignore[index]


def test_protocol_variables_win_over_spec_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", "secret")
    monkeypatch.setenv("PATH", "/usr/bin")
    spec = RuntimeSpec(
        bundle="b==1",
        argv=("x",),
        bundle_env="b",
        env={"BUNDLE_RUNTIME_SOCKET_DIR": "/elsewhere", "EXTRA": "1"},
    )

    env = runtime_env(spec, Path("/tmp/bsv-0/1-abc"), protocol_versions=(1, 2))

    assert "AIRFLOW__CORE__FERNET_KEY" not in env
    assert (env["PATH"], env["EXTRA"]) == ("/usr/bin", "1")
    assert env["BUNDLE_RUNTIME_SOCKET_DIR"] == "/tmp/bsv-0/1-abc"
    assert env["BUNDLE_RUNTIME_PROTOCOL_VERSIONS"] == "1,2"
    assert env["BUNDLE_RUNTIME_BUNDLE"] == "b"


def test_stale_socket_dirs_are_swept_but_live_ones_kept(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    root = tmp_path / "sockets"
    root.mkdir(mode=0o700)
    stale, live = root / f"{dead.pid}-stale", root / f"{dead.pid}-live"
    stale.mkdir()
    live.mkdir()
    (stale / "runtime.sock").touch()  # left by a killed runtime: nothing listens
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(live / "runtime.sock"))  # another pid namespace's runtime, say
        listener.listen()

        made = make_socket_dir(root, bundle="b==1")

        assert sorted(p.name for p in root.iterdir()) == sorted([made.name, live.name])
    assert made.name.startswith(f"{os.getpid()}-")
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
