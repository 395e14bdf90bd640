"""Airflow's api-server goes away for 60 s while 10 bundle tasks run; no final state is lost.

The api-server process is stopped for real (SIGTERM to its process group, as an operator's
restart or a crash would), the scheduler keeps running, and `scripts/airflow_stack.sh up` starts
it again after the outage. Our worker keeps each TI going through the outage (a heartbeat that
cannot reach the API is not a refusal), keeps each final state until the API is back, and only
then writes the Celery result the executor waits for.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from tests.polling import wait_until

from .conftest import STACK_FLAGS, StartServe, _run_or_fail
from .serve import ServeProcess
from .stack import AirflowStack

pytestmark = pytest.mark.e2e

DAG, TASK = "bundle_drain", "sleep_a_bit"
TASKS = 10
#: The outage of the acceptance criterion; the tasks (15 s) end well inside it.
OUTAGE_S = 60.0


@pytest.fixture
def wide_worker(own_serve: StartServe) -> ServeProcess:
    return own_serve(concurrency=TASKS)


def _stop_api_server(stack: AirflowStack) -> None:
    pid = int((stack.airflow_home / "run" / "api-server.pid").read_text().split()[0])
    os.killpg(pid, signal.SIGTERM)  # its pid is its process group (airflow_stack.sh, setsid)
    wait_until(lambda: not _alive(pid), timeout=60, what="api-server stopped")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_ten_final_states_reach_airflow_after_a_60s_api_server_outage(
    airflow_stack: AirflowStack, wide_worker: ServeProcess
):
    api = airflow_stack.client
    api.unpause(DAG)
    # Each task outlives the time it takes to stop the api-server, and ends inside the outage.
    runs = [api.trigger(DAG, conf={"seconds": 15}) for _ in range(TASKS)]
    wait_until(
        lambda: all(api.task_instance(DAG, r, TASK)["state"] == "running" for r in runs),
        timeout=120, what=f"{TASKS} tasks running",
    )  # fmt: skip

    _stop_api_server(airflow_stack)
    try:
        threading.Event().wait(OUTAGE_S)  # the outage itself, not a synchronisation
    finally:
        _run_or_fail("up", extra_env=STACK_FLAGS)
    back = time.monotonic()

    wait_until(
        lambda: all(api.task_instance(DAG, r, TASK)["state"] == "success" for r in runs),
        timeout=120, interval=0.5, what="every final state in Airflow",
    )  # fmt: skip
    print(f"\n{TASKS} states in Airflow {time.monotonic() - back:.1f}s after it came back")
    log = wide_worker.log()
    assert "ti.api_unreachable" in log, "the outage never reached the worker"
    assert all(api.xcom(DAG, r, TASK) == 15.0 for r in runs)
    scheduler_log = (airflow_stack.airflow_home / "run" / "scheduler.log").read_text()
    for run_id in runs:
        assert f"run_id='{run_id}'" in scheduler_log
    wait_until(
        lambda: all(
            f"Received executor event with state success for task instance "
            f"TaskInstanceKey(dag_id='{DAG}', task_id='{TASK}', run_id='{r}'"
            in (airflow_stack.airflow_home / "run" / "scheduler.log").read_text()
            for r in runs
        ),
        timeout=60, what="the executor got every Celery result",
    )  # fmt: skip
