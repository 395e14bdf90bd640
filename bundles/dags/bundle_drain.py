"""A bundle task that takes a while, on its own queue "drain", for the worker's stop tests.

tests/e2e/test_serve_lifecycle.py starts its own `supervisor serve` on this queue and stops it
(SIGTERM: warm shutdown) or takes the TI away in Airflow while `sleep_a_bit` runs. The run conf
sets how long it sleeps: {"seconds": 4}.
"""

from __future__ import annotations

import datetime

from airflow.sdk import dag, task


@dag(
    dag_id="bundle_drain",
    schedule=None,
    start_date=datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC),
    catchup=False,
    tags=["bundles", "e2e"],
)
def bundle_drain():
    @task.stub(queue="drain")
    def sleep_a_bit(): ...

    sleep_a_bit()


bundle_drain()
