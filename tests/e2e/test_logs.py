"""Task logs through Airflow's own logs endpoint (issue #4), on a real Airflow 3.3.2.

The session's `supervisor serve` writes task logs to a folder the api-server does not see
(tests/e2e/serve.py), so every line these tests get from
GET /api/v2/dags/{dag}/dagRuns/{run}/taskInstances/{task}/logs/{try} came through our log server
(running or finished TI) or from S3 (remote logging, finished TI): bundles/dags/bundle_logs.py.
"""

from __future__ import annotations

import json
import time
from typing import Any

import fsspec
import httpx
import pytest

from tests.logs.tokens import log_token, raw_get
from tests.polling import wait_until

from .airflow import AirflowClient
from .serve import ServeProcess
from .stack import AirflowStack

pytestmark = pytest.mark.e2e

DAG = "bundle_logs"
CONN_ID = "bundle_logs_conn"
PASSWORD = "pw-e2e-logs-7c1f0b"
MARKED = "marked-e2e-logs-33d9"
RUN_TIMEOUT_S = 180


def _trigger(api: AirflowClient, conf: dict[str, Any]) -> str:
    api.unpause(DAG)
    return api.trigger(DAG, conf=conf)


def _events(api: AirflowClient, run_id: str, task_id: str) -> list[dict[str, Any]]:
    return api.task_log(DAG, run_id, task_id, 1)


def _log_path(run_id: str, task_id: str) -> str:
    return f"dag_id={DAG}/run_id={run_id}/task_id={task_id}/attempt=1.log"


def _api_server_env(stack: AirflowStack) -> dict[str, str]:
    """AF_* and AIRFLOW__* the running api-server started with (airflow_stack.sh writes them)."""
    path = stack.airflow_home / "run" / "api-server.env"
    lines = path.read_text().splitlines() if path.exists() else []
    return dict(line.partition("=")[::2] for line in lines)


def _require_remote_logging(stack: AirflowStack) -> None:
    if _api_server_env(stack).get("AIRFLOW__LOGGING__REMOTE_LOGGING") != "True":
        pytest.fail(
            "the running Airflow stack was started without remote logging on S3; restart it with "
            "`scripts/airflow_stack.sh down && AF_S3=1 AF_REMOTE_LOGGING=1 AF_WORKER=1 "
            "scripts/airflow_stack.sh up` (or let the e2e session start it)",
            pytrace=False,
        )


def _log_token(stack: AirflowStack, filename: str, **changes: Any) -> str:
    """A log-server token signed with the stack's [api] secret_key, as its api-server signs it."""
    return log_token(filename, stack.env["AIRFLOW__API__SECRET_KEY"], **changes)


def test_finished_task_log_shows_every_channel_with_secrets_masked(
    airflow_stack: AirflowStack, supervisor_serve: ServeProcess
):
    api = airflow_stack.client
    api.set_connection(CONN_ID, "generic", host="db.example.test", password=PASSWORD)
    run_id = _trigger(api, {"conn_id": CONN_ID, "secret": MARKED, "seconds": 1})
    run = api.wait_for_run(DAG, run_id, timeout=RUN_TIMEOUT_S)
    assert run["state"] == "success", api.describe_run(DAG, run_id)

    lines = _events(api, run_id, "talk")
    by_event = {str(line.get("event")): line for line in lines}
    assert "talk: printed line v1 *** ***" in by_event, list(by_event)
    assert "talk: logging line v1 *** ***" in by_event
    assert "talk: stderr line v1 *** ***" in by_event
    ctx_line = by_event["talk: ctx.log line"]
    assert (ctx_line["answer"], ctx_line["said"]) == (42, "*** ***")
    assert (ctx_line["dag_id"], ctx_line["task_id"], ctx_line["run_id"]) == (DAG, "talk", run_id)
    assert ctx_line["ti_id"] == api.task_instance(DAG, run_id, "talk")["id"]
    assert any(e.startswith("Running in bundle example-etl==1.0.0") for e in by_event)
    assert "Task instance finished: success" in by_event
    # Not on the api-server's disk: these lines came from our log server or from S3.
    assert not (airflow_stack.logs_folder / _log_path(run_id, "talk")).exists()
    local = supervisor_serve.log_folder / _log_path(run_id, "talk")
    for text in (json.dumps(lines), local.read_text(), supervisor_serve.log()):
        assert PASSWORD not in text
        assert MARKED not in text
        assert "eyJ" not in text.replace("eyJ***", "")


def test_running_task_log_is_served_by_our_log_server_with_airflow_s_rules(
    airflow_stack: AirflowStack, supervisor_serve: ServeProcess
):
    api = airflow_stack.client
    run_id = _trigger(api, {"seconds": 20})
    rel = _log_path(run_id, "slow_talk")

    def ticking() -> list[dict[str, Any]] | None:
        ti = api.task_instance(DAG, run_id, "slow_talk")
        if ti["state"] != "running":
            assert ti["state"] in (None, "scheduled", "queued"), api.describe_run(DAG, run_id)
            return None
        lines = _events(api, run_id, "slow_talk")
        return lines if any(line.get("event") == "slow_talk: tick" for line in lines) else None

    lines = wait_until(ticking, timeout=RUN_TIMEOUT_S, what="slow_talk ticks through the API")
    assert api.task_instance(DAG, run_id, "slow_talk")["state"] == "running"
    assert any(str(line.get("event")).startswith("slow_talk: tick 0 printed") for line in lines)
    assert not (airflow_stack.logs_folder / rel).exists()

    port = airflow_stack.env.get("AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT", "8793")
    url = f"http://127.0.0.1:{port}/log/{rel}"
    ok = httpx.get(url, headers={"Authorization": _log_token(airflow_stack, rel)})
    assert ok.status_code == 200 and b"slow_talk: tick" in ok.content
    assert int(ok.headers["Content-Length"]) == len(ok.content)
    refused = {
        "token for another file": _log_token(airflow_stack, _log_path(run_id, "talk")),
        "expired token": _log_token(airflow_stack, rel, exp=int(time.time()) - 60),
        "wrong audience": _log_token(airflow_stack, rel, aud="api"),
    }
    for why, token in refused.items():
        reply = httpx.get(url, headers={"Authorization": token})
        assert reply.status_code == 403, why
    # Sent byte for byte (httpx would drop the dot segments), with a token that even matches it.
    escape = "../" * 8 + "etc/passwd"
    status, body = raw_get(int(port), f"/log/{escape}", _log_token(airflow_stack, escape))
    assert status == 404 and b"root:" not in body

    run = api.wait_for_run(DAG, run_id, timeout=RUN_TIMEOUT_S)
    assert run["state"] == "success", api.describe_run(DAG, run_id)


def test_remote_log_is_read_from_s3_after_the_local_file_is_gone(
    airflow_stack: AirflowStack, supervisor_serve: ServeProcess
):
    _require_remote_logging(airflow_stack)
    api = airflow_stack.client
    api.set_connection(CONN_ID, "generic", host="db.example.test", password=PASSWORD)
    run_id = _trigger(api, {"conn_id": CONN_ID, "seconds": 1})
    run = api.wait_for_run(DAG, run_id, timeout=RUN_TIMEOUT_S)
    assert run["state"] == "success", api.describe_run(DAG, run_id)
    rel = _log_path(run_id, "talk")
    env = airflow_stack.env
    fs = fsspec.filesystem(
        "s3",
        key="testing",
        secret="testing-secret",
        client_kwargs={"endpoint_url": env["AF_S3_ENDPOINT"], "region_name": "us-east-1"},
    )
    remote = f"{env['AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER']}/{rel}"
    local = supervisor_serve.log_folder / rel

    def uploaded() -> bytes | None:
        fs.invalidate_cache()
        if not fs.exists(remote):
            return None
        body = fs.cat(remote)
        return body if body == local.read_bytes() else None

    body = wait_until(uploaded, timeout=60, what=f"{remote} uploaded")
    assert PASSWORD.encode() not in body
    local.unlink()

    lines = _events(api, run_id, "talk")
    events = [str(line.get("event")) for line in lines]
    assert "talk: printed line v1 ***" in events, events
    assert "Task instance finished: success" in events
    assert "s3://" in json.dumps(lines)  # Airflow names the source it read
    assert PASSWORD not in json.dumps(lines)
