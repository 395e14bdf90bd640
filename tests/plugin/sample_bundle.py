"""A small bundle for tests/plugin: BUNDLE_RUNTIME_BUNDLE="tests.plugin.sample_bundle:bundle".

Each task exercises one part of the Execute stream. Tasks that must wait for the test ask the host
for the variable "ready" first: the test's host acts inside that call (kills the runtime, sets the
cancel event), so nothing depends on timing.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from typing import Any

from bundle_runtime import Bundle, Context, FailTask, SkipTask
from bundle_runtime.exceptions import TaskCancelled

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


# -- faults: each asks for "ready" first, so the test knows when the fault starts ----------------

#: Most the memory hogs allocate, so a broken limit cannot take the test machine down with it.
HOG_CAP_BYTES = 1 << 30
_HOG_STEP_BYTES = 32 << 20


@bundle.task(dag_id="sample", task_id="segfault")
def segfault(ctx: Context) -> None:
    """Read address 0 in C: a real SIGSEGV, which faulthandler reports with this frame."""
    ctx.variables.get("ready")
    ctypes.string_at(0)


@bundle.task(dag_id="sample", task_id="exit_now")
def exit_now(ctx: Context) -> None:
    """Leave the process at once, as a C library calling exit() would: no Result, no cleanup."""
    ctx.variables.get("ready")
    os._exit(3)


@bundle.task(dag_id="sample", task_id="kill_self")
def kill_self(ctx: Context) -> None:
    """SIGKILL the runtime from inside, as the kernel's OOM killer would."""
    ctx.variables.get("ready")
    os.kill(os.getpid(), signal.SIGKILL)


@bundle.task(dag_id="sample", task_id="hog")
def hog(ctx: Context) -> int:
    """Allocate (and touch) memory in 32 MB steps up to 1 GB, then hold it for a minute."""
    ctx.variables.get("ready")
    held = []
    while len(held) * _HOG_STEP_BYTES < HOG_CAP_BYTES:
        held.append(bytearray(b"x") * _HOG_STEP_BYTES)  # filled, so resident, unlike bytearray(n)
    time.sleep(60)
    return len(held)


@bundle.task(dag_id="sample", task_id="child_hog")
def child_hog(ctx: Context) -> int:
    """Start a child that holds 400 MB, then wait: the memory limit counts children too."""
    code = "import time; b = bytearray(b'x') * (400 << 20); time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", code])
    ctx.log.info("child started", child_pid=child.pid)
    ctx.variables.get("ready")
    time.sleep(60)
    return child.pid


@bundle.task(dag_id="sample", task_id="ignore_cancel", timeout_s=1)
def ignore_cancel(ctx: Context) -> str:
    """Time out after 1 s and swallow every cancel for a minute, as stubborn code does."""
    ctx.variables.get("ready")
    deadline = time.monotonic() + 60
    while True:
        try:  # around the whole loop: the cancel may land on any of its instructions
            while time.monotonic() < deadline:
                time.sleep(0.05)
            return "outlived its cancel"
        except TaskCancelled:
            ctx.log.warning("ignoring the cancel")
