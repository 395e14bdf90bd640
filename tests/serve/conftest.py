"""`supervisor serve` as a real subprocess on real Redis, and a Celery client standing in for
Airflow's scheduler: what the intake, status and metrics tests share."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Self

import pytest
import redis
from celery import Celery

from tests.apistub import HttpFakeApi
from tests.conftest import REPO
from tests.polling import wait_until

#: Redis DBs of their own, so these tests never see Airflow's queues.
BROKER = "redis://127.0.0.1:6379/13"
BACKEND = "redis://127.0.0.1:6379/14"
READY_TIMEOUT_S = 60
#: Seconds the late acks of handled messages may take.
ACK_TIMEOUT_S = 60


def serve_env(**extra: str) -> dict[str, str]:
    """This environment without any Airflow or supervisor setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "SUPERVISOR"))}
    return {
        **env,
        "AIRFLOW__CELERY__BROKER_URL": BROKER,
        "AIRFLOW__CELERY__RESULT_BACKEND": BACKEND,
        **extra,
    }


def assert_nothing_left(queue: str) -> None:
    """No message of `queue` waits in Redis or stays unacked (acks come late: wait for them)."""
    broker = redis.Redis.from_url(BROKER)
    assert broker.llen(queue) == 0
    wait_until(
        lambda: not [v for v in broker.hvals("unacked") if queue.encode() in v],
        timeout=ACK_TIMEOUT_S, interval=0.05, what="no message of ours left unacked",
    )  # fmt: skip


class ServeProcess:
    """`supervisor serve ARGS...` with its output in `<workdir>/serve.log`."""

    def __init__(self, workdir: Path, args: list[str], env: dict[str, str]) -> None:
        self.env = env
        self.log_path = workdir / "serve.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "supervisor", "serve", *args],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
            )  # fmt: skip

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        """True while serve runs; fails the test with its log once it has exited."""
        assert self.process.poll() is None, f"serve exited:\n{self.log()}"
        return True

    def wait_for(
        self, probe: Callable[[], object], what: str, timeout: float = READY_TIMEOUT_S
    ) -> None:
        """Poll `probe()` while serve is alive; the log is in the message if it never holds."""
        try:
            wait_until(lambda: self.alive() and probe(), timeout=timeout, interval=0.05, what=what)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.log()}") from None

    def wait_ready(self) -> None:
        self.wait_for(lambda: " ready." in self.log(), "serve ready")

    def stop(self) -> int:
        """Warm shutdown, as an operator does it; returns the exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(60)

    def __enter__(self) -> Self:
        """Ready to serve; stopped again when it never gets there."""
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Warm shutdown, which must end with exit code 0."""
        assert self.stop() == 0, self.log()


@pytest.fixture(scope="module")
def client() -> Iterator[Celery]:
    """Sends `execute_workload` as Airflow's scheduler does, and reads the results."""
    app = Celery("airflow-scheduler-stand-in", broker=BROKER, backend=BACKEND)
    app.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json")
    yield app
    app.close()


@pytest.fixture(scope="module")
def api() -> Iterator[HttpFakeApi]:
    """The Execution API stub over real HTTP (tests/apistub.py), one per test module."""
    with HttpFakeApi() as api:
        yield api
