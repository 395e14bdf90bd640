"""Only the supervisor holds Airflow's token: what a running task's process can see, checked live.

A real `supervisor serve` runs `bundle_drain.sleep_a_bit` in the example bundle; while it runs,
the test reads the runtime's (and its children's) environment and argv from /proc, and its socket
directory. None may hold the workload token, an execution token, the Execution API's URL or any
Airflow setting; the directory is 0700 and the socket 0600, so another user cannot reach it.
What crosses the socket is checked on the supervisor's side too: every HostCall is answered for
the TI of the stream it came on (tests/api/test_hostcalls.py).
"""

from __future__ import annotations

import signal
import stat
import uuid
from pathlib import Path

import psutil
from celery import Celery

from bundle_runtime import protocol
from supervisor.store import BundleStore
from tests.api.conftest import WORKLOAD_TOKEN
from tests.apistub import HttpFakeApi, execute_task

from .conftest import ServeProcess, serve_env


def test_a_running_task_sees_no_token_url_or_airflow_setting(
    tmp_path: Path,
    example_wheels: dict[str, Path],
    uv_cache: Path,
    api: HttpFakeApi,
    client: Celery,
) -> None:
    home = tmp_path / "home"
    BundleStore(home, cache_dir=uv_cache).install(example_wheels["2.0.0"])
    queue = f"isolation-test-{uuid.uuid4().hex[:8]}"
    secret_key = f"api-secret-{uuid.uuid4().hex}"
    env = serve_env(
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=api.url,
        AIRFLOW__API__SECRET_KEY=secret_key,
        SUPERVISOR_HOME=str(home),
        SUPERVISOR__SKIP_SERVE_LOGS="true",
        SUPERVISOR__QUEUE_TO_BUNDLE=f'{{"{queue}": "example-etl==2.0.0"}}',
    )
    serve = ServeProcess(tmp_path, ["--queues", queue, "--hostname", f"{queue}.test"], env)
    try:
        serve.wait_ready()
        ti_id, workload = execute_task(queue, dag_id="bundle_drain", task_id="sleep_a_bit")
        api.fake.conf[ti_id] = {"seconds": 600}
        client.send_task("execute_workload", args=[workload], queue=queue)
        assert api.fake.wait(lambda: ti_id in api.fake.run_at, timeout=60), serve.log()
        serve.wait_for(lambda: psutil.Process(serve.process.pid).children(), "the runtime")
        (runtime,) = psutil.Process(serve.process.pid).children()
        with api.fake.lock:
            execution_tokens = sorted(api.fake.valid_tokens)
        assert execution_tokens, "the stub issued the TI an execution token"

        for process in [runtime, *runtime.children(recursive=True)]:
            environ, argv = process.environ(), " ".join(process.cmdline())
            seen = argv + "\n" + "\n".join(f"{k}={v}" for k, v in environ.items())
            for secret in [WORKLOAD_TOKEN, *execution_tokens, api.url, secret_key]:
                assert secret not in seen, f"{secret!r} reached pid {process.pid}"
            assert not [k for k in environ if k.startswith(("AIRFLOW", "SUPERVISOR_"))]

        socket_dir = Path(runtime.environ()[protocol.SOCKET_DIR_ENV])
        assert stat.S_IMODE(socket_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE((socket_dir / protocol.SOCKET_NAME).stat().st_mode) == 0o600
        assert socket_dir.stat().st_uid == runtime.uids().real
    finally:
        serve.process.send_signal(signal.SIGINT)  # Ctrl-C, then again: the drain ends at once
        serve.wait_for(lambda: "drain.started" in serve.log(), "the drain")
        serve.process.send_signal(signal.SIGINT)
        assert serve.process.wait(60) == 0, serve.log()
