"""A small bundle for tests/plugin: BUNDLE_RUNTIME_BUNDLE="tests.plugin.sample_bundle:bundle".

Each task exercises one part of the Execute stream. Tasks that must wait for the test ask the host
for the variable "ready" first: the test's host acts inside that call (kills the runtime, sets the
cancel event), so nothing depends on timing.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

from bundle_runtime import Bundle, Context, FailTask, SkipTask

bundle = Bundle()


@bundle.task(dag_id="sample", task_id="echo")
def echo(ctx: Context) -> dict[str, Any]:
    """Return what the task saw of its own identity and params."""
    return {
        "task_id": ctx.ti.task_id,
        "try_number": ctx.ti.try_number,
        "task_reschedule_count": ctx.ti.task_reschedule_count,
        "params": ctx.params,
    }


@bundle.task(dag_id="sample", task_id="nothing")
def nothing(ctx: Context) -> None:
    """Return None, which pushes no XCom."""


@bundle.task(dag_id="sample", task_id="pid")
def pid(ctx: Context) -> int:
    """The runtime's pid, as the task sees it."""
    return os.getpid()


@bundle.task(dag_id="sample", task_id="host_calls")
def host_calls(ctx: Context) -> dict[str, Any]:
    """Round-trip variables through the host, logging between the calls."""
    ctx.log.info("first", n=1)
    greeting = ctx.variables.get("greeting")
    missing = ctx.variables.get("missing", default="fallback")
    ctx.log.info("second", n=2)
    ctx.variables.set("answer", 42)
    ctx.log.warning("third", n=3)
    return {"greeting": greeting, "missing": missing}


@bundle.task(dag_id="sample", task_id="boom")
def boom(ctx: Context) -> None:
    raise ValueError("boom from the sample bundle")


@bundle.task(dag_id="sample", task_id="fail")
def fail(ctx: Context) -> None:
    raise FailTask("failed on purpose, do not retry")


@bundle.task(dag_id="sample", task_id="skip")
def skip(ctx: Context) -> None:
    raise SkipTask("nothing to do")


@bundle.task(dag_id="sample", task_id="wait")
def wait(ctx: Context) -> str:
    """Ask for "ready", then idle in short sleeps until cancelled or killed (60 s at most)."""
    ctx.variables.get("ready")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.05)
    return "never cancelled"


@bundle.task(dag_id="sample", task_id="spawn_child")
def spawn_child(ctx: Context) -> int:
    """Start a long-lived child process (in the runtime's process group) and return its pid."""
    child = subprocess.Popen(["sleep", "300"])
    return child.pid
