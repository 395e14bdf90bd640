"""Sample-bundle TIs end to end through a real TaskRunner, timed: for tests/limits and the bench.

Real runtime processes (tests/plugin/sample_bundle.py, run by the project's venv as if it were
the bundle's own), the real TaskRunner, pool and task log files; only the Execution API is
tests/api's in-process fake, behind a transport that notes when each TI read its "ready"
variable (the fault tasks do so just before their fault) and when its final state arrived.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from supervisor.api.client import ExecutionApiClient
from supervisor.config import load_settings
from supervisor.plugin.launch import RuntimeSpec
from supervisor.plugin.messages import RuntimeDescription
from supervisor.plugin.runtime import start_runtime
from supervisor.pool import RuntimePool
from supervisor.store import InstalledBundle
from supervisor.taskrun import TaskRunner
from supervisor.workload import Workload, parse_workload
from tests.api.conftest import BASE_URL, WORKLOAD_TOKEN, FakeExecutionApi, load_fixture
from tests.plugin.runtimes import sample_spec

LABEL = "sample-bundle==0.0.0"


@dataclass
class TiRun:
    """How one TI went: its final state, task log and the moments that matter."""

    ti_id: str
    state: str | None
    #: The task log, one dict per line.
    lines: list[dict[str, Any]]
    #: The runtime it ran in, from the "Running in bundle" line.
    runtime_pid: int
    #: time.monotonic() when the task read "ready", a limit fired, the final state arrived.
    ready_at: float | None
    limit_at: float | None
    final_at: float | None
    #: The return_value XCom, when the task pushed one.
    return_value: Any = None

    def errors(self) -> list[str]:
        return [line["event"] for line in self.lines if line["level"] == "error"]

    def seconds(self, since: float | None) -> float:
        assert since is not None and self.final_at is not None
        return round(self.final_at - since, 3)


@dataclass
class _Moments:
    ready: dict[str, float] = field(default_factory=dict)
    limit: dict[str, float] = field(default_factory=dict)
    final: dict[str, float] = field(default_factory=dict)


class _LimitEvents(logging.Handler):
    """Notes when supervisor.limits reported a limit exceeded, per TI."""

    def __init__(self, moments: _Moments) -> None:
        super().__init__(logging.WARNING)
        self._moments = moments

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "ti.limit_exceeded":
            self._moments.limit.setdefault(str(record.__dict__["ti_id"]), time.monotonic())


class _SampleBundle(InstalledBundle):
    """The sample bundle as if installed: it runs in the project's venv, not one of its own."""

    def runtime_spec(self, **kw: Any) -> RuntimeSpec:
        return sample_spec(self.label, **kw)


class _OneBundleStore:
    """The store as TaskRunner reads it: one installed version, the sample bundle."""

    def __init__(self, bundle: InstalledBundle) -> None:
        self._bundle = bundle

    def list(self) -> list[InstalledBundle]:
        return [self._bundle]


def describe_sample() -> RuntimeDescription:
    """The sample bundle's manifest, from a real runtime's Describe."""
    with start_runtime(sample_spec(LABEL)) as runtime:
        return runtime.describe()


def base_workload() -> Workload:
    """The captured real workload, with the token the fake accepts on /run."""
    message = load_fixture("celery-message.json")
    envelope = json.loads(message["raw_envelope"])
    args, _kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
    data = json.loads(args[0])
    data["token"] = WORKLOAD_TOKEN
    return parse_workload(json.dumps(data))


class FaultHarness:
    """One TaskRunner over one pool of sample-bundle runtimes; `close()` stops every runtime.

    `flags` are settings as `load_settings` takes them ("supervisor.task_memory_limit_mb": 200).
    """

    def __init__(
        self, tmp: Path, description: RuntimeDescription, flags: Mapping[str, Any] | None = None
    ) -> None:
        self.tmp = tmp
        self.moments = _Moments()
        self.fake = FakeExecutionApi(
            run_context=load_fixture("exec-api-transcript.json")[5]["response"]["json"]
        )
        self.fake.variables["ready"] = "yes"
        settings = load_settings(
            {
                "supervisor.queue_to_bundle": {"bundles": LABEL},
                "logging.base_log_folder": str(tmp / "logs"),
                **(flags or {}),
            },
            environ={},
        )
        self.api = ExecutionApiClient(
            BASE_URL, transport=httpx.MockTransport(self._handle), sleep=lambda s: None
        )
        self.pool = RuntimePool()
        bundle = _SampleBundle(
            name="sample-bundle",
            version="0.0.0",
            path=tmp / "bundle",
            sha256="0" * 64,
            source_commit=None,
            active=True,
            description=description,
        )
        self.runner = TaskRunner(
            settings=settings,
            api=self.api,
            store=_OneBundleStore(bundle),  # type: ignore[arg-type]
            pool=self.pool,
        )
        self._events = _LimitEvents(self.moments)
        logging.getLogger("supervisor.limits").addHandler(self._events)
        self._workload = base_workload()

    def run(self, task_id: str, *, should_retry: bool = False) -> TiRun:
        """Run sample.<task_id> as a new TI to its final state."""
        ti_id = str(uuid.uuid4())
        log_path = f"dag_id=sample/run_id=r1/task_id={task_id}/ti={ti_id}.log"
        self.fake.run_context = {**self.fake.run_context, "should_retry": should_retry}
        ti = replace(
            self._workload.ti, id=uuid.UUID(ti_id), dag_id="sample", task_id=task_id, run_id="r1"
        )
        self.runner.handle(replace(self._workload, ti=ti, log_path=log_path), f"celery-{ti_id}")
        text = (self.tmp / "logs" / log_path).read_text()
        lines = [json.loads(line) for line in text.splitlines()]
        running = next(line for line in lines if line["event"].startswith("Running in bundle"))
        value = self.fake.xcoms.get(("sample", "r1", task_id, "return_value", -1))
        return TiRun(
            ti_id=ti_id,
            state=self.fake.states.get(ti_id),
            lines=lines,
            runtime_pid=running["runtime_pid"],
            ready_at=self.moments.ready.get(ti_id),
            limit_at=self.moments.limit.get(ti_id),
            final_at=self.moments.final.get(ti_id),
            return_value=value,
        )

    def close(self) -> None:
        logging.getLogger("supervisor.limits").removeHandler(self._events)
        self.pool.close(grace_s=1.0)
        self.api.close()

    def _handle(self, request: httpx.Request) -> httpx.Response:
        now = time.monotonic()
        path = request.url.path
        ti_id = path.split("/")[3] if path.startswith("/execution/task-instances/") else None
        response = self.fake.handle(request)
        if path.endswith("/variables/ready"):
            # Which TI asked: the one whose token it is (the fake issues one per /run).
            self.moments.ready[self._ti_of(request)] = now
        elif ti_id and path.endswith("/state") and response.status_code < 300:
            self.moments.final[ti_id] = time.monotonic()
        return response

    def _ti_of(self, request: httpx.Request) -> str:
        """The TI running now: the harness runs one TI at a time."""
        running = [ti for ti, state in self.fake.states.items() if state == "running"]
        assert len(running) == 1, running
        return running[0]
