"""Benchmark of `supervisor serve` against Airflow's own Celery worker; prints, asserts nothing.

    .venv/bin/python scripts/bench_serve.py [--runs 20] [--warmup 3] [--fanouts 3] [--concurrency 2]

Everything runs side by side in one run, on the local stack (scripts/airflow_stack.sh), with the
Redis result backend and the same Celery concurrency on both sides:

- queued->success p50/p95 (TI fields queued_when and end_date, read through the REST API) of a
  no-op, N sequential runs each way after a warm-up, interleaved run by run so both sides see the
  same background load: bundle `noop` through `supervisor serve` (queue "bench") and a plain
  `@task` through `airflow celery worker` (queue "bench_python");
- makespan (first queued_when -> last end_date) of 20 parallel no-ops, each way;
- the Execution API floor: a minimal client in this process pops the `bench_floor` message from
  Redis and does only `PATCH /run`, `PATCH /state` and the Celery result write, each timed;
- idle and peak RSS and PSS of each worker's process tree (the supervisor and its bundle
  runtimes; Airflow's celery main process, pool processes and task children): right after start,
  right after the warm-up (a burst left a runtime per slot), during the fanouts, and idle again
  at the end once our pool stopped the burst's spare runtimes (`runtime_spare_idle_timeout_s`).

The stack is started if it is not up (and then stopped at the end); otherwise it is shared and left
alone. The benchmark starts its own `supervisor serve` (example-etl built and installed into a
temporary home) and its own `airflow celery worker` on a queue nobody else uses, so the stack's
shared worker (queue "default") and other users of the stack do not take each other's slots, and
stops exactly those two processes. DAGs: bundles/dags/bench_*.py.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from supervisor.api.client import ExecutionApiClient  # noqa: E402
from supervisor.workload import parse_workload  # noqa: E402
from tests.e2e.airflow import AirflowClient  # noqa: E402
from tests.e2e.broker import decode_envelope  # noqa: E402
from tests.polling import wait_until  # noqa: E402

STACK_SCRIPT = REPO / "scripts" / "airflow_stack.sh"
SUPERVISOR = REPO / ".venv" / "bin" / "supervisor"
BUNDLE_SOURCE = REPO / "bundles" / "example-etl" / "2.0.0"

#: Queues of bundles/dags/bench_*.py; only this benchmark consumes them.
BUNDLE_QUEUE = "bench"
PYTHON_QUEUE = "bench_python"
FLOOR_QUEUE = "bench_floor"
#: (single-task DAG, 20-wide DAG) per side.
BUNDLE_DAGS = ("bench_bundle_single", "bench_bundle_fanout")
PYTHON_DAGS = ("bench_python_single", "bench_python_fanout")
FLOOR_DAG = "bench_floor"

#: Seconds: a DAG run must finish within this; a worker must be ready within this.
RUN_TIMEOUT_S = 120.0
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
#: Seconds between REST polls for a run's state (the api-server that answers also serves the
#: Execution API we measure: do not poll much faster).
POLL_S = 0.1
#: Seconds between memory samples while a fanout runs (PSS reads smaps_rollup of each process).
SAMPLE_S = 0.05
#: The supervisor's worker log: taskrun's last line per TI, and Celery's.
FINISHED_LINE = re.compile(
    r"ti\.finished .*run_id=(?P<run_id>\S+) .*celery_id=(?P<celery_id>\S+) "
    r".*duration_s=(?P<duration_s>[\d.]+)"
)
PHASE_FIELD = re.compile(r" (\w+)_ms=([\d.]+)")
SUCCEEDED_LINE = re.compile(
    r"execute_workload\[(?P<celery_id>[^\]]+)\] succeeded in (?P<seconds>[\d.e-]+)s"
)
#: Targets of issue 3.
TARGET_LATENCY_RATIO = 0.5
TARGET_FLOOR_MARGIN_S = 0.030
TARGET_IDLE_RSS_RATIO = 1 / 3
#: runtime_spare_idle_timeout_s (30 s by default) plus the reaper's interval and some slack.
SPARES_STOP_WITHIN_S = 60.0


class BenchError(Exception):
    """The benchmark could not run; the message says what failed and where to look."""


# -- numbers -------------------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile, linear between closest ranks (p50 of an even count is the mean)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = q / 100 * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _ts(text: str | None) -> datetime:
    if not text:
        raise BenchError("a finished task instance has no queued_when/start_date/end_date")
    return datetime.fromisoformat(text)


@dataclass(frozen=True)
class TiTimes:
    """The three timestamps Airflow keeps for a TI: queued by the scheduler, started (stamped by
    the worker just before `/run`) and ended (stamped by the worker just before `/state`)."""

    queued: datetime
    start: datetime
    end: datetime
    run_id: str

    @classmethod
    def of(cls, ti: dict[str, Any]) -> TiTimes:
        return cls(
            _ts(ti["queued_when"]), _ts(ti["start_date"]), _ts(ti["end_date"]), ti["dag_run_id"]
        )

    @property
    def queued_to_success_s(self) -> float:
        return (self.end - self.queued).total_seconds()

    @property
    def queued_to_start_s(self) -> float:
        return (self.start - self.queued).total_seconds()

    @property
    def start_to_end_s(self) -> float:
        return (self.end - self.start).total_seconds()


def makespan_s(tis: Sequence[TiTimes]) -> float:
    return (max(t.end for t in tis) - min(t.queued for t in tis)).total_seconds()


@dataclass(frozen=True)
class Memory:
    """Sum over a process tree, in bytes."""

    rss: int
    pss: int
    processes: int
    #: RSS of each process, the root first (idle samples only).
    parts: tuple[int, ...] = ()

    def most(self, other: Memory) -> Memory:
        """Each field's maximum (so RSS and PSS may come from different samples)."""
        return Memory(
            max(self.rss, other.rss), max(self.pss, other.pss),
            max(self.processes, other.processes),
        )  # fmt: skip


NO_MEMORY = Memory(0, 0, 0)


@dataclass
class SideResult:
    """Everything measured for one way of running the no-op."""

    name: str
    sequential: list[TiTimes] = field(default_factory=list)
    fanouts: list[list[TiTimes]] = field(default_factory=list)
    #: Right after start, before any task; after the warm-up (pool processes or runtimes warm).
    idle_cold: Memory = NO_MEMORY
    idle: Memory = NO_MEMORY
    #: Idle again after the fanouts, once the pool stopped its spares (ours: one runtime left).
    idle_settled: Memory = NO_MEMORY
    peak: Memory = NO_MEMORY


@dataclass(frozen=True)
class FloorCall:
    """Seconds of each call the minimal client makes for one TI."""

    run_s: float
    state_s: float
    result_s: float

    @property
    def total_s(self) -> float:
        return self.run_s + self.state_s + self.result_s


# -- processes -----------------------------------------------------------------------------------


def tree_of(pid: int) -> list[psutil.Process]:
    """The process and every descendant (by parent pid: Airflow's task children leave the
    process group with setpgid, but they stay children of their pool process)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_memory(pid: int) -> Memory:
    """RSS and PSS summed over the tree; processes that exit while being read are skipped."""
    parts, pss = [], 0
    for proc in tree_of(pid):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            info = proc.memory_full_info()
            parts.append(info.rss)
            pss += info.pss
    return Memory(sum(parts), pss, len(parts), tuple(parts))


def idle_memory(pid: int, *, samples: int = 5, interval_s: float = 0.2) -> Memory:
    """The median of a few samples of an idle tree."""
    taken = []
    for _ in range(samples):
        taken.append(tree_memory(pid))
        time.sleep(interval_s)
    middle = sorted(taken, key=lambda m: m.rss)[len(taken) // 2]
    return Memory(
        middle.rss,
        int(statistics.median(m.pss for m in taken)),
        middle.processes,
        middle.parts,
    )


@contextlib.contextmanager
def peak_memory(pid: int, into: SideResult) -> Iterator[None]:
    """Sample the tree every SAMPLE_S while the block runs; keep the largest RSS and PSS in
    `into.peak`."""
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(SAMPLE_S):
            into.peak = into.peak.most(tree_memory(pid))

    thread = threading.Thread(target=sample, name="memory-sampler", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class Worker:
    """A worker process this benchmark started: its own session, a log file, a ready line."""

    def __init__(
        self, name: str, argv: list[str], *, env: dict[str, str], log_path: Path, ready: str
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.ready = ready
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return "(no log)"

    def start(self) -> None:
        """Start it and wait for its ready line; BenchError if it exits or is late."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=REPO,
                start_new_session=True,
            )
        try:
            wait_until(self._is_ready, timeout=READY_TIMEOUT_S, interval=0.2, what=self.name)
        except TimeoutError:
            raise BenchError(
                f"{self.name} not ready within {READY_TIMEOUT_S:g}s (no {self.ready!r} in "
                f"{self.log_path}):\n{self.log_tail()}"
            ) from None

    def _is_ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise BenchError(
                f"{self.name} exited with {self.process.returncode} during start; "
                f"log {self.log_path}:\n{self.log_tail()}"
            )
        return self.ready in self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Warm shutdown (one SIGTERM); SIGKILL to the tree found before it if it hangs."""
        if self.process is None or self.process.poll() is not None:
            return
        tree = tree_of(self.pid)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            print(f"  {self.name} still running {STOP_TIMEOUT_S:g}s after SIGTERM: SIGKILL")
            for proc in tree:
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.kill()
            self.process.wait()
        # Children that outlive their parent (a runtime, a task process) were started by ours, so
        # they are ours to end (psutil refuses to signal a pid that was reused since).
        _gone, alive = psutil.wait_procs(tree[1:], timeout=STOP_TIMEOUT_S / 3)
        for proc in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()


# -- the stack -----------------------------------------------------------------------------------


def stack_script(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["bash", str(STACK_SCRIPT), *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if k != "AF_WORKER"},
    )
    if check and result.returncode != 0:
        raise BenchError(
            f"scripts/airflow_stack.sh {' '.join(args)} failed (exit {result.returncode}):\n"
            f"{result.stdout}{result.stderr}"
        )
    return result


@dataclass(frozen=True)
class StackEnv:
    """What `eval "$(airflow_stack.sh env)"` does: `export NAME=<quoted value>` and `unset NAME`
    lines (it unsets PYTHONDONTWRITEBYTECODE, so the bytecode cache is used and filled)."""

    exports: dict[str, str]
    unset: frozenset[str]

    def __getitem__(self, name: str) -> str:
        return self.exports[name]

    def for_process(self, **extra: str) -> dict[str, str]:
        """Our environment with the stack's applied, plus `extra`."""
        merged = {**os.environ, **self.exports, **extra}
        return {k: v for k, v in merged.items() if k not in self.unset}


def stack_env() -> StackEnv:
    exports, unset = {}, set()
    for line in stack_script("env").stdout.splitlines():
        words = shlex.split(line)
        if words[:1] == ["export"]:
            name, _, value = words[1].partition("=")
            exports[name] = value
        elif words[:1] == ["unset"]:
            unset.update(words[1:])
    return StackEnv(exports, frozenset(unset))


@contextlib.contextmanager
def airflow_stack() -> Iterator[bool]:
    """Yield whether this run started the stack; stop it at the end only in that case.

    A stack that is partly up (something already running, something dead) is completed with `up`
    but never stopped: `down` would also stop what someone else started.
    """
    status = stack_script("status", check=False)
    if status.returncode == 0:
        yield False
        return
    anything_running = " running " in status.stdout
    print("stack not up: scripts/airflow_stack.sh up (takes ~15-60 s)")
    started = not anything_running
    try:
        stack_script("up")
        yield started
    finally:
        if started:
            print("stopping the stack this run started")
            stack_script("down", check=False)
        elif anything_running:
            print("stack was partly up before: left running")


# -- the two workers -------------------------------------------------------------------------------


def install_bundle(home: Path, workdir: Path) -> None:
    """Build example-etl (the version with the bench DAG ids) and install it into `home`."""
    wheels = workdir / "wheels"
    _supervisor_cli("bundle", "build", str(BUNDLE_SOURCE), "--out", str(wheels))
    _supervisor_cli("--home", str(home), "bundle", "install", *map(str, wheels.glob("*.whl")))


def compile_bytecode(env: StackEnv, home: Path) -> None:
    """Fill the stack's bytecode cache for our venv and the bundle's, as installs would have it.

    The stack sets PYTHONPYCACHEPREFIX, and with it Python reads bytecode only from that cache,
    never from a venv's __pycache__ (where the bundle install put it). Without this step, a first
    run's supervisor and every runtime of a fresh bundle venv import from source: slower to start
    and 5-15 MB more RSS per process than an installed worker has. Cheap when already done.
    """
    ours = [REPO / "supervisor", REPO / "bundle_runtime", Path(sysconfig.get_paths()["purelib"])]
    targets = [(Path(sys.executable), ours)]
    for python in home.glob("bundles/*/*/venv/bin/python"):
        targets.append((python, [python.parents[1] / "lib"]))
    for python, dirs in targets:
        # Exit status 1 only means some file did not compile (templates, other Python versions).
        subprocess.run(
            [str(python), "-m", "compileall", "-q", "-j", "0", *map(str, dirs)],
            capture_output=True, check=False, env=env.for_process(), cwd=REPO,
        )  # fmt: skip


def _supervisor_cli(*args: str) -> None:
    argv = [str(SUPERVISOR), *args]
    result = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=REPO)
    if result.returncode != 0:
        raise BenchError(f"{shlex.join(argv)} failed:\n{result.stdout}{result.stderr}")


def supervisor_worker(env: StackEnv, home: Path, workdir: Path, concurrency: int) -> Worker:
    return Worker(
        "supervisor serve",
        [str(SUPERVISOR), "serve", "--queues", BUNDLE_QUEUE, "--concurrency", str(concurrency)],
        env=env.for_process(SUPERVISOR_HOME=str(home)),
        log_path=workdir / "supervisor-serve.log",
        ready=" ready.",
    )


def airflow_worker(env: StackEnv, workdir: Path, concurrency: int) -> Worker:
    """`airflow celery worker` as the stack starts it, on the benchmark's own queue."""
    nodename = f"bench-python@{socket.gethostname()}"
    argv = [
        "bash", str(STACK_SCRIPT), "airflow",  # execs the venv's airflow with the stack's env
        "celery", "worker", "--skip-serve-logs", "--queues", PYTHON_QUEUE,
        "--concurrency", str(concurrency), "--celery-hostname", nodename,
        "--pid", str(workdir / "airflow-worker.pid"),
    ]  # fmt: skip
    return Worker(
        "airflow celery worker",
        argv,
        env=env.for_process(),
        log_path=workdir / "airflow-worker.log",
        ready=f"{nodename} ready.",
    )


# -- the floor client ----------------------------------------------------------------------------


class FloorClient:
    """What every worker must do for a TI and nothing else: `/run`, `/state`, result write.

    It takes the `bench_floor` message straight off the Redis list (no Celery consumer, so no ack
    and no unacked entry), uses the supervisor's own Execution API client (same HTTP stack and
    token swap), and writes the SUCCESS result as Celery's Redis backend does (SETEX + PUBLISH in
    one round trip).
    """

    def __init__(self, env: StackEnv) -> None:
        self.broker = redis.Redis.from_url(env["AF_BROKER_URL"])
        self.results = redis.Redis.from_url(env["AF_RESULT_BACKEND"])
        self.api = ExecutionApiClient(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
        self.hostname = socket.gethostname()

    def close(self) -> None:
        self.api.close()
        self.broker.close()
        self.results.close()

    def serve_one(self, timeout_s: float) -> FloorCall:
        popped = self.broker.brpop([FLOOR_QUEUE], timeout=int(timeout_s))
        if popped is None:
            raise BenchError(f"no message on queue {FLOOR_QUEUE!r} within {timeout_s:g}s")
        celery_id, workload_dict = decode_envelope(popped[1])
        workload = parse_workload(json.dumps(workload_dict))
        task_api = self.api.for_task(workload.ti.id, workload.token)
        began = time.perf_counter()
        task_api.run(
            hostname=self.hostname,
            unixname=getpass.getuser(),
            pid=os.getpid(),
            start_date=datetime.now(UTC),
        )
        ran = time.perf_counter()
        task_api.finish_success(end_date=datetime.now(UTC))
        stated = time.perf_counter()
        self._write_result(celery_id)
        return FloorCall(ran - began, stated - ran, time.perf_counter() - stated)

    def _write_result(self, celery_id: str) -> None:
        key = f"celery-task-meta-{celery_id}"
        value = json.dumps({
            "status": "SUCCESS", "result": None, "traceback": None, "children": [],
            "date_done": datetime.now(UTC).isoformat(), "task_id": celery_id,
        })  # fmt: skip
        self.results.pipeline().setex(key, 86400, value).publish(key, value).execute()


# -- DAG runs ------------------------------------------------------------------------------------


def run_dag(
    api: AirflowClient, dag_id: str, *, while_queued: Callable[[], Any] | None = None
) -> list[TiTimes]:
    """Trigger `dag_id`, wait for the run to succeed, return its TIs' times.

    `while_queued` runs right after the trigger (the floor client serves the TI there).
    """
    run_id = api.trigger(dag_id, run_id=f"bench__{dag_id}__{time.time_ns()}")
    if while_queued is not None:
        while_queued()
    try:
        run = api.wait_for_run(dag_id, run_id, timeout=RUN_TIMEOUT_S, interval=POLL_S)
    except TimeoutError as exc:
        raise BenchError(str(exc)) from None
    if run["state"] != "success":
        raise BenchError(f"{dag_id} run ended {run['state']}: {api.describe_run(dag_id, run_id)}")
    return [TiTimes.of(ti) for ti in api.task_instances(dag_id, run_id)]


def prepare_dags(api: AirflowClient) -> None:
    """Wait until the bench DAGs are parsed (a fresh checkout: up to REFRESH_INTERVAL) and unpause
    them."""
    for dag_id in (*BUNDLE_DAGS, *PYTHON_DAGS, FLOOR_DAG):
        try:
            wait_until(lambda d=dag_id: api.get_dag(d), timeout=60, what=f"DAG {dag_id} parsed")
        except TimeoutError as exc:
            hint = "see bundles/dags/bench_*.py and the dag-processor log"
            raise BenchError(f"{exc}: {hint}") from None
        api.unpause(dag_id)


# -- phases --------------------------------------------------------------------------------------


@dataclass
class Bench:
    """The running pieces and the results, for the phases below."""

    api: AirflowClient
    serve: Worker
    airflow: Worker
    floor: FloorClient
    ours: SideResult
    theirs: SideResult
    floor_calls: list[FloorCall] = field(default_factory=list)
    floor_tis: list[TiTimes] = field(default_factory=list)
    #: 1-minute load average when the measurements started and ended (the machine is shared).
    load: list[float] = field(default_factory=list)

    def sides(self) -> list[tuple[SideResult, Worker, tuple[str, str]]]:
        return [(self.ours, self.serve, BUNDLE_DAGS), (self.theirs, self.airflow, PYTHON_DAGS)]

    def floor_run(self) -> tuple[FloorCall, list[TiTimes]]:
        calls: list[FloorCall] = []
        tis = run_dag(
            self.api, FLOOR_DAG, while_queued=lambda: calls.append(self.floor.serve_one(60))
        )
        return calls[0], tis

    def warm_up(self, runs: int) -> None:
        """Cold pool processes and runtimes, both slots each way, the floor's HTTP connection."""
        for _ in range(runs):
            for _side, _worker, (single, _fanout) in self.sides():
                run_dag(self.api, single)
            self.floor_run()
        for _side, _worker, (_single, fanout) in self.sides():
            run_dag(self.api, fanout)

    def measure_idle(self, *, cold: bool) -> None:
        time.sleep(2)  # let the last task's process exit and the pools settle
        for side, worker, _dags in self.sides():
            if cold:
                side.idle_cold = idle_memory(worker.pid)
            else:
                side.idle = idle_memory(worker.pid)

    def measure_settled(self) -> None:
        """Idle memory once our pool stopped the fanouts' spare runtimes (one warm runtime stays,
        `runtime_spare_idle_timeout_s` after the last task); Airflow's pool keeps its processes."""
        deadline = time.monotonic() + SPARES_STOP_WITHIN_S
        while len(tree_of(self.serve.pid)) > 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        for side, worker, _dags in self.sides():
            side.idle_settled = idle_memory(worker.pid)

    def sequential(self, runs: int) -> None:
        """One run per side and one floor run per round, never two at once."""
        for index in range(runs):
            for side, _worker, (single, _fanout) in self.sides():
                side.sequential.extend(run_dag(self.api, single))
            call, tis = self.floor_run()
            self.floor_calls.append(call)
            self.floor_tis.extend(tis)
            print(f"  sequential round {index + 1}/{runs} done", end="\r", flush=True)
        print()

    def fanouts(self, repetitions: int) -> None:
        for index in range(repetitions):
            for side, worker, (_single, fanout) in self.sides():
                with peak_memory(worker.pid, side):
                    side.fanouts.append(run_dag(self.api, fanout))
            print(f"  fanout {index + 1}/{repetitions} done", end="\r", flush=True)
        print()


# -- report --------------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return f"{value * 1000:7.1f} ms"


def _mb(value: int) -> str:
    return f"{value / 2**20:7.0f} MB"


def print_report(bench: Bench, args: argparse.Namespace) -> None:
    print(
        f"\n== supervisor serve vs airflow celery worker: concurrency {args.concurrency} each, "
        f"Redis result backend; {os.cpu_count()} CPUs shared with the whole stack, load average "
        f"{' -> '.join(f'{x:.1f}' for x in bench.load)} (start -> end)"
    )
    print_latency(bench, args.runs)
    print_fanout(bench)
    print_memory(bench)
    print_floor(bench.floor_calls)
    print_targets(bench)


def print_latency(bench: Bench, runs: int) -> None:
    print(f"\nsequential no-op, {runs} runs each (interleaved), from the TI fields:")
    columns = (bench.ours.sequential, bench.theirs.sequential, bench.floor_tis)
    print(f"{'':32} {'supervisor':>10} {'airflow':>10} {'floor':>10}")
    for what, values in (
        ("queued->success p50", lambda t: pct([x.queued_to_success_s for x in t], 50)),
        ("queued->success p95", lambda t: pct([x.queued_to_success_s for x in t], 95)),
        ("queued->success min", lambda t: min(x.queued_to_success_s for x in t)),
        ("queued->start p50 (pickup)", lambda t: pct([x.queued_to_start_s for x in t], 50)),
        ("start->end p50 (/run + task)", lambda t: pct([x.start_to_end_s for x in t], 50)),
    ):
        print(f"{what:32} " + " ".join(f"{_ms(values(c)):>10}" for c in columns))
    print_phases(bench)


def supervisor_phases(log_text: str, run_ids: set[str]) -> dict[str, list[float]]:
    """Milliseconds per phase of `ti.finished` (supervisor/taskrun.py) for these runs, plus
    `celery`: Celery's own time around taskrun ("succeeded in" minus duration_s)."""
    phases: dict[str, list[float]] = {}
    taskrun_s: dict[str, float] = {}
    for line in log_text.splitlines():
        finished = FINISHED_LINE.search(line)
        if finished and finished["run_id"] in run_ids:
            taskrun_s[finished["celery_id"]] = float(finished["duration_s"])
            for name, ms in PHASE_FIELD.findall(line):
                phases.setdefault(name, []).append(float(ms))
        succeeded = SUCCEEDED_LINE.search(line)
        if succeeded and succeeded["celery_id"] in taskrun_s:
            celery_s = float(succeeded["seconds"]) - taskrun_s[succeeded["celery_id"]]
            phases.setdefault("celery", []).append(celery_s * 1000)
    return phases


def print_phases(bench: Bench) -> None:
    run_ids = {t.run_id for t in bench.ours.sequential}
    phases = supervisor_phases(bench.serve.log_path.read_text(errors="replace"), run_ids)
    if not phases:
        print("  (no ti.finished phase timings in the supervisor log)")
        return
    shown = ", ".join(f"{name} {pct(ms, 50):.1f}" for name, ms in phases.items())
    print(f"  supervisor phases, p50 ms (ti.finished): {shown}")


def print_fanout(bench: Bench) -> None:
    print("\n20 parallel no-ops (one DAG run), first queued -> last success:")
    for side in (bench.ours, bench.theirs):
        spans = [makespan_s(f) for f in side.fanouts]
        per_task = [t.queued_to_success_s for f in side.fanouts for t in f]
        print(
            f"  {side.name:11} makespan median {statistics.median(spans):6.2f} s "
            f"(each {', '.join(f'{s:.2f}' for s in spans)}); "
            f"per-task queued->success p50 {pct(per_task, 50):.2f} s"
        )


def print_memory(bench: Bench) -> None:
    print("\nmemory of each worker's process tree:")
    sides = (bench.ours, bench.theirs)
    rows = [
        ("idle RSS after start", [_mb(s.idle_cold.rss) for s in sides]),
        ("idle RSS warm (after warm-up)", [_mb(s.idle.rss) for s in sides]),
        ("idle PSS warm", [_mb(s.idle.pss) for s in sides]),
        ("peak RSS (fanouts)", [_mb(s.peak.rss) for s in sides]),
        ("peak PSS (fanouts)", [_mb(s.peak.pss) for s in sides]),
        ("processes idle warm / peak", [f"{s.idle.processes} / {s.peak.processes}" for s in sides]),
        ("idle RSS settled (spares stopped)", [_mb(s.idle_settled.rss) for s in sides]),
        ("idle PSS settled", [_mb(s.idle_settled.pss) for s in sides]),
        ("processes idle settled", [str(s.idle_settled.processes) for s in sides]),
    ]
    print(f"{'':32} {'supervisor':>10} {'airflow':>10}")
    for what, (mine, theirs) in rows:
        print(f"{what:32} {mine:>10} {theirs:>10}")
    for side in sides:
        parts = " + ".join(f"{rss / 2**20:.0f}" for rss in side.idle.parts)
        print(f"  {side.name} idle warm, RSS per process (root first): {parts} MB")


def print_floor(calls: list[FloorCall]) -> None:
    print(
        f"\nAPI floor per TI (minimal client, p50 of {len(calls)}): "
        f"/run {_ms(pct([c.run_s for c in calls], 50)).strip()} + "
        f"/state {_ms(pct([c.state_s for c in calls], 50)).strip()} + "
        f"result write {_ms(pct([c.result_s for c in calls], 50)).strip()} = "
        f"{_ms(pct([c.total_s for c in calls], 50)).strip()}"
    )


def print_targets(bench: Bench) -> None:
    ours = pct([t.queued_to_success_s for t in bench.ours.sequential], 50)
    theirs = pct([t.queued_to_success_s for t in bench.theirs.sequential], 50)
    floor_q2s = pct([t.queued_to_success_s for t in bench.floor_tis], 50)
    floor_api = pct([c.total_s for c in bench.floor_calls], 50)
    checks = [
        (
            "queued->success p50 <= 1/2 of airflow's",
            ours, theirs * TARGET_LATENCY_RATIO,
        ),
        (
            "queued->success p50 <= floor client's + 30 ms",
            ours, floor_q2s + TARGET_FLOOR_MARGIN_S,
        ),
        (
            "queued->success p50 <= API calls alone + 30 ms",
            ours, floor_api + TARGET_FLOOR_MARGIN_S,
        ),
        (
            "idle RSS warm <= 1/3 of airflow's",
            bench.ours.idle.rss / 2**20, bench.theirs.idle.rss / 2**20 * TARGET_IDLE_RSS_RATIO,
        ),
        (
            "idle RSS settled <= 1/3 of airflow's",
            bench.ours.idle_settled.rss / 2**20,
            bench.theirs.idle_settled.rss / 2**20 * TARGET_IDLE_RSS_RATIO,
        ),
    ]  # fmt: skip
    print("targets:")
    for what, value, limit in checks:
        verdict = "ok" if value <= limit else "MISSED"
        print(f"  {what:48} {value:9.3f} <= {limit:9.3f}  {verdict}")


# -- main ----------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="sequential runs each way")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured single runs each way")
    parser.add_argument("--fanouts", type=int, default=3, help="20-wide runs each way")
    parser.add_argument("--concurrency", type=int, default=2, help="slots of both workers")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if min(args.runs, args.fanouts, args.concurrency) < 1 or args.warmup < 0:
        parser.error("--runs, --fanouts and --concurrency must be >= 1, --warmup >= 0")
    return args


def run(args: argparse.Namespace, workdir: Path) -> None:
    with contextlib.ExitStack() as stack:
        started_stack = stack.enter_context(airflow_stack())
        env = stack_env()
        who = "started by this run" if started_stack else "shared"
        print(f"stack: {env['AF_API_URL']} ({who})")
        api = stack.enter_context(AirflowClient(env["AF_API_URL"]))
        prepare_dags(api)
        with redis.Redis.from_url(env["AF_BROKER_URL"]) as broker:
            broker.delete(BUNDLE_QUEUE, PYTHON_QUEUE, FLOOR_QUEUE)  # left by a killed run
        home = workdir / "home"
        install_bundle(home, workdir)
        compile_bytecode(env, home)
        print(f"installed example-etl into {home}; starting both workers")
        serve = supervisor_worker(env, home, workdir, args.concurrency)
        airflow = airflow_worker(env, workdir, args.concurrency)
        for worker in (serve, airflow):
            stack.callback(worker.stop)
            worker.start()
        floor = FloorClient(env)
        stack.callback(floor.close)
        bench = Bench(api, serve, airflow, floor, SideResult("supervisor"), SideResult("airflow"))
        try:
            print(f"warm-up: {args.warmup} single runs and one fanout each way")
            bench.load.append(os.getloadavg()[0])
            bench.measure_idle(cold=True)
            bench.warm_up(args.warmup)
            bench.measure_idle(cold=False)
            print(f"sequential: {args.runs} rounds (supervisor, airflow, floor)")
            bench.sequential(args.runs)
            print(f"fanout: {args.fanouts} x 20 parallel no-ops each way")
            bench.fanouts(args.fanouts)
            bench.load.append(os.getloadavg()[0])
            print(f"idle: waiting up to {SPARES_STOP_WITHIN_S:.0f} s for the pool's spares to stop")
            bench.measure_settled()
        except BaseException:
            for worker in (serve, airflow):
                print(f"--- {worker.name}, end of {worker.log_path}:\n{worker.log_tail()}")
            raise
    print_report(bench, args)


def main() -> int:
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    try:
        run(args, workdir)
    except BenchError as exc:
        print(f"bench_serve FAILED: {exc}", file=sys.stderr)
        print(f"(temporary files kept in {workdir})", file=sys.stderr)
        return 1
    if args.keep:
        print(f"temporary files: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
