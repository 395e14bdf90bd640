"""The pool reports warm hits, cold starts, spawn times and live runtimes to its Metrics."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from supervisor.errors import HandshakeError
from supervisor.metrics import Metrics
from supervisor.plugin.messages import Succeeded
from supervisor.plugin.runtime import Runtime
from supervisor.pool import RuntimePool
from tests.plugin.runtimes import RecordingHost, sample_spec, script_spec, task_start

MakePool = Callable[..., RuntimePool]
V1 = sample_spec("sample-bundle==1.0.0")
V2 = sample_spec("sample-bundle==2.0.0")


def _sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def _run(pool: RuntimePool, spec=V1) -> Runtime:  # type: ignore[no-untyped-def]
    with pool.lease(spec) as runtime:
        assert runtime.execute(task_start("nothing"), RecordingHost()) == Succeeded(None)
    return runtime


def test_warm_hits_and_cold_starts_per_version(pools: MakePool) -> None:
    metrics = Metrics()
    pool = pools(metrics=metrics)

    first = _run(pool, V1)
    _run(pool, V1)
    _run(pool, V1)
    _run(pool, V2)

    starts = "supervisor_runtime_starts_total"
    v1, v2 = (
        {"bundle": "sample-bundle", "version": "1.0.0"},
        {"bundle": "sample-bundle", "version": "2.0.0"},
    )
    assert _sample(metrics, starts, **v1, kind="cold") == 1
    assert _sample(metrics, starts, **v1, kind="warm") == 2
    assert _sample(metrics, starts, **v2, kind="cold") == 1
    assert _sample(metrics, starts, **v2, kind="warm") is None
    spawn_sum = _sample(metrics, "supervisor_runtime_spawn_seconds_sum", **v1)
    assert _sample(metrics, "supervisor_runtime_spawn_seconds_count", **v1) == 1
    assert spawn_sum == pytest.approx(first.spawn_s)


def test_live_runtimes_and_rss_are_read_at_scrape_time(pools: MakePool) -> None:
    metrics = Metrics()
    pool = pools(metrics=metrics)
    metrics.watch(pool=pool)
    v1 = {"bundle": "sample-bundle", "version": "1.0.0"}

    with pool.lease(V1) as busy:
        _run(pool, V1)  # a second runtime: the first is leased
        assert _sample(metrics, "supervisor_runtimes", **v1, state="busy") == 1
        assert _sample(metrics, "supervisor_runtimes", **v1, state="idle") == 1
        rss = _sample(metrics, "supervisor_runtime_rss_bytes", **v1)
        assert rss is not None and rss >= busy.rss_bytes() > 0
        infos = {info.pid: info for info in pool.runtimes()}
        assert infos[busy.pid].busy and infos[busy.pid].tasks_run == 0

    assert _sample(metrics, "supervisor_runtimes", **v1, state="idle") == 2
    assert _sample(metrics, "supervisor_runtimes", **v1, state="busy") is None


def test_start_failures_are_counted(pools: MakePool) -> None:
    metrics = Metrics()
    pool = pools(metrics=metrics)
    broken = script_spec("print('hello')", label="broken-bundle==0.1.0")

    with pytest.raises(HandshakeError), pool.lease(broken):
        pass

    labels = {"bundle": "broken-bundle", "version": "0.1.0"}
    assert _sample(metrics, "supervisor_runtime_start_failures_total", **labels) == 1
    assert _sample(metrics, "supervisor_runtime_starts_total", **labels, kind="cold") is None
