"""Example ETL bundle: every task kind the supervisor must handle.

Both versions (bundles/example-etl/1.0.0 and 2.0.0) build their wheel from this one source tree;
they differ in their version and in the attrs they pin (23.2.0 and 25.3.0), which is what makes
them impossible to install side by side in one environment, and easy in two venvs.

The tasks are small on purpose; each shows one thing a task can do through its Context (variables,
connections, XComs, logs) or one way it can end (success, skip, fail, retry, reschedule, defer).
`noop` exists for the benchmark and `crash` for the test that a runtime dying mid-task fails only
its task instance. One bundle serves several DAGs (bundles/dags/): the same function can be
registered under more than one (dag_id, task_id).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from importlib import metadata
from typing import Any

import attrs

from bundle_runtime import Bundle, Context, DeferTask, FailTask, RescheduleTask, SkipTask

#: "v1" in 1.0.0, "v2" in 2.0.0: lets a reader of a log tell the versions apart.
MARKER = "v" + metadata.version("example-etl").split(".")[0]
DAG_ID = "example_etl"
#: DAGs of the end-to-end suite and the demo (bundles/dags/).
STATES_DAG = "bundle_states"
XCOM_DAG = "bundle_xcom_types"
PINNED_DAGS = ("bundle_pinned_v1", "bundle_pinned_v2")
#: DAGs of scripts/bench_serve.py (bundles/dags/bench_bundle.py): `noop` alone and 20 wide.
BENCH_SINGLE_DAG = "bench_bundle_single"
BENCH_FANOUT_DAG = "bench_bundle_fanout"
BENCH_FANOUT_WIDTH = 20
#: A trigger class Airflow's triggerer can run (apache-airflow-providers-standard).
DATETIME_TRIGGER = "airflow.providers.standard.triggers.temporal.DateTimeTrigger"

bundle = Bundle()


@bundle.task(dag_id=DAG_ID, task_id="dep_version")
def dep_version(ctx: Context) -> dict[str, Any]:
    """Report the attrs and bundle versions this venv holds."""
    return {"attrs": attrs.__version__, "bundle_version": metadata.version("example-etl")}


@bundle.task(dag_id=DAG_ID, task_id="read_variable")
def read_variable(ctx: Context) -> Any:
    """Return Airflow variable example_var."""
    return ctx.variables.get("example_var")


@bundle.task(dag_id=DAG_ID, task_id="write_variable")
def write_variable(ctx: Context) -> str:
    """Set Airflow variable example_written and return what was written."""
    value = f"written by example-etl {MARKER} try {ctx.ti.try_number}"
    ctx.variables.set("example_written", value)
    return value


@bundle.task(dag_id=DAG_ID, task_id="use_connection")
def use_connection(ctx: Context) -> dict[str, Any]:
    """Read connection example_conn; returns where it points, never its password."""
    conn = ctx.connections.get("example_conn")
    ctx.log.info("connecting", host=conn.host, marker=MARKER)
    return {"host": conn.host, "login": conn.login, "port": conn.port}


@bundle.task(dag_id=DAG_ID, task_id="push_xcom")
def push_xcom(ctx: Context) -> dict[str, bool]:
    """Push XCom "numbers" for pull_xcom."""
    ctx.xcom.push("numbers", [1, 2, 3])
    return {"pushed": True}


@bundle.task(dag_id=DAG_ID, task_id="pull_xcom")
def pull_xcom(ctx: Context) -> int:
    """Sum the "numbers" XCom that push_xcom pushed."""
    return sum(ctx.xcom.pull(task_id="push_xcom", key="numbers"))


@bundle.task(dag_id=DAG_ID, task_id="skip_me")
def skip_me(ctx: Context) -> None:
    """Always ends skipped."""
    raise SkipTask("nothing to do today")


@bundle.task(dag_id=DAG_ID, task_id="fail_hard")
def fail_hard(ctx: Context) -> None:
    """Always fails, without retry."""
    raise FailTask("input is unusable; retrying will not help")


@bundle.task(dag_id=DAG_ID, task_id="flaky")
def flaky(ctx: Context) -> str:
    """Fails (retryably) on the first try, succeeds on later ones."""
    if ctx.ti.try_number <= 1:
        raise RuntimeError("first try always fails")
    return "ok"


@bundle.task(dag_id=DAG_ID, task_id="noop")
def noop(ctx: Context) -> None:
    """Does nothing: the benchmark's warm Execute."""


@bundle.task(dag_id=DAG_ID, task_id="crash")
def crash(ctx: Context) -> None:
    """Kills its own runtime process mid-task, as a segfault or the OOM killer would."""
    os._exit(3)


# -- the other example DAGs ------------------------------------------------------------------

for _dag_id in PINNED_DAGS:
    bundle.task(dag_id=_dag_id, task_id="dep_version")(dep_version)
for _task in (flaky, fail_hard, skip_me):
    bundle.task(dag_id=STATES_DAG, task_id=_task.__name__)(_task)
bundle.task(dag_id=BENCH_SINGLE_DAG, task_id="noop")(noop)
for _index in range(BENCH_FANOUT_WIDTH):
    bundle.task(dag_id=BENCH_FANOUT_DAG, task_id=f"noop_{_index:02d}")(noop)


@bundle.task(dag_id=XCOM_DAG, task_id="echo")
def echo(ctx: Context) -> Any:
    """Return what the Python task `produce` returned, unchanged, so types travel both ways."""
    value = ctx.xcom.pull(task_id="produce")
    ctx.log.info("echoing", types={k: type(v).__name__ for k, v in value.items()})
    return value


@bundle.task(dag_id=STATES_DAG, task_id="reschedule_once")
def reschedule_once(ctx: Context) -> dict[str, int]:
    """Like a sensor in reschedule mode: not ready on the first poke, ready on the next."""
    if ctx.ti.task_reschedule_count == 0:
        raise RescheduleTask(timedelta(seconds=2))
    return {"reschedules": ctx.ti.task_reschedule_count}


@bundle.task(dag_id=STATES_DAG, task_id="defer_once")
def defer_once(ctx: Context) -> dict[str, str]:
    """Hand the wait to Airflow's triggerer for two seconds, then finish in `wake_up`."""
    if ctx.resume is None:
        moment = datetime.now(UTC) + timedelta(seconds=2)
        raise DeferTask(DATETIME_TRIGGER, {"moment": moment}, method_name="wake_up")
    event = ctx.resume.kwargs.get("event")
    return {"resumed_via": ctx.resume.method, "event": str(event)}


@bundle.task(dag_id="bundle_drain", task_id="sleep_a_bit")
def sleep_a_bit(ctx: Context) -> float:
    """Sleep `seconds` from the run conf (default 4) in short steps, so a cancel lands quickly."""
    seconds = float(ctx.params.get("seconds", 4))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.1)
    ctx.log.info("slept", seconds=seconds)
    return seconds


# -- bundle_logs (bundles/dags/bundle_logs.py): every way a task writes to its log, and a slow one.


@bundle.task(dag_id="bundle_logs", task_id="talk")
def talk(ctx: Context) -> dict[str, Any]:
    """Write to the task log through print, stderr, logging and ctx.log (with fields).

    With `conn_id` in the run conf it reads that connection and writes its password through every
    channel, and `secret` in the conf is marked secret first: the log must show *** instead.
    """
    secrets = []
    if ctx.params.get("secret"):
        ctx.mask_secret(ctx.params["secret"])
        secrets.append(str(ctx.params["secret"]))
    if ctx.params.get("conn_id"):
        secrets.append(ctx.connections.get(ctx.params["conn_id"]).password or "")
    said = " ".join(secrets)
    print(f"talk: printed line {MARKER} {said}")
    print(f"talk: stderr line {MARKER} {said}", file=sys.stderr)
    logging.getLogger("example_etl.talk").warning("talk: logging line %s %s", MARKER, said)
    ctx.log.info("talk: ctx.log line", marker=MARKER, answer=42, said=said)
    try:
        raise ValueError(f"talk: handled error {said}")
    except ValueError:
        ctx.log.exception("talk: caught", said=said)
    return {"lines": 5, "marker": MARKER}


@bundle.task(dag_id="bundle_logs", task_id="slow_talk")
def slow_talk(ctx: Context) -> int:
    """Log one line per second for `seconds` (run conf, default 3), so a log can be read live."""
    seconds = int(ctx.params.get("seconds", 3))
    for tick in range(seconds):
        print(f"slow_talk: tick {tick} printed")
        ctx.log.info("slow_talk: tick", tick=tick, of=seconds)
        time.sleep(1)
    ctx.log.info("slow_talk: done", ticks=seconds)
    return seconds


# -- bundle_xcom_large (bundles/dags/bundle_xcom_large.py): values over the XCom storage threshold.


@bundle.task(dag_id="bundle_xcom_large", task_id="pass_large")
def pass_large(ctx: Context) -> dict[str, Any]:
    """Pull what `produce_large` returned, check it arrived as plain values, return a larger one.

    With the object-storage XCom backend these values live in S3 and the DB holds references to
    them; task code cannot tell, which is the point.
    """
    got = ctx.xcom.pull(task_id="produce_large")
    rows, when, tags = got["rows"], got["when"], got["tags"]
    if not (isinstance(when, datetime) and isinstance(tags, set) and len(rows) == 100):
        raise ValueError(f"produce_large arrived as {type(when)}, {type(tags)}, {len(rows)} rows")
    ctx.xcom.push("big_list", list(range(500)))
    ctx.xcom.push("small", {"ok": True})
    return {
        "rows": [{**row, "seen": True} for row in rows],
        "when": when + timedelta(days=1),
        "tags": tags | {"bundle"},
        "pair": (len(rows), "rows"),
    }
