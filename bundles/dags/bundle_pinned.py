"""Two DAGs pinned to two versions of one bundle, through the queue each task uses.

`supervisor serve` maps queue "etl-v1" to example-etl==1.0.0 and "etl-v2" to example-etl==2.0.0
(setting `queue_to_bundle`), so each dep_version reports the attrs version of its own venv.
"""

from __future__ import annotations

import datetime

from airflow.sdk import dag, task


def pinned_dag(dag_id: str, queue: str) -> None:
    @dag(
        dag_id=dag_id,
        schedule=None,
        start_date=datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC),
        catchup=False,
        tags=["bundles", "e2e"],
    )
    def pinned():
        @task.stub(queue=queue)
        def dep_version(): ...

        dep_version()

    pinned()


pinned_dag("bundle_pinned_v1", "etl-v1")
pinned_dag("bundle_pinned_v2", "etl-v2")
