"""`supervisor status --json` and `/metrics` of a real `supervisor serve`, with a TI in flight.

Real processes throughout: the serve subprocess, its Celery worker on real Redis (a private
queue), the example bundle's runtime in its own venv, and an HTTP Execution API. The API is the
in-memory fake of tests/api served over real HTTP (tests/apistub.py), so the test can hold one
HostCall open: `read_variable` asks for `example_var` and the answer waits until the test has
looked at the running TI. No sleeps: every wait is on an event or polls with a deadline.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from celery import Celery
from prometheus_client.parser import text_string_to_metric_families

from supervisor.store import BundleStore
from tests.apistub import HttpFakeApi, execute_task
from tests.conftest import REPO

from .conftest import ServeProcess, serve_env

BUNDLE = "example-etl==2.0.0"
RESULT_TIMEOUT_S = 60
#: Labels of the bundle version every task here runs in.
V2 = {"bundle": "example-etl", "version": "2.0.0"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Serve(ServeProcess):
    """`supervisor serve` on a private queue, home and metrics port."""

    def __init__(self, tmp: Path, home: Path, api: HttpFakeApi) -> None:
        self.home = home
        self.queue = f"status-test-{uuid.uuid4().hex[:8]}"
        self.metrics_port = _free_port()
        config = tmp / "supervisor.toml"
        config.write_text(
            f'[supervisor]\nqueues = ["{self.queue}"]\nheartbeat_interval_s = 1\n'
            f'metrics_port = {self.metrics_port}\nmetrics_host = "127.0.0.1"\n'
            f'[supervisor.queue_to_bundle]\n"{self.queue}" = "{BUNDLE}"\n'
            "[celery]\nworker_concurrency = 2\n"
        )
        env = serve_env(AIRFLOW__CORE__EXECUTION_API_SERVER_URL=api.url, SUPERVISOR_HOME=str(home))
        super().__init__(tmp, ["--config", str(config), "--hostname", f"{self.queue}.test"], env)

    def status(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "supervisor", "status", *args],
            capture_output=True, text=True, env=self.env, cwd=REPO, timeout=60, check=False,
        )  # fmt: skip

    def status_json(self) -> dict[str, Any]:
        proc = self.status("--json")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def metrics(self) -> dict[MetricKey, float]:
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).text
        return {
            _key(s.name, **s.labels): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }


MetricKey = tuple[str, tuple[tuple[str, str], ...]]


def _key(name: str, **labels: str) -> MetricKey:
    return name, tuple(sorted(labels.items()))


@pytest.fixture(scope="module")
def serve(
    tmp_path_factory: pytest.TempPathFactory,
    example_wheels: dict[str, Path],
    uv_cache: Path,
    api: HttpFakeApi,
) -> Iterator[Serve]:
    # Its own home: the session home may have another serve (the e2e one) on its socket.
    home = tmp_path_factory.mktemp("status-home")
    BundleStore(home, cache_dir=uv_cache).install(example_wheels["2.0.0"])
    with Serve(tmp_path_factory.mktemp("status"), home, api) as serve:
        yield serve
        api.release.set()


def _run(client: Celery, serve: Serve, task_id: str) -> str:
    ti_id, workload = execute_task(serve.queue, task_id=task_id)
    result = client.send_task("execute_workload", args=[workload], queue=serve.queue)
    result.get(timeout=RESULT_TIMEOUT_S)
    return ti_id


def test_status_lists_the_running_ti_then_metrics_count_it(
    serve: Serve, client: Celery, api: HttpFakeApi
) -> None:
    api.fake.variables["example_var"] = "hello"
    ti_id, workload = execute_task(serve.queue, task_id="read_variable")
    result = client.send_task("execute_workload", args=[workload], queue=serve.queue)
    serve.wait_for(api.reached.is_set, "read_variable's host call", RESULT_TIMEOUT_S)

    status = serve.status_json()
    (running,) = status["running"]
    assert running["ti_id"] == ti_id
    assert (running["dag_id"], running["task_id"], running["run_id"]) == (
        "example_etl",
        "read_variable",
        "r",
    )
    assert running["try_number"] == 1 and running["bundle"] == BUNDLE
    assert running["age_s"] > 0
    runtime = psutil.Process(running["runtime_pid"])
    assert runtime.ppid() == serve.process.pid, "the TI's runtime is a child of this serve"
    assert [(r["pid"], r["busy"]) for r in status["runtimes"]] == [(runtime.pid, True)]
    assert status["queues"] == [serve.queue] and status["concurrency"] == 2
    assert status["supervisor"]["pid"] == serve.process.pid
    assert status["supervisor"]["metrics_url"] == f"http://127.0.0.1:{serve.metrics_port}/metrics"
    assert status["installed"] == [
        {"bundle": BUNDLE, "name": "example-etl", "version": "2.0.0", "active": True}
    ]
    summary = serve.status()
    assert summary.returncode == 0, summary.stderr
    assert f"example_etl.read_variable  run r  try 1  {BUNDLE}  runtime pid {runtime.pid}" in (
        summary.stdout
    )
    assert serve.metrics()[_key("supervisor_runtimes", **V2, state="busy")] == 1

    api.release.set()
    assert result.get(timeout=RESULT_TIMEOUT_S) is None
    assert api.fake.states[ti_id] == "success"
    after = serve.status_json()
    assert after["running"] == []
    assert [(r["pid"], r["busy"], r["tasks_run"]) for r in after["runtimes"]] == [
        (runtime.pid, False, 1)
    ]


def test_metrics_move_as_tasks_run(serve: Serve, client: Celery, api: HttpFakeApi) -> None:
    api.release.set()
    before = serve.metrics()

    # Without example_var the API answers 404 and read_variable fails (VariableNotFound).
    api.fake.variables.pop("example_var", None)
    ran = {
        task_id: _run(client, serve, task_id) for task_id in ("noop", "fail_hard", "read_variable")
    }
    assert {t: api.fake.states[ti_id] for t, ti_id in ran.items()} == {
        "noop": "success", "fail_hard": "failed", "read_variable": "failed",
    }  # fmt: skip

    after = serve.metrics()

    def delta(name: str, **labels: str) -> float:
        key = _key(name, **labels)
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("supervisor_tasks_total", **V2, state="success") == 1
    assert delta("supervisor_tasks_total", **V2, state="failed") == 2
    assert delta("supervisor_runtime_starts_total", **V2, kind="warm") == 3
    assert delta("supervisor_runtime_starts_total", **V2, kind="cold") == 0
    assert delta("supervisor_queue_wait_seconds_count") == 3
    not_found = {"endpoint": "GET variables/{key}", "status": "404"}
    assert delta("supervisor_api_errors_total", **not_found) == 1
    assert after[_key("supervisor_runtime_spawn_seconds_count", **V2)] == 1
    assert after[_key("supervisor_runtime_rss_bytes", **V2)] > 0
    assert after[_key("supervisor_bundle_install_seconds", **V2)] > 0
