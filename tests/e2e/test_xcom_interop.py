"""Our object-storage XCom backend against the common-io provider's own code, both directions.

Airflow's interpreter (the stack's venv, apache-airflow-providers-common-io 1.11.0) runs the
provider's `XComObjectStorageBackend` through tests/e2e/provider_xcom.py on a `file://` path both
sides share; the DB in between is the fake Execution API. For each compression (none, and every
one fsspec has without extra libraries):

* values a Python task writes (serialize_value) reach bundle code intact: our backend reads the
  object, the runtime's serde decodes it;
* values a bundle writes (the runtime's serde JSON, our backend) read back intact in Python
  (deserialize_value), tuples, sets and datetimes included;
* the threshold splits the same way on both sides, and each side purges the other's objects.

The provider runs in one process for all compressions (three calls: write, read, purge), since
importing Airflow takes seconds.

The S3 path with a real Airflow is test_xcom_objectstorage_e2e.py's.
"""

from __future__ import annotations

import datetime as datetime_module
import json
import os
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bundle_runtime import serde
from supervisor.api.client import ExecutionApiClient
from supervisor.api.task import TaskApi
from supervisor.xcom import ObjectStorageXCom, XComAddress
from tests.api.conftest import BASE_URL, TI_ID, WORKLOAD_TOKEN, FakeExecutionApi

from .stack import AirflowStack

PROVIDER_SIDE = Path(__file__).with_name("provider_xcom.py")
THRESHOLD = 1024
RUN_ID = "manual__2026-01-01T00:00:00+00:00"
#: name -> (the value as a Python expression, what the other side reads when it is written in
#: Python). Airflow's XComEncoder keeps a top-level tuple but turns nested tuples into lists, for
#: Python readers as much as for ours; the runtime keeps nested tuples (they arrive as tuples).
VALUES: dict[str, tuple[str, str]] = {
    "table": (
        "{'rows': [{'i': i, 'name': 'ü-%d' % i} for i in range(80)],"
        " 'when': datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),"
        " 'day': datetime.date(2026, 1, 2), 'gap': datetime.timedelta(seconds=90),"
        " 'tags': {'x', 'y'}, 'pair': (1, 'a')}",
        "{'rows': [{'i': i, 'name': 'ü-%d' % i} for i in range(80)],"
        " 'when': datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),"
        " 'day': datetime.date(2026, 1, 2), 'gap': datetime.timedelta(seconds=90),"
        " 'tags': {'x', 'y'}, 'pair': [1, 'a']}",
    ),
    "tuple": ("tuple(range(400))", "tuple(range(400))"),
    "text": ("'x' * 2000", "'x' * 2000"),
    "at_threshold": (f"'y' * {THRESHOLD - 2}", f"'y' * {THRESHOLD - 2}"),  # JSON: exactly 1024
    "small": ("{'a': [1, 2], 'b': None}", "{'a': [1, 2], 'b': None}"),
}
#: Names whose JSON is under the threshold: both sides keep them in the DB.
IN_DB = {"small"}
COMPRESSIONS = [None, "gzip", "bz2", "zip", "lzma", "xz"]
SUFFIX = {"gzip": "gz", "bz2": "bz2", "zip": "zip", "lzma": "lzma", "xz": "xz"}
#: An object's name without suffix: a uuid4.
OBJECT = "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}"


def python_value(expr: str) -> Any:
    return eval(expr, {"datetime": datetime_module})


@pytest.fixture
def api() -> Any:
    fake = FakeExecutionApi(run_context={"dag_run": {}, "max_tries": 0})
    with ExecutionApiClient(BASE_URL, transport=fake.transport(), retries=1) as client:
        task_api = client.for_task(TI_ID, WORKLOAD_TOKEN)
        task_api.run(hostname="vm", unixname="root", pid=1, start_date=datetime.now(UTC))
        yield task_api


def provider(stack: AirflowStack, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env["AIRFLOW_HOME"] = str(Path(ops[0]["path"].removeprefix("file://")).parents[1] / "home")
    python = Path(stack.env["AF_VENV"]) / "bin" / "python"
    result = subprocess.run(
        # -P: not the script's folder first on sys.path, where tests/e2e/airflow.py would shadow
        # the airflow package.
        [str(python), "-P", str(PROVIDER_SIDE)],
        input=json.dumps(ops),
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return list(json.loads(result.stdout.strip().splitlines()[-1]))


class Side:
    """One compression's setting: its root folder, our backend, the provider's op fields."""

    def __init__(self, tmp_path: Path, compression: str | None) -> None:
        self.name = compression or "uncompressed"
        self.root = tmp_path / self.name / "xcom"
        self.path = f"file://{self.root}"
        self.compression = compression
        self.ours = ObjectStorageXCom.configured(
            path=self.path, threshold=THRESHOLD, compression=compression
        )
        self.suffix = re.escape(f".{SUFFIX[compression]}") if compression else ""

    def op(self, op: str, **fields: Any) -> dict[str, Any]:
        settings = {"path": self.path, "threshold": THRESHOLD, "compression": self.compression}
        return {"op": op, **settings, **fields}

    def where(self, task_id: str, name: str) -> XComAddress:
        return XComAddress("interop", RUN_ID, f"{task_id}_{self.name}", name)

    def objects(self) -> set[Path]:
        return {p for p in self.root.rglob("*") if p.is_file()}


def put(api: TaskApi, at: XComAddress, db_value: Any) -> None:
    """What Airflow's supervisor does with a Python task's SetXCom: the value as JSON, unchanged."""
    api.set_xcom(dag_id=at.dag_id, run_id=at.run_id, task_id=at.task_id, key=at.key, value=db_value)


def db(api: TaskApi, at: XComAddress) -> Any:
    return api.get_xcom(dag_id=at.dag_id, run_id=at.run_id, task_id=at.task_id, key=at.key)


def test_python_and_bundle_read_each_others_xcoms(
    airflow_stack: AirflowStack, api: TaskApi, tmp_path: Path
) -> None:
    sides = [Side(tmp_path, compression) for compression in COMPRESSIONS]

    # Python writes, the bundle reads.
    writes = [
        side.op("write", value=expr, dag_id="interop", run_id=RUN_ID, task_id=f"py_{side.name}")
        for side in sides
        for expr, _ in VALUES.values()
    ]
    written = iter(provider(airflow_stack, writes))
    for side in sides:
        for name, (_, seen_as) in VALUES.items():
            put(api, side.where("py", name), next(written)["stored"])
            check_python_to_bundle(api, side, name, python_value(seen_as))
        assert len(side.objects()) == len(VALUES) - len(IN_DB), side.name
    python_objects = {side.name: side.objects() for side in sides}

    # The bundle writes, Python reads.
    reads = []
    for side in sides:
        for name, (expr, _) in VALUES.items():
            value_json = json.dumps(serde.serialize(python_value(expr)))  # as the runtime sends it
            side.ours.set_json(api, side.where("bundle", name), value_json, mapped_length=None)
            stored = db(api, side.where("bundle", name))
            if name in IN_DB:
                assert stored == serde.serialize(python_value(expr)), (side.name, name)
            reads.append(side.op("read", stored=stored, expect=expr))
    results = provider(airflow_stack, reads)
    wrong = [(r["compression"], r["expect"][:40], got["repr"][:80]) for r, got in
             zip(reads, results, strict=True) if not got["equal"]]  # fmt: skip
    assert wrong == []

    # Each side purges the other's objects.
    purges = [r | {"op": "purge"} for r in reads if isinstance(r["stored"], str)]
    assert len(purges) == len(sides) * (len(VALUES) - len(IN_DB))
    provider(airflow_stack, purges)
    for side in sides:
        assert side.objects() == python_objects[side.name], side.name
        for name in VALUES:
            side.ours.delete(api, side.where("py", name))
        assert side.objects() == set(), side.name


def check_python_to_bundle(api: TaskApi, side: Side, name: str, expected: Any) -> None:
    """A Python task's value, as stored by Airflow, reaches bundle code intact."""
    at = side.where("py", name)
    stored = db(api, at)
    if name in IN_DB:
        assert stored == serde.serialize(expected), (side.name, name)
    else:
        prefix = re.escape(f"{side.path}/interop/{RUN_ID}/{at.task_id}/")
        assert re.fullmatch(prefix + OBJECT + side.suffix, stored), (side.name, stored)
    got = serde.deserialize(side.ours.get(api, at))  # what the runtime hands bundle code
    assert got == expected, (side.name, name)
    assert type(got) is type(expected), (side.name, name)
