"""ObjectStorageXCom on a real S3 protocol (moto's server, in-process) over the fake Execution API.

Proves the storage side of docs/xcom-object-storage.md: the threshold rule, where objects go, the
reference the DB gets, compression suffixes, reading by suffix, purge on delete, credentials from
the connection named in the path (fetched through the API), the HostCalls and the settings.
Interoperability with Airflow's own provider code is test_xcom_interop.py's job.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import re
import socket
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from supervisor.api.client import ExecutionApiClient
from supervisor.api.models import Connection
from supervisor.api.task import TaskApi
from supervisor.config import load_settings
from supervisor.errors import ConfigError
from supervisor.hostcalls import ApiHost
from supervisor.objectstore import StorageUrl, s3_options
from supervisor.plugin.messages import HostCallError
from supervisor.workload import Workload
from supervisor.xcom import (
    DatabaseXCom,
    ObjectStorageXCom,
    XComAddress,
    backend_from_settings,
)
from tests.api.conftest import WORKLOAD_TOKEN, FakeExecutionApi

BUCKET = "xcom-bucket"
PATH = f"s3://aws_default@{BUCKET}/xcom"
THRESHOLD = 1024
RUN_ID = "manual__2026-01-01T00:00:00+00:00"
WHERE = XComAddress("dag_x", RUN_ID, "task_x", "return_value")
#: One value over the threshold, with every type the runtime wraps.
BIG: dict[str, Any] = {
    "rows": [{"i": i, "name": f"ü-{i}"} for i in range(60)],
    "pair": {"__classname__": "builtins.tuple", "__version__": 1, "__data__": [1, "a"]},
}


def _unzip(raw: bytes) -> bytes:
    archive = zipfile.ZipFile(BytesIO(raw))
    return archive.read(archive.namelist()[0])


DECOMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.decompress,
    "bz2": bz2.decompress,
    "lzma": lzma.decompress,
    "xz": lzma.decompress,
    "zip": _unzip,
}
SUFFIX = {"gzip": "gz", "bz2": "bz2", "lzma": "lzma", "xz": "xz", "zip": "zip"}
REFERENCE = re.compile(
    re.escape(f"{PATH}/dag_x/{RUN_ID}/task_x/") + r"[0-9a-f]{8}-[0-9a-f-]{27}(\.[a-z0-9]+)?"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint: str) -> Iterator[Any]:
    """A boto3 client on a fresh bucket, emptied and removed afterwards."""
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=BUCKET)
    yield client
    for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=item["Key"])
    client.delete_bucket(Bucket=BUCKET)


@pytest.fixture
def api(
    client: ExecutionApiClient, fake: FakeExecutionApi, workload: Workload, s3_endpoint: str
) -> TaskApi:
    fake.connections["aws_default"] = {
        "conn_id": "aws_default", "conn_type": "aws", "host": None, "schema": None,
        "login": "testing", "password": "testing", "port": None,
        "extra": json.dumps({"endpoint_url": s3_endpoint, "region_name": "us-east-1"}),
    }  # fmt: skip
    task_api = client.for_task(workload.ti.id, WORKLOAD_TOKEN)
    task_api.run(hostname="vm", unixname="root", pid=1, start_date=datetime.now(UTC))
    return task_api


def backend(compression: str | None = None, threshold: int = THRESHOLD) -> ObjectStorageXCom:
    return ObjectStorageXCom.configured(path=PATH, threshold=threshold, compression=compression)


def stored(fake: FakeExecutionApi, where: XComAddress = WHERE) -> Any:
    return fake.xcoms[(where.dag_id, where.run_id, where.task_id, where.key, where.map_index)]


def keys(s3: Any) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]


def object_bytes(s3: Any, reference: str) -> bytes:
    key = reference.removeprefix(f"s3://aws_default@{BUCKET}/")
    return bytes(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def test_small_value_stays_in_the_db_unchanged(
    api: TaskApi, fake: FakeExecutionApi, s3: Any
) -> None:
    backend().set_json(api, WHERE, '{"rows": [1, 2, 3]}', mapped_length=None)
    assert stored(fake) == {"rows": [1, 2, 3]}
    assert keys(s3) == []
    assert fake.calls("connection") == []  # storage untouched: no credentials fetched
    assert backend().get(api, WHERE) == {"rows": [1, 2, 3]}


def test_large_value_goes_to_the_bucket_and_the_db_holds_its_url(
    api: TaskApi, fake: FakeExecutionApi, s3: Any
) -> None:
    backend().set_json(api, WHERE, json.dumps(BIG, separators=(",", ":")), mapped_length=None)
    reference = stored(fake)
    assert REFERENCE.fullmatch(reference), reference
    assert not reference.endswith((".json", ".gz"))  # uncompressed: no suffix, as the provider
    assert keys(s3) == [reference.removeprefix(f"s3://aws_default@{BUCKET}/")]
    # The bytes are json.dumps' default text, whatever spacing the runtime sent.
    assert object_bytes(s3, reference) == json.dumps(BIG).encode()
    assert backend().get(api, WHERE) == BIG
    assert {seen.path for seen in fake.calls("connection")} == {"connections/aws_default"}


def test_threshold_is_inclusive_minus_one_never_zero_always(
    api: TaskApi, fake: FakeExecutionApi, s3: Any
) -> None:
    at = json.dumps("x" * (THRESHOLD - 2))  # exactly THRESHOLD bytes of JSON
    backend().set_json(api, WHERE, at, mapped_length=None)
    assert REFERENCE.fullmatch(stored(fake))
    below = json.dumps("x" * (THRESHOLD - 3))
    backend().set_json(api, WHERE, below, mapped_length=None)
    assert stored(fake) == "x" * (THRESHOLD - 3)
    backend(threshold=-1).set_json(api, WHERE, json.dumps(BIG), mapped_length=None)
    assert stored(fake) == BIG
    backend(threshold=0).set_json(api, WHERE, "1", mapped_length=None)
    assert REFERENCE.fullmatch(stored(fake))


@pytest.mark.parametrize("compression", sorted(SUFFIX))
def test_compressed_objects_carry_the_suffix_and_read_back_by_it(
    api: TaskApi, fake: FakeExecutionApi, s3: Any, compression: str
) -> None:
    backend(compression).set_json(api, WHERE, json.dumps(BIG), mapped_length=None)
    reference = stored(fake)
    assert REFERENCE.fullmatch(reference)
    assert reference.endswith(f".{SUFFIX[compression]}")
    assert DECOMPRESS[compression](object_bytes(s3, reference)) == json.dumps(BIG).encode()
    # Readers infer compression from the suffix, whatever they are configured to write.
    assert backend(None).get(api, WHERE) == BIG


def test_a_string_under_the_path_without_an_object_is_just_a_string(
    api: TaskApi, fake: FakeExecutionApi, s3: Any
) -> None:
    lookalike = f"{PATH}/somewhere/else"
    DatabaseXCom().set_json(api, WHERE, json.dumps(lookalike), mapped_length=None)
    assert backend().get(api, WHERE) == lookalike
    other = f"s3://{BUCKET}/xcom/dag_x/x"  # no connection id: not under our path
    DatabaseXCom().set_json(api, WHERE, json.dumps(other), mapped_length=None)
    assert backend().get(api, WHERE) == other


def test_delete_purges_the_object_then_the_row(
    api: TaskApi, fake: FakeExecutionApi, s3: Any
) -> None:
    backend("gzip").set_json(api, WHERE, json.dumps(BIG), mapped_length=None)
    assert len(keys(s3)) == 1
    backend().delete(api, WHERE)
    assert keys(s3) == []
    assert not fake.xcoms
    small = replace(WHERE, key="small")
    backend().set_json(api, small, "[1]", mapped_length=None)
    backend().delete(api, small)
    assert not fake.xcoms


def test_hostcalls_go_through_the_backend(
    api: TaskApi, fake: FakeExecutionApi, s3: Any, workload: Workload
) -> None:
    host = ApiHost(api, workload.ti, log_sink=lambda _: None, xcom=backend("gzip"))
    ti = workload.ti
    mine = XComAddress(ti.dag_id, ti.run_id, ti.task_id, "big", ti.map_index)
    host.call("set_xcom", {"key": "big", "value_json": json.dumps(BIG), "mapped_length": -1})
    assert stored(fake, mine).startswith(f"{PATH}/{ti.dag_id}/{ti.run_id}/{ti.task_id}/")
    assert host.call("get_xcom", {"key": "big", "map_index": -1}) == BIG
    host.call("delete_xcom", {"key": "big"})
    assert keys(s3) == []


def test_storage_failure_is_an_unavailable_hostcall(
    api: TaskApi, workload: Workload, tmp_path: Path
) -> None:
    (tmp_path / "blocker").write_text("a file where a directory should be")
    xcom = ObjectStorageXCom.configured(
        path=f"file://{tmp_path}/blocker/xcom", threshold=0, compression=None
    )
    host = ApiHost(api, workload.ti, log_sink=lambda _: None, xcom=xcom)
    with pytest.raises(HostCallError) as caught:
        host.call("set_xcom", {"key": "k", "value_json": "1", "mapped_length": -1})
    assert caught.value.kind == "unavailable"
    assert f"file://{tmp_path}/blocker/xcom/" in caught.value.message


def test_local_paths_work_without_a_connection(
    api: TaskApi, fake: FakeExecutionApi, tmp_path: Path
) -> None:
    xcom = ObjectStorageXCom.configured(
        path=f"file://{tmp_path}/xcom", threshold=10, compression="bz2"
    )
    xcom.set_json(api, WHERE, json.dumps(BIG), mapped_length=None)
    reference = stored(fake)
    assert reference.startswith(f"file://{tmp_path}/xcom/dag_x/{RUN_ID}/task_x/")
    assert Path(reference.removeprefix("file://")).is_file()
    assert xcom.get(api, WHERE) == BIG
    assert fake.calls("connection") == []


# -- connections and URLs ----------------------------------------------------------------------


def test_s3_options_follow_the_aws_connection() -> None:
    conn = Connection(
        conn_id="c", conn_type="aws", login="AK", password="SK",
        extra=json.dumps({
            "region_name": "eu-west-1", "aws_session_token": "T",
            "service_config": {"s3": {"endpoint_url": "http://s3.local"}},
            "endpoint_url": "http://ignored", "config_kwargs": {"signature_version": "s3v4"},
        }),
    )  # fmt: skip
    assert s3_options(conn) == {
        "use_listings_cache": False, "key": "AK", "secret": "SK", "token": "T",
        "endpoint_url": "http://s3.local", "client_kwargs": {"region_name": "eu-west-1"},
        "config_kwargs": {"signature_version": "s3v4"},
    }  # fmt: skip
    keys_in_extra = Connection(
        conn_id="c", conn_type="aws",
        extra='{"aws_access_key_id": "AK", "aws_secret_access_key": "SK"}',
    )  # fmt: skip
    assert s3_options(keys_in_extra) == {"use_listings_cache": False, "key": "AK", "secret": "SK"}
    assert s3_options(None) == {"use_listings_cache": False}
    with pytest.raises(ValueError, match="connection 'c': extra is not a JSON object"):
        s3_options(Connection(conn_id="c", conn_type="aws", extra="[1]"))


def test_storage_url_splits_the_connection_off() -> None:
    url = StorageUrl.parse(f"{PATH}/d/{RUN_ID}/t/u.gz")
    assert url == StorageUrl("s3", "aws_default", f"s3://{BUCKET}/xcom/d/{RUN_ID}/t/u.gz")
    assert StorageUrl.parse("file:///tmp/x") == StorageUrl("file", None, "file:///tmp/x")
    with pytest.raises(ValueError, match="not a URL with a scheme"):
        StorageUrl.parse("/tmp/x")


# -- settings ----------------------------------------------------------------------------------

OBJECT_STORAGE = "airflow.providers.common.io.xcom.backend.XComObjectStorageBackend"


def test_backend_from_airflow_environment_names() -> None:
    settings = load_settings(
        environ={
            "AIRFLOW__CORE__XCOM_BACKEND": OBJECT_STORAGE,
            "AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH": PATH + "/",
            "AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_THRESHOLD": "1024",
            "AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_COMPRESSION": "gzip",
        }
    )
    xcom = backend_from_settings(settings)
    assert isinstance(xcom, ObjectStorageXCom)
    assert (xcom.prefix, xcom.threshold, xcom.compression) == (PATH + "/", 1024, "gzip")
    assert isinstance(backend_from_settings(load_settings(environ={})), DatabaseXCom)


def test_backend_from_toml_with_airflow_dotted_section(tmp_path: Path) -> None:
    config = tmp_path / "supervisor.toml"
    config.write_text(
        f'[core]\nxcom_backend = "{OBJECT_STORAGE}"\n'
        f'[common.io]\nxcom_objectstorage_path = "{PATH}"\nxcom_objectstorage_threshold = 0\n'
    )
    xcom = backend_from_settings(load_settings(config_file=config, environ={}))
    assert isinstance(xcom, ObjectStorageXCom)
    assert (xcom.threshold, xcom.compression) == (0, None)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AIRFLOW__CORE__XCOM_BACKEND": "my.CustomXCom"}, "cannot act as that backend"),
        ({}, "xcom_objectstorage_path is empty"),
        ({"AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH": "/tmp/xcom"}, "not a URL with a scheme"),
        (
            {"AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH": "nosuchfs://b/x"},
            "nosuchfs://b/x",
        ),
        (
            {
                "AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH": PATH,
                "AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_COMPRESSION": "gz",
            },
            "give the name, not the suffix: 'gzip'",
        ),
    ],
)
def test_bad_backend_settings_stop_the_worker(env: dict[str, str], message: str) -> None:
    environ = {"AIRFLOW__CORE__XCOM_BACKEND": OBJECT_STORAGE, **env}
    with pytest.raises(ConfigError, match=re.escape(message)):
        backend_from_settings(load_settings(environ=environ))
