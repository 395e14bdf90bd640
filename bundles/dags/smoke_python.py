"""Stack smoke test: one plain Python task on the "default" queue, run by Airflow's own Celery
worker (scripts/airflow_stack.sh up with AF_WORKER=1). Proves scheduler -> Redis -> worker ->
Execution API."""

from __future__ import annotations

import datetime

from airflow.sdk import dag, task


@dag(
    dag_id="smoke_python",
    schedule=None,
    start_date=datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC),
    catchup=False,
    tags=["smoke"],
)
def smoke_python():
    @task(queue="default")
    def answer() -> int:
        return 42

    answer()


smoke_python()
