"""The warm pool over real runtimes: reuse, several versions, recycling, eviction, no orphans."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from supervisor.errors import HandshakeError, RuntimeLost
from supervisor.plugin.messages import Succeeded
from supervisor.plugin.runtime import Runtime, start_runtime
from supervisor.pool import RuntimePool
from tests.plugin.runtimes import REPO, RecordingHost, sample_spec, still_running, task_start

MakePool = Callable[..., RuntimePool]
V1 = sample_spec("sample-bundle==1.0.0")
V2 = sample_spec("sample-bundle==2.0.0")


def _run_pid_task(pool: RuntimePool, spec=V1) -> Runtime:  # type: ignore[no-untyped-def]
    """Lease, run the "pid" task (which returns the runtime's own pid), return the runtime."""
    with pool.lease(spec) as runtime:
        outcome = runtime.execute(task_start("pid"), RecordingHost())
        assert outcome == Succeeded(str(runtime.pid))
    return runtime


def _held(pool: RuntimePool) -> list[tuple[str, bool]]:
    """(bundle label, busy) of each live runtime, by label."""
    return [(info.bundle, info.busy) for info in pool.runtimes()]


def test_sequential_tasks_reuse_one_process(pools: MakePool) -> None:
    pool = pools()

    first = _run_pid_task(pool)
    second = _run_pid_task(pool)

    assert second is first and first.alive()
    stats = pool.stats()
    assert (stats.cold_starts, stats.warm_hits, stats.live) == (1, 1, 1)
    assert _held(pool) == [("sample-bundle==1.0.0", False)]
    assert first.spawn_s > 0


def test_two_versions_live_side_by_side(pools: MakePool) -> None:
    pool = pools()

    with pool.lease(V1) as one, pool.lease(V2) as two:
        assert one.pid != two.pid and one.alive() and two.alive()
        assert _held(pool) == [("sample-bundle==1.0.0", True), ("sample-bundle==2.0.0", True)]
    # Each version keeps its own warm process.
    assert _run_pid_task(pool, V1) is one
    assert _run_pid_task(pool, V2) is two


def test_concurrent_leases_of_one_version_get_separate_processes(pools: MakePool) -> None:
    pool = pools()
    with pool.lease(V1) as one, pool.lease(V1) as two:
        assert one.pid != two.pid
    assert _held(pool) == [("sample-bundle==1.0.0", False)] * 2


def test_recycled_after_max_tasks(pools: MakePool) -> None:
    pool = pools(max_tasks_per_runtime=2)

    runtimes = [_run_pid_task(pool) for _ in range(3)]

    assert runtimes[0] is runtimes[1] and runtimes[2] is not runtimes[0]
    assert runtimes[0].wait_stopped(10)
    assert not psutil.pid_exists(runtimes[0].pid)
    assert pool.stats().recycled == 1


def test_recycled_above_the_rss_limit(pools: MakePool) -> None:
    tiny = pools(rss_limit_bytes=1)
    roomy = pools(rss_limit_bytes=1 << 40)

    first, second = _run_pid_task(tiny), _run_pid_task(tiny)
    kept = [_run_pid_task(roomy), _run_pid_task(roomy)]

    assert first.pid != second.pid
    assert first.wait_stopped(10) and not first.socket_dir.exists()
    assert kept[0] is kept[1]


def test_idle_runtimes_are_evicted(pools: MakePool) -> None:
    pool = pools(idle_timeout_s=0.2)

    runtime = _run_pid_task(pool)

    assert runtime.wait_stopped(10), "the reaper did not stop an idle runtime"
    assert not psutil.pid_exists(runtime.pid)
    assert pool.stats().live == 0
    assert _run_pid_task(pool).pid != runtime.pid


def test_spares_left_by_a_burst_stop_early_and_one_runtime_per_version_stays_warm(
    pools: MakePool,
) -> None:
    pool = pools(idle_timeout_s=60, spare_idle_timeout_s=0.2)
    # Leases end in reverse: `second` goes idle first, so once `first` is back it is a spare.
    with pool.lease(V1) as first, pool.lease(V2) as other_version, pool.lease(V1) as second:
        pass
    assert second.wait_stopped(10), "the reaper did not stop the spare"
    assert first.alive() and other_version.alive()
    assert _held(pool) == [("sample-bundle==1.0.0", False), ("sample-bundle==2.0.0", False)]
    assert _run_pid_task(pool, V1) is first, "the warm one serves the next task"


def test_least_recently_used_idle_runtime_makes_room(pools: MakePool) -> None:
    pool = pools(max_runtimes=1)

    old = _run_pid_task(pool, V1)
    new = _run_pid_task(pool, V2)

    assert old.wait_stopped(10)
    assert new.alive() and pool.stats().live == 1


def test_runtime_killed_mid_task_is_replaced(pools: MakePool) -> None:
    pool = pools()
    lost = pytest.raises(RuntimeLost, match=r"killed by SIGKILL \(signal 9")
    with lost as info, pool.lease(V1) as runtime:
        host = RecordingHost(on_ready=lambda: os.kill(runtime.pid, signal.SIGKILL))
        runtime.execute(task_start("wait"), host)
    assert info.value.pid == runtime.pid

    assert runtime.wait_stopped(10)
    replacement = _run_pid_task(pool, V1)
    assert replacement.pid != runtime.pid


def test_lost_runtime_caught_by_the_caller_is_still_replaced(pools: MakePool) -> None:
    # taskrun turns RuntimeLost into a Failed outcome inside the lease; the pool must notice.
    pool = pools()
    with pool.lease(V1) as runtime:
        host = RecordingHost(on_ready=lambda: os.kill(runtime.pid, signal.SIGKILL))
        with pytest.raises(RuntimeLost):
            runtime.execute(task_start("wait"), host)

    assert runtime.wait_stopped(10)
    assert _run_pid_task(pool, V1).pid != runtime.pid


def test_close_stops_every_runtime(pools: MakePool) -> None:
    pool = pools()
    with pool.lease(V1) as one, pool.lease(V2) as two:
        pass

    pool.close(grace_s=1.0)

    assert one.wait_stopped(0) and two.wait_stopped(0)
    assert not one.socket_dir.exists() and not two.socket_dir.exists()
    with pytest.raises(RuntimeError, match="closed"), pool.lease(V1):
        pass


def test_close_with_a_lease_held_stops_that_runtime_once(pools: MakePool) -> None:
    pool = pools()
    with pool.lease(V1) as one, pool.lease(V2) as two:
        pool.close(grace_s=1.0)
        assert one.wait_stopped(0) and two.wait_stopped(0)
    assert pool.stats().recycled == 2, "each runtime counted once, not again at its release"
    assert pool.runtimes() == []


def test_start_failure_frees_its_slot(pools: MakePool) -> None:
    broken = sample_spec("broken==1.0.0", bundle_env="tests.plugin.no_such_module:bundle")
    pool = pools(max_runtimes=1)

    with pytest.raises(HandshakeError, match=r"^bundle broken==1\.0\.0: "), pool.lease(broken):
        pass

    assert pool.stats().start_failures == 1
    assert _run_pid_task(pool, V1).alive()  # the failed start did not keep the only slot


def test_kill_9_of_the_pool_owner_leaves_no_runtime(tmp_path: Path) -> None:
    owner = subprocess.Popen(
        [sys.executable, "-m", "tests.plugin.pool_owner"],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert owner.stdout is not None
        report = json.loads(owner.stdout.readline())
        runtimes = [psutil.Process(pid) for pid in report["pids"]]
        assert all(p.is_running() for p in runtimes)
    finally:
        owner.kill()
        owner.wait()
        owner.stdin.close()  # type: ignore[union-attr]
        owner.stdout.close()  # type: ignore[union-attr]

    alive = still_running(runtimes, timeout=5)
    assert alive == [], f"runtimes outlived their supervisor: {alive}"

    # The next supervisor start sweeps the socket dirs the dead one could not remove.
    start_runtime(sample_spec()).stop()
    assert [d for d in report["socket_dirs"] if Path(d).exists()] == []


def test_concurrent_leases_stay_under_max_runtimes(pools: MakePool) -> None:
    pool = pools(max_runtimes=2)
    seen_live: list[int] = []
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(4):
                with pool.lease(V1 if (n + i) % 2 else V2) as runtime:
                    seen_live.append(pool.stats().live)
                    outcome = runtime.execute(task_start("pid"), RecordingHost())
                    assert outcome == Succeeded(str(runtime.pid))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    assert len(seen_live) == 20 and max(seen_live) <= 2
    stats = pool.stats()
    assert stats.warm_hits + stats.cold_starts == 20
    assert stats.live <= 2
