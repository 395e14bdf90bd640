"""`supervisor serve` against a real Airflow 3.3.2: every outcome read back through its REST API.

The DAGs are in bundles/dags/, their bundle tasks in bundles/example-etl/ (both versions installed
by the session fixture). Python tasks in the same DAGs run on Airflow's own Celery worker. After
each run the test checks what an operator would: no Celery message left behind for the run, and
a terminal executor event for every bundle TI in the scheduler's log, i.e. the CeleryExecutor got
our result and freed the slot.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import redis

from tests.polling import wait_until

from .airflow import AirflowClient
from .broker import messages_of_run
from .serve import QUEUES, ServeProcess
from .stack import AirflowStack

pytestmark = pytest.mark.e2e

RUN_TIMEOUT_S = 180
PASSWORD = "s3cret-e2e-pw"


def run_dag(api: AirflowClient, dag_id: str) -> tuple[str, dict[str, Any]]:
    api.unpause(dag_id)
    run_id = api.trigger(dag_id)
    return run_id, api.wait_for_run(dag_id, run_id, timeout=RUN_TIMEOUT_S)


def states(api: AirflowClient, dag_id: str, run_id: str) -> dict[str, tuple[str, int]]:
    return {
        ti["task_id"]: (ti["state"], ti["try_number"]) for ti in api.task_instances(dag_id, run_id)
    }


def log_events(
    api: AirflowClient, dag_id: str, run_id: str, task_id: str, try_number: int = 1
) -> list[str]:
    return [str(line.get("event")) for line in api.task_log(dag_id, run_id, task_id, try_number)]


def assert_settled(
    stack: AirflowStack,
    broker: redis.Redis,
    dag_id: str,
    run_id: str,
    bundle_tasks: list[tuple[str, int]],
) -> None:
    """No message of the run left in Redis; the executor saw a terminal event for each bundle TI."""
    wait_until(
        lambda: not messages_of_run(broker, dag_id, run_id, queues=QUEUES),
        timeout=30,
        what=f"no Celery message of {dag_id}/{run_id} left (queue lists, unacked hash)",
    )
    scheduler_log = stack.airflow_home / "run" / "scheduler.log"
    for task_id, try_number in bundle_tasks:
        key = (
            rf"Received executor event with state (success|failed) for task instance "
            rf"TaskInstanceKey\(dag_id='{dag_id}', task_id='{task_id}', run_id='{run_id}', "
            rf"try_number={try_number}"
        )
        wait_until(
            lambda key=key: re.search(key, scheduler_log.read_text(errors="replace")),
            timeout=30,
            what=f"executor event for {dag_id}.{task_id} try {try_number}",
        )


def test_xcom_types_survive_python_to_bundle_to_python(
    airflow_stack: AirflowStack, broker_redis: redis.Redis, supervisor_serve: ServeProcess
):
    api, dag = airflow_stack.client, "bundle_xcom_types"
    run_id, run = run_dag(api, dag)

    assert run["state"] == "success", api.describe_run(dag, run_id)
    produced = api.xcom(dag, run_id, "produce")
    assert api.xcom(dag, run_id, "echo") == produced
    assert api.xcom(dag, run_id, "check") == {
        "int": "int",
        "float": "float",
        "str": "str",
        "list": "list",
        "dict": "dict",
        "none": "NoneType",
    }
    (echo,) = [ti for ti in api.task_instances(dag, run_id) if ti["task_id"] == "echo"]
    assert echo["queue"] == "bundles"
    assert echo["hostname"], "/run reported the supervisor's hostname"
    assert_settled(airflow_stack, broker_redis, dag, run_id, [("echo", 1)])


def test_variables_connections_and_xcom_go_through_the_execution_api(
    airflow_stack: AirflowStack, broker_redis: redis.Redis, supervisor_serve: ServeProcess
):
    api, dag = airflow_stack.client, "example_etl"
    api.set_variable("example_var", "made through the REST API")
    api.delete_variable("example_written")
    api.set_connection(
        "example_conn",
        "postgres",
        host="db.example.test",
        login="etl",
        password=PASSWORD,
        port=5432,
    )
    run_id, run = run_dag(api, dag)

    assert run["state"] == "success", api.describe_run(dag, run_id)
    assert api.xcom(dag, run_id, "read_variable") == "made through the REST API"
    assert api.xcom(dag, run_id, "use_connection") == {
        "host": "db.example.test",
        "login": "etl",
        "port": 5432,
    }
    assert api.get_variable("example_written") == api.xcom(dag, run_id, "write_variable")
    assert api.xcom(dag, run_id, "pull_xcom") == 6
    # No mapping for this DAG: the active version (the first installed) ran it.
    assert api.xcom(dag, run_id, "dep_version") == {"attrs": "23.2.0", "bundle_version": "1.0.0"}
    events = log_events(api, dag, run_id, "use_connection")
    assert "connecting" in events
    assert any("example-etl==1.0.0" in e for e in events), events
    task_ids = list(states(api, dag, run_id))  # test_stack_smoke checks the DAG has them all
    for task_id in task_ids:
        assert PASSWORD not in json.dumps(api.task_log(dag, run_id, task_id))
    assert PASSWORD not in supervisor_serve.log()
    assert_settled(airflow_stack, broker_redis, dag, run_id, [(t, 1) for t in task_ids])


def test_every_final_state_as_airflow_would_set_it(
    airflow_stack: AirflowStack, broker_redis: redis.Redis, supervisor_serve: ServeProcess
):
    api, dag = airflow_stack.client, "bundle_states"
    run_id, run = run_dag(api, dag)

    got = states(api, dag, run_id)
    assert run["state"] == "failed", api.describe_run(dag, run_id)  # fail_hard fails the run
    assert got == {
        "flaky": ("success", 2),  # up_for_retry on try 1, success on try 2
        "fail_hard": ("failed", 1),  # FailTask: no retry although retries=2
        "skip_me": ("skipped", 1),
        "downstream_of_skip": ("skipped", 0),  # skipped by Airflow, never ran
        "reschedule_once": ("success", 1),  # up_for_reschedule keeps the try number
        "defer_once": ("success", 1),
    }, api.describe_run(dag, run_id)
    assert "RuntimeError: first try always fails" in log_events(api, dag, run_id, "flaky", 1)
    assert api.xcom(dag, run_id, "reschedule_once") == {"reschedules": 1}
    resumed = api.xcom(dag, run_id, "defer_once")
    assert resumed["resumed_via"] == "wake_up"
    assert resumed["event"].startswith("20"), "the trigger's event (a datetime) reached the task"
    assert_settled(
        airflow_stack,
        broker_redis,
        dag,
        run_id,
        [
            ("flaky", 1),
            ("flaky", 2),
            ("fail_hard", 1),
            ("skip_me", 1),
            ("reschedule_once", 1),
            ("defer_once", 1),
        ],
    )


def test_two_pinned_versions_run_side_by_side(
    airflow_stack: AirflowStack, broker_redis: redis.Redis, supervisor_serve: ServeProcess
):
    api = airflow_stack.client
    runs = {}
    for dag in ("bundle_pinned_v1", "bundle_pinned_v2"):
        api.unpause(dag)
        runs[dag] = api.trigger(dag)
    for dag, run_id in runs.items():
        assert api.wait_for_run(dag, run_id, timeout=RUN_TIMEOUT_S)["state"] == "success"

    assert api.xcom("bundle_pinned_v1", runs["bundle_pinned_v1"], "dep_version") == {
        "attrs": "23.2.0",
        "bundle_version": "1.0.0",
    }
    assert api.xcom("bundle_pinned_v2", runs["bundle_pinned_v2"], "dep_version") == {
        "attrs": "25.3.0",
        "bundle_version": "2.0.0",
    }
    for dag, run_id in runs.items():
        assert_settled(airflow_stack, broker_redis, dag, run_id, [("dep_version", 1)])


def test_missing_version_fails_with_a_readable_log_and_the_worker_keeps_serving(
    airflow_stack: AirflowStack, broker_redis: redis.Redis, supervisor_serve: ServeProcess
):
    api, dag = airflow_stack.client, "bundle_missing_version"
    run_id, run = run_dag(api, dag)

    assert run["state"] == "failed"
    assert states(api, dag, run_id) == {"dep_version": ("failed", 1)}
    events = log_events(api, dag, run_id, "dep_version")
    (problem,) = [e for e in events if "9.9.9" in e]
    assert "installed: example-etl==1.0.0 (active), example-etl==2.0.0" in problem
    assert_settled(airflow_stack, broker_redis, dag, run_id, [("dep_version", 1)])

    assert supervisor_serve.alive()
    next_run, after = run_dag(api, "bundle_pinned_v2")
    assert after["state"] == "success", api.describe_run("bundle_pinned_v2", next_run)
