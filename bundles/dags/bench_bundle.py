"""Benchmark DAGs for `supervisor serve` (scripts/bench_serve.py): the bundle's no-op task.

`bench_bundle_single` runs one no-op for the sequential latency runs; `bench_bundle_fanout` runs
20 of them in parallel for the makespan. Both use queue "bench", which only the benchmark's own
`supervisor serve` consumes; their code is `noop` in bundles/example-etl (registered under these
dag_ids). `bench_python.py` holds the same two DAGs as plain Python tasks, for comparison.
"""

from __future__ import annotations

import datetime

from airflow.sdk import dag, task

BENCH_QUEUE = "bench"
FANOUT_WIDTH = 20


def noop_stub(): ...


@dag(
    dag_id="bench_bundle_single",
    schedule=None,
    start_date=datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC),
    catchup=False,
    tags=["bench", "bundles"],
)
def bench_bundle_single():
    @task.stub(queue=BENCH_QUEUE)
    def noop(): ...

    noop()


@dag(
    dag_id="bench_bundle_fanout",
    schedule=None,
    start_date=datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC),
    catchup=False,
    # All 20 may be queued at once (the default cap is 16 per DAG run).
    max_active_tasks=FANOUT_WIDTH,
    tags=["bench", "bundles"],
)
def bench_bundle_fanout():
    for index in range(FANOUT_WIDTH):
        task.stub(queue=BENCH_QUEUE, task_id=f"noop_{index:02d}")(noop_stub)()


bench_bundle_single()
bench_bundle_fanout()
