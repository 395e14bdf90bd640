"""A runtime that crashes, exits, is killed or breaks a limit fails only its TI, with the reason
in the task log, and the next task of its bundle runs on a new runtime.

Each fault runs through the real TaskRunner on real runtime processes (tests/limits/harness.py).
How long from the fault to the final state reaching the API is printed (`-s` shows it), never
asserted: scripts/bench_faults.py reports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psutil
import pytest

from tests.limits.conftest import MakeHarness
from tests.limits.harness import FaultHarness, TiRun
from tests.plugin.runtimes import still_running
from tests.polling import wait_until

MEMORY_LIMIT_MB = 200


@dataclass(frozen=True)
class Fault:
    task_id: str
    should_retry: bool
    #: The error line the task log must contain (the reason of the final state).
    reason: str
    flags: dict[str, Any] = field(default_factory=dict)
    #: The fault starts when the limit fires (a timeout), else when the task reads "ready".
    from_limit: bool = False


FAULTS = [
    Fault("segfault", True, "died with SIGSEGV (signal 11, a segfault in native code)"),
    Fault("exit_now", False, "exited with code 3 while running ti"),
    Fault(
        "kill_self",
        True,
        "killed by SIGKILL (signal 9, possibly the kernel's OOM killer or the task memory limit)",
    ),
    Fault(
        "hog",
        False,
        "MemoryLimitExceeded: exceeded its memory limit: ",
        flags={"supervisor.task_memory_limit_mb": MEMORY_LIMIT_MB},
    ),
    Fault(
        "ignore_cancel",
        True,
        "TaskTimeout: timed out after 1s; runtime did not stop within 3s of cancel, killed",
        from_limit=True,
    ),
]


def _ended(pid: int) -> bool:
    """The runtime is gone: reaped by the pool (a zombie would still be ours to reap)."""
    return not psutil.pid_exists(pid)


def _next_task_runs_on_a_new_runtime(harness: FaultHarness, faulted: TiRun) -> None:
    after = harness.run("pid")
    assert after.state == "success", after.errors()
    assert after.runtime_pid != faulted.runtime_pid
    assert after.return_value == after.runtime_pid
    wait_until(lambda: _ended(faulted.runtime_pid), timeout=10, what="faulted runtime reaped")


@pytest.mark.parametrize("fault", FAULTS, ids=[f.task_id for f in FAULTS])
def test_fault_fails_only_its_ti_with_the_reason_in_its_log(
    fault: Fault, harness: MakeHarness
) -> None:
    one = harness(fault.flags)

    ti = one.run(fault.task_id, should_retry=fault.should_retry)

    expected = "up_for_retry" if fault.should_retry else "failed"
    assert ti.state == expected, ti.errors()
    assert any(fault.reason in error for error in ti.errors()), ti.errors()
    assert ti.lines[-1]["event"] == f"Task instance finished: {expected}"
    since = ti.limit_at if fault.from_limit else ti.ready_at
    print(f"\n{fault.task_id}: fault -> final state {ti.seconds(since)}s")
    _next_task_runs_on_a_new_runtime(one, ti)


def test_segfault_puts_the_python_stack_in_the_task_log(harness: MakeHarness) -> None:
    ti = harness().run("segfault")

    crash = next(e for e in ti.errors() if e.startswith(f"Runtime pid {ti.runtime_pid} crashed"))
    assert "Fatal Python error: Segmentation fault" in crash
    assert 'sample_bundle.py", line' in crash and "in segfault" in crash
    assert "Extension modules:" not in crash
    (lost,) = [e for e in ti.errors() if e.startswith("RuntimeLost: ")]
    assert lost.endswith("it last wrote: Fatal Python error: Segmentation fault")


def test_memory_of_the_task_s_children_counts_and_they_die_with_it(harness: MakeHarness) -> None:
    one = harness({"supervisor.task_memory_limit_mb": MEMORY_LIMIT_MB})

    ti = one.run("child_hog")

    assert ti.state == "failed"
    (error,) = [e for e in ti.errors() if e.startswith("MemoryLimitExceeded: ")]
    used_mb = int(error.split("limit: ")[1].split(" MB")[0])
    assert used_mb > MEMORY_LIMIT_MB
    child_pid = next(line["child_pid"] for line in ti.lines if "child_pid" in line)
    try:
        child = psutil.Process(child_pid)
    except psutil.NoSuchProcess:
        return  # gone already: killed with its process group
    assert still_running([child], timeout=10) == []


def test_timeout_cancel_that_works_needs_no_kill(harness: MakeHarness) -> None:
    # "wait" declares no timeout: the configured default applies; it stops when cancelled.
    one = harness({"supervisor.default_task_timeout_s": 1})

    ti = one.run("wait", should_retry=True)

    assert ti.state == "up_for_retry"
    assert "TaskTimeout: timed out after 1s; cancelled" in ti.errors()
    assert not any("killing runtime" in e for e in ti.errors())
    # Cancelled tasks may leave work behind in their runtime: it is retired all the same.
    _next_task_runs_on_a_new_runtime(one, ti)


def test_tasks_within_their_limits_are_left_alone(harness: MakeHarness) -> None:
    one = harness(
        {
            "supervisor.task_memory_limit_mb": MEMORY_LIMIT_MB,
            "supervisor.default_task_timeout_s": 30,
        }
    )

    first, second = one.run("pid"), one.run("pid")

    assert (first.state, second.state) == ("success", "success")
    assert first.runtime_pid == second.runtime_pid  # the warm runtime was kept
    assert first.limit_at is None and second.limit_at is None
