"""Every way a bundle task can end, as Airflow's scheduler sees it.

flaky: fails on try 1, succeeds on try 2 (retries=1). fail_hard: FailTask, so failed although
retries are left. skip_me: skipped, and so is its downstream Python task. reschedule_once: one
up_for_reschedule, then success. defer_once: deferred to the triggerer (DateTimeTrigger), then
resumed in the bundle. Run with AF_WORKER=1 (downstream_of_skip is a Python task).
"""

from __future__ import annotations

import datetime

from airflow.sdk import dag, task

BUNDLES = "bundles"


@dag(
    dag_id="bundle_states",
    schedule=None,
    start_date=datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC),
    catchup=False,
    tags=["bundles", "e2e"],
)
def bundle_states():
    @task.stub(queue=BUNDLES, retries=1, retry_delay=datetime.timedelta(seconds=1))
    def flaky(): ...

    @task.stub(queue=BUNDLES, retries=2, retry_delay=datetime.timedelta(seconds=1))
    def fail_hard(): ...

    @task.stub(queue=BUNDLES)
    def skip_me(): ...

    @task
    def downstream_of_skip() -> str:
        return "must not run"

    @task.stub(queue=BUNDLES)
    def reschedule_once(): ...

    @task.stub(queue=BUNDLES)
    def defer_once(): ...

    flaky()
    fail_hard()
    skip_me() >> downstream_of_skip()
    reschedule_once()
    defer_once()


bundle_states()
