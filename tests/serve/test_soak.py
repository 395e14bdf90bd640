"""The soak harness: the Execution API stub's outages and contract (tests/apistub.py), and
scripts/soak.py end to end at a small scale.

The stub tests speak raw HTTP to the stub, as the supervisor's httpx pool does. The script test
runs the real script as a subprocess (its own serve, three bundle versions, Redis DBs 13/14) with
60 tasks and one 2-second outage, and checks its verdict: every TI has a final state, success,
and a Celery result. The script's resource numbers (RSS, fds, latency) are printed, never
asserted: they belong to the full 5,000-task run, not to a test.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import WORKLOAD_TOKEN
from tests.apistub import HttpFakeApi
from tests.conftest import REPO

SOAK = REPO / "scripts" / "soak.py"
SOAK_TASKS = 60
HEADERS = {"Airflow-API-Version": "2026-06-30"}
OWNER = {"hostname": "soak.test", "unixname": "airflow", "pid": 4242}
BEAT = {"hostname": "soak.test", "pid": 4242}


@pytest.fixture
def api() -> Iterator[HttpFakeApi]:
    with HttpFakeApi(keep_seen=False) as api:
        yield api


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _call(
    http: httpx.Client, method: str, path: str, token: str, body: dict[str, Any]
) -> httpx.Response:
    headers = {**HEADERS, "Authorization": f"Bearer {token}"}
    return http.request(method, f"task-instances/{path}", json=body, headers=headers)


def _start(http: httpx.Client, ti_id: str, **owner: Any) -> httpx.Response:
    body = {"state": "running", **OWNER, **owner, "start_date": _now()}
    return _call(http, "PATCH", f"{ti_id}/run", WORKLOAD_TOKEN, body)


def _dropped(conn: socket.socket) -> bool:
    """True when the peer closed `conn` (EOF, or a reset when it was never accepted)."""
    conn.settimeout(5)
    with conn:
        try:
            return conn.recv(1) == b""
        except ConnectionResetError:
            return True


def test_stub_down_refuses_and_drops_connections_then_serves_on_the_same_port(
    api: HttpFakeApi,
) -> None:
    ti_id = str(uuid.uuid4())
    with httpx.Client(base_url=api.url, timeout=5) as http:
        started = _start(http, ti_id)
        assert started.status_code == 200
        token = started.headers["Refreshed-API-Token"]
        kept = socket.create_connection(("127.0.0.1", api.port))  # an idle keep-alive peer
        port = api.port

        api.down()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port))
        assert _dropped(kept), "an established connection is closed by the outage"
        with pytest.raises(httpx.TransportError):
            _call(http, "PUT", f"{ti_id}/heartbeat", token, BEAT)

        api.up()
        assert api.port == port
        assert _call(http, "PUT", f"{ti_id}/heartbeat", token, BEAT).status_code == 204


def test_stub_unavailable_answers_503_until_up(api: HttpFakeApi) -> None:
    with httpx.Client(base_url=api.url, timeout=5) as http:
        api.unavailable()
        assert _start(http, str(uuid.uuid4())).status_code == 503
        api.up()
        assert _start(http, str(uuid.uuid4())).status_code == 200
    assert api.fake.seen == [], "keep_seen=False keeps no request"


def test_stub_answers_duplicates_and_conflicts_as_airflow(api: HttpFakeApi) -> None:
    ti_id = str(uuid.uuid4())
    with httpx.Client(base_url=api.url, timeout=5) as http:
        token = _start(http, ti_id).headers["Refreshed-API-Token"]
        assert _start(http, ti_id).status_code == 200, "the same owner again: a lost reply"
        elsewhere = _start(http, ti_id, pid=1)
        assert elsewhere.status_code == 409
        assert elsewhere.json()["detail"]["previous_state"] == "running"
        elsewhere_beat = {**BEAT, "hostname": "elsewhere.test"}
        assert _call(http, "PUT", f"{ti_id}/heartbeat", token, elsewhere_beat).status_code == 409

        success = {"state": "success", "end_date": _now()}
        assert _call(http, "PATCH", f"{ti_id}/state", token, success).status_code == 204
        assert api.fake.missing_finals([ti_id]) == set()
        assert _call(http, "PATCH", f"{ti_id}/state", token, success).status_code == 200
        failed = {"state": "failed", "end_date": _now()}
        assert _call(http, "PATCH", f"{ti_id}/state", token, failed).status_code == 409
        assert _call(http, "PUT", f"{ti_id}/heartbeat", token, BEAT).status_code == 409
        assert _start(http, ti_id).status_code == 409, "a finished TI does not start again"
        unknown = _call(http, "PATCH", f"{uuid.uuid4()}/state", token, success)
        assert unknown.status_code == 404
    assert api.fake.finals == {ti_id: "success"}
    assert api.fake.reports == {"success": 2, "failed": 1}, "the unknown TI's is not counted"


def test_soak_script_small_run_loses_nothing(tmp_path: Path) -> None:
    verdict = tmp_path / "verdict.json"
    proc = subprocess.run(
        [sys.executable, str(SOAK), "--tasks", str(SOAK_TASKS), "--concurrency", "8",
         "--outage-runs", "1", "--outage-s", "2", "--json", str(verdict)],
        capture_output=True, text=True, cwd=REPO, timeout=240, check=False,
    )  # fmt: skip
    output = f"{proc.stdout}\n{proc.stderr}"
    assert proc.returncode in (0, 1), output  # 1: a resource criterion, not asserted here
    assert verdict.is_file(), output
    report = json.loads(verdict.read_text())

    soak = report["soak"]
    assert soak["failures"] == [], output
    assert soak["finals"] == {"success": SOAK_TASKS}, output
    assert soak["celery"] == {"SUCCESS": SOAK_TASKS}, output
    assert soak["missing_finals"] == 0
    assert [s["done"] for s in soak["samples"]] == [0, 12, 24, 36, 48, 60]
    assert all(s["runtimes"] > 0 for s in soak["samples"][1:]), "runtimes are sampled apart"

    (run,) = report["outages"]["runs"]
    assert run["started"] == 10, "all ten tasks ran when the API went down"
    assert run["lost"] == [], output
    assert run["finals"] == {"success": 10}
    assert run["celery"] == {"SUCCESS": 10}
    assert report["outages"]["criteria"] == {"lost": 0, "runs_with_loss": 0, "ok": True}
