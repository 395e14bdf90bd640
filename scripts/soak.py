"""Soak of `supervisor serve`: thousands of trivial tasks, and Execution API outages (issue 5).

    .venv/bin/python scripts/soak.py --tasks 5000 --concurrency 8
    .venv/bin/python scripts/soak.py --tasks 0 --outage-runs 100 --outage-s 60

Everything is real but Airflow: a `supervisor serve` subprocess on a private home and private
Redis queues (DBs 13/14, as tests/serve), three installed bundle versions (example-etl 1.0.0 and
2.0.0 from bundles/example-etl, and 3.0.0 built from a copy of the same source with the version
bumped), and the local Execution API stub of tests/apistub.py, which keeps the final state of
every TI. Workloads go through Celery exactly as Airflow's scheduler sends them, round-robin over
three queues routed to the three versions (`supervisor.queue_to_bundle`).

Soak (`--tasks N`): `noop` tasks, at most `--window` unfinished at once, so the worker always
has work and a task's latency is its own rather than the backlog's. After every
`--sample-every` tasks the script lets the in-flight tasks finish (final state at the stub and
the Celery result), then samples the serve process (RSS, open fds, threads) and, apart, its
runtimes. Criteria: no failure (every TI `success` at the stub and `SUCCESS` in Celery), serve
RSS grows less than 10% from the first sample after warm-up to the last, and open fds do not
grow. Fds are counted apart by kind, as the number of warm runtimes varies: the pipes and Unix
sockets whose other end a runtime holds (4 per runtime) are left out, TCP connections (the Redis
and API pools) may grow by one per slot, and every other fd must not grow at all.

Outages (`--outage-runs R --outage-s S`): per run, a second serve (concurrency = the run's 10
tasks) starts 10 `sleep_a_bit` tasks holding `--hold-s` seconds; once every one has started,
the stub goes down (listener closed, connections dropped) for S seconds and comes back on the
same port (`--outage-mode 503`: it answers every request 503 instead). The tasks end during the
outage, so their final states must survive it. A run waits for each Celery result (the worker
is done with the TI) and counts as lost every TI without a final state at the stub. Criterion:
0 lost over the R runs, which run one after another.

Prints a table and a verdict; `--json PATH` also writes them. Exit 0 when every criterion holds,
1 when one fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from celery import Celery  # noqa: E402
from celery.exceptions import TimeoutError as CeleryTimeout  # noqa: E402
from celery.result import AsyncResult  # noqa: E402

from supervisor.build import build_bundle  # noqa: E402
from supervisor.bundle_venv import find_uv  # noqa: E402
from supervisor.store import BundleStore  # noqa: E402
from tests.apistub import HttpFakeApi, StubExecutionApi, execute_task  # noqa: E402
from tests.serve.conftest import BACKEND, BROKER, ServeProcess, serve_env  # noqa: E402

EXAMPLES = REPO / "bundles" / "example-etl"
NAME = "example-etl"
#: The versions in bundles/example-etl, and the one built from a copy with its version bumped.
SHIPPED = ("1.0.0", "2.0.0")
BUILT = "3.0.0"
VERSIONS = (*SHIPPED, BUILT)
#: Shared by runs (same filesystem as the temporary homes, so uv links from it).
UV_CACHE = Path(tempfile.gettempdir()) / "supervisor-soak-uv-cache"

RSS_GROWTH_LIMIT_PCT = 10.0
OUTAGE_TASKS = 10
#: Seconds: a task slot must free up within this; a stalled worker ends the soak.
STALL_TIMEOUT_S = 120.0
#: Seconds for the outage tasks to start, and past the outage for their results.
START_TIMEOUT_S = 60.0
RECOVERY_TIMEOUT_S = 300.0
#: Seconds for a Celery result already due (its TI's final state has arrived).
RESULT_TIMEOUT_S = 60.0


@dataclass
class Sample:
    """The serve process and its runtimes after `done` tasks, with nothing in flight."""

    done: int
    at_s: float
    rss_mb: float
    fds: int
    #: Of `fds`, the pipes and sockets whose other end a runtime holds (4 per runtime), and the
    #: TCP connections (Redis, the API: pools that grow and shrink with load).
    runtime_fds: int
    tcp: int
    threads: int
    runtimes: int
    runtimes_rss_mb: float


@dataclass
class Soak:
    tasks: int
    finals: Counter[str] = field(default_factory=Counter)
    celery: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    #: Seconds from send to the final state at the stub, and from /run to it.
    latency_s: list[float] = field(default_factory=list)
    run_latency_s: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0


@dataclass
class OutageRun:
    index: int
    started: int
    finals: dict[str, int]
    celery: dict[str, int]
    lost: list[str]
    #: Seconds from the stub's return to the last Celery result.
    recovery_s: float


# -- setup -------------------------------------------------------------------------------------


def build_wheels(out: Path) -> list[Path]:
    """Wheels of the three versions; the third from a copy of the source with a bumped version,
    so bundles/example-etl keeps exactly the two versions the demo and tests expect."""
    uv = find_uv()
    wheels = [build_bundle(EXAMPLES / v, out, uv=uv) for v in SHIPPED]
    copy = out.parent / "example-etl-copy"
    shutil.copytree(EXAMPLES / "src", copy / "src")
    project = (EXAMPLES / SHIPPED[-1] / "pyproject.toml").read_text()
    (copy / BUILT).mkdir()
    bumped = project.replace(f'version = "{SHIPPED[-1]}"', f'version = "{BUILT}"', 1)
    assert bumped != project, "example-etl's pyproject.toml no longer has a version line"
    (copy / BUILT / "pyproject.toml").write_text(bumped)
    wheels.append(build_bundle(copy / BUILT, out, uv=uv))
    return wheels


class Serve(ServeProcess):
    """`supervisor serve` on the soak's queues, home and stub; no log server, no metrics."""

    def __init__(
        self, work: Path, home: Path, api: HttpFakeApi, queues: Sequence[str], concurrency: int,
        heartbeat_s: float,
    ) -> None:  # fmt: skip
        work.mkdir(parents=True, exist_ok=True)
        routes = {q: f"{NAME}=={v}" for q, v in zip(queues, VERSIONS, strict=True)}
        env = serve_env(
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=api.url,
            AIRFLOW__CELERY__WORKER_CONCURRENCY=str(concurrency),
            AIRFLOW__LOGGING__BASE_LOG_FOLDER=str(work / "task-logs"),
            SUPERVISOR_HOME=str(home),
            SUPERVISOR__QUEUES=",".join(queues),
            SUPERVISOR__QUEUE_TO_BUNDLE=json.dumps(routes),
            SUPERVISOR__SKIP_SERVE_LOGS="true",
            SUPERVISOR__HEARTBEAT_INTERVAL_S=str(heartbeat_s),
        )
        super().__init__(work, ["--hostname", f"soak-{work.name}.test"], env)
        self.ps = psutil.Process(self.process.pid)

    def sample(self, done: int, began: float) -> Sample:
        runtimes = self.ps.children(recursive=True)
        rss = 0
        for child in runtimes:
            with suppress(psutil.NoSuchProcess):
                rss += child.memory_info().rss
        fds = _fd_targets(self.ps.pid)
        return Sample(
            done=done,
            at_s=round(time.monotonic() - began, 1),
            rss_mb=self.ps.memory_info().rss / 2**20,
            fds=len(fds),
            runtime_fds=_held_for(fds, [c.pid for c in runtimes]),
            tcp=len(self.ps.net_connections(kind="tcp")),
            threads=self.ps.num_threads(),
            runtimes=len(runtimes),
            runtimes_rss_mb=rss / 2**20,
        )

    def close(self) -> int:
        """Warm shutdown; SIGKILL (this script's own child) if it does not end in time."""
        try:
            return self.stop()
        except Exception:
            self.process.kill()
            return self.process.wait()


def _fd_targets(pid: int) -> list[str]:
    """What each open fd of `pid` is: a path, "pipe:[inode]", "socket:[inode]", ..."""
    targets = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with suppress(OSError):  # closed since the listing
            targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return targets


def _held_for(fds: list[str], runtimes: list[int]) -> int:
    """How many of `fds` connect to a runtime: a pipe a runtime has the other end of (same
    inode), or a Unix socket whose peer (`ss -x`) a runtime holds. The number of warm runtimes
    varies, so a leak shows only in the fds that are not theirs."""
    theirs: set[str] = set()
    for pid in runtimes:
        with suppress(OSError):
            theirs.update(_fd_targets(pid))
    out = subprocess.run(["ss", "-xan"], capture_output=True, text=True, check=True).stdout
    peer = {}
    for line in out.splitlines()[1:]:
        fields = line.split()
        if len(fields) == 8:  # netid state recv-q send-q path inode peer-path peer-inode
            peer[f"socket:[{fields[5]}]"] = f"socket:[{fields[7]}]"
    return sum(1 for fd in fds if fd in theirs or peer.get(fd) in theirs)


@contextmanager
def serving(*args: Any, **kw: Any) -> Iterator[Serve]:
    serve = Serve(*args, **kw)
    try:
        serve.wait_ready()
        yield serve
    finally:
        code = serve.close()
        if code != 0:
            print(f"serve exited {code}; its log: {serve.log_path}", file=sys.stderr)


def celery_client() -> Celery:
    """Sends `execute_workload` as Airflow's scheduler does, and reads the results."""
    app = Celery("airflow-scheduler-stand-in", broker=BROKER, backend=BACKEND)
    app.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json")
    return app


def result_state(result: AsyncResult, timeout: float) -> str:
    """The Celery state once the worker has written it; TIMEOUT if it never did."""
    try:
        result.get(timeout=max(timeout, 0.1), propagate=False)
    except CeleryTimeout:
        return "TIMEOUT"
    return str(result.state)


# -- the soak ----------------------------------------------------------------------------------


def run_soak(
    serve: Serve, api: HttpFakeApi, app: Celery, queues: Sequence[str], *,
    tasks: int, window: int, sample_every: int,
) -> Soak:  # fmt: skip
    """Send `tasks` noops, at most `window` unfinished; sample after every `sample_every`."""
    stub = api.fake
    soak = Soak(tasks)
    sent_at: dict[str, float] = {}
    batch: list[tuple[str, AsyncResult]] = []
    base = len(stub.finals)
    began = time.monotonic()
    soak.samples.append(serve.sample(0, began))
    for i in range(tasks):
        room = stub.wait(lambda: len(sent_at) - (len(stub.finals) - base) < window, STALL_TIMEOUT_S)
        serve.alive()
        if not room:
            soak.failures.append(f"stalled: no final state for {STALL_TIMEOUT_S:g}s after {i}")
            break
        queue = queues[i % len(queues)]
        ti_id, workload = execute_task(queue, task_id="noop", run_id=f"soak-{i // sample_every}")
        sent_at[ti_id] = time.monotonic()
        batch.append((ti_id, app.send_task("execute_workload", args=[workload], queue=queue)))
        if (i + 1) % sample_every == 0 or i + 1 == tasks:
            _settle(stub, batch, soak)
            batch = []
            soak.samples.append(serve.sample(i + 1, began))
            _progress(soak.samples[-1], len(soak.failures))
    _settle(stub, batch, soak)
    soak.elapsed_s = time.monotonic() - began
    for ti_id, sent in sent_at.items():
        if ti_id in stub.final_at:
            soak.latency_s.append(stub.final_at[ti_id] - sent)
            soak.run_latency_s.append(stub.final_at[ti_id] - stub.run_at[ti_id])
    return soak


def _settle(stub: StubExecutionApi, batch: list[tuple[str, AsyncResult]], soak: Soak) -> None:
    """Wait for every TI of `batch` to have its final state and its Celery result; count them."""
    missing = stub.wait_finals([ti_id for ti_id, _ in batch], STALL_TIMEOUT_S)
    for ti_id, result in batch:
        state = stub.finals.get(ti_id, "none")
        celery = result_state(result, RESULT_TIMEOUT_S)
        soak.finals[state] += 1
        soak.celery[celery] += 1
        if ti_id in missing or state != "success" or celery != "SUCCESS":
            soak.failures.append(f"{ti_id}: final state {state}, Celery {celery}")


def _progress(sample: Sample, failures: int) -> None:
    print(
        f"  {sample.done:>6} tasks  {sample.at_s:>7.1f}s  serve {sample.rss_mb:6.1f} MB "
        f"{sample.fds} fds ({_own(sample)} own)  runtimes {sample.runtimes}  failures {failures}",
        file=sys.stderr,
        flush=True,
    )


# -- outages -----------------------------------------------------------------------------------


def run_outage(
    index: int, api: HttpFakeApi, app: Celery, queues: Sequence[str], *,
    outage_s: float, hold_s: float, mode: str = "down",
) -> OutageRun:  # fmt: skip
    """Ten tasks running, the API down (or answering 503) for `outage_s`, then up: did every
    final state arrive?"""
    stub = api.fake
    runs: list[tuple[str, AsyncResult]] = []
    for k in range(OUTAGE_TASKS):
        queue = queues[k % len(queues)]
        ti_id, workload = execute_task(
            queue, dag_id="bundle_drain", task_id="sleep_a_bit", run_id=f"outage-{index}"
        )
        stub.conf[ti_id] = {"seconds": hold_s}
        runs.append((ti_id, app.send_task("execute_workload", args=[workload], queue=queue)))
    ti_ids = [ti_id for ti_id, _ in runs]
    stub.wait(lambda: all(t in stub.run_at for t in ti_ids), START_TIMEOUT_S)
    with stub.lock:
        started = sum(t in stub.run_at for t in ti_ids)
    if mode == "503":
        api.unavailable()
    else:
        api.down()
    threading.Event().wait(outage_s)  # the outage itself, not a wait for something
    api.up()
    back = time.monotonic()
    celery = Counter(result_state(r, back + outage_s + RECOVERY_TIMEOUT_S - time.monotonic())
                     for _, r in runs)  # fmt: skip
    recovery_s = time.monotonic() - back
    with stub.lock:
        finals = Counter(stub.finals.get(t, "none") for t in ti_ids)
    lost = sorted(stub.missing_finals(ti_ids))
    return OutageRun(index, started, dict(finals), dict(celery), lost, round(recovery_s, 1))


# -- report ------------------------------------------------------------------------------------


def _pct(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def judge_soak(soak: Soak, concurrency: int) -> dict[str, Any]:
    """The criteria of the soak, each with its numbers and whether it holds."""
    after_warmup = soak.samples[1:]  # samples[0] is the idle serve before any task
    first, last = (after_warmup[0], after_warmup[-1]) if after_warmup else (None, None)
    growth = (last.rss_mb - first.rss_mb) / first.rss_mb * 100 if first and last else 0.0
    fd_growth = _own(last) - _own(first) if first and last else 0
    tcp_growth = last.tcp - first.tcp if first and last else 0
    low = min(after_warmup, key=lambda s: s.rss_mb) if after_warmup else None
    comparable = len(after_warmup) >= 2
    return {
        "failures": {"count": len(soak.failures), "ok": not soak.failures},
        "rss_growth_pct": {
            "value": round(growth, 2), "limit": RSS_GROWTH_LIMIT_PCT,
            "ok": not comparable or growth < RSS_GROWTH_LIMIT_PCT,
            "compared": [first.done, last.done] if first and last else [],
            # Not a criterion: a first sample inflated by warm-up can hide a slow leak.
            "from_lowest": round((last.rss_mb - low.rss_mb) / low.rss_mb * 100, 2) if low else 0.0,
        },
        # TCP: connection pools may open one more connection per slot under a peak.
        "fd_growth": {
            "value": fd_growth, "tcp": tcp_growth,
            "ok": not comparable or (fd_growth <= 0 and tcp_growth <= concurrency),
        },
    }  # fmt: skip


def _own(sample: Sample) -> int:
    return sample.fds - sample.runtime_fds - sample.tcp


def print_soak(soak: Soak, criteria: dict[str, Any], concurrency: int, window: int) -> None:
    print(
        f"\nsoak: {soak.tasks} noop tasks over {NAME} {', '.join(VERSIONS)}, "
        f"concurrency {concurrency}, window {window}"
    )
    print(
        f"{'tasks':>7} {'time s':>8} {'serve RSS MB':>13} {'fds':>5} {'tcp':>4} {'own fds':>8} "
        f"{'threads':>8} {'runtimes':>9} {'runtimes RSS MB':>16} {'tasks/s':>8}"
    )
    previous: Sample | None = None
    for s in soak.samples:
        rate = ""
        if previous is not None and s.at_s > previous.at_s:
            rate = f"{(s.done - previous.done) / (s.at_s - previous.at_s):.1f}"
        print(
            f"{s.done:>7} {s.at_s:>8.1f} {s.rss_mb:>13.1f} {s.fds:>5} {s.tcp:>4} {_own(s):>8} "
            f"{s.threads:>8} {s.runtimes:>9} {s.runtimes_rss_mb:>16.1f} {rate:>8}"
        )
        previous = s
    done = sum(soak.finals.values())
    print(f"final states at the stub: {dict(soak.finals)}; Celery results: {dict(soak.celery)}")
    for line in soak.failures[:10]:
        print(f"  failure: {line}")
    if soak.elapsed_s:
        print(f"throughput: {done / soak.elapsed_s:.1f} tasks/s ({done} in {soak.elapsed_s:.1f}s)")
    lat, run = soak.latency_s, soak.run_latency_s
    print(
        f"latency send->final state: p50 {_pct(lat, 50) * 1000:.0f} ms, p95 "
        f"{_pct(lat, 95) * 1000:.0f} ms; /run->final state: p50 {_pct(run, 50) * 1000:.0f} ms, "
        f"p95 {_pct(run, 95) * 1000:.0f} ms"
    )
    rss, fds = criteria["rss_growth_pct"], criteria["fd_growth"]
    print(
        f"criteria: failures {criteria['failures']['count']} "
        f"[{_ok(criteria['failures'])}]; serve RSS growth, tasks {rss['compared']}: "
        f"{rss['value']:+.1f}% (limit {RSS_GROWTH_LIMIT_PCT:g}%) [{_ok(rss)}], from the "
        f"lowest sample {rss['from_lowest']:+.1f}%; "
        f"fd growth: {fds['value']:+d} not runtimes' nor TCP, TCP {fds['tcp']:+d} [{_ok(fds)}]"
    )


def print_outages(
    runs: list[OutageRun], outage_s: float, hold_s: float, mode: str
) -> dict[str, Any]:
    outage = "down" if mode == "down" else "answering 503"
    print(
        f"\noutages: {len(runs)} runs, {OUTAGE_TASKS} tasks holding {hold_s:g}s each, "
        f"API {outage} {outage_s:g}s once all had started"
    )
    print(f"{'run':>4} {'started':>8} {'lost':>5} {'recovery s':>11}  final states / Celery")
    for r in runs:
        print(
            f"{r.index:>4} {r.started:>8} {len(r.lost):>5} {r.recovery_s:>11.1f}  "
            f"{dict(r.finals)} / {dict(r.celery)}"
        )
    lost = sum(len(r.lost) for r in runs)
    verdict = {"lost": lost, "runs_with_loss": sum(bool(r.lost) for r in runs), "ok": lost == 0}
    print(
        f"criteria: lost final states {lost} of {OUTAGE_TASKS * len(runs)} "
        f"in {verdict['runs_with_loss']} of {len(runs)} runs [{_ok(verdict)}]"
    )
    return verdict


def _ok(criterion: dict[str, Any]) -> str:
    return "PASS" if criterion["ok"] else "FAIL"


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=5000, help="noop tasks (0: outages only)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--window", type=int, help="unfinished tasks at most (2 x concurrency)")
    parser.add_argument("--sample-every", type=int, help="tasks between samples (1000, or N/5)")
    parser.add_argument("--heartbeat-s", type=float, default=5.0, help="heartbeat_interval_s")
    parser.add_argument("--outage-runs", type=int, default=0)
    parser.add_argument("--outage-s", type=float, default=60.0)
    parser.add_argument(
        "--outage-mode", choices=("down", "503"), default="down",
        help="down: nothing listens, connections dropped; 503: every request answered 503",
    )  # fmt: skip
    parser.add_argument("--hold-s", type=float, help="outage task length (min(5, S/2))")
    parser.add_argument("--json", type=Path, help="also write the verdict here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    args.window = args.window or 2 * args.concurrency
    args.sample_every = args.sample_every or min(1000, max(1, -(-args.tasks // 5)))
    args.hold_s = args.hold_s if args.hold_s is not None else max(0.5, min(5.0, args.outage_s / 2))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    print(f"work directory: {work}", file=sys.stderr)
    report: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    app = celery_client()
    try:
        home = work / "home"
        began = time.monotonic()
        store = BundleStore(home, cache_dir=UV_CACHE)
        for wheel in build_wheels(work / "wheels"):
            store.install(wheel)
        print(f"3 versions built and installed in {time.monotonic() - began:.1f}s", file=sys.stderr)
        tag = uuid.uuid4().hex[:8]
        queues = [f"soak-{tag}-v{v.split('.')[0]}" for v in VERSIONS]
        with HttpFakeApi(keep_seen=False) as api:
            ok = _phases(args, work, home, api, app, queues, report)
    finally:
        app.close()
        if args.keep:
            print(f"kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    report["ok"] = ok
    print(f"\nverdict: {'PASS' if ok else 'FAIL'}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0 if ok else 1


def _phases(
    args: argparse.Namespace, work: Path, home: Path, api: HttpFakeApi, app: Celery,
    queues: list[str], report: dict[str, Any],
) -> bool:  # fmt: skip
    ok = True
    if args.tasks:
        with serving(work / "soak", home, api, queues, args.concurrency, args.heartbeat_s) as serve:
            soak = run_soak(
                serve, api, app, queues,
                tasks=args.tasks, window=args.window, sample_every=args.sample_every,
            )  # fmt: skip
        criteria = judge_soak(soak, args.concurrency)
        print_soak(soak, criteria, args.concurrency, args.window)
        report["soak"] = {
            "tasks": soak.tasks, "finals": dict(soak.finals), "celery": dict(soak.celery),
            "failures": soak.failures[:100], "samples": [asdict(s) for s in soak.samples],
            "elapsed_s": soak.elapsed_s, "criteria": criteria,
            "missing_finals": soak.finals["none"],
        }  # fmt: skip
        ok = ok and all(c["ok"] for c in criteria.values())
    if args.outage_runs:
        runs: list[OutageRun] = []
        with serving(work / "outage", home, api, queues, OUTAGE_TASKS, args.heartbeat_s):
            for index in range(args.outage_runs):
                run = run_outage(
                    index, api, app, queues,
                    outage_s=args.outage_s, hold_s=args.hold_s, mode=args.outage_mode,
                )  # fmt: skip
                runs.append(run)
                print(f"  outage run {index}: lost {len(runs[-1].lost)}", file=sys.stderr)
        verdict = print_outages(runs, args.outage_s, args.hold_s, args.outage_mode)
        report["outages"] = {"runs": [asdict(r) for r in runs], "criteria": verdict}
        ok = ok and verdict["ok"]
    return ok


if __name__ == "__main__":
    sys.exit(main())
