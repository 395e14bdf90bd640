"""Benchmark DAGs for Airflow's own Celery worker (scripts/bench_serve.py): a plain Python no-op.

The same two DAGs as `bench_bundle.py`, as plain `@task`s: `bench_python_single` (one no-op, for
the sequential latency runs) and `bench_python_fanout` (20 in parallel, for the makespan). They use
queue "bench_python", which only the `airflow celery worker` that the benchmark starts consumes, so
other users of the stack's shared worker (queue "default") neither delay nor are delayed by them.
"""

from __future__ import annotations

import datetime

from airflow.sdk import dag, task

PYTHON_QUEUE = "bench_python"
FANOUT_WIDTH = 20


def noop() -> None:
    """Does nothing, like the bundle's `noop`; returns None, so no XCom is pushed."""


@dag(
    dag_id="bench_python_single",
    schedule=None,
    start_date=datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC),
    catchup=False,
    tags=["bench"],
)
def bench_python_single():
    task(noop, queue=PYTHON_QUEUE, task_id="noop")()


@dag(
    dag_id="bench_python_fanout",
    schedule=None,
    start_date=datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC),
    catchup=False,
    # All 20 may be queued at once (the default cap is 16 per DAG run).
    max_active_tasks=FANOUT_WIDTH,
    tags=["bench"],
)
def bench_python_fanout():
    for index in range(FANOUT_WIDTH):
        task(noop, queue=PYTHON_QUEUE, task_id=f"noop_{index:02d}")()


bench_python_single()
bench_python_fanout()
