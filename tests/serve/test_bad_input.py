"""Bad input to a real `supervisor serve`, and good work right after it: the worker keeps serving.

tests/serve/test_intake.py proves malformed workloads end as a Celery FAILURE and that bodies
Celery cannot decode are dropped. This file adds what only a worker that also runs tasks can
show: raw messages published straight to Redis (a task name this worker does not know, a body
that is not UTF-8 or not JSON, an oversize or lone-surrogate workload) each leave one log record
whose first line names the problem and nothing in the queue or unacked, and afterwards a real
task runs in the example bundle; a version whose venv is damaged fails only its own tasks, with
the start error in the worker log, while the intact version's tasks succeed.

Real processes: serve on a private pair of queues, real Redis, the example bundle's runtimes,
and the HTTP Execution API stub of tests/apistub.py.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from kombu import Producer

from supervisor.bundle_venv import venv_python
from supervisor.store import BundleStore
from supervisor.workload import MAX_WORKLOAD_BYTES
from tests.apistub import HttpFakeApi, execute_task

from .conftest import ServeProcess, assert_nothing_left, serve_env

RESULT_TIMEOUT_S = 60


class Serve(ServeProcess):
    """serve on queue `good` (example-etl 2.0.0) and `broken` (1.0.0), no log server."""

    def __init__(self, tmp: Path, home: Path, api: HttpFakeApi) -> None:
        tag = uuid.uuid4().hex[:8]
        self.good, self.broken = f"bad-input-good-{tag}", f"bad-input-broken-{tag}"
        config = tmp / "supervisor.toml"
        config.write_text(
            f'[supervisor]\nqueues = ["{self.good}", "{self.broken}"]\n'
            f'[supervisor.queue_to_bundle]\n"{self.good}" = "example-etl==2.0.0"\n'
            f'"{self.broken}" = "example-etl==1.0.0"\n'
            "[celery]\nworker_concurrency = 2\n"
        )
        env = serve_env(
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=api.url,
            SUPERVISOR_HOME=str(home),
            SUPERVISOR__SKIP_SERVE_LOGS="true",
        )
        super().__init__(tmp, ["--config", str(config), "--hostname", f"{tag}.bad-input"], env)

    def lines(self, fragment: str) -> list[str]:
        return [line for line in self.log().splitlines() if fragment in line]


@pytest.fixture(scope="module")
def serve(
    tmp_path_factory: pytest.TempPathFactory,
    example_wheels: dict[str, Path],
    uv_cache: Path,
    api: HttpFakeApi,
) -> Iterator[Serve]:
    home = tmp_path_factory.mktemp("bad-input-home")
    store = BundleStore(home, cache_dir=uv_cache)
    for version in ("1.0.0", "2.0.0"):
        store.install(example_wheels[version])
    venv_python(store.get("example-etl", "1.0.0").venv).unlink()  # 1.0.0 cannot start
    with Serve(tmp_path_factory.mktemp("bad-input"), home, api) as serve:
        yield serve
        api.release.set()


def _run_good_task(client: Celery, serve: Serve, api: HttpFakeApi) -> None:
    """A real task on the intact version succeeds: the worker is still serving."""
    ti_id, workload = execute_task(serve.good, task_id="noop")
    result = client.send_task("execute_workload", args=[workload], queue=serve.good)
    assert result.get(timeout=RESULT_TIMEOUT_S) is None
    assert api.fake.finals[ti_id] == "success"


def _publish(
    client: Celery, queue: str, body: bytes, *, task: str = "execute_workload", argsrepr: str = "()"
) -> str:
    """`body` straight to Redis as a JSON message of `task`; returns the message id."""
    message_id = str(uuid.uuid4())
    with client.connection_for_write() as conn:
        Producer(conn).publish(
            body, routing_key=queue, content_type="application/json", content_encoding="utf-8",
            headers={"task": task, "id": message_id, "lang": "py", "argsrepr": argsrepr},
        )  # fmt: skip
    return message_id


@pytest.mark.parametrize(
    ("body", "task", "expected"),
    [
        (b"[[], {}, {}]", "airflow.executors.celery_executor.execute_command",
         "Received unregistered task of type 'airflow.executors.celery_executor.execute_command'"),
        (b"\xff\xfe not utf-8", "execute_workload", "Can't decode message body"),
        (b'[["{"], {}, {', "execute_workload", "Can't decode message body"),
    ],
    ids=["unknown-task-name", "invalid-utf8", "not-json"],
)  # fmt: skip
def test_raw_messages_leave_one_clear_line_and_nothing_behind(
    serve: Serve, client: Celery, api: HttpFakeApi, body: bytes, task: str, expected: str
) -> None:
    before = len(serve.lines(expected))
    message_id = _publish(client, serve.good, body, task=task)

    serve.wait_for(lambda: len(serve.lines(expected)) > before, f"a line saying {expected!r}")
    # One record, its first line naming the problem and the message. Celery's consumer logs what
    # follows it (a hint, or kombu's traceback for a body it cannot decode) before our code runs.
    (line,) = serve.lines(expected)[before:]
    assert (message_id if "decode" in expected else task) in line, line
    assert_nothing_left(serve.good)
    _run_good_task(client, serve, api)


@pytest.mark.parametrize(
    ("workload", "expected"),
    [
        (json.dumps({"type": "ExecuteTask", "pad": "x" * MAX_WORKLOAD_BYTES}),
         f"over the {MAX_WORKLOAD_BYTES} allowed"),
        (execute_task("q")[1].replace('"task_id": "noop"', '"task_id": "no\\ud800op"'),
         "workload field ti.task_id holds a lone surrogate"),
    ],
    ids=["oversize", "lone-surrogate"],
)  # fmt: skip
def test_workloads_refused_at_the_edge_fail_clearly_then_a_task_runs(
    serve: Serve, client: Celery, api: HttpFakeApi, workload: str, expected: str
) -> None:
    result = client.send_task("execute_workload", args=[workload], queue=serve.good)
    result.get(timeout=RESULT_TIMEOUT_S, propagate=False)

    assert result.state == "FAILURE"
    assert type(result.result).__name__ == "WorkloadError" and expected in str(result.result)
    rejected = [line for line in serve.lines("workload.rejected") if result.id in line]
    assert len(rejected) == 1 and expected in rejected[0], rejected
    assert_nothing_left(serve.good)
    _run_good_task(client, serve, api)


def test_a_damaged_version_fails_only_its_own_tasks(
    serve: Serve, client: Celery, api: HttpFakeApi
) -> None:
    ti_id, workload = execute_task(serve.broken, task_id="noop")
    result = client.send_task("execute_workload", args=[workload], queue=serve.broken)
    assert result.get(timeout=RESULT_TIMEOUT_S) is None, "handled: Airflow was told"

    assert api.fake.finals[ti_id] in ("failed", "up_for_retry")
    not_runnable = [line for line in serve.lines("ti.not_runnable") if ti_id in line]
    assert len(not_runnable) == 1, serve.log()
    assert "bundle example-etl==1.0.0: runtime (pid " in not_runnable[0]
    assert "python: not found" in not_runnable[0]
    _run_good_task(client, serve, api)


#: Shaped like Airflow's workload JWT, so the worker log's masking has something to catch.
LEAKY_TOKEN = "eyJhbGciOiJIUzUxMiJ9.eyJzdWIiOiJ0aSJ9.c2lnbmF0dXJlLW9mLWEtdGVzdA"


@pytest.mark.parametrize(
    "body",
    [b"\xff" + LEAKY_TOKEN.encode(), json.dumps([[{"token": LEAKY_TOKEN}], {}]).encode()[:-3]],
    ids=["invalid-utf8", "not-json"],
)  # fmt: skip
def test_a_message_celery_cannot_decode_never_puts_its_token_in_the_worker_log(
    serve: Serve, client: Celery, api: HttpFakeApi, body: bytes
) -> None:
    """Celery's consumer logs the headers and the start of the body; the token must not show."""
    argsrepr = repr((json.dumps({"token": LEAKY_TOKEN}),))
    message_id = _publish(client, serve.good, body, argsrepr=argsrepr)
    serve.wait_for(lambda: message_id in serve.log(), "Celery's line about the message")
    assert_nothing_left(serve.good)
    assert LEAKY_TOKEN not in serve.log()
    assert LEAKY_TOKEN.split(".")[1] not in serve.log()
    assert "eyJ***" in serve.log()
