"""Draining on SIGTERM: stop taking work, let running TIs finish, then cut them short.

Celery's warm shutdown (the first SIGTERM or SIGINT) stops consuming and waits for the task
threads. `Drain` bounds that wait: when `grace_s` has passed, or at once on a second SIGTERM or
SIGINT, every TI still running is cancelled (its runtime is stopped if it ignores the cancel)
and reported up_for_retry or failed like any cancelled task, and state deliveries still waiting
for an unreachable Execution API give up to the journal (recovery.py), which the next start
finishes. So the process always exits, and nothing it finished is lost.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

Cancel = Callable[[str], None]


class Drain:
    """The shutdown clock shared by the intake's signal hook and every running TI."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        #: Set by the first signal: the worker takes no new TI.
        self.started = threading.Event()
        #: Set when the grace has run out: running TIs are cancelled, deliveries give up.
        self.expired = threading.Event()
        self._lock = threading.Lock()
        self._cancels: dict[int, Cancel] = {}
        self._timer: threading.Timer | None = None
        self._why = ""

    def signal(self, signame: str) -> None:
        """A shutdown signal arrived: the first starts the grace, any later one ends it now.

        Called from a signal handler in the main thread: it only sets events and starts a timer.
        """
        if not self.started.is_set():
            self.started.set()
            log.warning("drain.started", extra={"signal": signame, "grace_s": self.grace_s})
            self._timer = threading.Timer(self.grace_s, self.expire, args=("grace period over",))
            self._timer.name = "drain-grace"
            self._timer.daemon = True
            self._timer.start()
        else:
            threading.Thread(
                target=self.expire, args=(f"second {signame}",), name="drain-now", daemon=True
            ).start()

    def expire(self, why: str) -> None:
        """Cancel every running TI; later ones are cancelled as they register."""
        with self._lock:
            if self.expired.is_set():
                return
            self._why = why
            self.expired.set()
            cancels = list(self._cancels.values())
        if self._timer is not None:
            self._timer.cancel()
        log.warning("drain.expired", extra={"why": why, "cancelled": len(cancels)})
        for cancel in cancels:
            cancel(self.reason())

    def reason(self) -> str:
        return f"the worker is shutting down ({self._why}; drain grace {self.grace_s:g}s)"

    @contextmanager
    def watch(self, cancel: Cancel) -> Iterator[None]:
        """Register a running TI's cancel for the life of the block."""
        key = id(cancel)
        with self._lock:
            self._cancels[key] = cancel
            already = self.expired.is_set()
        if already:
            cancel(self.reason())
        try:
            yield
        finally:
            with self._lock:
                self._cancels.pop(key, None)
