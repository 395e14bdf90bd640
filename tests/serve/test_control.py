"""The control socket and `supervisor status`, with a real socket and CLI, in-process sources.

The same snapshot from a real `supervisor serve` with a task in flight is proven in
tests/serve/test_status.py; here the registry and the socket's life are pinned down.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from supervisor.config import load_settings
from supervisor.control import ControlServer, RunningTasks, StatusSources, fetch_status
from supervisor.errors import NotServing
from supervisor.pool import RuntimePool
from supervisor.store import BundleStore
from supervisor.workload import TaskInstance
from tests.conftest import REPO


def _ti(task_id: str = "extract") -> TaskInstance:
    return TaskInstance(
        id=uuid.uuid4(), dag_id="example_etl", task_id=task_id, run_id="manual__1", try_number=2
    )


@pytest.fixture
def pool() -> Iterator[RuntimePool]:
    pool = RuntimePool()
    yield pool
    pool.close()


def _sources(home: Path, session_home: Path, pool: RuntimePool) -> StatusSources:
    settings = load_settings(
        {"supervisor.home": home, "queues": "q1,q2", "celery.worker_concurrency": 3}, environ={}
    )
    return StatusSources(settings, pool, BundleStore(session_home), RunningTasks())


def _status_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISOR")}
    return subprocess.run(
        [sys.executable, "-m", "supervisor", "status", "--home", str(home), *args],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=60, check=False,
    )  # fmt: skip


def test_snapshot_lists_running_tis_until_they_end(
    tmp_path: Path, session_home: Path, pool: RuntimePool
) -> None:
    sources = _sources(tmp_path, session_home, pool)
    ti = _ti()
    with ControlServer(sources) as server, sources.running.track(ti):
        sources.running.update(ti.id, bundle="example-etl==2.0.0", runtime=SimpleNamespace(pid=7))  # type: ignore[arg-type]
        status = fetch_status(tmp_path)
        assert stat.S_IMODE(server.path.stat().st_mode) == 0o600
        assert stat.S_IMODE(server.path.parent.stat().st_mode) == 0o700

        (running,) = status["running"]
        assert running == {
            "ti_id": str(ti.id), "dag_id": "example_etl", "task_id": "extract",
            "run_id": "manual__1", "try_number": 2, "map_index": -1,
            "bundle": "example-etl==2.0.0", "runtime_pid": 7, "age_s": running["age_s"],
        }  # fmt: skip
        assert running["age_s"] >= 0
        assert status["queues"] == ["q1", "q2"] and status["concurrency"] == 3
        assert status["supervisor"]["pid"] == os.getpid()
        assert status["supervisor"]["metrics_url"] is None
        assert [b["bundle"] for b in status["installed"]] == [
            "example-etl==1.0.0", "example-etl==2.0.0",
        ]  # fmt: skip
        assert status["runtimes"] == [] and status["pool"]["live"] == 0
    assert sources.running.snapshot() == []
    assert not server.path.exists(), "stop removes the socket"


def test_status_cli_prints_json_and_a_summary(
    tmp_path: Path, session_home: Path, pool: RuntimePool
) -> None:
    sources = _sources(tmp_path, session_home, pool)
    ti = _ti("load")
    with ControlServer(sources), sources.running.track(ti):
        as_json = _status_cli(tmp_path, "--json")
        summary = _status_cli(tmp_path)

    assert as_json.returncode == 0, as_json.stderr
    assert [t["ti_id"] for t in json.loads(as_json.stdout)["running"]] == [str(ti.id)]
    assert summary.returncode == 0, summary.stderr
    assert "running: 1" in summary.stdout
    assert "example_etl.load  run manual__1  try 2  bundle not resolved yet" in summary.stdout
    assert "* example-etl==1.0.0" in summary.stdout


def test_status_without_a_supervisor_is_one_line_and_exit_1(tmp_path: Path) -> None:
    proc = _status_cli(tmp_path, "--json")

    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr == (
        f"no supervisor serving in {tmp_path}: start one with `supervisor serve`\n"
    )


def test_a_stale_socket_of_a_killed_supervisor_is_replaced(
    tmp_path: Path, session_home: Path, pool: RuntimePool
) -> None:
    sources = _sources(tmp_path, session_home, pool)
    path = tmp_path / "run" / "control.sock"
    path.parent.mkdir()
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(path))  # closed without unlink, as after SIGKILL
    with pytest.raises(NotServing, match="no supervisor serving"):
        fetch_status(tmp_path)

    with ControlServer(sources):
        assert fetch_status(tmp_path)["supervisor"]["pid"] == os.getpid()


def test_a_second_supervisor_on_the_same_home_leaves_the_first_socket_alone(
    tmp_path: Path, session_home: Path, pool: RuntimePool, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = _sources(tmp_path, session_home, pool), _sources(tmp_path, session_home, pool)
    ti = _ti()
    with ControlServer(first), first.running.track(ti):
        with ControlServer(second):
            pass
        assert "control.disabled" in caplog.text
        assert [t["ti_id"] for t in fetch_status(tmp_path)["running"]] == [str(ti.id)]
