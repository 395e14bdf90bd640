"""Both example versions running at once under one RuntimePool, each in its own venv."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from supervisor.offline import OfflineHost
from supervisor.plugin.messages import Succeeded, TaskStart
from supervisor.pool import RuntimePool
from supervisor.store import BundleStore
from tests.conftest import ATTRS, VERSIONS


@pytest.fixture
def pool() -> Iterator[RuntimePool]:
    pool = RuntimePool()
    yield pool
    pool.close()


def _dep_version(runtime_version: str) -> TaskStart:
    return TaskStart(ti_id=f"ti-{runtime_version}", dag_id="example_etl", task_id="dep_version",
                     run_id="manual__pool")


def test_two_versions_leased_at_once(store: BundleStore, pool: RuntimePool) -> None:
    v1, v2 = (store.get("example-etl", v) for v in VERSIONS)
    with pool.lease(v1.runtime_spec()) as r1, pool.lease(v2.runtime_spec()) as r2:
        assert r1.pid != r2.pid
        assert r1.alive() and r2.alive()
        results = {}
        for bundle, runtime in ((v1, r1), (v2, r2)):
            start = _dep_version(bundle.version)
            outcome = runtime.execute(start, OfflineHost(start))
            assert isinstance(outcome, Succeeded)
            assert outcome.return_value_json is not None
            results[bundle.version] = json.loads(outcome.return_value_json)
            assert runtime.describe().bundle_version == bundle.version
    assert results == {v: {"attrs": ATTRS[v], "bundle_version": v} for v in VERSIONS}


def test_runtime_processes_run_from_their_own_venvs(store: BundleStore, pool: RuntimePool) -> None:
    for bundle in store.list():
        with pool.lease(bundle.runtime_spec()) as runtime:
            with open(f"/proc/{runtime.pid}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
            assert any(str(bundle.venv).encode() in arg for arg in argv), argv
