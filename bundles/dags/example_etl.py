"""The example bundle's tasks (bundles/example-etl), as Airflow sees them.

Pattern for every DAG file in this folder (one file per bundle or test scenario, each defining a
DAG): a task implemented by a bundle is a ``@task.stub`` on the queue the supervisor consumes
("bundles"). Airflow keeps it in the graph, schedules it and sends it to that queue; its code lives
in the bundle, so the stub body is only ``...``. The task_id must match the bundle's task name.
Never let Airflow's own worker consume "bundles": it fails stub tasks ("@task.stub should not be
executed directly").
Files whose name starts with "_" are helpers, not DAG files (scripts/airflow_stack.sh waits only for
the others to appear in the REST API).
"""

from __future__ import annotations

import datetime

from airflow.sdk import dag, task

BUNDLES_QUEUE = "bundles"


@dag(
    dag_id="example_etl",
    schedule=None,
    start_date=datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC),
    catchup=False,
    tags=["bundles", "example-etl"],
)
def example_etl():
    @task.stub(queue=BUNDLES_QUEUE)
    def dep_version(): ...

    @task.stub(queue=BUNDLES_QUEUE)
    def read_variable(): ...

    @task.stub(queue=BUNDLES_QUEUE)
    def write_variable(): ...

    @task.stub(queue=BUNDLES_QUEUE)
    def use_connection(): ...

    @task.stub(queue=BUNDLES_QUEUE)
    def push_xcom(): ...

    @task.stub(queue=BUNDLES_QUEUE)
    def pull_xcom(): ...

    dep_version()
    read_variable()
    write_variable()
    use_connection()
    push_xcom() >> pull_xcom()


example_etl()
