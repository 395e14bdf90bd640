"""The Celery intake with a real Redis and a real `supervisor serve` process, no Airflow.

Bad messages must end as a Celery FAILURE with one log line that says what was wrong (and never
the token), while the worker keeps serving; Celery's remote control must see the worker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery
from kombu import Producer

from tests.conftest import REPO

BROKER = "redis://127.0.0.1:6379/13"
BACKEND = "redis://127.0.0.1:6379/14"
#: Shaped like a JWT so the masking check means something; signed by nobody.
TOKEN = "eyJhbGciOiJIUzUxMiJ9.eyJzdWIiOiJ0ZXN0In0.c2lnbmF0dXJlLW5vdC1yZWFs"
READY_TIMEOUT_S = 60
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


class Worker:
    """`supervisor serve` on one private queue; output in `log_path`."""

    def __init__(self, tmp: Path) -> None:
        self.queue = f"intake-test-{uuid.uuid4().hex[:8]}"
        self.log_path = tmp / "serve.log"
        env = {
            **os.environ,
            "AIRFLOW__CELERY__BROKER_URL": BROKER,
            "AIRFLOW__CELERY__RESULT_BACKEND": BACKEND,
            # Never reached by these tests: every message is refused before any API call.
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "http://127.0.0.1:9/execution/",
            "SUPERVISOR_HOME": str(tmp / "home"),
            # Several of these at once, and maybe an e2e serve on :8793: no log server.
            "SUPERVISOR__SKIP_SERVE_LOGS": "true",
        }
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "supervisor",
                    "serve",
                    "--queues",
                    self.queue,
                    "--concurrency",
                    "2",
                    "--hostname",
                    f"{self.queue}.test",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while " ready." not in self.log():
            assert self.process.poll() is None, f"serve exited:\n{self.log()}"
            assert time.monotonic() < deadline, f"serve not ready:\n{self.log()}"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    worker = Worker(tmp_path_factory.mktemp("intake"))
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.process.send_signal(signal.SIGTERM)
        code = worker.process.wait(60)
        assert code == 0, worker.log()


@pytest.fixture(scope="module")
def client() -> Iterator[Celery]:
    app = Celery("airflow-scheduler-stand-in", broker=BROKER, backend=BACKEND)
    app.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json")
    yield app
    app.close()


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
    broker = redis.Redis.from_url(BROKER)
    assert broker.llen(worker.queue) == 0
    # Acks come late, just after the result is stored: wait for them, with a deadline.
    deadline = time.monotonic() + RESULT_TIMEOUT_S
    while [v for v in broker.hvals("unacked") if worker.queue.encode() in v]:
        assert time.monotonic() < deadline, "a message was left unacked"
        time.sleep(0.05)


def test_celery_remote_control_sees_the_worker(worker: Worker, client: Celery):
    replies = client.control.inspect(timeout=5).active_queues() or {}
    ours = {
        name: queues for name, queues in replies.items() if name.endswith(f"{worker.queue}.test")
    }
    assert ours, f"no reply from our worker among {sorted(replies)}"
    (queues,) = ours.values()
    assert [q["name"] for q in queues] == [worker.queue]
