"""Fixtures for tests/limits: the sample bundle's manifest, a harness per test, no leftovers."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from supervisor.plugin.messages import RuntimeDescription
from tests.limits.harness import FaultHarness, describe_sample
from tests.plugin.conftest import no_leftover_processes  # noqa: F401 (autouse fixture)

MakeHarness = Callable[..., FaultHarness]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/limits/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.filterwarnings("error"))
            item.add_marker(pytest.mark.timeout(120))


@pytest.fixture(scope="session")
def sample_description() -> RuntimeDescription:
    return describe_sample()


@pytest.fixture
def harness(tmp_path: Path, sample_description: RuntimeDescription) -> Iterator[MakeHarness]:
    """FaultHarness factory taking settings flags; every harness is closed afterwards."""
    made: list[FaultHarness] = []

    def make(flags: Mapping[str, Any] | None = None) -> FaultHarness:
        made.append(FaultHarness(tmp_path / str(len(made)), sample_description, flags))
        return made[-1]

    yield make
    for one in made:
        one.close()
