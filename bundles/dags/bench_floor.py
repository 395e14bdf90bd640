"""Benchmark DAG for the Execution API floor (scripts/bench_serve.py): no worker runs it.

`bench_floor` has one stub task on queue "bench_floor". No Celery worker consumes that queue: the
benchmark pops the message from Redis itself and does only what every worker must do for a TI,
`PATCH /run`, `PATCH /state` and the Celery result write, to time those calls (the floor that
`supervisor serve` is measured against).
"""

from __future__ import annotations

import datetime

from airflow.sdk import dag, task

FLOOR_QUEUE = "bench_floor"


@dag(
    dag_id="bench_floor",
    schedule=None,
    start_date=datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC),
    catchup=False,
    tags=["bench"],
)
def bench_floor():
    @task.stub(queue=FLOOR_QUEUE)
    def noop(): ...

    noop()


bench_floor()
