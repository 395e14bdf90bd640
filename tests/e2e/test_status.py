"""Metrics and `supervisor status` of the session's `supervisor serve` against real Airflow.

The acceptance of issue #6: `curl :PORT/metrics` shows the counters moving as DAG runs go through
the supervisor, and `supervisor status --json` describes the running supervisor (a TI in flight
is proven with real processes in tests/serve/test_status.py, which can hold a task mid-run).
"""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.polling import wait_until

from .serve import QUEUES, REPO, ServeProcess
from .stack import AirflowStack

pytestmark = pytest.mark.e2e

RUN_TIMEOUT_S = 180
V1 = {"bundle": "example-etl", "version": "1.0.0"}
V2 = {"bundle": "example-etl", "version": "2.0.0"}


def scrape(serve: ServeProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(serve.metrics_url, timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(scraped: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_the_tasks_of_dag_runs(
    airflow_stack: AirflowStack, supervisor_serve: ServeProcess
) -> None:
    api = airflow_stack.client
    before = scrape(supervisor_serve)
    dags = {"bundle_pinned_v1": V1, "bundle_pinned_v2": V2}

    for dag_id in dags:
        api.unpause(dag_id)
        run_id = api.trigger(dag_id)
        run = api.wait_for_run(dag_id, run_id, timeout=RUN_TIMEOUT_S)
        assert run["state"] == "success", api.describe_run(dag_id, run_id)

    success = "supervisor_tasks_total"
    for labels in dags.values():
        # The counter moves just after the final state reached Airflow: poll, with a deadline.
        wait_until(
            lambda labels=labels: sample(scrape(supervisor_serve), success, state="success",
                                         **labels)
            > sample(before, success, state="success", **labels),
            timeout=30,
            what=f"supervisor_tasks_total success for {labels}",
        )  # fmt: skip
    after = scrape(supervisor_serve)
    for labels in dags.values():
        starts = sum(
            sample(after, "supervisor_runtime_starts_total", kind=kind, **labels)
            - sample(before, "supervisor_runtime_starts_total", kind=kind, **labels)
            for kind in ("warm", "cold")
        )
        assert starts >= 1, f"no runtime lease counted for {labels}"
        assert sample(after, "supervisor_bundle_install_seconds", **labels) > 0
    assert sample(after, "supervisor_queue_wait_seconds_count") > sample(
        before, "supervisor_queue_wait_seconds_count"
    )


def test_status_json_describes_the_running_supervisor(
    airflow_stack: AirflowStack, supervisor_serve: ServeProcess
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "supervisor", "status", "--json"],
        capture_output=True, text=True, env=supervisor_serve.env, cwd=REPO, timeout=60,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr

    status = json.loads(proc.stdout)
    assert supervisor_serve.process is not None
    assert status["supervisor"]["pid"] == supervisor_serve.process.pid
    assert status["supervisor"]["metrics_url"] == supervisor_serve.metrics_url
    assert status["queues"] == list(QUEUES)
    assert [b["bundle"] for b in status["installed"]] == [
        "example-etl==1.0.0",
        "example-etl==2.0.0",
    ]
    assert isinstance(status["running"], list)
    for runtime in status["runtimes"]:
        assert runtime["bundle"].startswith("example-etl==") and runtime["rss_bytes"] > 0
