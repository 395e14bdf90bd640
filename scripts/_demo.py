"""The demo behind `scripts/demo` (which installs the project first and then runs this).

    _demo.py up      bundles, Airflow stack, `supervisor serve`, trigger the example DAGs, table
    _demo.py stop    stop what `up` started: `supervisor serve`; the stack if the demo started it

Standard library only, so `stop` works without the project's venv. State lives in <repo>/.demo/:

    home/             SUPERVISOR_HOME: installed bundle versions (a venv each)
    wheels/           the built example-etl wheels
    supervisor.toml   queues and routing of `supervisor serve`
    serve.log         its output; serve.pid: "<pid> <start time> <stack and install it serves>"
    stack.owned       present when the demo started the Airflow stack: the knobs it used and the
                      stack's pid files then (a stack restarted by someone else is no longer ours)

The stack is scripts/airflow_stack.sh and honours its knobs (AF_PORT, AF_REDIS_PORT, AIRFLOW_HOME,
AF_VENV, AF_WORKER, ...): a stack that was already running and not started by the demo is used as
it is and never stopped by `stop`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / ".demo"
HOME = DEMO / "home"
WHEELS = DEMO / "wheels"
CONFIG = DEMO / "supervisor.toml"
SERVE_LOG = DEMO / "serve.log"
SERVE_PID = DEMO / "serve.pid"
STACK_OWNED = DEMO / "stack.owned"
STACK = REPO / "scripts" / "airflow_stack.sh"
SUPERVISOR = REPO / ".venv" / "bin" / "supervisor"

BUNDLE = "example-etl"
VERSIONS = ("1.0.0", "2.0.0")
QUEUES = ("bundles", "etl-v1", "etl-v2")
SERVE_CONFIG = """\
# Written by scripts/demo. Routing for the DAGs in bundles/dags/ (DESIGN.md §4.4):
[supervisor]
queues = ["bundles", "etl-v1", "etl-v2"]
heartbeat_interval_s = 2
# Prometheus metrics: curl http://127.0.0.1:{metrics_port}/metrics
metrics_port = {metrics_port}
metrics_host = "127.0.0.1"

# A task on queue etl-v1 runs in example-etl 1.0.0, on etl-v2 in 2.0.0 (bundle_pinned_v1/v2).
[supervisor.queue_to_bundle]
"etl-v1" = "example-etl==1.0.0"
"etl-v2" = "example-etl==2.0.0"

# Airflow's DAG bundle "dags-folder" (bundles/dags) is served by our bundle example-etl; with no
# version pinned, its active version runs (`supervisor bundle activate`).
[supervisor.bundle_name_map]
"dags-folder" = "example-etl"

[celery]
worker_concurrency = 4
"""
#: Where the demo's `supervisor serve` exposes Prometheus metrics (DEMO_METRICS_PORT moves it).
METRICS_PORT = int(os.environ.get("DEMO_METRICS_PORT", "9108"))
#: Knobs of scripts/airflow_env.sh that select a stack; recorded so `stop` downs the same one.
STACK_KNOBS = (
    "AF_PORT",
    "AF_REDIS_PORT",
    "AF_BROKER",
    "AIRFLOW_HOME",
    "AF_VENV",
    "AF_BROKER_URL",
    "AF_RESULT_BACKEND",
    "AF_DAGS_FOLDER",
    "AF_PYTHON",
)
STACK_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer", "celery-worker")

#: The DAGs the demo triggers; the mixed ones need Airflow's own worker for their Python tasks.
#: Every task of these succeeds; `scripts/demo --all-states` adds bundle_states, whose tasks end
#: in every state on purpose (one fails, one is skipped, so its run fails).
BUNDLE_DAGS = ("example_etl", "bundle_pinned_v1", "bundle_pinned_v2")
MIXED_DAGS = (
    "bundle_xcom_types",
    *(("bundle_states",) if os.environ.get("DEMO_ALL_STATES") else ()),
)
#: (dag, task) -> (expected final state, note). A task not listed is expected to succeed.
EXPECTED: dict[tuple[str, str], tuple[str, str]] = {
    ("bundle_states", "flaky"): ("success", "failed try 1 on purpose, retried"),
    ("bundle_states", "fail_hard"): ("failed", "FailTask: failed, no retry"),
    ("bundle_states", "skip_me"): ("skipped", "SkipTask"),
    ("bundle_states", "downstream_of_skip"): ("skipped", "skipped by Airflow, never ran"),
    ("bundle_states", "reschedule_once"): ("success", "rescheduled once, like a sensor"),
    ("bundle_states", "defer_once"): ("success", "deferred to the triggerer, resumed"),
}
EXPECTED_RUN_STATE = {"bundle_states": "failed"}  # fail_hard fails its run, on purpose
RUN_TIMEOUT_S = float(os.environ.get("DEMO_RUN_TIMEOUT", "240"))
SERVE_READY_TIMEOUT_S = 90
SERVE_STOP_TIMEOUT_S = 60
BUNDLE_LINE = "Running in bundle "
#: TI states in which a task ran and stopped (downstream_of_skip is skipped with try 0).
FINISHED = frozenset({"success", "failed", "skipped", "up_for_retry", "upstream_failed"})

#: How to run the demo beside another stack (the ports are examples).
ISOLATED = (
    "give the demo a stack of its own, e.g. AF_PORT=8091 AF_REDIS_PORT=6391 "
    "AIRFLOW_HOME=$PWD/.demo/airflow-home scripts/demo (any free ports)"
)
#: scripts/demo passes its start time, so the elapsed times go on from its own.
T0 = float(os.environ.get("DEMO_STARTED") or time.time())


class DemoError(Exception):
    """Ends the demo with its message as the one line that explains it."""


def say(message: str) -> None:
    print(f"demo [{time.time() - T0:5.1f}s] {message}", flush=True)


# ----------------------------------------------------------------------------------- processes


def run_step(
    argv: list[str],
    *,
    what: str,
    log: Path,
    env: dict[str, str] | None = None,
    echo: bool = False,
    tick_s: float = 15.0,
) -> str:
    """Run a command with its output in `log`; echo its lines (indented) when `echo`; print a
    "still ..." line when it was silent for `tick_s`. Returns the output; DemoError on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    last_output = [started]
    lines: list[str] = []
    with log.open("a") as sink:
        sink.write(f"\n===== {datetime.now(UTC):%FT%TZ} {shlex.join(argv)}\n")
        sink.flush()
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
        )
        done = threading.Event()

        def ticker() -> None:
            while not done.wait(1.0):
                if time.monotonic() - last_output[0] >= tick_s:
                    say(f"  ... still {what} ({time.monotonic() - started:.0f}s)")
                    last_output[0] = time.monotonic()

        thread = threading.Thread(target=ticker, daemon=True)
        thread.start()
        assert proc.stdout is not None
        for line in proc.stdout:
            sink.write(line)
            lines.append(line)
            if echo:
                print(f"    {line.rstrip()}", flush=True)
                last_output[0] = time.monotonic()
        code = proc.wait()
        done.set()
        thread.join()
    output = "".join(lines)
    if code != 0:
        last = [ln.strip() for ln in output.splitlines() if ln.strip()]
        detail = (last[-1] if last else f"exit {code}").removeprefix("airflow_stack FAILED: ")
        raise DemoError(f"{what} failed: {detail} (log: {rel(log)})")
    return output


def start_time(pid: int) -> str | None:
    """The kernel's start time of a process (so a recycled pid is never taken for ours)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def our_serve_pid() -> int | None:
    """The pid of the `supervisor serve` the demo started, if that very process still runs."""
    try:
        pid_text, started, *_ = SERVE_PID.read_text().split()
    except (OSError, ValueError):
        return None
    pid = int(pid_text)
    return pid if start_time(pid) == started else None


def processes() -> dict[int, tuple[int, list[str], dict[str, str]]]:
    """pid -> (parent pid, argv, environment) of every process we may read."""
    table = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        words = [a.decode(errors="replace") for a in argv if a]
        env = dict(e.decode(errors="replace").partition("=")[::2] for e in environ if b"=" in e)
        table[int(proc.name)] = (ppid, words, env)
    return table


def descendants(root: int, table: dict[int, tuple[int, list[str], dict[str, str]]]) -> set[int]:
    """Every process below `root` (runtimes run in their own sessions, so not in its group)."""
    found: set[int] = set()
    for pid in table:
        parent = table[pid][0]
        while parent > 1:
            if parent == root:
                found.add(pid)
                break
            parent = table.get(parent, (0,))[0]
    return found


def alive(pids: set[int]) -> set[int]:
    left = set()
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        except PermissionError:
            pass
        left.add(pid)
    return left


def is_serve(argv: list[str]) -> bool:
    """`supervisor ... serve ...` or `python -m supervisor ... serve ...`."""
    if "serve" not in argv:
        return False
    return any(w == "supervisor" or w.endswith("/supervisor") for w in argv[: argv.index("serve")])


def serve_settings(pid: int, argv: list[str], env: dict[str, str]) -> tuple[str, set[str]]:
    """(broker URL, queues) of another `supervisor serve`, as far as its flags, environment and
    TOML file tell (supervisor/config.py: flags > environment > file > defaults)."""
    flags = {}
    for i, word in enumerate(argv):
        for flag in ("--queues", "--config"):
            if word == flag and i + 1 < len(argv):
                flags[flag] = argv[i + 1]
            elif word.startswith(flag + "="):
                flags[flag] = word.split("=", 1)[1]
    file: dict[str, Any] = {}
    config = flags.get("--config") or env.get("SUPERVISOR_CONFIG")
    if config:
        with contextlib.suppress(OSError, ValueError):
            path = Path(os.readlink(f"/proc/{pid}/cwd")) / config
            file = tomllib.loads(path.read_text())
    broker = env.get("AIRFLOW__CELERY__BROKER_URL") or file.get("celery", {}).get(
        "broker_url", "redis://127.0.0.1:6379/0"
    )
    queues: Any = (
        flags.get("--queues")
        or env.get("SUPERVISOR__QUEUES")
        or file.get("supervisor", {}).get("queues")
        or ["bundles"]
    )
    if isinstance(queues, str):
        queues = json.loads(queues) if queues.startswith("[") else queues.split(",")
    return broker, {q.strip() for q in queues}


def other_serves(broker_url: str, ours: int | None) -> list[str]:
    """`supervisor serve` processes, not ours, that consume one of our queues from `broker_url`:
    "<pid> (queues ...)" each."""
    table = processes()
    mine = {os.getpid()} | ({ours} | descendants(ours, table) if ours else set())
    found = []
    for pid, (ppid, argv, env) in sorted(table.items()):
        if pid in mine or not is_serve(argv) or (ppid in table and is_serve(table[ppid][1])):
            continue
        broker, queues = serve_settings(pid, argv, env)
        shared = queues & set(QUEUES)
        if broker.rstrip("/") == broker_url.rstrip("/") and shared:
            found.append(f"{pid} (queues {','.join(sorted(shared))})")
    return found


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# ----------------------------------------------------------------------------------- the stack


def stack(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(STACK), *args], capture_output=True, text=True, check=False, env=env, cwd=REPO
    )


def stack_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The stack's environment (`airflow_stack.sh env`: export/unset lines) applied to ours."""
    result = stack("env", env=env)
    if result.returncode != 0:
        raise DemoError(f"scripts/airflow_stack.sh env failed: {result.stderr.strip()}")
    merged = dict(os.environ if env is None else env)
    for line in result.stdout.splitlines():
        words = shlex.split(line)
        if words[:1] == ["export"]:
            name, _, value = words[1].partition("=")
            merged[name] = value
        elif words[:1] == ["unset"]:
            for name in words[1:]:
                merged.pop(name, None)
    return merged


def running_components(status_output: str) -> list[str]:
    return [
        line.split()[0]
        for line in status_output.splitlines()
        if len(line.split()) > 1 and line.split()[1] == "running"
    ]


def stack_pids(knobs: dict[str, str]) -> dict[str, str]:
    """Component -> its pid file ("<pid> <start time>") in the stack's run directory."""
    run = Path(knobs["AIRFLOW_HOME"]) / "run"
    pids = {}
    for name in ("redis", *STACK_COMPONENTS):
        with contextlib.suppress(OSError):
            pids[name] = (run / f"{name}.pid").read_text().strip()
    return pids


def owned_stack() -> tuple[dict[str, str], bool] | None:
    """The knobs of the stack the demo started, and whether it is still the one it started: no
    component has been restarted by someone else since (a pid file with another pid)."""
    try:
        owned = json.loads(STACK_OWNED.read_text())
    except (OSError, ValueError):
        return None
    knobs, recorded = owned.get("knobs", owned), owned.get("pids", {})
    now = stack_pids(knobs)
    return knobs, all(now[name] == pid for name, pid in recorded.items() if name in now)


def record_owned(knobs: dict[str, str]) -> None:
    STACK_OWNED.write_text(json.dumps({"knobs": knobs, "pids": stack_pids(knobs)}, indent=1))


def ensure_stack(env: dict[str, str]) -> tuple[dict[str, str], bool]:
    """Bring the stack up (or re-use it); returns its environment and whether Airflow's own worker
    runs (needed by the DAGs with Python tasks)."""
    knobs = {k: v for k, v in stack_env().items() if k in STACK_KNOBS}
    owned = owned_stack()
    ours = owned is not None and owned == (knobs, True)
    if owned is not None and owned[0] != knobs and owned[1]:
        earlier = running_components(stack("status", env={**os.environ, **owned[0]}).stdout)
        if earlier:
            raise DemoError(
                f"the demo's earlier Airflow stack ({owned[0]['AIRFLOW_HOME']}, port "
                f"{owned[0]['AF_PORT']}) is still running; stop it first: scripts/demo --stop"
            )
    if owned is not None and not ours:
        STACK_OWNED.unlink()  # stopped, or restarted by someone else: no longer the demo's
    status = stack("status")
    running = running_components(status.stdout)
    if status.returncode == 0 and not ours:
        say(
            f"Airflow stack already running at http://127.0.0.1:{knobs['AF_PORT']} (not started by "
            "the demo): using it as it is; `scripts/demo --stop` will leave it running"
        )
        return stack_env(), "celery-worker" in running
    if running and not ours:
        raise DemoError(
            "an Airflow stack not started by the demo is partly running in "
            f"{knobs['AIRFLOW_HOME']} ({', '.join(running)}); see `scripts/airflow_stack.sh "
            f"status`, or {ISOLATED}"
        )
    worker = env.get("AF_WORKER", "1") == "1"
    if running:
        say(f"the Airflow stack the demo started is running ({', '.join(running)}); checking it")
    else:
        broker = (
            f"Redis :{knobs['AF_REDIS_PORT']}"
            if knobs.get("AF_BROKER", "redis") == "redis"
            else "embedded broker " + knobs["AF_BROKER_URL"].replace(str(REPO) + "/", "")
        )
        say(
            f"starting Airflow 3.3.2 (CeleryExecutor, SQLite, {broker}, "
            f"{'with' if worker else 'without'} Airflow's own worker) with "
            "scripts/airflow_stack.sh up; the first time, it installs Airflow (~220 MB) first"
        )
    # Written before `up` too: a half-started stack is still the demo's to stop.
    record_owned(knobs)
    run_step(
        ["bash", str(STACK), "up"],
        what="starting the Airflow stack",
        log=DEMO / "stack-up.log",
        env={**env, "AF_WORKER": "1" if worker else "0"},
        echo=True,
        tick_s=20,
    )
    record_owned(knobs)
    running = running_components(stack("status").stdout)
    return stack_env(), "celery-worker" in running


# ----------------------------------------------------------------------------------- bundles


def ensure_bundles(env: dict[str, str]) -> None:
    listing = run_step(
        [str(SUPERVISOR), "--home", str(HOME), "bundle", "list", "--json"],
        what="listing installed bundles",
        log=DEMO / "bundles.log",
        env=env,
    )
    installed = {(b["name"], b["version"]): b for b in json.loads(listing)}
    for version in VERSIONS:
        have = installed.get((BUNDLE, version))
        if have is not None:
            say(f"bundle {BUNDLE}=={version} already installed (sha256 {have['sha256'][:12]})")
            continue
        wheel = WHEELS / f"{BUNDLE.replace('-', '_')}-{version}-py3-none-any.whl"
        if not wheel.exists():
            built = run_step(
                [
                    str(SUPERVISOR),
                    "bundle",
                    "build",
                    str(REPO / "bundles" / BUNDLE / version),
                    "--out",
                    str(WHEELS),
                ],
                what=f"building {BUNDLE} {version}",
                log=DEMO / "bundles.log",
                env=env,
            )
            wheel = Path(built.strip().splitlines()[-1])
            say(f"built {rel(wheel)}")
        out = run_step(
            [str(SUPERVISOR), "--home", str(HOME), "bundle", "install", str(wheel)],
            what=f"installing {BUNDLE} {version} into its own venv",
            log=DEMO / "bundles.log",
            env=env,
        )
        say(out.strip().splitlines()[-1].split(": sha256")[0] + f" (venv under {rel(HOME)})")


# ----------------------------------------------------------------------------------- serve


def ensure_serve(env: dict[str, str]) -> int:
    broker = env["AIRFLOW__CELERY__BROKER_URL"]
    pid = our_serve_pid()
    others = other_serves(broker, pid)
    if others:
        raise DemoError(
            f"another `supervisor serve` (pid {', '.join(others)}, not started by the demo) "
            f"consumes the broker {broker}, so it could take the demo's tasks; stop it, or "
            + ISOLATED
        )
    # A re-installed project (scripts/demo rewrote this stamp) gets a fresh serve.
    project = (DEMO / "project.installed").read_text().strip()
    record = {"broker": broker, "api": env["AF_API_URL"], "project": project}
    if pid is not None:
        recorded = json.loads(SERVE_PID.read_text().split(maxsplit=2)[2])
        if recorded == record:
            say(f"supervisor serve already running (pid {pid}, log {rel(SERVE_LOG)})")
            return pid
        say(f"supervisor serve (pid {pid}) was started for another stack or install: restarting it")
        stop_serve()
    CONFIG.write_text(SERVE_CONFIG.format(metrics_port=METRICS_PORT))
    SERVE_LOG.touch()
    offset = SERVE_LOG.stat().st_size
    argv = [str(SUPERVISOR), "--config", str(CONFIG), "--log-level", "info", "serve"]
    with SERVE_LOG.open("a") as log:
        log.write(f"\n===== {datetime.now(UTC):%FT%TZ} {shlex.join(argv)}\n")
        log.flush()
        offset = log.tell()
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**env, "SUPERVISOR_HOME": str(HOME)},
            cwd=REPO,
            start_new_session=True,
        )
    SERVE_PID.write_text(f"{proc.pid} {start_time(proc.pid)} {json.dumps(record)}\n")
    say(
        f"started supervisor serve (pid {proc.pid}, queues {','.join(QUEUES)}, "
        f"log {rel(SERVE_LOG)})"
    )
    deadline = time.monotonic() + SERVE_READY_TIMEOUT_S
    while True:
        with SERVE_LOG.open("rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
        if " ready." in text:
            break
        if proc.poll() is not None:
            last = [ln for ln in text.splitlines() if ln.strip()][-1:] or ["(no output)"]
            raise DemoError(
                f"supervisor serve exited {proc.returncode}: {last[0].strip()} "
                f"(log: {rel(SERVE_LOG)})"
            )
        if time.monotonic() > deadline:
            raise DemoError(
                f"supervisor serve not ready after {SERVE_READY_TIMEOUT_S}s (log: {rel(SERVE_LOG)})"
            )
        time.sleep(0.2)
    say("supervisor serve ready: consuming Celery queues " + ", ".join(QUEUES))
    return proc.pid


def stop_serve() -> None:
    pid = our_serve_pid()
    if pid is None:
        SERVE_PID.unlink(missing_ok=True)
        say("supervisor serve: not running")
        return
    started = time.monotonic()
    # Found before the TERM: once serve exits, a runtime still ending is re-parented to init.
    family = {pid} | descendants(pid, processes())
    os.kill(pid, signal.SIGTERM)  # warm shutdown: no new tasks, running ones finish
    while alive(family) and time.monotonic() - started < SERVE_STOP_TIMEOUT_S:
        time.sleep(0.1)
    if left := alive(family):
        say(f"supervisor serve (pid {pid}) still running after {SERVE_STOP_TIMEOUT_S}s: KILL")
        for each in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(each, signal.SIGKILL)
        while alive(family):
            time.sleep(0.1)
    SERVE_PID.unlink(missing_ok=True)
    say(
        f"stopped supervisor serve (pid {pid}) and its {len(family) - 1} runtime process(es) "
        f"in {time.monotonic() - started:.1f}s"
    )


# ----------------------------------------------------------------------------------- REST


class Api:
    """The few /api/v2 calls the demo needs (the local stack needs no token)."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")

    def call(
        self, method: str, path: str, body: Any = None, *, ok: tuple[int, ...] = (), **params: Any
    ) -> Any:
        url = f"{self.base}/api/v2{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            url,
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            if exc.code in ok:
                return exc.code
            detail = exc.read().decode(errors="replace")[:300]
            raise DemoError(f"{method} {path} -> {exc.code}: {detail}") from None
        except urllib.error.URLError as exc:
            raise DemoError(f"{method} {url}: {exc.reason}") from None
        return json.loads(raw) if raw else None

    def upsert(self, collection: str, key: str, body: dict[str, Any]) -> None:
        if self.call("POST", f"/{collection}", body, ok=(409,)) == 409:
            self.call("PATCH", f"/{collection}/{key}", body)

    def path(self, dag: str, run: str, *rest: str) -> str:
        parts = [dag, "dagRuns", run, *rest]
        return "/dags/" + "/".join(urllib.parse.quote(p, safe="") for p in parts)


def trigger_all(api: Api, dags: list[str]) -> dict[str, str]:
    api.upsert(
        "variables",
        "example_var",
        {"key": "example_var", "value": "set by scripts/demo through the REST API"},
    )
    api.upsert(
        "connections",
        "example_conn",
        {
            "connection_id": "example_conn",
            "conn_type": "postgres",
            "host": "db.example.test",
            "login": "etl",
            "password": "demo-secret",
            "port": 5432,
        },
    )
    say("set variable example_var and connection example_conn through the REST API")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    runs = {}
    for dag in dags:
        if api.call("GET", f"/dags/{dag}", ok=(404,)) == 404:
            raise DemoError(f"DAG {dag} is not in this Airflow (is its DAGs folder bundles/dags?)")
        api.call("PATCH", f"/dags/{dag}", {"is_paused": False})
        run_id = f"demo__{stamp}_{secrets.token_hex(2)}"
        api.call(
            "POST", f"/dags/{dag}/dagRuns", {"dag_run_id": run_id, "logical_date": None, "conf": {}}
        )
        runs[dag] = run_id
    say(f"triggered {len(runs)} DAG runs: {', '.join(runs)}")
    return runs


def wait_all(api: Api, runs: dict[str, str]) -> dict[str, str]:
    states: dict[str, str] = {}
    deadline = time.monotonic() + RUN_TIMEOUT_S
    next_note = time.monotonic() + 10
    while len(states) < len(runs):
        for dag, run_id in runs.items():
            if dag in states:
                continue
            state = api.call("GET", api.path(dag, run_id))["state"]
            if state in ("success", "failed"):
                states[dag] = state
                say(f"  run of {dag} finished: {state}")
        if len(states) == len(runs):
            break
        now = time.monotonic()
        if now > deadline:
            pending = [d for d in runs if d not in states]
            for dag in pending:
                states[dag] = "timed out"
            say(f"  gave up waiting after {RUN_TIMEOUT_S:.0f}s for: {', '.join(pending)}")
            break
        if now >= next_note:
            left = [d for d in runs if d not in states]
            say(f"  waiting for {len(left)} run(s): {', '.join(left)}")
            next_note = now + 10
        time.sleep(1)
    return states


def ran_in(api: Api, dag: str, run_id: str, ti: dict[str, Any]) -> tuple[str, str]:
    """(bundle version, attrs version) of a bundle task, as the task itself reported them: the
    dep_version XCom, or else the supervisor's line in the task log."""
    task = ti["task_id"]
    if task == "dep_version" and ti["state"] == "success":
        entry = api.call(
            "GET",
            api.path(dag, run_id, "taskInstances", task, "xcomEntries", "return_value"),
            ok=(404,),
            deserialize="true",
        )
        if isinstance(entry, dict) and isinstance(entry.get("value"), dict):
            value = entry["value"]
            return f"{BUNDLE}=={value.get('bundle_version', '?')}", str(value.get("attrs", "?"))
    log = api.call(
        "GET",
        api.path(dag, run_id, "taskInstances", task, "logs", str(ti["try_number"])),
        ok=(404,),
        full_content="true",
    )
    lines = log.get("content", []) if isinstance(log, dict) else []
    for line in lines:
        event = str(line.get("event") if isinstance(line, dict) else line)
        if BUNDLE_LINE in event:
            return event.split(BUNDLE_LINE, 1)[1].split(maxsplit=1)[0], "-"
    return "? (no bundle line in its log)", "-"


def report(api: Api, runs: dict[str, str], run_states: dict[str, str]) -> bool:
    rows = []
    ok = True
    for dag, run_id in runs.items():
        want_run = EXPECTED_RUN_STATE.get(dag, "success")
        if run_states[dag] != want_run:
            ok = False
        tis = api.call("GET", api.path(dag, run_id, "taskInstances"), limit=1000)["task_instances"]
        for ti in sorted(tis, key=lambda t: (t["start_date"] or "~", t["task_id"])):
            task, state = ti["task_id"], ti["state"] or "none"
            want, note = EXPECTED.get((dag, task), ("success", ""))
            if not ti["try_number"]:
                version, attrs = "(did not run)", "-"
            elif state not in FINISHED:
                version, attrs = "(not finished)", "-"
            elif ti["queue"] in QUEUES:
                version, attrs = ran_in(api, dag, run_id, ti)
            else:
                version, attrs = f"(Airflow worker, queue {ti['queue']})", "-"
            check = "ok" if state == want else f"UNEXPECTED, want {want}"
            ok = ok and state == want
            rows.append(
                (
                    dag,
                    task,
                    state,
                    str(ti["try_number"]),
                    version,
                    attrs,
                    check + (f": {note}" if note else ""),
                )
            )
    header = ("DAG", "TASK", "STATE", "TRY", "RAN IN BUNDLE", "ATTRS", "CHECK")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print()
    for row in [header, *rows]:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print()
    pairs = sorted({(r[4], r[5]) for r in rows if r[5] != "-"})
    if pairs:
        print(
            "  Side by side in one `supervisor serve`: "
            + ", ".join(f"{version} with attrs {attrs}" for version, attrs in pairs)
        )
    print("  RAN IN BUNDLE: the version the task reported (dep_version's XCom) or the supervisor's")
    print(f"  '{BUNDLE_LINE}...' line in its log. ATTRS: what dep_version imported in that venv.")
    print()
    print_metrics()
    print(f"  What the worker is doing: SUPERVISOR_HOME={rel(HOME)} .venv/bin/supervisor status")
    print(f"  Runs in the Airflow UI ({api.base}); click a task, then Logs:")
    for dag, run_id in runs.items():
        want_run = EXPECTED_RUN_STATE.get(dag, "success")
        mark = "" if run_states[dag] == want_run else f"   UNEXPECTED, want {want_run}"
        url = f"{api.base}/dags/{dag}/runs/{urllib.parse.quote(run_id, safe='')}"
        print(f"    {run_states[dag]:<9} {url}{mark}")
    print()
    return ok


def print_metrics() -> None:
    """The task counters from the worker's /metrics, as Prometheus would scrape them."""
    url = f"http://127.0.0.1:{METRICS_PORT}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            text = reply.read().decode()
    except OSError as exc:
        print(f"  (metrics not reachable at {url}: {exc})")
        return
    print(f"  Metrics ({url}):")
    for line in text.splitlines():
        if line.startswith(("supervisor_tasks_total{", "supervisor_runtime_starts_total{")):
            print(f"    {line}")


# ----------------------------------------------------------------------------------- commands


def cmd_up() -> int:
    DEMO.mkdir(exist_ok=True)
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    ensure_bundles(env)
    stack_environment, worker = ensure_stack(env)
    ensure_serve(stack_environment)
    api = Api(stack_environment["AF_API_URL"])
    dags = list(BUNDLE_DAGS)
    if worker:
        dags += MIXED_DAGS
    else:
        say(
            f"Airflow's own Celery worker is not running: skipping {', '.join(MIXED_DAGS)} "
            "(they mix Python and bundle tasks)"
        )
    runs = trigger_all(api, dags)
    run_states = wait_all(api, runs)
    ok = report(api, runs, run_states)
    took = time.time() - T0
    if ok:
        say(
            f"done in {took:.0f}s: every task ended as expected. Everything keeps running; "
            "stop it with: scripts/demo --stop"
        )
        return 0
    print(
        f"demo FAILED after {took:.0f}s: some task or run did not end as expected (CHECK above; "
        f"serve log {rel(SERVE_LOG)}); what the demo started keeps running: scripts/demo --stop",
        file=sys.stderr,
    )
    return 1


def cmd_stop() -> int:
    stop_serve()
    owned = owned_stack()
    if owned is None:
        say("Airflow stack: not started by the demo, left alone")
    elif not owned[1]:
        say(
            f"Airflow stack in {owned[0]['AIRFLOW_HOME']}: restarted by someone else since the "
            "demo started it, left alone"
        )
        STACK_OWNED.unlink()
    else:
        knobs = owned[0]
        say(f"stopping the Airflow stack the demo started ({knobs['AIRFLOW_HOME']})")
        env = {**os.environ, **knobs}
        run_step(
            ["bash", str(STACK), "down"],
            what="stopping the Airflow stack",
            log=DEMO / "stack-down.log",
            env=env,
            echo=True,
        )
        left = running_components(stack("status", env=env).stdout)
        if left:
            raise DemoError(f"still running after down: {', '.join(left)}")
        STACK_OWNED.unlink()
    say("stopped: nothing the demo started is running")
    return 0


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else ""
    try:
        if command == "up":
            return cmd_up()
        if command == "stop":
            return cmd_stop()
    except DemoError as exc:
        started = command == "up" and (our_serve_pid() is not None or STACK_OWNED.exists())
        hint = "; what the demo started keeps running: scripts/demo --stop" if started else ""
        print(f"demo FAILED: {exc}{hint}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print(
            "\ndemo interrupted; what it started keeps running: scripts/demo --stop",
            file=sys.stderr,
        )
        return 130
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
