"""How `supervisor serve` stops, and how it stops a task Airflow took away, on a real Airflow.

Each test runs its own `supervisor serve` on the queue "drain" (bundles/dags/bundle_drain.py), so
stopping it leaves the session's worker alone.
"""

from __future__ import annotations

import re
import signal
import time
from datetime import UTC, datetime

import psutil
import pytest

from tests.polling import wait_processes_gone, wait_until

from .conftest import StartServe
from .serve import ServeProcess
from .stack import AirflowStack

pytestmark = pytest.mark.e2e

DAG, TASK = "bundle_drain", "sleep_a_bit"


@pytest.fixture
def drain_worker(own_serve: StartServe) -> ServeProcess:
    return own_serve()


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


def test_kill_9_mid_task_the_restarted_worker_settles_the_ti_at_once(
    airflow_stack: AirflowStack, drain_worker: ServeProcess, own_serve: StartServe
):
    """kill -9 leaves no runtime; the restart reports the TI long before the heartbeat timeout."""
    api = airflow_stack.client
    run_id = _start_and_wait_running(airflow_stack, seconds=600)
    assert drain_worker.process is not None
    runtimes = psutil.Process(drain_worker.process.pid).children(recursive=True)
    assert runtimes, "the task's runtime"

    killed = time.monotonic()
    drain_worker.process.send_signal(signal.SIGKILL)
    drain_worker.process.wait(10)
    wait_processes_gone(runtimes, timeout=5, what="no runtime alive 5 s after kill -9")
    print(f"\nruntimes gone {time.monotonic() - killed:.2f}s after kill -9")
    assert api.task_instance(DAG, run_id, TASK)["state"] == "running"

    restarted = datetime.now(UTC)
    again = own_serve()
    try:
        wait_until(
            lambda: api.task_instance(DAG, run_id, TASK)["state"] == "failed",
            timeout=60, interval=0.1, what="the TI settled as failed (no retries left)",
        )  # fmt: skip
        ended = datetime.fromisoformat(api.task_instance(DAG, run_id, TASK)["end_date"])
        print(f"TI failed in Airflow {(ended - restarted).total_seconds():.2f}s after the restart")
        events = [str(line.get("event")) for line in api.task_log(DAG, run_id, TASK, 1)]
        assert any("stopped before it reported the task's outcome" in e for e in events), events
        scheduler_log = airflow_stack.airflow_home / "run" / "scheduler.log"
        key = (
            rf"Received executor event with state success for task instance "
            rf"TaskInstanceKey\(dag_id='{DAG}', task_id='{TASK}', run_id='{re.escape(run_id)}'"
        )
        wait_until(
            lambda: re.search(key, scheduler_log.read_text(errors="replace")),
            timeout=30, what="the executor got the Celery result (its slot is free)",
        )  # fmt: skip
    finally:
        assert again.stop() == 0, again.log()[-3000:]
