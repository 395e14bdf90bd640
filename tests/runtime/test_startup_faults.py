"""Start-up faults on a real process: each ends with exit 1 and one clear line on stderr."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bundle_runtime import protocol
from bundle_runtime._proto import runtime_pb2 as pb

from .conftest import PYTHON, ROOT, WAIT_S, Runtime, runtime_env, spawn


def run_to_exit(env: dict[str, str]) -> tuple[int, str, bytes]:
    """Run until exit with stdin held open (closing it is the "supervisor gone" signal)."""
    proc = spawn(env)
    err = proc.stderr.read()  # small; the process exits on its own
    out = proc.stdout.read()
    code = proc.wait(WAIT_S)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        pipe.close()
    return code, err.decode(), out


@pytest.mark.parametrize("cookie", [None, "wrong"])
def test_without_the_cookie_it_explains_it_is_a_plugin(socket_dir: str, cookie: str | None):
    code, err, out = run_to_exit(runtime_env(socket_dir, **{protocol.MAGIC_COOKIE_KEY: cookie}))
    assert code == 1
    assert out == b""
    assert err.startswith("This binary is a plugin for the Airflow bundle supervisor")
    assert "supervisor bundle test" in err


def test_no_common_version_names_both_sides_and_what_to_upgrade(socket_dir: str):
    env = runtime_env(socket_dir, **{protocol.PROTOCOL_VERSIONS_ENV: "2,3"})
    code, err, out = run_to_exit(env)
    assert (code, out) == (1, b"")
    assert err.count("\n") == 1
    assert "the supervisor offered [2, 3], this bundle-runtime speaks [1]" in err
    assert "reinstall the bundle" in err


def test_older_supervisor_is_told_to_upgrade(socket_dir: str):
    code, err, _ = run_to_exit(runtime_env(socket_dir, **{protocol.PROTOCOL_VERSIONS_ENV: "0"}))
    assert code == 1 and "upgrade the supervisor" in err


def test_junk_versions_are_refused(socket_dir: str):
    code, err, _ = run_to_exit(runtime_env(socket_dir, **{protocol.PROTOCOL_VERSIONS_ENV: "one"}))
    assert code == 1 and "'one' is not a comma-separated list of integers" in err


def test_socket_path_too_long_is_one_clear_line(socket_dir: str):
    deep = Path(socket_dir, "d" * 60, "e" * 60)
    deep.mkdir(parents=True)
    code, err, out = run_to_exit(runtime_env(str(deep)))
    assert (code, out) == (1, b"")
    assert err.count("\n") == 1
    assert f"longer than the {protocol.MAX_SOCKET_PATH_BYTES} Unix sockets allow" in err


def test_missing_socket_dir_is_refused(socket_dir: str):
    code, err, _ = run_to_exit(runtime_env(socket_dir, **{protocol.SOCKET_DIR_ENV: None}))
    assert code == 1 and protocol.SOCKET_DIR_ENV in err


def test_bundle_import_error_prints_traceback_and_exits_1(socket_dir: str):
    env = runtime_env(socket_dir, **{protocol.BUNDLE_ENV: "tests.runtime.no_such_module:bundle"})
    code, err, out = run_to_exit(env)
    assert (code, out) == (1, b"")
    assert "Traceback" in err and "ModuleNotFoundError" in err
    assert "bundle 'tests.runtime.no_such_module:bundle' failed to load" in err


def test_unknown_entry_point_lists_what_is_installed(socket_dir: str):
    code, err, _ = run_to_exit(runtime_env(socket_dir, **{protocol.BUNDLE_ENV: "no-such-bundle"}))
    assert code == 1
    assert "bundle 'no-such-bundle': no entry point of that name" in err


def test_entry_point_bundle_in_a_real_process(start_runtime, tmp_path: Path):
    """The normal path: BUNDLE_ENV is the distribution name, metadata gives name and version."""
    (tmp_path / "etl_tasks.py").write_text(
        "from bundle_runtime import Bundle\nbundle = Bundle()\n"
        "@bundle.task(dag_id='etl', task_id='load')\ndef load(ctx):\n    return 7\n"
    )
    dist_info = tmp_path / "example_etl-2.0.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: example-etl\nVersion: 2.0.0\n"
    )
    (dist_info / "entry_points.txt").write_text(
        f"[{protocol.ENTRY_POINT_GROUP}]\nexample-etl = etl_tasks:bundle\n"
    )
    runtime: Runtime = start_runtime(
        **{protocol.BUNDLE_ENV: "example-etl", "PYTHONPATH": f"{tmp_path}:{ROOT}"}
    )
    reply = runtime.stub.Describe(pb.DescribeRequest())
    assert (reply.bundle_name, reply.bundle_version) == ("example-etl", "2.0.0")
    assert [(t.dag_id, t.task_id) for t in reply.tasks] == [("etl", "load")]


PARENT = textwrap.dedent("""
    import subprocess, sys
    child = subprocess.Popen(
        [sys.argv[1], "-m", "bundle_runtime"], stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, start_new_session=True,
    )
    child.stdout.readline()
    print(child.pid, flush=True)
    sys.stdin.read()
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_runtime_dies_with_its_parent_even_without_stdin_lifeline(socket_dir: str):
    """kill -9 of the parent: PR_SET_PDEATHSIG alone (stdin is /dev/null here) ends the runtime."""
    parent = subprocess.Popen(
        [str(PYTHON), "-c", PARENT, str(PYTHON)],
        cwd=ROOT,
        env=runtime_env(socket_dir),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    runtime_pid = int(parent.stdout.readline())
    pidfd = os.pidfd_open(runtime_pid)
    try:
        parent.kill()
        parent.wait(WAIT_S)
        readable, _, _ = select.select([pidfd], [], [], WAIT_S)
        assert readable, f"runtime {runtime_pid} outlived its parent"
    finally:
        if not select.select([pidfd], [], [], 0)[0]:
            os.kill(runtime_pid, signal.SIGKILL)
        os.close(pidfd)
        parent.stdin.close()
        parent.stdout.close()
