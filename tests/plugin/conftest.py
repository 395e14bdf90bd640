"""Fixtures for tests/plugin: real runtime processes, cleaned up and checked after every test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psutil
import pytest

from supervisor.plugin.launch import RuntimeSpec
from supervisor.plugin.runtime import Runtime, start_runtime
from supervisor.pool import RuntimePool
from tests.plugin.runtimes import sample_spec


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Warnings are errors here: a Runtime that is never stopped warns in __del__ (STYLE §9).
    for item in items:
        if "tests/plugin/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.filterwarnings("error"))
            item.add_marker(pytest.mark.timeout(120))


@pytest.fixture(autouse=True)
def no_leftover_processes() -> Iterator[None]:
    """Fail a test that leaves a child process (running or unreaped) behind."""
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    yield
    leftovers = [p for p in me.children(recursive=True) if p.pid not in before]
    for proc in leftovers:
        proc.kill()
    psutil.wait_procs(leftovers, timeout=5)
    assert not leftovers, f"processes left behind: {[(p.pid, p.name()) for p in leftovers]}"


@pytest.fixture
def runtimes() -> Iterator[Callable[..., Runtime]]:
    """start_runtime for the sample bundle (or any spec); every runtime is stopped afterwards."""
    started: list[Runtime] = []

    def start(spec: RuntimeSpec | None = None, **kwargs: Any) -> Runtime:
        runtime = start_runtime(spec or sample_spec(), **kwargs)
        started.append(runtime)
        return runtime

    yield start
    for runtime in started:
        runtime.stop(grace_s=1.0)


@pytest.fixture
def pools() -> Iterator[Callable[..., RuntimePool]]:
    """RuntimePool factory; every pool is closed afterwards."""
    made: list[RuntimePool] = []

    def make(**kwargs: Any) -> RuntimePool:
        pool = RuntimePool(**kwargs)
        made.append(pool)
        return pool

    yield make
    for pool in made:
        pool.close(grace_s=1.0)
