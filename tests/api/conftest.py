"""Fixtures for the Execution API client, workload, resolve, config and host-call tests.

`FakeExecutionApi` is a small in-process fake of Airflow 3.3.2's Task Execution API behind
`httpx.MockTransport` (the client's test seam). It is strict where Airflow is: the version
header, token scopes (the workload token only on /run), exact payload field sets (unknown fields
-> 422), naive datetimes -> 422. The real-Airflow proof lives in the e2e suite; the captures in
`fixtures/` come from Airflow 3.3.2 (copied from the team's shared fixtures).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from supervisor.api.client import ExecutionApiClient
from supervisor.workload import Workload, parse_workload

FIXTURES = Path(__file__).parent / "fixtures"
BASE_URL = "http://airflow.test/execution/"
TI_ID = "01a24283-496e-7e36-a136-228ccc109c18"
WORKLOAD_TOKEN = "workload-token-do-not-leak"

#: Field sets of the 2026-06-30 strict payloads (reference §1.5.1-1.5.3): (required, optional).
PAYLOADS: dict[str, tuple[set[str], set[str]]] = {
    "running": ({"state", "hostname", "unixname", "pid", "start_date"}, set()),
    "heartbeat": ({"hostname", "pid"}, set()),
    "success": (
        {"state", "end_date"},
        {"task_outlets", "outlet_events", "rendered_map_index"},
    ),
    "failed": ({"state", "end_date"}, {"rendered_map_index"}),
    "skipped": ({"state", "end_date"}, {"rendered_map_index"}),
    "removed": ({"state", "end_date"}, {"rendered_map_index"}),
    "upstream_failed": ({"state", "end_date"}, {"rendered_map_index"}),
    "up_for_retry": (
        {"state", "end_date"},
        {"rendered_map_index", "retry_delay_seconds", "retry_reason"},
    ),
    "up_for_reschedule": ({"state", "reschedule_date", "end_date"}, set()),
    "deferred": (
        {"state", "classpath", "trigger_kwargs", "next_method"},
        {"trigger_timeout", "queue", "next_kwargs", "rendered_map_index"},
    ),
}
DATE_FIELDS = {"start_date", "end_date", "reschedule_date"}


def load_fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def payload_problem(kind: str, body: Any) -> str | None:
    """Why Airflow would answer 422 to this body, or None when it is valid."""
    if not isinstance(body, dict):
        return "body is not an object"
    required, optional = PAYLOADS[kind]
    if missing := required - body.keys():
        return f"missing {sorted(missing)}"
    if extra := body.keys() - required - optional:
        return f"extra fields not permitted {sorted(extra)}"
    for name in DATE_FIELDS & body.keys():
        if datetime.fromisoformat(body[name]).tzinfo is None:
            return f"{name} is naive"
    return None


def unprocessable(
    kind: str | None, body: Any, kinds: Collection[str] = PAYLOADS.keys()
) -> httpx.Response | None:
    """The 422 FastAPI answers before the route runs when `body` is not a valid payload of
    `kind` (one of `kinds`); None when it is valid."""
    problem = payload_problem(kind, body) if kind in kinds else f"unknown {kind}"
    return _json(422, {"detail": [{"loc": ["body"], "msg": problem}]}) if problem else None


def state_in(body: Any) -> str | None:
    """The `state` a PATCH /state body names, if any."""
    return body.get("state") if isinstance(body, dict) else None


@dataclass
class Seen:
    """One request as the fake received it."""

    method: str
    path: str  # relative to /execution/, percent-decoded
    raw_path: str
    params: dict[str, str]
    headers: httpx.Headers
    body: Any

    @property
    def token(self) -> str:
        return self.headers.get("authorization", "").removeprefix("Bearer ")


Reply = httpx.Response | Exception


@dataclass
class FakeExecutionApi:
    """An in-memory Execution API for one or more TIs; see the module docstring."""

    run_context: dict[str, Any] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    variables: dict[str, str | None] = field(default_factory=dict)
    connections: dict[str, dict[str, Any]] = field(default_factory=dict)
    xcoms: dict[tuple[str, str, str, str, int], Any] = field(default_factory=dict)
    states: dict[str, str] = field(default_factory=dict)
    #: Replies served before normal handling, by route name ("run", "heartbeat", ...).
    scripted: dict[str, list[Reply | Callable[[], Reply]]] = field(default_factory=dict)
    #: Token put in Refreshed-API-Token of the next reply (then cleared).
    refresh_next: str | None = None
    valid_tokens: set[str] = field(default_factory=set)
    issued: int = 0

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def script(self, route: str, *replies: Reply | Callable[[], Reply]) -> None:
        self.scripted.setdefault(route, []).extend(replies)

    def calls(self, route: str | None = None) -> list[Seen]:
        return [s for s in self.seen if route is None or _route(s.method, s.path) == route]

    # -- dispatch ------------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        seen = self._record(request)
        route = _route(seen.method, seen.path)
        if self.scripted.get(route):
            reply = self.scripted[route].pop(0)
            reply = reply() if callable(reply) else reply
            if isinstance(reply, Exception):
                raise reply
            return self._refresh(reply)
        if seen.headers.get("airflow-api-version") != "2026-06-30":
            return _json(422, {"detail": [{"loc": ["header", "Airflow-API-Version"]}]})
        if (denied := self._auth(route, seen)) is not None:
            return denied
        return self._refresh(getattr(self, f"_{route}")(seen))

    def _record(self, request: httpx.Request) -> Seen:
        raw_path = request.url.raw_path.decode().split("?")[0]
        path = unquote(raw_path.removeprefix("/execution/"))
        body = json.loads(request.content) if request.content else None
        seen = Seen(request.method, path, raw_path, dict(request.url.params), request.headers, body)
        self.seen.append(seen)
        return seen

    def _auth(self, route: str, seen: Seen) -> httpx.Response | None:
        if route == "run" and seen.token == WORKLOAD_TOKEN:
            return None
        if seen.token == WORKLOAD_TOKEN:
            detail = "Token type 'workload' not allowed for this endpoint. Allowed types: execution"
            return _json(403, {"detail": detail})
        if seen.token not in self.valid_tokens:
            return _json(403, {"detail": "Invalid auth token"})
        return None

    def _refresh(self, response: httpx.Response) -> httpx.Response:
        if self.refresh_next:
            self.valid_tokens.add(self.refresh_next)
            response.headers["Refreshed-API-Token"] = self.refresh_next
            self.refresh_next = None
        return response

    def issue(self) -> str:
        self.issued += 1
        token = f"execution-token-{self.issued}"
        self.valid_tokens.add(token)
        return token

    # -- routes --------------------------------------------------------------------------------

    def _run(self, seen: Seen) -> httpx.Response:
        if invalid := unprocessable("running", seen.body):
            return invalid
        ti_id = seen.path.split("/")[1]
        if self.states.get(ti_id) == "running":
            detail = {"reason": "invalid_state", "previous_state": "running"}
            return _json(409, {"detail": detail})
        self.states[ti_id] = "running"
        response = _json(200, self.run_context)
        if seen.token == WORKLOAD_TOKEN:
            response.headers["Refreshed-API-Token"] = self.issue()
        return response

    def _heartbeat(self, seen: Seen) -> httpx.Response:
        if invalid := unprocessable("heartbeat", seen.body):
            return invalid
        return httpx.Response(204)

    def _state(self, seen: Seen) -> httpx.Response:
        kind = state_in(seen.body)
        if invalid := unprocessable(kind, seen.body):
            return invalid
        self.states[seen.path.split("/")[1]] = kind
        return httpx.Response(204)

    def _variable(self, seen: Seen) -> httpx.Response:
        key = seen.path.removeprefix("variables/")
        if seen.method == "PUT":
            if set(seen.body) != {"val", "description"}:
                return _json(422, {"detail": [{"loc": ["body"], "msg": "bad variable body"}]})
            self.variables[key] = seen.body["val"]
            return _json(201, {"message": "Variable successfully set"})
        if key not in self.variables:
            return _not_found(f"Variable with key '{key}' not found")
        if seen.method == "DELETE":
            del self.variables[key]
            return httpx.Response(204)
        return _json(200, {"key": key, "value": self.variables[key]})

    def _connection(self, seen: Seen) -> httpx.Response:
        conn_id = seen.path.removeprefix("connections/")
        if conn_id not in self.connections:
            return _not_found(f"Connection with ID {conn_id} not found")
        return _json(200, self.connections[conn_id])

    def _xcom(self, seen: Seen) -> httpx.Response:
        dag_id, run_id, task_id, key = seen.path.removeprefix("xcoms/").split("/", 3)
        where = (dag_id, run_id, task_id, key, int(seen.params.get("map_index", -1)))
        if seen.method == "POST":
            self.xcoms[where] = seen.body
            return _json(201, {"message": "XCom successfully set"})
        if where not in self.xcoms:
            return _not_found(f"XCom with key='{key}' not found")
        if seen.method == "DELETE":
            del self.xcoms[where]
            return _json(200, {"message": "XCom deleted"})
        return _json(200, {"key": key, "value": self.xcoms[where]})


def _route(method: str, path: str) -> str:
    if m := re.fullmatch(r"task-instances/[^/]+/(run|heartbeat|state)", path):
        return m.group(1)
    for prefix, route in (("variables/", "variable"), ("connections/", "connection")):
        if path.startswith(prefix):
            return route
    return "xcom" if path.startswith("xcoms/") else f"unknown {method} {path}"


def _json(status: int, body: Any) -> httpx.Response:
    return httpx.Response(status, json=body)


def _not_found(message: str) -> httpx.Response:
    return _json(404, {"detail": {"reason": "not_found", "message": message}})


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def transcript() -> list[dict[str, Any]]:
    return load_fixture("exec-api-transcript.json")


@pytest.fixture
def run_context(transcript: list[dict[str, Any]]) -> dict[str, Any]:
    """The real TIRunContext Airflow 3.3.2 returned from /run."""
    return transcript[5]["response"]["json"]


@pytest.fixture
def fake(run_context: dict[str, Any]) -> FakeExecutionApi:
    return FakeExecutionApi(run_context=run_context)


@pytest.fixture
def waits() -> list[float]:
    """Retry waits the client asked for (recorded instead of slept)."""
    return []


@pytest.fixture
def client(fake: FakeExecutionApi, waits: list[float]) -> Iterator[ExecutionApiClient]:
    with ExecutionApiClient(
        BASE_URL, transport=fake.transport(), sleep=waits.append, retries=5
    ) as api_client:
        yield api_client


@pytest.fixture
def celery_message_args() -> tuple[Any, ...]:
    """args of the real captured message: envelope -> base64 body -> [args, kwargs, embed]."""
    message = load_fixture("celery-message.json")
    envelope = json.loads(message["raw_envelope"])
    assert envelope["headers"]["task"] == "execute_workload"
    args, kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
    assert kwargs == {}
    return tuple(args)


@pytest.fixture
def workload(celery_message_args: tuple[Any, ...]) -> Workload:
    """The real workload, with a token the fake knows as the workload token."""
    data = json.loads(celery_message_args[0])
    data["token"] = WORKLOAD_TOKEN
    return parse_workload(json.dumps(data))
