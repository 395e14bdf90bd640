"""Fixtures for the bundle store: real wheels, real venvs, real runtime processes.

The two example-etl wheels and the session home with both installed come from tests/conftest.py.
Tests that change a store get a fresh home of their own; every home shares one uv cache (same
filesystem as the homes, under pytest's tmp dir), so only the first install downloads anything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from supervisor.store import BundleStore, InstalledBundle
from tests.conftest import REPO

CLI_TIMEOUT_S = 120


@pytest.fixture
def store(session_home: Path, uv_cache: Path) -> BundleStore:
    return BundleStore(session_home, cache_dir=uv_cache)


@pytest.fixture
def fresh_store(tmp_path: Path, uv_cache: Path) -> BundleStore:
    return BundleStore(tmp_path / "home", cache_dir=uv_cache)


@pytest.fixture
def installed_v1(fresh_store: BundleStore, example_wheels: dict[str, Path]) -> InstalledBundle:
    """1.0.0 installed alone into a fresh home, for tests that damage or change it."""
    return fresh_store.install(example_wheels["1.0.0"])


@pytest.fixture
def cli_env(uv_cache: Path) -> Iterator[dict[str, str]]:
    env = {**os.environ, "UV_CACHE_DIR": str(uv_cache)}
    env.pop("SUPERVISOR_HOME", None)
    env.pop("SUPERVISOR_CONFIG", None)
    yield env


def run_cli(home: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`supervisor --home HOME ARGS...` as a real subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "supervisor", "--home", str(home), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def run_json(home: Path, env: dict[str, str], *args: str) -> tuple[int, Any]:
    """Run a CLI command with --json; its stdout must be exactly one JSON document."""
    proc = run_cli(home, env, *args, "--json")
    assert proc.stdout.strip(), f"no stdout; stderr: {proc.stderr}"
    return proc.returncode, json.loads(proc.stdout)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """A user error: non-zero exit, one line on stderr, no traceback, naming `fragments`."""
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
