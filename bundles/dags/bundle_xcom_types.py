"""XCom across runtimes: Python task -> bundle task -> Python task, with types preserved.

`produce` and `check` run on Airflow's own worker (queue "default"); `echo` runs in the
example-etl bundle through `supervisor serve` and returns what `produce` returned. `check` fails
the run unless every value came back equal and of the same type.
"""

from __future__ import annotations

import datetime

from airflow.sdk import dag, task

EXPECTED = {
    "int": 42,
    "float": 2.5,
    "str": "héllo ✓",
    "list": [1, "two", 3.0, None],
    "dict": {"nested": {"a": [1, 2]}, "empty": {}},
    "none": None,
}


@dag(
    dag_id="bundle_xcom_types",
    schedule=None,
    start_date=datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC),
    catchup=False,
    tags=["bundles", "e2e"],
)
def bundle_xcom_types():
    @task
    def produce() -> dict:
        return EXPECTED

    @task.stub(queue="bundles")
    def echo(): ...

    @task
    def check(echoed: dict) -> dict:
        for key, value in EXPECTED.items():
            got = echoed[key]
            if got != value or type(got) is not type(value):
                raise ValueError(f"{key}: sent {value!r}, got back {got!r}")
        return {key: type(value).__name__ for key, value in echoed.items()}

    echoed = echo()
    produce() >> echoed
    check(echoed)


bundle_xcom_types()
