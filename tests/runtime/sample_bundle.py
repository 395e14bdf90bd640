"""A bundle with one task per behaviour the runtime must handle; used in-process and by servers.

It prints at import time on purpose: the runtime must keep that off the handshake line.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bundle_runtime import (
    Bundle,
    ConnectionNotFound,
    Context,
    DeferTask,
    FailTask,
    HostCallFailed,
    RescheduleTask,
    SkipTask,
    VariableNotFound,
)

print("sample_bundle imported (this must not reach stdout)")
os.write(1, b"sample_bundle raw write to fd 1 (nor this)\n")

DAG = "sample"
#: The moment the defer task waits for; tests compare against it.
DEFER_MOMENT = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
#: Line the sleeping task logs once it runs, so tests know when to cancel.
SLEEPING = "sleeping"
#: Marker the orphan task writes to the real stderr when its host call fails.
HOSTCALL_FAILED_MARKER = "sample-hostcall-failed"

bundle = Bundle(name="sample", version="1.0.0")
log = logging.getLogger("sample.lib")


@bundle.task(dag_id=DAG, task_id="ok", timeout_s=30)
def ok(ctx: Context) -> dict[str, Any]:
    """Return a fixed value.

    More text that is not part of the summary.
    """
    return {"rows": 42, "ti": ctx.ti.task_id}


@bundle.task(dag_id=DAG, task_id="none")
def returns_none(ctx: Context) -> None:
    return None


@bundle.task(dag_id=DAG, task_id="context")
def context(ctx: Context) -> dict[str, Any]:
    return {
        "ti": [ctx.ti.dag_id, ctx.ti.task_id, ctx.ti.run_id, ctx.ti.try_number, ctx.ti.map_index],
        "dag_run": ctx.dag_run,
        "params": ctx.params,
    }


@bundle.task(dag_id=DAG, task_id="skip")
def skip(ctx: Context) -> None:
    raise SkipTask("nothing to do")


@bundle.task(dag_id=DAG, task_id="fail")
def fail(ctx: Context) -> None:
    raise FailTask("input is broken")


@bundle.task(dag_id=DAG, task_id="boom")
def boom(ctx: Context) -> None:
    raise ValueError("boom")


@bundle.task(dag_id=DAG, task_id="exit")
def exits(ctx: Context) -> None:
    sys.exit(3)


@bundle.task(dag_id=DAG, task_id="reschedule")
def reschedule(ctx: Context) -> None:
    raise RescheduleTask(timedelta(minutes=5))


@bundle.task(dag_id=DAG, task_id="reschedule_at")
def reschedule_at(ctx: Context) -> None:
    raise RescheduleTask(datetime(2031, 1, 1, 12, 0))  # naive: taken as UTC


@bundle.task(dag_id=DAG, task_id="defer")
def defer(ctx: Context) -> dict[str, Any]:
    if ctx.resume is None:
        raise DeferTask(
            "airflow.providers.standard.triggers.temporal.DateTimeTrigger",
            {"moment": DEFER_MOMENT},
            method_name="resume_here",
            kwargs={"attempt": 1},
            timeout=timedelta(hours=1),
        )
    return {"method": ctx.resume.method, "kwargs": ctx.resume.kwargs}


@bundle.task(dag_id=DAG, task_id="not_json")
def not_json(ctx: Context) -> object:
    return complex(1, 2)


@bundle.task(dag_id=DAG, task_id="variables")
def variables(ctx: Context) -> dict[str, Any]:
    try:
        ctx.variables.get("missing")
        missing_raises = False
    except VariableNotFound as exc:
        missing_raises = isinstance(exc, KeyError) and "missing" in str(exc)
    ctx.variables.set("plain", 5)
    ctx.variables.set("config", {"a": [1, 2]}, serialize_json=True, description="cfg")
    ctx.variables.delete("old")
    return {
        "greeting": ctx.variables.get("greeting"),
        "default": ctx.variables.get("missing", default="fallback"),
        "missing_raises": missing_raises,
        "json": ctx.variables.get("config", deserialize_json=True),
    }


@bundle.task(dag_id=DAG, task_id="connection")
def connection(ctx: Context) -> dict[str, Any]:
    conn = ctx.connections.get("warehouse")
    try:
        ctx.connections.get("nope")
        missing = "no error"
    except ConnectionNotFound as exc:
        missing = str(exc)
    return {
        "host": conn.host,
        "port": conn.port,
        "uri": conn.get_uri(),
        "extra": conn.extra_dejson,
        "missing": missing,
    }


@bundle.task(dag_id=DAG, task_id="xcom")
def xcom(ctx: Context) -> dict[str, Any]:
    upstream = ctx.xcom.pull("extract")
    absent = ctx.xcom.pull("extract", key="nope", default="dflt")
    ctx.xcom.push("count", upstream["rows"] + 1)
    ctx.xcom.push("temp", "x")
    ctx.xcom.delete("temp")
    return {"upstream": upstream, "absent": absent, "own": ctx.xcom.pull(key="count")}


@bundle.task(dag_id=DAG, task_id="xcom_bad")
def xcom_bad(ctx: Context) -> str:
    try:
        ctx.xcom.push("when", complex(1, 2))
    except TypeError as exc:
        return str(exc)
    return "no error"


@bundle.task(dag_id=DAG, task_id="secrets")
def secrets(ctx: Context) -> None:
    ctx.mask_secret("s3cr3t")
    ctx.mask_secret({"token": "t0k"})


@bundle.task(dag_id=DAG, task_id="output")
def output(ctx: Context) -> None:
    print("hello from print")
    print("partial line without newline", end="")
    sys.stderr.write("line on stderr\n")
    log.info("from logging %s", "module")
    log.debug("below the task level")
    ctx.log.info("structured", rows=3, table="sales")
    try:
        raise KeyError("inner")
    except KeyError:
        log.exception("handled with logging")
        ctx.log.exception("handled with ctx.log")


@bundle.task(dag_id=DAG, task_id="hostcall")
def hostcall(ctx: Context) -> Any:
    return ctx.variables.get("answer", deserialize_json=True)


@bundle.task(dag_id=DAG, task_id="orphan")
def orphan(ctx: Context) -> str:
    try:
        ctx.variables.get("never-answered")
    except HostCallFailed as exc:
        os.write(2, f"{HOSTCALL_FAILED_MARKER} kind={exc.kind}\n".encode())
        return exc.kind
    return "answered"


@bundle.task(dag_id=DAG, task_id="sleep")
def sleep(ctx: Context) -> str:
    """Sleep in short steps (async cancel lands between them) until cancelled."""
    ctx.log.info(SLEEPING)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            time.sleep(0.02)
        except Exception:  # must not swallow TaskCancelled
            return "swallowed"
    return "never cancelled"


#: Released by the test that blocks a task in a C-level wait no async exception can interrupt.
RELEASE = threading.Event()


@bundle.task(dag_id=DAG, task_id="block")
def block(ctx: Context) -> str:
    ctx.log.info(SLEEPING)
    RELEASE.wait()
    return "released"


@bundle.task(dag_id=DAG, task_id="poke")
def poke(ctx: Context) -> int:
    """A sensor-like task: reschedules on its first poke only."""
    if ctx.ti.task_reschedule_count == 0:
        raise RescheduleTask(timedelta(seconds=1))
    return ctx.ti.task_reschedule_count
