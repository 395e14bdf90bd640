"""Per-task limits: the execution timeout and the memory limit, enforced on the task's runtime.

taskrun starts one `TaskLimits` per TI before its Execute stream and stops it after. Its thread
(`limits:<ti_id>`) enforces:

* the timeout (`@bundle.task(timeout_s=...)`, else `default_task_timeout_s`): ask the task to
  stop (taskrun sends Cancel); a task still running `cancel_grace_s` later (stuck in C, or
  swallowing TaskCancelled) gets its runtime's process group SIGTERM, then SIGKILL;
* the memory limit (`task_memory_limit_mb`): every `POLL_S` it reads the RSS of the runtime and
  all its children (psutil, through `Runtime.rss_bytes`); above the limit the process group gets
  SIGKILL at once, since memory cannot wait for a cooperative cancel: the kernel's OOM killer
  would pick its own victim first, perhaps the supervisor.

What it enforced becomes the TI's error (`verdict`) and is written to the task log as it happens;
a runtime that died on its own (segfault, `os._exit`, the kernel's OOM killer) keeps its
RuntimeLost error, with the Python stack faulthandler dumped when there is one (`lost`). Either
way the pool retires the dead runtime and the next task gets a new one; reaping is
plugin/process.py's.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from supervisor.plugin.messages import ErrorInfo, Failed
from supervisor.plugin.stderr import FATAL_PREFIX

if TYPE_CHECKING:
    from supervisor.errors import RuntimeLost
    from supervisor.plugin.messages import Outcome

log = logging.getLogger(__name__)

MB = 1024 * 1024
#: Seconds between memory readings: an allocation loop gains a few hundred MB in that time.
POLL_S = 0.25
#: Seconds a timed-out task gets between its cancel and the kill (`cancel_grace_s`).
DEFAULT_CANCEL_GRACE_S = 3.0
#: Seconds between SIGTERM and SIGKILL: for the task's own child processes to clean up; the
#: runtime itself answers SIGTERM by waiting for the task, which is what timed out.
KILL_GRACE_S = 1.0
#: Error types of the limits, as the task log and Airflow's retry reason show them.
TIMEOUT = "TaskTimeout"
MEMORY = "MemoryLimitExceeded"


class LimitedRuntime(Protocol):
    """What the limits need of a runtime (plugin.runtime.Runtime provides it)."""

    @property
    def pid(self) -> int: ...
    def alive(self) -> bool: ...
    def rss_bytes(self) -> int: ...
    def stderr_tail(self) -> str: ...


class Note(Protocol):
    """Writes a line to the TI's task log (TaskRun._note)."""

    def __call__(self, message: str, *, level: str = ..., **fields: object) -> None: ...


@dataclass(frozen=True)
class Limits:
    """One task's limits; 0 turns a limit off."""

    timeout_s: float = 0.0
    memory_limit_bytes: int = 0
    cancel_grace_s: float = DEFAULT_CANCEL_GRACE_S


class TaskLimits:
    """Enforces `Limits` on the runtime running one TI; `start()` once, `stop()` once it ended.

    `cancel(reason)` asks the task to stop; `note` writes to its task log. Both are called on the
    limits thread. `stop()` joins that thread, so after it `verdict` reads a settled state.
    """

    def __init__(
        self,
        runtime: LimitedRuntime,
        limits: Limits,
        *,
        cancel: Callable[[str], None],
        note: Note,
        context: Mapping[str, Any],
        poll_s: float = POLL_S,
        kill_grace_s: float = KILL_GRACE_S,
    ) -> None:
        self._runtime = runtime
        self._limits = limits
        self._cancel = cancel
        self._note = note
        self._context = dict(context)
        self._poll_s = poll_s
        self._kill_grace_s = kill_grace_s
        self._stopped = threading.Event()
        #: (error type, reason) once a limit was enforced.
        self.enforced: tuple[str, str] | None = None
        self._thread = threading.Thread(
            target=self._watch, name=f"limits:{self._context.get('ti_id', '?')}", daemon=True
        )

    def start(self) -> TaskLimits:
        """Start watching, unless there is nothing to watch."""
        if self._limits.timeout_s or self._limits.memory_limit_bytes:
            self._thread.start()
        return self

    def stop(self) -> None:
        """The task has ended: stop watching (a kill in progress finishes first)."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()

    def lost(self, exc: RuntimeLost) -> Failed:
        """The failure of a task whose runtime died, with faulthandler's dump in the task log."""
        dump = crash_dump(self._runtime.stderr_tail())
        if dump and self.enforced is None:
            self._note(
                f"Runtime pid {self._runtime.pid} crashed; its Python stack:\n{dump}",
                level="error",
            )
        return Failed(retryable=True, error=ErrorInfo("RuntimeLost", str(exc), traceback=dump))

    def verdict(self, outcome: Outcome) -> Outcome:
        """A failure caused by a limit we enforced fails with that limit as its reason.

        Anything else stands: a task that finished before its cancel reached it keeps its result.
        """
        if self.enforced is None or not isinstance(outcome, Failed):
            return outcome
        kind, reason = self.enforced
        if outcome.error is not None and outcome.error.type != kind:
            # What the stream said (RuntimeLost after the kill, TaskCancelled): detail, kept.
            self._note(f"{outcome.error.type}: {outcome.error.message}", level="info")
        return Failed(retryable=True, error=ErrorInfo(kind, reason))

    # -- the limits thread ---------------------------------------------------------------------

    def _watch(self) -> None:
        limits = self._limits
        timeout_at = time.monotonic() + limits.timeout_s if limits.timeout_s else math.inf
        kill_at = math.inf
        while True:
            now = time.monotonic()
            if now >= kill_at:
                self._kill_after_cancel()
                return
            if now >= timeout_at:
                self._time_out()
                timeout_at, kill_at = math.inf, now + limits.cancel_grace_s
                continue
            wait = min(timeout_at, kill_at) - now
            if limits.memory_limit_bytes:
                wait = min(wait, self._poll_s)
            if self._stopped.wait(None if wait == math.inf else wait):
                return
            if limits.memory_limit_bytes and self._over_memory():
                return

    def _over_memory(self) -> bool:
        limit = self._limits.memory_limit_bytes
        rss = self._runtime.rss_bytes()
        if rss <= limit:
            return False
        pid = self._runtime.pid
        reason = (
            f"exceeded its memory limit: {rss // MB} MB > {limit // MB} MB "
            f"(RSS of runtime pid {pid} and its children); killed"
        )
        self.enforced = (MEMORY, reason)
        self._note(f"Task {reason} at once (SIGKILL to its process group)", level="error")
        log.warning(
            "ti.limit_exceeded",
            extra={**self._context, "limit": "memory", "rss_bytes": rss, "pid": pid},
        )
        self._signal_group(signal.SIGKILL)
        return True

    def _time_out(self) -> None:
        timeout_s, grace_s = self._limits.timeout_s, self._limits.cancel_grace_s
        self.enforced = (TIMEOUT, f"timed out after {timeout_s:g}s; cancelled")
        self._note(
            f"Task timed out after {timeout_s:g}s: cancelling it; its runtime is killed if it "
            f"has not stopped {grace_s:g}s from now",
            level="error",
        )
        log.warning(
            "ti.limit_exceeded",
            extra={**self._context, "limit": "timeout", "timeout_s": timeout_s},
        )
        self._cancel(f"timed out after {timeout_s:g}s")

    def _kill_after_cancel(self) -> None:
        timeout_s, grace_s = self._limits.timeout_s, self._limits.cancel_grace_s
        pid = self._runtime.pid
        self.enforced = (
            TIMEOUT,
            f"timed out after {timeout_s:g}s; runtime did not stop within {grace_s:g}s of "
            "cancel, killed",
        )
        self._note(
            f"Task still running {grace_s:g}s after its cancel: killing runtime pid {pid} and "
            f"its process group (SIGTERM, SIGKILL {self._kill_grace_s:g}s later)",
            level="error",
        )
        log.warning("ti.runtime_killed", extra={**self._context, "pid": pid})
        self._signal_group(signal.SIGTERM)
        self._stopped.wait(self._kill_grace_s)  # stop() cuts it short: the task ended
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, sig: signal.Signals) -> None:
        """Signal the runtime's process group: its pid, as it leads its own session.

        Only while the task holds its lease, when nobody reaps the runtime (the pool stops it
        after the lease), so a dead runtime is a zombie whose pid cannot have been reused; and
        only while it lives, which also spares an already dead one.
        """
        if self._runtime.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._runtime.pid, sig)


def crash_dump(stderr_tail: str) -> str:
    """faulthandler's dump from a runtime's last stderr lines ("" when it wrote none).

    From its "Fatal Python error:" line to the end, without the list of extension modules.
    """
    lines = stderr_tail.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(FATAL_PREFIX)]
    if not starts:
        return ""
    dump = lines[starts[-1] :]
    return "\n".join(line for line in dump if not line.startswith("Extension modules:"))
