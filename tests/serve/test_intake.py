"""The Celery intake with a real Redis and a real `supervisor serve` process, no Airflow.

Bad messages must end as a Celery FAILURE with one log line that says what was wrong (and never
the token), while the worker keeps serving; Celery's remote control must see the worker.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from kombu import Producer

from .conftest import ServeProcess, assert_nothing_left, serve_env

#: Shaped like a JWT so the masking check means something; signed by nobody.
TOKEN = "eyJhbGciOiJIUzUxMiJ9.eyJzdWIiOiJ0ZXN0In0.c2lnbmF0dXJlLW5vdC1yZWFs"
RESULT_TIMEOUT_S = 30


def _workload(**changes: object) -> dict[str, object]:
    workload: dict[str, object] = {
        "type": "ExecuteTask",
        "token": TOKEN,
        "dag_rel_path": "x.py",
        "bundle_info": {"name": "dags-folder", "version": None},
        "log_path": "dag_id=d/run_id=r/task_id=t/attempt=1.log",
        "ti": {
            "id": str(uuid.uuid4()),
            "task_id": "t",
            "dag_id": "d",
            "run_id": "r",
            "try_number": 1,
            "map_index": -1,
            "queue": "q",
            "pool_slots": 1,
            "priority_weight": 1,
        },
    }
    workload.update(changes)
    return workload


class Worker(ServeProcess):
    """`supervisor serve` on one private queue, with no log server (several may run at once)."""

    def __init__(self, tmp: Path) -> None:
        self.queue = f"intake-test-{uuid.uuid4().hex[:8]}"
        env = serve_env(
            # Never reached by these tests: every message is refused before any API call.
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL="http://127.0.0.1:9/execution/",
            SUPERVISOR_HOME=str(tmp / "home"),
            SUPERVISOR__SKIP_SERVE_LOGS="true",
        )
        args = ["--queues", self.queue, "--concurrency", "2", "--hostname", f"{self.queue}.test"]
        super().__init__(tmp, args, env)


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    with Worker(tmp_path_factory.mktemp("intake")) as worker:
        yield worker


def _send(client: Celery, worker: Worker, *args: object) -> tuple[str, object]:
    result = client.send_task("execute_workload", args=list(args), queue=worker.queue)
    result.get(timeout=RESULT_TIMEOUT_S, propagate=False)
    return result.state, result.result


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["{not json"], "not valid JSON"),
        ([json.dumps(_workload(type="ExecuteCallback"))], "ExecuteCallback"),
        ([json.dumps(_workload(type="SomethingNew"))], "SomethingNew"),
        ([json.dumps(_workload(ti={"id": "not-a-uuid"}))], "ti.id"),
        ([], "exactly one argument"),
        ([json.dumps(_workload()), "extra"], "exactly one argument"),
    ],
)
def test_bad_workloads_fail_clearly_and_the_worker_keeps_serving(
    worker: Worker, client: Celery, args: list[object], reason: str
):
    state, error = _send(client, worker, *args)

    assert state == "FAILURE"
    assert type(error).__name__ == "WorkloadError"
    assert reason in str(error)
    rejected = [line for line in worker.log().splitlines() if "workload.rejected" in line]
    assert any(reason in line for line in rejected), rejected
    assert worker.process.poll() is None
    assert TOKEN not in worker.log() and TOKEN.split(".")[1] not in worker.log()


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"\x80\x04 pickled?", "application/x-python-serialize"),  # not an accepted serializer
        (b"\xff\xfe not utf-8", "application/json"),
        (b"[1, 2", "application/json"),
    ],
)
def test_undecodable_messages_are_dropped_and_the_worker_keeps_serving(
    worker: Worker, client: Celery, body: bytes, content_type: str
):
    with client.connection_for_write() as conn:
        Producer(conn).publish(
            body,
            routing_key=worker.queue,
            content_type=content_type,
            content_encoding="binary" if "python" in content_type else "utf-8",
            headers={"task": "execute_workload", "id": str(uuid.uuid4()), "lang": "py"},
        )
    state, _ = _send(client, worker, "{still not json")
    assert state == "FAILURE", "the message after it is still handled"
    assert worker.process.poll() is None
    assert_nothing_left(worker.queue)


def test_celery_remote_control_sees_the_worker(worker: Worker, client: Celery):
    replies = client.control.inspect(timeout=5).active_queues() or {}
    ours = {
        name: queues for name, queues in replies.items() if name.endswith(f"{worker.queue}.test")
    }
    assert ours, f"no reply from our worker among {sorted(replies)}"
    (queues,) = ours.values()
    assert [q["name"] for q in queues] == [worker.queue]
