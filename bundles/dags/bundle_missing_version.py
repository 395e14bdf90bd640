"""A task pinned (queue "etl-v9") to a bundle version no worker has installed.

`supervisor serve` maps "etl-v9" to example-etl==9.9.9; the TI must fail with a log line that names
the installed versions, and the worker must keep serving.
"""

from __future__ import annotations

import datetime

from airflow.sdk import dag, task


@dag(
    dag_id="bundle_missing_version",
    schedule=None,
    start_date=datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC),
    catchup=False,
    tags=["bundles", "e2e"],
)
def bundle_missing_version():
    @task.stub(queue="etl-v9")
    def dep_version(): ...

    dep_version()


bundle_missing_version()
