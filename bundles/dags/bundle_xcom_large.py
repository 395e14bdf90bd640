"""XCom values over the object-storage threshold: Python task -> bundle task -> Python task.

For a stack with AF_XCOM_OBJECTSTORAGE=1 (Airflow's common-io XComObjectStorageBackend, 1024 bytes
threshold; `supervisor serve` gets the same settings). `produce_large` (Airflow's worker) returns a
value that goes to S3; `pass_large` (the example-etl bundle) pulls it as plain values, pushes
`big_list` (to S3) and `small` (stays in the DB) and returns a larger value; `check_large`
(Airflow's worker) fails the run unless all of it arrived intact and typed. Without the backend the
same run passes with every value in the DB. tests/e2e/test_xcom_objectstorage.py checks where each
value went.
"""

from __future__ import annotations

import datetime

from airflow.sdk import dag, get_current_context, task

ROWS = 100
WHEN = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)


@dag(
    dag_id="bundle_xcom_large",
    schedule=None,
    start_date=datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC),
    catchup=False,
    tags=["bundles", "e2e"],
)
def bundle_xcom_large():
    @task
    def produce_large() -> dict:
        rows = [{"i": i, "name": f"row-{i} ✓"} for i in range(ROWS)]
        return {"rows": rows, "when": WHEN, "tags": {"python", "large"}}

    @task.stub(queue="bundles")
    def pass_large(): ...

    @task
    def check_large(returned: dict) -> dict:
        ti = get_current_context()["ti"]
        big_list = ti.xcom_pull(task_ids="pass_large", key="big_list")
        small = ti.xcom_pull(task_ids="pass_large", key="small")
        expected = {
            "rows": [{"i": i, "name": f"row-{i} ✓", "seen": True} for i in range(ROWS)],
            "when": WHEN + datetime.timedelta(days=1),
            "tags": {"python", "large", "bundle"},
            "pair": (ROWS, "rows"),
        }
        problems = [
            f"{key}: expected {value!r}, got {returned.get(key)!r}"
            for key, value in expected.items()
            if returned.get(key) != value or type(returned.get(key)) is not type(value)
        ]
        if big_list != list(range(500)):
            problems.append(f"big_list: got {str(big_list)[:80]}")
        if small != {"ok": True}:
            problems.append(f"small: got {small!r}")
        if problems:
            raise ValueError("; ".join(problems))
        return {"rows": len(returned["rows"]), "big_list": len(big_list)}

    returned = pass_large()
    produce_large() >> returned
    check_large(returned)


bundle_xcom_large()
