"""Benchmark of the bundle core: prints numbers next to their targets, asserts nothing.

    .venv/bin/python scripts/bench_bundle_core.py [--cold-runs 10] [--executes 1000] [--installs 3]

Measures, with the example-etl 1.0.0 wheel built from bundles/:
- install into a fresh home with uv and with venv + pip, package caches warm (one warm-up first);
- cold start of a runtime: spawn -> handshake -> health SERVING (start_runtime), p50;
- warm Execute of the no-op task through the pool (lease + Execute + release), p50/p99;
- RSS of an idle runtime, after start and after the warm runs.
Everything lives in one temporary directory (same filesystem for uv's cache and the venvs).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from supervisor.build import build_bundle  # noqa: E402
from supervisor.bundle_venv import Installer, find_uv  # noqa: E402
from supervisor.offline import OfflineHost  # noqa: E402
from supervisor.plugin.messages import TaskStart  # noqa: E402
from supervisor.plugin.runtime import start_runtime  # noqa: E402
from supervisor.pool import RuntimePool  # noqa: E402
from supervisor.store import BundleStore, InstalledBundle  # noqa: E402

TARGETS = {
    "cold_p50_s": 0.5,
    "warm_p50_ms": 3.0,
    "warm_p99_ms": 15.0,
    "uv_install_s": 2.0,
    "idle_rss_mb": 45.0,
}


def main() -> None:
    args = _parse()
    with tempfile.TemporaryDirectory(prefix="bench-bundle-core-") as tmp:
        root = Path(tmp)
        wheel = build_bundle(REPO / "bundles" / "example-etl" / "1.0.0", root / "wheels",
                             uv=find_uv())
        cache = root / "uv-cache"
        uv_s = _install_times(root, wheel, Installer.UV, cache, args.installs)
        pip_s = _install_times(root, wheel, Installer.PIP, cache, max(1, args.installs // 2))
        bundle = BundleStore(root / "home-uv-0", cache_dir=cache).get("example-etl")
        cold = _cold_starts(bundle, args.cold_runs)
        idle_start_mb, warm, idle_after_mb = _warm_executes(bundle, args.executes)
    _report(f"install, uv (median of {len(uv_s)})", statistics.median(uv_s), "s",
            TARGETS["uv_install_s"])
    _report(f"install, venv + pip (median of {len(pip_s)})", statistics.median(pip_s), "s", None)
    _report(f"cold start p50 ({len(cold)} runs)", _pct(cold, 50), "s", TARGETS["cold_p50_s"])
    _report(f"warm execute p50 ({len(warm)} runs)", _pct(warm, 50) * 1000, "ms",
            TARGETS["warm_p50_ms"])
    _report(f"warm execute p99 ({len(warm)} runs)", _pct(warm, 99) * 1000, "ms",
            TARGETS["warm_p99_ms"])
    _report("idle runtime RSS after start", idle_start_mb, "MB", TARGETS["idle_rss_mb"])
    _report("idle runtime RSS after warm runs", idle_after_mb, "MB", TARGETS["idle_rss_mb"])


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cold-runs", type=int, default=10)
    parser.add_argument("--executes", type=int, default=1000)
    parser.add_argument("--installs", type=int, default=3)
    return parser.parse_args()


def _install_times(
    root: Path, wheel: Path, installer: Installer, cache: Path, runs: int
) -> list[float]:
    """Seconds per install into a fresh home; one unmeasured warm-up fills the caches."""
    _timed(lambda: BundleStore(root / f"warmup-{installer}", installer=installer,
                               cache_dir=cache).install(wheel))
    return [
        _timed(lambda i=i: BundleStore(root / f"home-{installer}-{i}", installer=installer,
                                       cache_dir=cache).install(wheel))
        for i in range(runs)
    ]


def _cold_starts(bundle: InstalledBundle, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        runtime = start_runtime(bundle.runtime_spec())
        times.append(time.perf_counter() - started)
        runtime.stop()
    return times


def _warm_executes(bundle: InstalledBundle, runs: int) -> tuple[float, list[float], float]:
    spec = bundle.runtime_spec()
    start = TaskStart(ti_id="bench", dag_id="example_etl", task_id="noop", run_id="bench")
    pool = RuntimePool(max_tasks_per_runtime=runs + 10)
    try:
        with pool.lease(spec) as runtime:  # start it, unmeasured
            idle_start = runtime.rss_bytes() / 2**20
            runtime.execute(start, OfflineHost(start))
        times = []
        for _ in range(runs):
            began = time.perf_counter()
            with pool.lease(spec) as runtime:
                runtime.execute(start, OfflineHost(start))
            times.append(time.perf_counter() - began)
        with pool.lease(spec) as runtime:
            idle_after = runtime.rss_bytes() / 2**20
    finally:
        pool.close()
    return idle_start, times, idle_after


def _timed(func: Callable[[], Any]) -> float:
    began = time.perf_counter()
    func()
    return time.perf_counter() - began


def _pct(values: list[float], pct: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def _report(what: str, value: float, unit: str, target: float | None) -> None:
    goal = f"target <= {target:g} {unit}" if target is not None else "no target"
    verdict = "" if target is None else ("  ok" if value <= target else "  OVER")
    print(f"{what:<40} {value:9.3f} {unit:<3} ({goal}){verdict}")


if __name__ == "__main__":
    main()
