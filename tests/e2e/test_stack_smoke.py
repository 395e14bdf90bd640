"""The local Airflow stack works: a plain Python task runs through Redis and Airflow's own Celery
worker, its return value lands in XCom, and the Celery message is acked afterwards."""

from __future__ import annotations

import json

import pytest

from tests.polling import wait_until

from .airflow import AirflowClient
from .broker import messages_of_run
from .stack import AirflowStack

pytestmark = pytest.mark.e2e

SMOKE_DAG = "smoke_python"


def test_python_task_runs_on_airflow_celery_worker(airflow_stack: AirflowStack, broker_redis):
    api = airflow_stack.client
    api.unpause(SMOKE_DAG)
    run_id = api.trigger(SMOKE_DAG, conf={"requested_by": "test_stack_smoke"})

    run = api.wait_for_run(SMOKE_DAG, run_id, timeout=120)

    assert run["state"] == "success", api.describe_run(SMOKE_DAG, run_id)
    assert run["conf"] == {"requested_by": "test_stack_smoke"}
    (ti,) = api.task_instances(SMOKE_DAG, run_id)
    assert (ti["task_id"], ti["state"], ti["try_number"], ti["queue"]) == (
        "answer",
        "success",
        1,
        "default",
    )
    assert ti["hostname"], "the worker reports its hostname through /run"
    assert api.xcom(SMOKE_DAG, run_id, "answer") == 42
    events = [line["event"] for line in api.task_log(SMOKE_DAG, run_id, "answer", ti["try_number"])]
    assert "Done. Returned value was: 42" in events
    # Celery acks late, after the task process has ended, so the run can be success a moment
    # before the message leaves the `unacked` hash.
    wait_until(
        lambda: not messages_of_run(broker_redis, SMOKE_DAG, run_id, queues=("default",)),
        timeout=30,
        what=f"no Celery message of {run_id} left in Redis (default list, unacked hash)",
    )


def test_example_etl_dag_declares_bundle_stubs(airflow_api: AirflowClient):
    tasks = {task["task_id"]: task for task in airflow_api.tasks("example_etl")}

    assert set(tasks) == {
        "dep_version",
        "read_variable",
        "write_variable",
        "use_connection",
        "push_xcom",
        "pull_xcom",
    }
    assert {(task["queue"], task["operator_name"]) for task in tasks.values()} == {
        ("bundles", "@task.stub")
    }
    assert tasks["push_xcom"]["downstream_task_ids"] == ["pull_xcom"]
    dag = airflow_api.get_dag("example_etl")
    assert dag is not None
    assert dag["timetable_summary"] is None  # schedule=None


def test_client_round_trips_variables_and_connections(airflow_api: AirflowClient):
    key, conn_id = "e2e_smoke_variable", "e2e_smoke_http"
    try:
        airflow_api.set_variable(key, json.dumps({"n": 1}))
        airflow_api.set_variable(key, "second")  # overwrite goes through PATCH
        assert airflow_api.get_variable(key) == "second"

        airflow_api.set_connection(
            conn_id,
            "http",
            host="example.invalid",
            port=443,
            login="u",
            password="p",
            extra='{"k": "v"}',
        )
        conn = airflow_api.get_connection(conn_id)
        assert conn is not None
        assert (conn["conn_type"], conn["host"], conn["port"], conn["login"]) == (
            "http",
            "example.invalid",
            443,
            "u",
        )
        assert json.loads(conn["extra"]) == {"k": "v"}
    finally:
        airflow_api.delete_variable(key)
        airflow_api.delete_connection(conn_id)
    assert airflow_api.get_variable(key) is None
    assert airflow_api.get_connection(conn_id) is None
