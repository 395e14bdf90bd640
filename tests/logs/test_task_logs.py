"""A whole TI through TaskRunner: a real runtime runs example-etl's `talk`, the fake Execution API
answers, and the task log file is read back: every channel lands, masked, in order; a remote
upload copies it after the final state and never changes that state when it fails.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from supervisor.api.client import ExecutionApiClient
from supervisor.config import load_settings
from supervisor.logs.remote import RemoteLogs
from supervisor.pool import RuntimePool
from supervisor.store import BundleStore
from supervisor.taskrun import TaskRunner
from supervisor.workload import Workload
from tests.api.conftest import FakeExecutionApi

PASSWORD = "pw-9f2c-never-in-logs"
MARKED = "marked-secret-77ab"
LOG_PATH = "dag_id=bundle_logs/run_id=r1/task_id=talk/attempt=1.log"


@pytest.fixture
def pool() -> Iterator[RuntimePool]:
    pool = RuntimePool()
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def run_talk(
    tmp_path: Path,
    session_home: Path,
    client: ExecutionApiClient,
    fake: FakeExecutionApi,
    workload: Workload,
    pool: RuntimePool,
) -> Callable[[RemoteLogs | None], list[dict[str, Any]]]:
    """Runs example-etl 2.0.0's `talk` as bundle_logs.talk, uploading with the RemoteLogs given;
    returns the records of its log file."""
    fake.connections["logs_conn"] = {
        "conn_id": "logs_conn",
        "conn_type": "generic",
        "host": "db.example",
        "password": PASSWORD,
    }
    fake.run_context = {
        **fake.run_context,
        "dag_run": {
            **fake.run_context["dag_run"],
            "conf": {"conn_id": "logs_conn", "secret": MARKED},
        },
    }
    settings = load_settings(
        {
            "supervisor.queue_to_bundle": {"bundles": "example-etl==2.0.0"},
            "logging.base_log_folder": str(tmp_path / "logs"),
        },
        environ={},
    )
    talk = replace(
        workload,
        log_path=LOG_PATH,
        ti=replace(workload.ti, dag_id="bundle_logs", task_id="talk", run_id="r1"),
    )

    def run(remote_logs: RemoteLogs | None) -> list[dict[str, Any]]:
        runner = TaskRunner(
            settings=settings,
            api=client,
            store=BundleStore(session_home),
            pool=pool,
            remote_logs=remote_logs,
        )
        runner.handle(talk, "celery-1")
        text = (tmp_path / "logs" / LOG_PATH).read_text()
        return [json.loads(line) for line in text.splitlines()]

    return run


def test_every_channel_lands_in_order_with_fields_and_secrets_masked(
    tmp_path: Path,
    fake: FakeExecutionApi,
    workload: Workload,
    run_talk: Callable[[RemoteLogs | None], Any],
) -> None:
    lines = run_talk(None)
    raw = (tmp_path / "logs" / LOG_PATH).read_text()

    assert PASSWORD not in raw and MARKED not in raw
    events = [line["event"] for line in lines]
    expected = [
        "talk: printed line v2 *** ***",
        "talk: stderr line v2 *** ***",
        "talk: logging line v2 *** ***",
        "talk: ctx.log line",
        "talk: caught",
    ]
    positions = [next(i for i, e in enumerate(events) if e.startswith(x)) for x in expected]
    assert positions == sorted(positions), events
    assert events[0].startswith("Running in bundle example-etl==2.0.0 (runtime pid ")
    assert events[-1] == "Task instance finished: success"
    by_event = {line["event"]: line for line in lines}
    fields = by_event["talk: ctx.log line"]
    assert (fields["answer"], fields["marker"], fields["said"]) == (42, "v2", "*** ***")
    assert by_event["talk: printed line v2 *** ***"]["logger"] == "task.stdout"
    assert by_event["talk: stderr line v2 *** ***"]["logger"] == "task.stderr"
    assert by_event["talk: logging line v2 *** ***"]["level"] == "warning"
    caught = by_event["talk: caught"]
    assert caught["level"] == "error"
    assert caught["error_detail"][0]["exc_type"] == "ValueError"
    assert "talk: handled error *** ***" in json.dumps(caught["error_detail"])
    for line in lines:
        assert list(line)[:4] == ["timestamp", "level", "event", "logger"]
        assert (line["dag_id"], line["task_id"], line["run_id"]) == ("bundle_logs", "talk", "r1")
        assert (line["try_number"], line["map_index"]) == (1, -1)
        assert line["ti_id"] == str(workload.ti.id)
        assert line["timestamp"].endswith("Z")
    assert fake.states  # the final state went out
    assert list(fake.states.values()) == ["success"]


def test_remote_upload_copies_the_finished_log(
    tmp_path: Path, run_talk: Callable[[RemoteLogs | None], Any]
) -> None:
    remote = tmp_path / "remote"
    with RemoteLogs(f"file://{remote}") as remote_logs:
        run_talk(remote_logs)
    # close() waited for the queued upload.
    uploaded = (remote / LOG_PATH).read_bytes()
    assert uploaded == (tmp_path / "logs" / LOG_PATH).read_bytes()
    assert PASSWORD.encode() not in uploaded


def test_failed_upload_leaves_the_task_state_alone(
    fake: FakeExecutionApi,
    run_talk: Callable[[RemoteLogs | None], Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    tries: list[str] = []

    def broken(local: Path, destination: str, options: dict[str, Any]) -> None:
        tries.append(destination)
        raise OSError("store down")

    with RemoteLogs(
        "s3://bucket/logs", attempts=3, wait_min_s=0, wait_max_s=0, uploader=broken
    ) as remote_logs:
        lines = run_talk(remote_logs)
    assert lines[-1]["event"] == "Task instance finished: success"
    assert list(fake.states.values()) == ["success"]
    assert tries == [f"s3://bucket/logs/{LOG_PATH}"] * 3
    assert any(r.message == "log_upload.failed" for r in caplog.records)
