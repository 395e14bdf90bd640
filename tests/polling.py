"""Waiting on state outside the test process (a subprocess, Redis, Airflow) with a deadline.

The one polling helper of the suite: it stands for an event the test cannot await directly, never
for a fixed sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

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
