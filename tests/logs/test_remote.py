"""Remote log upload: a real S3 API (moto's threaded server) and a local path, retries, creds."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from moto.server import ThreadedMotoServer

from supervisor.api.models import Connection
from supervisor.errors import ExecutionApiError
from supervisor.logs.remote import RemoteLogs, remote_location, storage_options

LOG_PATH = "dag_id=d/run_id=manual__2026-01-01T00:00:00+00:00/task_id=t/attempt=1.log"
BUCKET = "airflow-logs"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    fs = fsspec.filesystem("s3", key="k", secret="s", client_kwargs={"endpoint_url": endpoint})
    fs.mkdir(BUCKET)
    try:
        yield endpoint
    finally:
        server.stop()


def aws_conn(endpoint: str) -> Connection:
    return Connection.model_validate(
        {
            "conn_id": "logs_s3",
            "conn_type": "aws",
            "login": "AKIDEXAMPLE",
            "password": "secret-key",
            "extra": json.dumps({"endpoint_url": endpoint, "region_name": "us-east-1"}),
        }
    )


@pytest.fixture
def log_file(tmp_path: Path) -> Path:
    path = tmp_path / "attempt=1.log"
    path.write_text('{"event": "hello"}\n')
    return path


def read_s3(endpoint: str, url: str) -> bytes:
    fs = fsspec.filesystem("s3", key="k", secret="s", client_kwargs={"endpoint_url": endpoint})
    return fs.cat(url)


def test_s3_with_credentials_from_the_connection(s3_endpoint: str, log_file: Path) -> None:
    asked: list[str] = []

    def get_connection(conn_id: str) -> Connection:
        asked.append(conn_id)
        return aws_conn(s3_endpoint)

    with RemoteLogs(f"s3://{BUCKET}/logs", conn_id="logs_s3") as remote:
        first = remote.upload(log_file, LOG_PATH, get_connection=get_connection)
        assert first.result(timeout=30) is True
        second = remote.upload(
            log_file, LOG_PATH.replace("1.log", "2.log"), get_connection=get_connection
        )
        assert second.result(timeout=30) is True
    assert read_s3(s3_endpoint, f"s3://{BUCKET}/logs/{LOG_PATH}") == log_file.read_bytes()
    assert asked == ["logs_s3"]  # cached for the second upload


def test_s3_from_the_environment_when_the_connection_cannot_be_fetched(
    s3_endpoint: str, log_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "env-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")

    def gone(conn_id: str) -> Connection:
        raise ExecutionApiError("connection logs_s3: 404", status_code=404)

    with RemoteLogs(f"s3://{BUCKET}/env", conn_id="logs_s3") as remote:
        assert remote.upload(log_file, LOG_PATH, get_connection=gone).result(timeout=30)
    assert read_s3(s3_endpoint, f"s3://{BUCKET}/env/{LOG_PATH}") == log_file.read_bytes()


def test_local_path_and_file_url(tmp_path: Path, log_file: Path) -> None:
    for base in (str(tmp_path / "plain"), f"file://{tmp_path}/url"):
        with RemoteLogs(base) as remote:
            assert remote.upload(log_file, LOG_PATH).result(timeout=10)
    assert (tmp_path / "plain" / LOG_PATH).read_bytes() == log_file.read_bytes()
    assert (tmp_path / "url" / LOG_PATH).read_bytes() == log_file.read_bytes()


def test_retries_until_it_works(tmp_path: Path, log_file: Path) -> None:
    calls: list[str] = []

    def flaky(local: Path, destination: str, options: dict[str, Any]) -> None:
        calls.append(destination)
        if len(calls) < 3:
            raise OSError("503 slow down")

    with RemoteLogs("s3://b/p", attempts=5, wait_min_s=0, wait_max_s=0, uploader=flaky) as remote:
        assert remote.upload(log_file, LOG_PATH).result(timeout=10) is True
    assert calls == [f"s3://b/p/{LOG_PATH}"] * 3


def test_gives_up_after_the_attempts_and_says_so(
    log_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []

    def down(local: Path, destination: str, options: dict[str, Any]) -> None:
        calls.append(destination)
        raise OSError("no route to host")

    with RemoteLogs("s3://b/p", attempts=2, wait_min_s=0, wait_max_s=0, uploader=down) as remote:
        assert remote.upload(log_file, LOG_PATH).result(timeout=10) is False
    assert len(calls) == 2
    failed = [r for r in caplog.records if r.message == "log_upload.failed"]
    assert failed and "no route to host" in failed[0].error


def test_a_connection_whose_extra_is_not_json_fails_the_upload_naming_it(
    log_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []
    broken = aws_conn("http://x:1").model_copy(update={"extra": "{not json"})
    with RemoteLogs(
        "s3://b/p", conn_id="logs_s3", uploader=lambda *a: calls.append(a[1])
    ) as remote:
        future = remote.upload(log_file, LOG_PATH, get_connection=lambda _: broken)
        assert future.result(timeout=10) is False
    assert calls == [], "no upload with credentials nobody chose"
    failed = [r for r in caplog.records if r.message == "log_upload.failed"]
    assert failed and "connection 'logs_s3': extra is not a JSON object" in failed[0].error


def test_missing_bucket_fails_the_upload_not_the_caller(s3_endpoint: str, log_file: Path) -> None:
    with RemoteLogs(
        "s3://no-such-bucket/logs", conn_id="c", attempts=2, wait_min_s=0, wait_max_s=0
    ) as remote:
        future = remote.upload(log_file, LOG_PATH, get_connection=lambda _: aws_conn(s3_endpoint))
        assert future.result(timeout=30) is False


def test_where_and_how() -> None:
    assert remote_location("s3://b/logs", "a/b.log") == "s3://b/logs/a/b.log"
    assert remote_location("s3://b/logs/", "a/b.log") == "s3://b/logs/a/b.log"
    assert storage_options("s3", aws_conn("http://x:1")) == {
        "use_listings_cache": False,
        "key": "AKIDEXAMPLE",
        "secret": "secret-key",
        "endpoint_url": "http://x:1",
        "client_kwargs": {"region_name": "us-east-1"},
    }
    assert storage_options("s3", None) == {"use_listings_cache": False}
    assert storage_options("file", aws_conn("http://x:1")) == {}
    in_service_config = aws_conn("unused").model_copy(
        update={"extra": json.dumps({"service_config": {"s3": {"endpoint_url": "http://y:2"}}})}
    )
    assert storage_options("s3a", in_service_config)["endpoint_url"] == "http://y:2"
