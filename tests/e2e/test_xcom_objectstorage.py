"""Large XComs through S3 with a real Airflow: its common-io backend on one side, ours on the other.

The stack runs Airflow's `XComObjectStorageBackend` (AF_XCOM_OBJECTSTORAGE=1: 1024-byte threshold,
gzip, s3://<AF_S3_CONN_ID>@<AF_S3_BUCKET>/xcom on the local moto server) and `supervisor serve`
gets the same AIRFLOW__* settings. The run of bundles/dags/bundle_xcom_large.py proves a value a
Python task wrote to S3 reaches bundle code intact, and values the bundle returns and pushes reach
a Python task intact (`check_large` fails the run otherwise). Then this test reads what an
operator would: the metadata DB (REST, deserialize=false) holds references for large values and
the values themselves for small ones, and the referenced objects are gzip JSON in the bucket.
Uncompressed and other compressions, both directions: test_xcom_interop.py.
"""

from __future__ import annotations

import gzip
import json
import re
from typing import Any

import boto3
import pytest
import redis

from .airflow import AirflowClient
from .serve import ServeProcess
from .stack import AirflowStack
from .test_serve import assert_settled, run_dag

DAG = "bundle_xcom_large"
#: An object's name: a uuid4, and the gzip suffix.
OBJECT = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}\.gz"


def _require_xcom_objectstorage(api: AirflowClient, run_id: str, base: str) -> None:
    """Fail in one line when Airflow's own worker did not write `produce_large` as gzip in S3.

    Checked on what the worker did, not on its environment: Airflow's processes rename themselves
    (setproctitle), which blanks /proc/<pid>/environ.
    """
    produced = [t for t in api.task_instances(DAG, run_id) if t["task_id"] == "produce_large"]
    if produced[0]["state"] != "success":
        return  # a failure of its own: the run's assertion describes it
    stored = api.xcom_stored(DAG, run_id, "produce_large")
    if not (isinstance(stored, str) and stored.startswith(f"{base}/") and stored.endswith(".gz")):
        pytest.fail(
            "the running Airflow stack was started without gzip XComs in S3 (produce_large's XCom "
            f"is {str(stored)[:60]!r}); restart it with `scripts/airflow_stack.sh down && AF_S3=1 "
            "AF_REMOTE_LOGGING=1 AF_XCOM_OBJECTSTORAGE=1 AF_XCOM_COMPRESSION=gzip AF_WORKER=1 "
            "scripts/airflow_stack.sh up` (or let the e2e session start it)",
            pytrace=False,
        )


def _s3(stack: AirflowStack) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=stack.env["AF_S3_ENDPOINT"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing-secret",
        region_name="us-east-1",
    )


def test_large_xcoms_live_in_s3_python_to_bundle_to_python(
    airflow_stack: AirflowStack, broker_redis: redis.Redis, supervisor_serve: ServeProcess
) -> None:
    api, env = airflow_stack.client, airflow_stack.env
    base = env["AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH"]  # s3://aws_local@airflow/xcom
    run_id, run = run_dag(api, DAG)
    _require_xcom_objectstorage(api, run_id, base)
    assert run["state"] == "success", api.describe_run(DAG, run_id)

    bucket_url = f"s3://{env['AF_S3_CONN_ID']}@{env['AF_S3_BUCKET']}/"
    s3 = _s3(airflow_stack)
    in_s3: dict[tuple[str, str], Any] = {}
    for task_id, key in [
        ("produce_large", "return_value"),  # written by Airflow's backend, read by ours
        ("pass_large", "return_value"),  # written by ours, read by Airflow's
        ("pass_large", "big_list"),  # a push from bundle code, read by Airflow's
    ]:
        reference = api.xcom_stored(DAG, run_id, task_id, key)
        prefix = re.escape(f"{base}/{DAG}/{run_id}/{task_id}/")
        assert isinstance(reference, str), (task_id, key, reference)
        assert re.fullmatch(prefix + OBJECT, reference), (task_id, key, reference)
        body = s3.get_object(Bucket=env["AF_S3_BUCKET"], Key=reference.removeprefix(bucket_url))
        in_s3[(task_id, key)] = json.loads(gzip.decompress(body["Body"].read()))

    assert len(in_s3[("produce_large", "return_value")]["rows"]) == 100
    returned = in_s3[("pass_large", "return_value")]
    assert returned["rows"][0] == {"i": 0, "name": "row-0 ✓", "seen": True}
    assert returned["pair"] == {"__classname__": "builtins.tuple", "__version__": 1,
                                "__data__": [100, "rows"]}  # fmt: skip
    assert in_s3[("pass_large", "big_list")] == list(range(500))
    # Under the threshold: the value itself in the DB, as Airflow keeps it.
    assert api.xcom_stored(DAG, run_id, "pass_large", "small") == {"ok": True}
    assert api.xcom_stored(DAG, run_id, "check_large") == {"rows": 100, "big_list": 500}
    assert_settled(airflow_stack, broker_redis, DAG, run_id, [("pass_large", 1)])
