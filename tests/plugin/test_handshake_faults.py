"""Each way a runtime can fail to start gives one clear error naming the bundle (real processes)."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from bundle_runtime import protocol
from supervisor.errors import (
    HandshakeError,
    ProtocolVersionError,
    RuntimeStartError,
    StartTimeout,
)
from supervisor.plugin.runtime import start_runtime
from tests.plugin.runtimes import pythonpath, sample_spec, script_spec

LABEL = "sample-bundle==0.0.0"


def _assert_reaped(pid: int | None) -> None:
    assert pid is not None
    assert not psutil.pid_exists(pid), f"runtime pid {pid} was not killed and reaped"


def test_text_printed_at_interpreter_start_is_quoted(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("print('hello from sitecustomize')\n")
    spec = sample_spec(env={"PYTHONPATH": pythonpath(site)})

    with pytest.raises(HandshakeError) as info:
        start_runtime(spec)

    message = str(info.value)
    assert message.startswith(
        f"bundle {LABEL}: runtime wrote 'hello from sitecustomize' to stdout before its "
        "handshake line; task code must log or use stderr at import time"
    )
    assert info.value.bundle == LABEL
    _assert_reaped(info.value.pid)


def test_wrong_cookie_quotes_the_runtime_explanation() -> None:
    with pytest.raises(HandshakeError) as info:
        start_runtime(sample_spec(), cookie="not-the-cookie")

    first_line = str(info.value).splitlines()[0]
    assert first_line.startswith(f"bundle {LABEL}: runtime (pid ")
    assert "exited with code 1 before its handshake line: " in first_line
    assert protocol.MAGIC_COOKIE_KEY in first_line  # the runtime says which variable was wrong
    assert protocol.MAGIC_COOKIE_KEY in info.value.stderr_tail
    _assert_reaped(info.value.pid)


def test_no_common_protocol_version_names_both_sides() -> None:
    with pytest.raises(HandshakeError) as info:
        start_runtime(sample_spec(), protocol_versions=(99,))

    first_line = str(info.value).splitlines()[0]
    assert "exited with code 1 before its handshake line" in first_line
    assert "[99]" in first_line and str(list(protocol.APP_PROTOCOL_VERSIONS)) in first_line
    _assert_reaped(info.value.pid)


def test_crash_before_handshake_gives_exit_code_and_stderr() -> None:
    code = "import sys; sys.stderr.write('cannot import numpy\\n'); sys.exit(3)"

    with pytest.raises(HandshakeError) as info:
        start_runtime(script_spec(code))

    assert str(info.value).splitlines()[0] == (
        f"bundle fake-bundle==1.0.0: runtime (pid {info.value.pid}) exited with code 3 before "
        "its handshake line: cannot import numpy"
    )
    assert info.value.stderr_tail == "cannot import numpy"
    _assert_reaped(info.value.pid)


def test_no_handshake_in_time_is_a_start_timeout_and_kills() -> None:
    spec = script_spec("import time; time.sleep(120)", start_timeout_s=0.5)

    with pytest.raises(StartTimeout) as info:
        start_runtime(spec)

    assert str(info.value).startswith(
        f"bundle fake-bundle==1.0.0: runtime (pid {info.value.pid}) wrote no handshake line "
        "within 0.5s"
    )
    _assert_reaped(info.value.pid)


def test_socket_path_too_long_fails_before_spawning(tmp_path: Path) -> None:
    marker = tmp_path / "spawned"
    root = tmp_path / ("x" * (protocol.MAX_SOCKET_PATH_BYTES - len(str(tmp_path))))
    spec = script_spec(f"open({str(marker)!r}, 'w')")

    with pytest.raises(RuntimeStartError) as info:
        start_runtime(spec, socket_root=root)

    message = str(info.value)
    assert message.startswith(f"bundle fake-bundle==1.0.0: socket path '{root}/")
    assert f"longer than the {protocol.MAX_SOCKET_PATH_BYTES}" in message
    assert not marker.exists(), "the runtime was spawned anyway"
    assert list(root.iterdir()) == [], "the socket directory was left behind"


@pytest.mark.parametrize(
    ("line", "error", "expected"),
    [
        (
            "2|1|unix|/tmp/x.sock|grpc|",
            ProtocolVersionError,
            "runtime speaks handshake core version 2, the supervisor speaks 1",
        ),
        (
            "1|7|unix|/tmp/x.sock|grpc|",
            ProtocolVersionError,
            "runtime chose protocol version 7, the supervisor speaks [1]",
        ),
        (
            "1|1|tcp|127.0.0.1:9|grpc|",
            HandshakeError,
            "runtime offered 'grpc' over 'tcp'; the supervisor speaks only 'grpc' over 'unix'",
        ),
        ("1|1|unix|/tmp/x.sock|netrpc|", HandshakeError, "runtime offered 'netrpc' over 'unix'"),
        ("1|1|unix", HandshakeError, "runtime wrote '1|1|unix' to stdout before its handshake"),
    ],
)
def test_bad_handshake_lines(line: str, error: type[RuntimeStartError], expected: str) -> None:
    code = f"import sys, time; print({line!r}, flush=True); time.sleep(120)"

    with pytest.raises(error) as info:
        start_runtime(script_spec(code))

    assert type(info.value) is error
    assert str(info.value).startswith(f"bundle fake-bundle==1.0.0: {expected}")
    _assert_reaped(info.value.pid)


def test_missing_command_names_the_bundle_and_argv(tmp_path: Path) -> None:
    missing = str(tmp_path / "venv" / "bin" / "bundle-runtime")
    spec = script_spec("", argv=(missing,))

    with pytest.raises(RuntimeStartError) as info:
        start_runtime(spec)

    assert str(info.value).startswith(
        f"bundle fake-bundle==1.0.0: could not run the runtime command [{missing!r}]"
    )


def test_airflow_settings_never_reach_the_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__API__SECRET_KEY", "s3cret")
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", "postgres://u:pw@db/x")
    monkeypatch.setenv("AIRFLOW_VAR_API_KEY", "k3y")
    monkeypatch.setenv("SUPERVISOR_HOME", "/srv/supervisor")
    code = (
        "import os, sys; sys.stderr.write(repr(sorted(k for k in os.environ "
        "if k.startswith(('AIRFLOW', 'SUPERVISOR_')))) + '\\n'); sys.exit(4)"
    )
    with pytest.raises(HandshakeError) as info:
        start_runtime(script_spec(code))
    assert info.value.stderr_tail == "[]"
    with pytest.raises(ValueError, match="AIRFLOW__CORE__X"):
        script_spec("", env={"AIRFLOW__CORE__X": "1"})
