"""Shared helpers for tests/plugin: specs for the sample bundle and a recording Host."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from supervisor.plugin.launch import RuntimeSpec
from supervisor.plugin.messages import HostCallError, LogRecord, TaskStart

REPO = Path(__file__).resolve().parents[2]
SAMPLE_BUNDLE = "tests.plugin.sample_bundle:bundle"
#: The console script the real runtime is started with, as the store will start it.
RUNTIME_SCRIPT = Path(sys.executable).with_name("bundle-runtime")


def pythonpath(*extra: Path) -> str:
    parts = [str(p) for p in extra] + [str(REPO)]
    if os.environ.get("PYTHONPATH"):
        parts.append(os.environ["PYTHONPATH"])
    return os.pathsep.join(parts)


def sample_spec(label: str = "sample-bundle==0.0.0", **overrides: Any) -> RuntimeSpec:
    """A spec that starts the real runtime on tests/plugin/sample_bundle.py."""
    values: dict[str, Any] = {
        "bundle": label,
        "argv": (str(RUNTIME_SCRIPT),),
        "bundle_env": SAMPLE_BUNDLE,
        "env": {"PYTHONPATH": pythonpath()},
        "start_timeout_s": 30.0,
        "cwd": REPO,
    }
    values.update(overrides)
    return RuntimeSpec(**values)


def script_spec(code: str, *, label: str = "fake-bundle==1.0.0", **overrides: Any) -> RuntimeSpec:
    """A spec whose "runtime" is `python -c code`: a deliberately broken runtime."""
    values: dict[str, Any] = {
        "bundle": label,
        "argv": (sys.executable, "-c", code),
        "bundle_env": "unused",
        "start_timeout_s": 10.0,
    }
    values.update(overrides)
    return RuntimeSpec(**values)


def task_start(task_id: str, **overrides: Any) -> TaskStart:
    values: dict[str, Any] = {
        "ti_id": f"ti-{task_id}",
        "dag_id": "sample",
        "task_id": task_id,
        "run_id": "manual__1",
    }
    values.update(overrides)
    return TaskStart(**values)


class RecordingHost:
    """A Host over a dict of variables that records every call and log record, in order.

    `on_ready` runs inside the host call for the variable "ready" (see sample_bundle.wait).
    """

    def __init__(
        self,
        variables: dict[str, Any] | None = None,
        *,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        self.variables = dict(variables or {})
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.logs: list[LogRecord] = []
        self.on_ready = on_ready
        self.ready = threading.Event()

    def call(self, kind: str, args: dict[str, Any]) -> Any:
        self.calls.append((kind, args))
        if kind == "get_variable" and args["key"] == "ready":
            self.ready.set()
            if self.on_ready is not None:
                self.on_ready()
            return "yes"
        if kind == "get_variable":
            if args["key"] not in self.variables:
                raise HostCallError("not_found", f"variable {args['key']!r} does not exist")
            return self.variables[args["key"]]
        if kind == "set_variable":
            self.variables[args["key"]] = args["value"]
            return None
        raise HostCallError("invalid", f"the test host does not handle {kind}")

    def log(self, record: LogRecord) -> None:
        self.logs.append(record)


def still_running(procs: list[psutil.Process], *, timeout: float) -> list[psutil.Process]:
    """Wait up to `timeout` for `procs` to end; return those still running.

    A zombie counts as ended: once its parent is gone it is init's to reap, and how fast init
    reaps is not what these tests are about.
    """
    deadline = time.monotonic() + timeout
    alive = list(procs)
    while alive:
        _, alive = psutil.wait_procs(alive, timeout=max(0.0, min(0.2, deadline - time.monotonic())))
        alive = [p for p in alive if not _is_zombie(p)]
        if time.monotonic() >= deadline:
            break
    return alive


def _is_zombie(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
