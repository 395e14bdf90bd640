"""Waiting on state outside the test process (a subprocess, Redis, Airflow) with a deadline.

The one polling helper of the suite: it stands for an event the test cannot await directly, never
for a fixed sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TypeVar

import psutil

T = TypeVar("T")


def wait_until(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.25,
    what: str = "condition",
) -> T:
    """Call `probe` until it returns something truthy and return that; TimeoutError at the
    deadline. `probe` may raise to give up early (e.g. the process it waits for has died)."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not reached within {timeout:.0f}s")
        time.sleep(interval)


def wait_processes_gone(processes: Iterable[psutil.Process], *, timeout: float, what: str) -> None:
    """Wait until none of `processes` runs (a zombie, dead but not yet reaped, counts as gone)."""

    def gone() -> bool:
        for process in processes:
            try:
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    return False
            except psutil.NoSuchProcess:
                continue
        return True

    wait_until(gone, timeout=timeout, interval=0.05, what=what)
