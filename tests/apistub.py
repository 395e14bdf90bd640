"""A local Execution API over real HTTP that can fail like Airflow's: shared by tests/serve and
scripts/soak.py.

`HttpFakeApi` serves `StubExecutionApi` (tests/api's in-memory `FakeExecutionApi`, made
thread-safe and closer to Airflow 3.3.2 where a retrying worker can tell the difference) on a
`ThreadingHTTPServer` speaking HTTP/1.1 keep-alive, as Airflow's api-server does, so the
supervisor's httpx pool keeps connections open across requests. Its outages are real ones:
`down()` closes the listening socket and every established connection (clients get "connection
refused" or a dropped connection, never an HTTP answer) and `up()` binds the same port again;
`unavailable()` answers every request 503 instead. Bookkeeping is what a soak of thousands of
TIs needs and no more: the final state of each TI and when it arrived, with waits on a condition
instead of polling, and `keep_seen=False` to not keep every request.

Where the stub follows Airflow (airflow/api_fastapi/execution_api/routes/task_instances.py):
`PATCH /run` of a running TI from the same (hostname, unixname, pid) is a duplicate and answered
200 again, from anyone else 409 `invalid_state` with its `previous_state`; a heartbeat of a TI
not running, or running elsewhere, is 409; a state update repeating the TI's current state is
200 (a retried final state whose reply was lost), any other update of a TI not running is 409;
an unknown TI is 404. There is no scheduler: a TI whose try ended never becomes queued again.
Token rules are FakeExecutionApi's: the workload token only for /run, whose reply carries the
execution token every later call must use.
"""

from __future__ import annotations

import contextlib
import copy
import enum
import json
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import httpx

from supervisor.background import serve_in_thread, stop_server
from tests.api.conftest import (
    PAYLOADS,
    WORKLOAD_TOKEN,
    FakeExecutionApi,
    Seen,
    _json,
    load_fixture,
    state_in,
    unprocessable,
)

#: The path the gate holds: example_etl.read_variable asks for this variable.
GATED = "variables/example_var"
#: Seconds a gated request waits for `release` before it is answered anyway.
GATE_TIMEOUT_S = 60.0
#: States `PATCH /state` takes; each ends the try, so the TI is not running after it.
STATES = frozenset(PAYLOADS) - {"running", "heartbeat"}


def run_context() -> dict[str, Any]:
    """The real TIRunContext Airflow 3.3.2 returned from /run (tests/api/fixtures)."""
    return load_fixture("exec-api-transcript.json")[5]["response"]["json"]


def execute_task(
    queue: str, *, dag_id: str = "example_etl", task_id: str = "noop", run_id: str = "r"
) -> tuple[str, str]:
    """A new TI id and the ExecuteTask workload JSON Airflow's scheduler would send for it."""
    ti_id = str(uuid.uuid4())
    workload = {
        "type": "ExecuteTask",
        "token": WORKLOAD_TOKEN,
        "dag_rel_path": f"{dag_id}.py",
        "bundle_info": {"name": "dags-folder", "version": None},
        "log_path": f"dag_id={dag_id}/run_id={run_id}/task_id={task_id}/{ti_id}.log",
        "ti": {"id": ti_id, "task_id": task_id, "dag_id": dag_id, "run_id": run_id,
               "try_number": 1, "map_index": -1, "queue": queue, "pool_slots": 1,
               "priority_weight": 1},
    }  # fmt: skip
    return ti_id, json.dumps(workload)


@dataclass
class StubExecutionApi(FakeExecutionApi):
    """FakeExecutionApi behind one lock, with Airflow's duplicate and conflict answers and the
    final state of every TI; see the module docstring."""

    #: False: do not keep every request in `seen` (a soak sends tens of thousands).
    keep_seen: bool = True
    #: dag_run.conf answered by /run per TI id (the task's `ctx.params`); default the fixture's.
    conf: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: TI id -> the final state reported, and time.monotonic() when it arrived.
    finals: dict[str, str] = field(default_factory=dict)
    final_at: dict[str, float] = field(default_factory=dict)
    #: TI id -> time.monotonic() of its first successful /run.
    run_at: dict[str, float] = field(default_factory=dict)
    #: Reports per state for known TIs, repeats (200) and refused ones (409) included.
    reports: Counter[str] = field(default_factory=Counter)
    #: TI id -> (hostname, unixname, pid) of the /run that started it.
    owners: dict[str, tuple[str, str, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.lock = threading.RLock()
        #: Notified whenever a TI starts or reports a state.
        self.changed = threading.Condition(self.lock)

    def handle(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            return super().handle(request)

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until `predicate()` (called under the lock) holds; False at the deadline."""
        with self.changed:
            return self.changed.wait_for(predicate, timeout)

    def missing_finals(self, ti_ids: Iterable[str]) -> set[str]:
        with self.lock:
            return {t for t in ti_ids if t not in self.finals}

    def wait_finals(self, ti_ids: Iterable[str], timeout: float) -> set[str]:
        """Wait for a final state of every TI in `ti_ids`; returns those still without one."""
        wanted = set(ti_ids)
        self.wait(lambda: wanted <= self.finals.keys(), timeout)
        return self.missing_finals(wanted)

    # -- FakeExecutionApi overrides ----------------------------------------------------------

    def _record(self, request: httpx.Request) -> Seen:
        seen = super()._record(request)
        if not self.keep_seen:
            self.seen.pop()
        return seen

    def _run(self, seen: Seen) -> httpx.Response:
        if invalid := unprocessable("running", seen.body):
            return invalid
        ti_id = seen.path.split("/")[1]
        owner = (seen.body["hostname"], seen.body["unixname"], seen.body["pid"])
        previous = self.states.get(ti_id)
        duplicate = previous == "running" and self.owners.get(ti_id) == owner
        if previous is not None and not duplicate:
            detail = {"reason": "invalid_state", "previous_state": previous}
            return _json(409, {"detail": detail})
        self.states[ti_id] = "running"
        self.owners[ti_id] = owner
        self.run_at.setdefault(ti_id, time.monotonic())
        self.changed.notify_all()
        context = copy.deepcopy(self.run_context)
        if ti_id in self.conf and "dag_run" in context:
            context["dag_run"]["conf"] = self.conf[ti_id]
        response = _json(200, context)
        if seen.token == WORKLOAD_TOKEN:
            response.headers["Refreshed-API-Token"] = self.issue()
        return response

    def _heartbeat(self, seen: Seen) -> httpx.Response:
        if invalid := unprocessable("heartbeat", seen.body):
            return invalid
        ti_id = seen.path.split("/")[1]
        if ti_id not in self.states:
            return _json(404, {"detail": {"reason": "not_found", "message": "TI not found"}})
        hostname, _, pid = self.owners[ti_id]
        if (seen.body["hostname"], seen.body["pid"]) != (hostname, pid):
            detail = {"reason": "running_elsewhere", "current_hostname": hostname,
                      "current_pid": pid}  # fmt: skip
            return _json(409, {"detail": detail})
        if (state := self.states[ti_id]) != "running":
            return _json(409, {"detail": {"reason": "not_running", "current_state": state}})
        return httpx.Response(204)

    def _state(self, seen: Seen) -> httpx.Response:
        kind = state_in(seen.body)
        if invalid := unprocessable(kind, seen.body, STATES):
            return invalid
        ti_id = seen.path.split("/")[1]
        previous = self.states.get(ti_id)
        if previous is None:
            return _json(404, {"detail": {"reason": "not_found", "message": "TI not found"}})
        self.reports[kind] += 1
        if kind == previous:  # a retry whose first reply was lost: already done
            return httpx.Response(200)
        if previous != "running":
            return _json(409, {"detail": {"reason": "invalid_state", "previous_state": previous}})
        self.states[ti_id] = kind
        self.finals[ti_id] = kind
        self.final_at[ti_id] = time.monotonic()
        self.changed.notify_all()
        return httpx.Response(204)


class Mode(enum.Enum):
    """What the HTTP side does with a request."""

    #: Answer as the stub's API.
    UP = "up"
    #: Not listening; established connections are closed without an answer.
    DOWN = "down"
    #: Listening, answering every request 503 (a load balancer with no healthy backend).
    UNAVAILABLE = "unavailable"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False


class HttpFakeApi:
    """`StubExecutionApi` over real HTTP on one port that outlives outages; GET `GATED` waits
    until `release` is set (so a test can look at a TI mid-task)."""

    def __init__(
        self, *, keep_seen: bool = True, context: dict[str, Any] | None = None, port: int = 0
    ) -> None:
        self.fake = StubExecutionApi(
            run_context=context if context is not None else run_context(), keep_seen=keep_seen
        )
        self.reached = threading.Event()
        self.release = threading.Event()
        self.mode = Mode.DOWN
        self._state_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = port
        self._listen()  # bound now, so `url` is known before `start()`
        self.url = f"http://127.0.0.1:{self.port}/execution/"

    def __enter__(self) -> HttpFakeApi:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        self.stop()

    # -- outages -----------------------------------------------------------------------------

    def start(self) -> None:
        """Serve on the port bound at construction."""
        self.up()

    def up(self) -> None:
        """Listen on the same port again and answer normally."""
        with self._state_lock:
            self._serve()
            self.mode = Mode.UP

    def down(self) -> None:
        """A real outage: stop listening (new connections are refused) and close every
        established connection, so no request gets an answer until `up()`."""
        with self._state_lock:
            self.mode = Mode.DOWN
            server, thread = self._server, self._thread
            self._server = self._thread = None
            if thread is not None:
                assert server is not None
                stop_server(server, thread)
            elif server is not None:  # bound but never served
                server.server_close()
            self._drop_connections()

    def unavailable(self) -> None:
        """Listen, but answer every request 503 until `up()`."""
        with self._state_lock:
            self._serve()
            self.mode = Mode.UNAVAILABLE

    def stop(self) -> None:
        """Stop for good; gated requests are released first."""
        self.release.set()
        self.down()

    # -- plumbing ----------------------------------------------------------------------------

    def _serve(self) -> None:
        if self._server is None:
            self._listen()
        if self._thread is None:
            assert self._server is not None
            self._thread = serve_in_thread(
                self._server, f"stub-api:{self.port}", poll_interval_s=0.05
            )

    def _listen(self) -> None:
        self._server = _Server(("127.0.0.1", self.port), self._handler_class())
        self.port = int(self._server.server_port)

    def _drop_connections(self) -> None:
        with self.fake.lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):  # already closed by its peer
                conn.shutdown(socket.SHUT_RDWR)

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self.fake.lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn answers httpx
            timeout = 120  # an idle keep-alive connection does not hold a thread forever

            def setup(self) -> None:
                super().setup()
                api._track(self.connection, add=True)

            def finish(self) -> None:
                api._track(self.connection, add=False)
                with contextlib.suppress(OSError):  # the connection was dropped by down()
                    super().finish()

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if api.mode is Mode.DOWN:  # accepted just before down(): drop, no answer
                    self.close_connection = True
                    return
                if api.mode is Mode.UNAVAILABLE:
                    self._send(httpx.Response(503, json={"detail": "Service Unavailable"}))
                    return
                request = httpx.Request(
                    self.command, f"http://stub{self.path}", headers=dict(self.headers),
                    content=body,
                )  # fmt: skip
                if self.command == "GET" and self.path.endswith(GATED):
                    api.reached.set()
                    api.release.wait(GATE_TIMEOUT_S)
                self._send(api.fake.handle(request))

            def _send(self, reply: httpx.Response) -> None:
                try:
                    self.send_response(reply.status_code)
                    for name, value in reply.headers.items():
                        if name.lower() not in ("content-length", "transfer-encoding"):
                            self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.content)))
                    self.end_headers()
                    self.wfile.write(reply.content)
                except OSError:
                    self.close_connection = True  # dropped by down() mid-answer

            do_GET = do_PUT = do_PATCH = do_POST = do_DELETE = _any

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
