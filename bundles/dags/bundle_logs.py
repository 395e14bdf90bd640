"""Bundle tasks that write task logs, on queue "bundles" (tests/e2e/test_logs.py).

`talk` writes through print, stderr, logging and ctx.log with fields; with {"conn_id": ...} in the
run conf it also writes that connection's password, and with {"secret": ...} a value it marked
secret, both of which the log must mask. `slow_talk` logs a line per second for {"seconds": N}
(default 3) so its log can be read while it runs.
"""

from __future__ import annotations

import datetime

from airflow.sdk import dag, task


@dag(
    dag_id="bundle_logs",
    schedule=None,
    start_date=datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC),
    catchup=False,
    tags=["bundles", "e2e"],
)
def bundle_logs():
    @task.stub(queue="bundles")
    def talk(): ...

    @task.stub(queue="bundles")
    def slow_talk(): ...

    talk()
    slow_talk()


bundle_logs()
