"""TaskLimits against a stand-in runtime: what it decides, without processes or clocks to race.

The stand-in is a real process group of our own making only where a signal must land somewhere:
a `sleep` started in its own session, so SIGTERM/SIGKILL to the group hit nothing else.
"""

from __future__ import annotations

import subprocess
import threading
from typing import Any

import pytest

from supervisor.errors import RuntimeLost
from supervisor.limits import MB, MEMORY, TIMEOUT, Limits, TaskLimits, crash_dump
from supervisor.plugin.messages import ErrorInfo, Failed, Succeeded

DUMP = """info: runtime serving
Fatal Python error: Segmentation fault

Stack (most recent call first):
  File "/b/task.py", line 7 in crash
Extension modules: grpc._cython.cygrpc (total: 1)"""


class StandIn:
    """A runtime as TaskLimits sees it: a pid leading its own process group, an RSS we set."""

    def __init__(self, rss_bytes: int = 0) -> None:
        self.proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
        self.pid = self.proc.pid
        self.rss = rss_bytes
        self.tail = ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_bytes(self) -> int:
        return self.rss

    def stderr_tail(self) -> str:
        return self.tail


@pytest.fixture
def stand_in() -> Any:
    made: list[StandIn] = []

    def make(**kwargs: Any) -> StandIn:
        made.append(StandIn(**kwargs))
        return made[-1]

    yield make
    for one in made:
        one.proc.kill()
        one.proc.wait()


class Recorder:
    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self.reasons: list[str] = []
        self.notes: list[tuple[str, str]] = []

    def cancel(self, reason: str) -> None:
        self.reasons.append(reason)
        self.cancelled.set()

    def note(self, message: str, *, level: str = "info", **fields: object) -> None:
        self.notes.append((level, message))


def limits_for(runtime: StandIn, limits: Limits, seen: Recorder, **kw: Any) -> TaskLimits:
    return TaskLimits(
        runtime, limits, cancel=seen.cancel, note=seen.note, context={"ti_id": "ti-1"}, **kw
    )


def test_memory_over_the_limit_kills_the_group_at_once(stand_in: Any) -> None:
    runtime, seen = stand_in(rss_bytes=300 * MB), Recorder()

    watch = limits_for(runtime, Limits(memory_limit_bytes=200 * MB), seen, poll_s=0.01).start()

    assert runtime.proc.wait(10) == -9  # SIGKILL, no SIGTERM first
    watch.stop()
    assert not seen.cancelled.is_set()
    assert watch.enforced is not None and watch.enforced[0] == MEMORY
    lost = Failed(True, ErrorInfo("RuntimeLost", "runtime (pid 1) killed by SIGKILL"))
    verdict = watch.verdict(lost)
    assert verdict == Failed(
        True,
        ErrorInfo(
            MEMORY,
            f"exceeded its memory limit: 300 MB > 200 MB (RSS of runtime pid {runtime.pid} "
            "and its children); killed",
        ),
    )
    assert ("info", "RuntimeLost: runtime (pid 1) killed by SIGKILL") in seen.notes


def test_under_the_memory_limit_nothing_happens(stand_in: Any) -> None:
    runtime, seen = stand_in(rss_bytes=100 * MB), Recorder()
    polls = threading.Event()
    reads = 0
    real = runtime.rss_bytes

    def counted() -> int:
        nonlocal reads
        reads += 1
        if reads >= 5:
            polls.set()
        return real()

    runtime.rss_bytes = counted
    watch = limits_for(runtime, Limits(memory_limit_bytes=200 * MB), seen, poll_s=0.01).start()
    assert polls.wait(10)
    watch.stop()

    assert runtime.alive() and watch.enforced is None and seen.notes == []
    assert watch.verdict(Succeeded(None)) == Succeeded(None)


def test_timeout_cancels_then_kills_a_task_that_ignores_it(stand_in: Any) -> None:
    runtime, seen = stand_in(), Recorder()
    limits = Limits(timeout_s=0.05, cancel_grace_s=0.05)

    watch = limits_for(runtime, limits, seen, kill_grace_s=5).start()

    assert seen.cancelled.wait(10)
    assert seen.reasons == ["timed out after 0.05s"]
    # `sleep` dies of the SIGTERM; SIGKILL would be next, 5 s later.
    assert runtime.proc.wait(10) == -15
    watch.stop()
    assert watch.enforced == (
        TIMEOUT,
        "timed out after 0.05s; runtime did not stop within 0.05s of cancel, killed",
    )


def test_a_task_that_stops_when_cancelled_is_not_killed(stand_in: Any) -> None:
    runtime, seen = stand_in(), Recorder()

    watch = limits_for(runtime, Limits(timeout_s=0.01, cancel_grace_s=30), seen).start()
    assert seen.cancelled.wait(10)
    watch.stop()  # the task ended within its grace

    assert runtime.alive()
    cancelled = Failed(True, ErrorInfo("TaskCancelled", "task cancelled by the supervisor"))
    assert watch.verdict(cancelled) == Failed(
        True, ErrorInfo(TIMEOUT, "timed out after 0.01s; cancelled")
    )
    # A task that finished before the cancel reached it keeps its result.
    assert watch.verdict(Succeeded('"done"')) == Succeeded('"done"')


def test_without_limits_no_thread_runs(stand_in: Any) -> None:
    watch = limits_for(stand_in(), Limits(), Recorder()).start()

    assert not any(t.name == "limits:ti-1" for t in threading.enumerate())
    watch.stop()
    failed = Failed(False, ErrorInfo("ValueError", "boom"))
    assert watch.verdict(failed) is failed


def test_lost_quotes_faulthandler_s_dump(stand_in: Any) -> None:
    runtime, seen = stand_in(), Recorder()
    runtime.tail = DUMP
    watch = limits_for(runtime, Limits(), seen)

    failed = watch.lost(RuntimeLost("runtime died with SIGSEGV", bundle="b==1", pid=runtime.pid))

    assert failed.retryable and failed.error is not None
    assert failed.error.type == "RuntimeLost"
    assert failed.error.message == "runtime died with SIGSEGV"
    level, note = seen.notes[0]
    assert level == "error" and note.startswith(f"Runtime pid {runtime.pid} crashed")
    assert note.endswith(
        "Fatal Python error: Segmentation fault\n\nStack (most recent call first):\n"
        '  File "/b/task.py", line 7 in crash'
    )


@pytest.mark.parametrize(
    ("tail", "dump"),
    [
        ("", ""),
        ("info: runtime serving\nwarn: something", ""),
        (DUMP, DUMP.split("\n", 1)[1].rsplit("\n", 1)[0]),
    ],
)
def test_crash_dump(tail: str, dump: str) -> None:
    assert crash_dump(tail) == dump
