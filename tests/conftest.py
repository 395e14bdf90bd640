"""Fixtures shared by every suite: the example bundle's wheels, built and installed once.

The two example-etl versions (bundles/example-etl/) are built into wheels once per session and
installed once into a session home, which tests only read: the store suite inspects it, the
end-to-end suite serves it to a real Airflow.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.build import build_bundle
from supervisor.bundle_venv import find_uv
from supervisor.store import BundleStore

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "bundles" / "example-etl"
VERSIONS = ("1.0.0", "2.0.0")
#: attrs pinned by each example version.
ATTRS = {"1.0.0": "23.2.0", "2.0.0": "25.3.0"}


@pytest.fixture(scope="session")
def uv_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("uv-cache")


@pytest.fixture(scope="session")
def example_wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("example-wheels")
    return {v: build_bundle(EXAMPLES / v, out, uv=find_uv()) for v in VERSIONS}


@pytest.fixture(scope="session")
def session_home(
    tmp_path_factory: pytest.TempPathFactory, example_wheels: dict[str, Path], uv_cache: Path
) -> Path:
    """A home with both example versions installed; tests must not change it."""
    home = tmp_path_factory.mktemp("home")
    store = BundleStore(home, cache_dir=uv_cache)
    for version in VERSIONS:
        store.install(example_wheels[version])
    return home
