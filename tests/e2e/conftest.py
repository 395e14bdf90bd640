"""End-to-end tests against a real Airflow 3.3.2 (scripts/airflow_stack.sh).

The session fixture ``airflow_stack`` runs ``scripts/airflow_stack.sh up`` with Airflow's own Celery
worker (AF_WORKER=1; `up` is idempotent, ~0.2 s when the stack already runs) and ``down`` at the end
of the session, but only if the stack was not already up before the session. Knobs:

  AF_E2E_STACK_UP=1     the stack is managed outside the tests: neither `up` nor `down`
  AF_E2E_KEEP_STACK=1   leave a stack the session started running afterwards (to look at it)
  AF_PORT, AIRFLOW_HOME, AF_VENV, ...  passed through to the script (scripts/airflow_env.sh)

`up` also gets STACK_FLAGS: a local S3, remote task logs and large XComs on it (AF_S3,
AF_REMOTE_LOGGING, AF_XCOM_OBJECTSTORAGE with AF_XCOM_COMPRESSION=gzip). A stack already running
without them keeps running; tests that need them fail saying how to restart.
The session's `supervisor serve` keeps its task logs in a folder of its own that the api-server does
not see, and serves them on the stack's worker_log_server_port (tests/e2e/serve.py).

Every test in this folder is marked ``e2e`` (deselect with ``-m "not e2e"``) and gets a timeout of
at least 600 s: the first one also pays for installing Airflow and starting the stack.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from .airflow import AirflowClient
from .serve import QUEUES, ServeProcess
from .stack import AirflowStack

REPO = Path(__file__).resolve().parents[2]
STACK_SCRIPT = REPO / "scripts" / "airflow_stack.sh"
E2E_DIR = Path(__file__).resolve().parent
MIN_TIMEOUT = 600
#: Knobs of scripts/airflow_stack.sh for `up` and `env` (the env describes the stack asked for).
STACK_FLAGS = {
    "AF_WORKER": "1",
    "AF_S3": "1",
    "AF_REMOTE_LOGGING": "1",
    # Large XComs in S3 through Airflow's common-io backend, gzip-compressed (1024-byte threshold).
    "AF_XCOM_OBJECTSTORAGE": "1",
    "AF_XCOM_COMPRESSION": "gzip",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if E2E_DIR not in item.path.parents:
            continue
        item.add_marker(pytest.mark.e2e)
        marker = item.get_closest_marker("timeout")
        if marker is None or (marker.args and marker.args[0] < MIN_TIMEOUT):
            item.add_marker(pytest.mark.timeout(MIN_TIMEOUT))


def _script(
    *args: str, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **(extra_env or {})}
    return subprocess.run(
        ["bash", str(STACK_SCRIPT), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )


def _stack_env() -> dict[str, str]:
    """Parse `airflow_stack.sh env` (lines ``export NAME=<bash-quoted value>``)."""
    result = _script("env", extra_env=STACK_FLAGS)
    assert result.returncode == 0, result.stderr
    env = {}
    for line in result.stdout.splitlines():
        words = shlex.split(line)
        if words[:1] == ["export"]:
            name, _, value = words[1].partition("=")
            env[name] = value
    return env


def _run_or_fail(*args: str, extra_env: dict[str, str] | None = None) -> None:
    result = _script(*args, extra_env=extra_env)
    print(result.stdout, end="")  # progress lines; shown with -s or on failure
    if result.returncode != 0:
        pytest.fail(
            f"scripts/airflow_stack.sh {' '.join(args)} failed (exit {result.returncode}):\n"
            f"{result.stdout}{result.stderr}",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def airflow_stack() -> Iterator[AirflowStack]:
    managed_outside = os.environ.get("AF_E2E_STACK_UP") == "1"
    started_here = False
    if managed_outside:
        status = _script("status")
        if status.returncode != 0:
            pytest.fail(
                f"AF_E2E_STACK_UP=1 but the stack is not up:\n{status.stdout}", pytrace=False
            )
    else:
        started_here = _script("status").returncode != 0
        try:
            _run_or_fail("up", extra_env=STACK_FLAGS)
        except BaseException:
            # Also on a pytest-timeout or Ctrl-C in the middle of `up`: leave nothing running.
            if started_here:
                _script("down")
            raise
    env = _stack_env()
    client = AirflowClient(env["AF_API_URL"])
    try:
        yield AirflowStack(env=env, client=client)
    finally:
        client.close()
        if started_here and os.environ.get("AF_E2E_KEEP_STACK") != "1":
            _run_or_fail("down")


@pytest.fixture(scope="session")
def airflow_api(airflow_stack: AirflowStack) -> AirflowClient:
    return airflow_stack.client


@pytest.fixture(scope="session")
def broker_redis(airflow_stack: AirflowStack) -> Iterator[redis.Redis]:
    """The Celery broker's Redis DB (where queues and the ``unacked`` hash live)."""
    client = redis.Redis.from_url(airflow_stack.broker_url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def supervisor_serve(
    airflow_stack: AirflowStack,
    broker_redis: redis.Redis,
    session_home: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServeProcess]:
    """`supervisor serve` on the stack's broker, serving both example-etl versions."""
    # A message left by an earlier, killed session would be delivered first (stack README P6).
    broker_redis.delete(*QUEUES)
    serve = ServeProcess(
        home=session_home,
        workdir=tmp_path_factory.mktemp("serve"),
        stack_env=airflow_stack.env,
        serve_logs=True,
    )
    serve.start()
    try:
        yield serve
    finally:
        if serve.alive():
            exit_code = serve.stop()
            assert exit_code == 0, f"supervisor serve exited {exit_code}:\n{serve.log()[-3000:]}"


StartServe = Callable[..., ServeProcess]


@pytest.fixture
def own_serve(
    airflow_stack: AirflowStack, session_home: Path, tmp_path: Path
) -> Iterator[StartServe]:
    """Starts `supervisor serve` processes of the test's own, on queue "drain" unless told
    otherwise, so a test may stop or kill them; whatever is still running is stopped after it."""
    started: list[ServeProcess] = []

    def start(*, queues: tuple[str, ...] = ("drain",), concurrency: int = 4) -> ServeProcess:
        workdir = tmp_path / f"serve-{len(started)}"
        workdir.mkdir()
        serve = ServeProcess(
            home=session_home, workdir=workdir, stack_env=airflow_stack.env, queues=queues,
            concurrency=concurrency,
        )  # fmt: skip
        started.append(serve)
        serve.start()
        return serve

    yield start
    for serve in started:
        if serve.alive():
            serve.stop()
