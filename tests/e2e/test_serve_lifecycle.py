"""How `supervisor serve` stops, and how it stops a task Airflow took away, on a real Airflow.

Each test runs its own `supervisor serve` on the queue "drain" (bundles/dags/bundle_drain.py), so
stopping it leaves the session's worker alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.polling import wait_until

from .serve import ServeProcess
from .stack import AirflowStack

pytestmark = pytest.mark.e2e

DAG, TASK = "bundle_drain", "sleep_a_bit"


@pytest.fixture
def drain_worker(
    airflow_stack: AirflowStack, session_home: Path, tmp_path: Path
) -> Iterator[ServeProcess]:
    serve = ServeProcess(
        home=session_home, workdir=tmp_path, stack_env=airflow_stack.env, queues=("drain",)
    )
    serve.start()
    try:
        yield serve
    finally:
        if serve.alive():
            serve.stop()


def _start_and_wait_running(stack: AirflowStack, seconds: float) -> str:
    api = stack.client
    api.unpause(DAG)
    run_id = api.trigger(DAG, conf={"seconds": seconds})
    wait_until(
        lambda: api.task_instance(DAG, run_id, TASK)["state"] == "running",
        timeout=120,
        what=f"{DAG}.{TASK} running",
    )
    return run_id


def test_sigterm_lets_the_running_task_finish_and_report(
    airflow_stack: AirflowStack, drain_worker: ServeProcess
):
    run_id = _start_and_wait_running(airflow_stack, seconds=4)

    exit_code = drain_worker.stop(timeout=60)

    assert exit_code == 0, drain_worker.log()[-3000:]
    api = airflow_stack.client
    ti = api.task_instance(DAG, run_id, TASK)
    assert (ti["state"], ti["try_number"]) == ("success", 1), drain_worker.log()[-3000:]
    assert api.xcom(DAG, run_id, TASK) == 4.0
    assert "Warm shutdown" in drain_worker.log()


def test_a_task_airflow_took_away_is_stopped_and_nothing_is_reported(
    airflow_stack: AirflowStack, drain_worker: ServeProcess
):
    api = airflow_stack.client
    run_id = _start_and_wait_running(airflow_stack, seconds=60)

    api.set_task_instance_state(DAG, run_id, TASK, "success")  # "Mark as success" in the UI

    # The next heartbeat (every 2 s here) answers 409; the task is cancelled, nothing reported.
    wait_until(
        lambda: any(
            f"run_id={run_id}" in line and "state=gone" in line
            for line in drain_worker.log().splitlines()
        ),
        timeout=60,
        what="the supervisor gave the TI up",
    )
    ti = api.task_instance(DAG, run_id, TASK)
    assert ti["state"] == "success", "the operator's state was not overwritten"
    events = [str(line.get("event")) for line in api.task_log(DAG, run_id, TASK, 1)]
    assert any("Stopped without reporting a state" in e for e in events), events
    assert drain_worker.alive()
