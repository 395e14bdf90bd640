"""Run by Airflow's own interpreter: the common-io provider's XComObjectStorageBackend at work.

Reads a JSON list of operations on stdin and prints a JSON list of results, so the test
(test_xcom_interop.py) can check that what our worker writes, Airflow's own backend reads, and the
other way round. Values are Python expressions over `datetime`, evaluated here and in the test.
Every operation also carries the [common.io] settings to use ("path", "threshold", "compression"),
set as AIRFLOW__COMMON_IO__* before the provider reads them, so one process covers them all.

    {"op": "write", "value": EXPR, "dag_id", "run_id", "task_id"} -> {"stored": <DB value>}
    {"op": "read", "stored": <DB value>, "expect": EXPR}          -> {"equal": bool, "repr": str}
    {"op": "purge", "stored": <DB value>}                          -> {}
"""

from __future__ import annotations

import collections
import datetime
import json
import os
import sys
from typing import Any

from airflow.providers.common.io.xcom import backend
from airflow.providers.common.io.xcom.backend import XComObjectStorageBackend

_Stored = collections.namedtuple("_Stored", "value")


def evaluate(expr: str) -> Any:
    return eval(expr, {"datetime": datetime})  # the test's own literals


def configure(path: str, threshold: int, compression: str | None) -> None:
    """[common.io] as a worker would have it; the provider caches what it read, so clear that."""
    os.environ["AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH"] = path
    os.environ["AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_THRESHOLD"] = str(threshold)
    os.environ["AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_COMPRESSION"] = compression or ""
    for cached in (backend._get_base_path, backend._get_threshold, backend._get_compression):
        cached.cache_clear()


def run(op: dict[str, Any]) -> dict[str, Any]:
    configure(op["path"], op["threshold"], op["compression"])
    if op["op"] == "write":
        stored = XComObjectStorageBackend.serialize_value(
            evaluate(op["value"]), dag_id=op["dag_id"], run_id=op["run_id"], task_id=op["task_id"]
        )
        return {"stored": stored}
    if op["op"] == "read":
        value = XComObjectStorageBackend.deserialize_value(_Stored(op["stored"]))
        expected = evaluate(op["expect"])
        return {"equal": value == expected and type(value) is type(expected), "repr": repr(value)}
    if op["op"] == "purge":
        XComObjectStorageBackend.purge(_Stored(op["stored"]))  # type: ignore[arg-type]
        return {}
    raise ValueError(f"unknown op {op['op']!r}")


if __name__ == "__main__":
    print(json.dumps([run(op) for op in json.load(sys.stdin)]))
