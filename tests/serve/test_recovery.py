"""Final states survive what an operator's worker meets: kill -9, API outages, SIGTERM.

Real processes throughout: `supervisor serve` subprocesses on one home (so the second finds the
first's journal), Celery on real Redis (a private queue per test), the example bundle's runtimes
in their own venv, and the HTTP Execution API stub of tests/apistub.py, whose outages are real
(the port stops listening). Every wait is on the stub's condition or polls with a deadline; the
only fixed wait is the outage itself, whose length is the scenario. Durations are printed for the
closing note, never asserted.
"""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis
from celery import Celery

from supervisor.journal import JOURNAL_DIR
from supervisor.store import BundleStore
from tests.apistub import HttpFakeApi, execute_task, run_context
from tests.polling import wait_processes_gone, wait_until

from .conftest import BROKER, ServeProcess, serve_env

BUNDLE = "example-etl==2.0.0"
#: The outage of the acceptance test; OUTAGE_S shortens it for a quick local run.
OUTAGE_S = float(os.environ.get("OUTAGE_S", "60"))
SETTLE_TIMEOUT_S = 60


class Serve(ServeProcess):
    """`supervisor serve` for one queue and home, heartbeating every second."""

    def __init__(
        self, tmp: Path, home: Path, api: HttpFakeApi, queue: str, **supervisor: object
    ) -> None:
        self.home, self.queue = home, queue
        options = {"queues": [queue], "heartbeat_interval_s": 1, **supervisor}
        lines = [f"{key} = {_toml(value)}" for key, value in options.items()]
        config = tmp / f"supervisor-{uuid.uuid4().hex[:6]}.toml"
        config.write_text(
            "[supervisor]\n" + "\n".join(lines) + "\n"
            f'[supervisor.queue_to_bundle]\n"{queue}" = "{BUNDLE}"\n'
            "[celery]\nworker_concurrency = 10\n"
            # Quick client retries, so a test's outage is mostly the journal's waits.
            "[workers]\nexecution_api_retries = 2\nexecution_api_retry_wait_max = 2\n"
        )
        env = serve_env(
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=api.url,
            SUPERVISOR_HOME=str(home),
            SUPERVISOR__SKIP_SERVE_LOGS="true",
            AIRFLOW__LOGGING__BASE_LOG_FOLDER=str(home / "logs"),
        )
        super().__init__(tmp, ["--config", str(config), "--hostname", f"{queue}.test"], env)

    def runtimes(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children(recursive=True)


def _toml(value: object) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    return str(value)


def journal_rows(home: Path) -> list[tuple[str, str]]:
    """Every row of every worker's journal on `home`."""
    rows = []
    for path in sorted((home / JOURNAL_DIR).glob("*.sqlite3")):
        with contextlib.closing(sqlite3.connect(path)) as db:
            rows += db.execute("SELECT ti_id, phase FROM tis").fetchall()
    return rows


@pytest.fixture(scope="module")
def home(
    tmp_path_factory: pytest.TempPathFactory, example_wheels: dict[str, Path], uv_cache: Path
) -> Path:
    home = tmp_path_factory.mktemp("recovery-home")
    BundleStore(home, cache_dir=uv_cache).install(example_wheels["2.0.0"])
    return home


@pytest.fixture
def queue() -> str:
    return f"recovery-test-{uuid.uuid4().hex[:8]}"


def _api(should_retry: bool) -> HttpFakeApi:
    context = copy.deepcopy(run_context())
    context["should_retry"] = should_retry
    return HttpFakeApi(context=context)


@pytest.fixture
def api() -> Iterator[HttpFakeApi]:
    with _api(should_retry=True) as api:
        yield api


def send_sleeper(client: Celery, api: HttpFakeApi, queue: str, seconds: float) -> tuple[str, str]:
    """Queue bundle_drain.sleep_a_bit for `seconds`; returns (ti_id, celery_id)."""
    ti_id, workload = execute_task(queue, dag_id="bundle_drain", task_id="sleep_a_bit")
    api.fake.conf[ti_id] = {"seconds": seconds}
    result = client.send_task("execute_workload", args=[workload], queue=queue)
    return ti_id, result.id


def wait_running(api: HttpFakeApi, home: Path, ti_ids: list[str]) -> None:
    """The supervisor has /run's answer for every TI: its journal holds them as running.

    The stub seeing /run is not enough before an outage: `api.down()` may drop the answer.
    """
    assert api.fake.wait(lambda: all(t in api.fake.run_at for t in ti_ids), timeout=60), (
        "tasks never started"
    )
    wait_until(
        lambda: set(ti_ids) <= {t for t, phase in journal_rows(home) if phase == "running"},
        timeout=60,
        what="the TIs running in the journal",
    )


def task_log(home: Path, ti_id: str) -> str:
    path = home / "logs" / f"dag_id=bundle_drain/run_id=r/task_id=sleep_a_bit/{ti_id}.log"
    return path.read_text()


def celery_state(client: Celery, celery_id: str) -> str:
    return str(client.AsyncResult(celery_id).state)


def start_and_kill_9(
    tmp_path: Path, home: Path, api: HttpFakeApi, queue: str, client: Celery
) -> tuple[str, str, list[psutil.Process]]:
    """serve, a long task running in it, then kill -9; returns (ti_id, celery_id, runtimes)."""
    first = Serve(tmp_path, home, api, queue)
    first.wait_ready()
    ti_id, celery_id = send_sleeper(client, api, queue, seconds=600)
    wait_running(api, home, [ti_id])
    runtimes = first.runtimes()
    assert runtimes
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(10)
    return ti_id, celery_id, runtimes


def settled_by(
    serve: Serve, api: HttpFakeApi, client: Celery, ti_id: str, celery_id: str, state: str
) -> None:
    """`serve` reports `state` for the TI, writes its Celery result and empties the journal."""
    with serve:
        assert not api.fake.wait_finals([ti_id], timeout=SETTLE_TIMEOUT_S), serve.log()
        assert api.fake.finals[ti_id] == state
        serve.wait_for(lambda: celery_state(client, celery_id) == "SUCCESS", "Celery result")
        serve.wait_for(lambda: not journal_rows(serve.home), "journal emptied")


def test_kill_9_mid_task_no_runtime_survives_and_restart_settles_the_ti(
    tmp_path: Path, home: Path, queue: str, api: HttpFakeApi, client: Celery
) -> None:
    ti_id, celery_id, runtimes = start_and_kill_9(tmp_path, home, api, queue, client)
    killed = time.monotonic()
    wait_processes_gone(runtimes, timeout=5, what="runtimes gone within 5 s of kill -9")
    print(f"\nruntimes gone {time.monotonic() - killed:.2f}s after kill -9")
    assert ti_id not in api.fake.finals

    settled_by(Serve(tmp_path, home, api, queue), api, client, ti_id, celery_id, "up_for_retry")
    assert "stopped before it reported the task's outcome" in task_log(home, ti_id)


def test_the_same_worker_twice_on_one_home_is_refused(
    tmp_path: Path, home: Path, queue: str, api: HttpFakeApi
) -> None:
    with Serve(tmp_path, home, api, queue) as first:
        second = Serve(tmp_path, home, api, queue)
        assert second.process.wait(60) != 0
        assert "another `supervisor serve` with this hostname and these queues" in second.log()
        assert first.alive()


def test_a_worker_restarted_with_other_queues_settles_what_it_left(
    tmp_path: Path, home: Path, queue: str, api: HttpFakeApi, client: Celery
) -> None:
    ti_id, celery_id, _ = start_and_kill_9(tmp_path, home, api, queue, client)
    other = Serve(tmp_path, home, api, f"{queue}-other")
    settled_by(other, api, client, ti_id, celery_id, "up_for_retry")


def test_ten_final_states_reach_airflow_after_an_api_outage(
    tmp_path: Path, home: Path, queue: str, api: HttpFakeApi, client: Celery
) -> None:
    with Serve(tmp_path, home, api, queue) as serve:
        sent = [send_sleeper(client, api, queue, seconds=3) for _ in range(10)]
        ti_ids = [ti_id for ti_id, _ in sent]
        wait_running(api, home, ti_ids)
        api.down()
        threading.Event().wait(OUTAGE_S)  # the outage itself, not a synchronisation
        assert api.fake.missing_finals(ti_ids) == set(ti_ids)  # nothing got through
        back = time.monotonic()
        api.up()
        assert not api.fake.wait_finals(ti_ids, timeout=SETTLE_TIMEOUT_S), serve.log()
        print(f"\nall 10 states in {time.monotonic() - back:.2f}s after a {OUTAGE_S:g}s outage")
        assert {api.fake.finals[t] for t in ti_ids} == {"success"}
        for _, celery_id in sent:
            serve.wait_for(lambda c=celery_id: celery_state(client, c) == "SUCCESS", "results")
        assert "ti.api_unreachable" in serve.log()
        serve.wait_for(lambda: not journal_rows(home), "journal emptied")


def test_a_state_airflow_refuses_after_an_outage_is_recorded_and_dropped(
    tmp_path: Path, home: Path, queue: str, api: HttpFakeApi, client: Celery
) -> None:
    with Serve(tmp_path, home, api, queue) as serve:
        ti_id, celery_id = send_sleeper(client, api, queue, seconds=1)
        wait_running(api, home, [ti_id])
        api.down()
        serve.wait_for(lambda: "ti.api_unreachable" in serve.log(), "the state waiting")
        with api.fake.lock:  # Airflow's heartbeat timeout failed the TI meanwhile
            api.fake.states[ti_id] = "failed"
        api.up()
        serve.wait_for(lambda: celery_state(client, celery_id) == "SUCCESS", "Celery result")
        assert ti_id not in api.fake.finals
        assert api.fake.states[ti_id] == "failed"
        assert "not recorded: Airflow no longer takes a state" in task_log(home, ti_id)
        serve.wait_for(lambda: not journal_rows(home), "journal emptied")


def test_a_ti_still_waiting_for_the_api_at_shutdown_is_settled_by_the_next_start(
    tmp_path: Path, home: Path, queue: str, api: HttpFakeApi, client: Celery
) -> None:
    first = Serve(tmp_path, home, api, queue, drain_grace_s=1)
    first.wait_ready()
    ti_id, celery_id = send_sleeper(client, api, queue, seconds=1)
    wait_running(api, home, [ti_id])
    api.down()
    first.wait_for(lambda: "ti.api_unreachable" in first.log(), "the TI waiting for the API")
    assert first.stop() == 0, first.log()
    # The return value could not be pushed, so the outcome was never decided.
    assert journal_rows(home) == [(ti_id, "running")]
    assert "the return value is pushed again" in task_log(home, ti_id)
    assert celery_state(client, celery_id) != "SUCCESS"  # Airflow does not have a state yet

    api.up()
    settled_by(Serve(tmp_path, home, api, queue), api, client, ti_id, celery_id, "up_for_retry")


def test_sigterm_drain_grace_ends_then_the_running_ti_is_cancelled_and_reported(
    tmp_path: Path, home: Path, queue: str, api: HttpFakeApi, client: Celery
) -> None:
    serve = Serve(tmp_path, home, api, queue, drain_grace_s=2)
    serve.wait_ready()
    ti_id, celery_id = send_sleeper(client, api, queue, seconds=600)
    wait_running(api, home, [ti_id])
    asked = time.monotonic()
    serve.process.send_signal(signal.SIGTERM)
    assert serve.process.wait(60) == 0, serve.log()
    print(f"\nserve exited {time.monotonic() - asked:.2f}s after SIGTERM (grace 2 s)")
    assert api.fake.finals[ti_id] == "up_for_retry"
    assert "the worker is shutting down (grace period over" in task_log(home, ti_id)
    assert celery_state(client, celery_id) == "SUCCESS"
    assert not journal_rows(home)


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT])
def test_a_second_signal_ends_the_drain_at_once(
    tmp_path: Path, home: Path, queue: str, api: HttpFakeApi, client: Celery, second: int
) -> None:
    serve = Serve(tmp_path, home, api, queue, drain_grace_s=600)
    serve.wait_ready()
    ti_id, celery_id = send_sleeper(client, api, queue, seconds=600)
    wait_running(api, home, [ti_id])
    serve.process.send_signal(signal.SIGTERM)
    serve.wait_for(lambda: "drain.started" in serve.log(), "the drain")
    serve.process.send_signal(second)
    assert serve.process.wait(60) == 0, serve.log()
    assert api.fake.finals[ti_id] == "up_for_retry"
    assert f"second {signal.Signals(second).name}" in task_log(home, ti_id)
    assert celery_state(client, celery_id) == "SUCCESS"
    assert not journal_rows(home)


def test_a_ti_whose_run_never_got_through_goes_back_to_the_queue_at_shutdown(
    tmp_path: Path, home: Path, queue: str, api: HttpFakeApi, client: Celery
) -> None:
    api.down()
    first = Serve(tmp_path, home, api, queue, drain_grace_s=1)
    first.wait_ready()
    ti_id, celery_id = send_sleeper(client, api, queue, seconds=1)
    first.wait_for(lambda: "ti.api_unreachable" in first.log(), "/run waiting for the API")
    assert first.stop() == 0, first.log()
    assert "workload.requeued" in first.log()
    assert not journal_rows(home)  # nothing started, nothing owed
    assert redis.Redis.from_url(BROKER).llen(queue) == 1  # the message is back in the queue

    api.up()
    settled_by(Serve(tmp_path, home, api, queue), api, client, ti_id, celery_id, "success")
