"""Warm runtime processes per bundle version: lease, return, recycle, evict.

A runtime runs one task at a time, so the pool hands each lease its own process: an idle one for
the same RuntimeSpec when there is one (a warm hit), a new one otherwise (a cold start). On return
a runtime goes back to idle unless it ran `max_tasks_per_runtime` tasks, grew past
`rss_limit_bytes`, died, or its last task ended in an exception (RuntimeLost included): then it is
stopped and the next task gets a fresh process. A reaper thread stops idle runtimes: the most
recently used one of each spec after `idle_timeout_s`, the others (spares a burst of parallel tasks
left behind) already after `spare_idle_timeout_s`, so an idle worker keeps one warm process per
version and gives back the rest. Under `max_runtimes` the least recently used idle runtime makes
room.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from supervisor.metrics import Metrics
from supervisor.plugin.launch import RuntimeSpec
from supervisor.plugin.runtime import DEFAULT_GRACE_S, Runtime, start_runtime

logger = logging.getLogger(__name__)

DEFAULT_MAX_TASKS_PER_RUNTIME = 1000
DEFAULT_IDLE_TIMEOUT_S = 300.0
DEFAULT_SPARE_IDLE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class PoolStats:
    """A snapshot for metrics and `supervisor status`."""

    #: Leases served by an idle runtime.
    warm_hits: int
    #: Leases that had to start a runtime.
    cold_starts: int
    #: Starts that raised RuntimeStartError.
    start_failures: int
    #: Runtimes stopped: max tasks, RSS, death, a failed task, idleness, the cap or close().
    recycled: int
    #: Runtimes idle, busy or starting right now.
    live: int


@dataclass(frozen=True)
class RuntimeInfo:
    """One live runtime, as runtimes() reports it for metrics and `supervisor status`."""

    #: The bundle label, `name==version`.
    bundle: str
    pid: int
    #: True while a task holds it.
    busy: bool
    tasks_run: int
    #: Seconds since it last finished a task (since it started, if it ran none).
    idle_s: float
    #: Resident memory of the process and its children.
    rss_bytes: int


class RuntimePool:
    """Warm runtimes keyed by RuntimeSpec; thread-safe, one per process (the supervisor's).

    `with pool.lease(spec) as runtime:` for each task; `close()` once at the end stops every
    runtime (in parallel). `start` is the seam tests and callers replace (default start_runtime).
    Warm hits, cold starts and start failures are reported to `metrics`.
    """

    def __init__(
        self,
        *,
        start: Callable[[RuntimeSpec], Runtime] = start_runtime,
        max_tasks_per_runtime: int = DEFAULT_MAX_TASKS_PER_RUNTIME,  # 0: never recycle
        rss_limit_bytes: int | None = None,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
        spare_idle_timeout_s: float = DEFAULT_SPARE_IDLE_TIMEOUT_S,
        max_runtimes: int | None = None,
        grace_s: float = DEFAULT_GRACE_S,
        metrics: Metrics | None = None,
    ) -> None:
        self._start = start
        self._metrics = metrics or Metrics()
        self._max_tasks = max_tasks_per_runtime
        self._rss_limit = rss_limit_bytes
        self._idle_timeout_s = idle_timeout_s
        self._spare_idle_timeout_s = min(spare_idle_timeout_s, idle_timeout_s)
        self._max_runtimes = max_runtimes
        self._grace_s = grace_s
        self._cond = threading.Condition()
        self._idle: dict[RuntimeSpec, list[Runtime]] = collections.defaultdict(list)
        self._busy: dict[RuntimeSpec, set[Runtime]] = collections.defaultdict(set)
        self._starting = 0
        self._counts = collections.Counter[str]()
        self._stoppers: set[threading.Thread] = set()
        self._closed = threading.Event()
        self._reaper = threading.Thread(target=self._reap_idle, name="pool-reaper", daemon=True)
        self._reaper.start()

    @contextlib.contextmanager
    def lease(self, spec: RuntimeSpec) -> Iterator[Runtime]:
        """A runtime for `spec`, yours alone until the block ends.

        Blocks while `max_runtimes` runtimes are busy. Raises RuntimeStartError (from `start`)
        when a new runtime does not come up, and RuntimeError once the pool is closed.
        """
        runtime = self._acquire(spec)
        try:
            yield runtime
        finally:
            # An exception retires the runtime only if it came out of the runtime itself
            # (Runtime.reusable); an API error after a clean task leaves it warm.
            self._release(runtime)

    def stats(self) -> PoolStats:
        with self._cond:
            return PoolStats(
                warm_hits=self._counts["warm_hits"],
                cold_starts=self._counts["cold_starts"],
                start_failures=self._counts["start_failures"],
                recycled=self._counts["recycled"],
                live=self._live(),
            )

    def runtimes(self) -> list[RuntimeInfo]:
        """Every live runtime, idle or busy (not one still starting); RSS read unlocked."""
        with self._cond:
            held = [(r, False) for rs in self._idle.values() for r in rs]
            held += [(r, True) for rs in self._busy.values() for r in rs]
        now = time.monotonic()
        return [
            RuntimeInfo(
                bundle=r.spec.bundle,
                pid=r.pid,
                busy=busy,
                tasks_run=r.tasks_run,
                idle_s=0.0 if busy else round(now - r.last_used, 3),
                rss_bytes=r.rss_bytes(),
            )
            for r, busy in sorted(held, key=lambda item: (item[0].spec.bundle, item[0].pid))
        ]

    def close(self, grace_s: float | None = None) -> None:
        """Stop every runtime, idle or busy, in parallel; later leases raise RuntimeError."""
        with self._cond:
            self._closed.set()
            runtimes = [r for rs in self._idle.values() for r in rs]
            runtimes += [r for rs in self._busy.values() for r in rs]
            self._idle.clear()
            self._busy.clear()  # their leases' release finds them gone: stopped once, here
            self._cond.notify_all()
        self._stop_async(runtimes, reason="pool closed", grace_s=grace_s)
        self._reaper.join()
        with self._cond:
            stoppers = list(self._stoppers)
        for thread in stoppers:
            thread.join()

    # -- lease phases ----------------------------------------------------------------------------

    def _acquire(self, spec: RuntimeSpec) -> Runtime:
        dead: list[Runtime] = []
        try:
            with self._cond:
                runtime = self._take_idle(spec, dead) or self._reserve_slot(spec, dead)
                if runtime is not None:
                    self._counts["warm_hits"] += 1
                    self._busy[spec].add(runtime)
                    self._metrics.warm_hit(spec.bundle)
                    return runtime
        finally:
            self._stop_async(dead, reason="dead while idle")
        return self._start_new(spec)

    def _take_idle(self, spec: RuntimeSpec, dead: list[Runtime]) -> Runtime | None:
        if self._closed.is_set():
            raise RuntimeError("the runtime pool is closed")
        idle = self._idle[spec]
        while idle:
            runtime = idle.pop()  # most recently used: its pages are the warmest
            if runtime.alive():
                return runtime
            dead.append(runtime)
        return None

    def _reserve_slot(self, spec: RuntimeSpec, dead: list[Runtime]) -> Runtime | None:
        """Make room for a new runtime under max_runtimes; None when the caller must start one.

        Evicts least recently used idle runtimes of any spec, else waits for a release (which
        may hand back an idle runtime for `spec`: that one is returned instead).
        """
        while self._max_runtimes is not None and self._live() >= self._max_runtimes:
            victim = self._lru_idle()
            if victim is not None:
                self._idle[victim.spec].remove(victim)
                self._stop_async([victim], reason="evicted for room")
                continue
            self._cond.wait()
            runtime = self._take_idle(spec, dead)
            if runtime is not None:
                return runtime
        self._starting += 1
        return None

    def _start_new(self, spec: RuntimeSpec) -> Runtime:
        try:
            runtime = self._start(spec)
        except BaseException:
            with self._cond:
                self._starting -= 1
                self._counts["start_failures"] += 1
                self._cond.notify_all()
            self._metrics.start_failed(spec.bundle)
            raise
        with self._cond:
            self._starting -= 1
            self._counts["cold_starts"] += 1
            self._busy[spec].add(runtime)
        self._metrics.cold_start(spec.bundle, runtime.spawn_s)
        logger.debug("pool.cold_start", extra={"bundle": spec.bundle, "pid": runtime.pid})
        return runtime

    def _release(self, runtime: Runtime) -> None:
        reason = self._retire_reason(runtime)
        with self._cond:
            busy = self._busy[runtime.spec]
            if runtime not in busy:  # close() took it and is stopping it
                return
            busy.discard(runtime)
            if reason is None and self._closed.is_set():
                reason = "pool closed"
            if reason is None:
                runtime.last_used = time.monotonic()
                self._idle[runtime.spec].append(runtime)
            self._cond.notify_all()
        if reason is not None:
            self._stop_async([runtime], reason=reason)

    def _retire_reason(self, runtime: Runtime) -> str | None:
        if not runtime.reusable():
            return "task ended in an exception" if runtime.alive() else "runtime died"
        if self._max_tasks and runtime.tasks_run >= self._max_tasks:
            return f"ran {runtime.tasks_run} tasks"
        if self._rss_limit is not None:
            rss = runtime.rss_bytes()
            if rss > self._rss_limit:
                return f"rss {rss} bytes above the limit of {self._rss_limit}"
        return None

    # -- stopping ---------------------------------------------------------------------------------

    def _stop_async(
        self, runtimes: list[Runtime], *, reason: str, grace_s: float | None = None
    ) -> None:
        """Stop each runtime on its own thread, so a slow stop never holds up a task or a lease."""
        for runtime in runtimes:
            logger.debug(
                "pool.retire",
                extra={"bundle": runtime.spec.bundle, "pid": runtime.pid, "reason": reason},
            )
            thread = threading.Thread(
                target=self._stop_one,
                args=(runtime, self._grace_s if grace_s is None else grace_s),
                name=f"pool-stop:{runtime.pid}",
                daemon=True,
            )
            with self._cond:
                self._counts["recycled"] += 1
                self._stoppers.add(thread)
            thread.start()

    def _stop_one(self, runtime: Runtime, grace_s: float) -> None:
        try:
            runtime.stop(grace_s)
        except Exception:
            logger.exception("pool.stop_failed", extra={"pid": runtime.pid})
        finally:
            with self._cond:
                self._stoppers.discard(threading.current_thread())

    def _reap_idle(self) -> None:
        interval = max(0.05, min(self._spare_idle_timeout_s / 4, 5.0))
        while not self._closed.wait(interval):
            now = time.monotonic()
            with self._cond:
                # Each idle list is in release order: its last runtime is the one to keep warm.
                expired = [
                    r
                    for rs in self._idle.values()
                    for i, r in enumerate(rs)
                    if not r.alive()
                    or now - r.last_used
                    >= (self._idle_timeout_s if i == len(rs) - 1 else self._spare_idle_timeout_s)
                ]
                for runtime in expired:
                    self._idle[runtime.spec].remove(runtime)
                if expired:
                    self._cond.notify_all()
            self._stop_async(expired, reason="idle")

    # -- helpers (call with self._cond held) ------------------------------------------------------

    def _live(self) -> int:
        idle = sum(len(rs) for rs in self._idle.values())
        busy = sum(len(rs) for rs in self._busy.values())
        return idle + busy + self._starting

    def _lru_idle(self) -> Runtime | None:
        idle = [r for rs in self._idle.values() for r in rs]
        return min(idle, key=lambda r: r.last_used, default=None)
