"""The local control endpoint of `supervisor serve`, and what `supervisor status` reads from it.

`serve` listens on a Unix socket at `<home>/run/control.sock` (directory 0700, socket 0600: only
the supervisor's user can read it). A client connects and reads one JSON object, the status
snapshot, followed by EOF; it sends nothing. The snapshot is built for each connection:

    supervisor  pid, version, hostname, home, started_at, uptime_s, metrics_url
    queues, concurrency
    running     the TIs being handled now: ti_id, dag_id, task_id, run_id, try_number, map_index,
                bundle (null until resolved), runtime_pid (null until leased), age_s
    runtimes    live runtimes: bundle, pid, busy, tasks_run, idle_s, rss_bytes
    pool        warm_hits, cold_starts, start_failures, recycled, live
    installed   bundle, name, version, active

`RunningTasks` is the registry taskrun keeps of the TIs in flight. The socket is not a health
check of Airflow's view: a TI listed here is one this process is working on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import supervisor
from supervisor.background import serve_in_thread, stop_server, unix_socket_answers
from supervisor.config import CONTROL_SOCKET
from supervisor.errors import NotServing

if TYPE_CHECKING:
    from supervisor.config import Settings
    from supervisor.metrics import MetricsServer
    from supervisor.plugin.runtime import Runtime
    from supervisor.pool import RuntimePool
    from supervisor.store import BundleStore
    from supervisor.workload import TaskInstance

log = logging.getLogger(__name__)

#: Seconds `supervisor status` waits for the snapshot.
DEFAULT_TIMEOUT_S = 5.0
#: sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_SOCKET_PATH = 107


def socket_path(home: Path) -> Path:
    return home / CONTROL_SOCKET


@dataclass(frozen=True)
class RunningTask:
    """One TI in flight in this process."""

    ti_id: str
    dag_id: str
    task_id: str
    run_id: str
    try_number: int
    map_index: int
    #: time.monotonic() when the worker took it.
    started: float
    #: `name==version` once resolved.
    bundle: str | None = None
    runtime_pid: int | None = None

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "ti_id": self.ti_id,
            "dag_id": self.dag_id,
            "task_id": self.task_id,
            "run_id": self.run_id,
            "try_number": self.try_number,
            "map_index": self.map_index,
            "bundle": self.bundle,
            "runtime_pid": self.runtime_pid,
            "age_s": round(now - self.started, 3),
        }


class RunningTasks:
    """The TIs this process is handling; thread-safe, shared by every Celery thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tasks: dict[str, RunningTask] = {}

    @contextlib.contextmanager
    def track(self, ti: TaskInstance) -> Iterator[None]:
        """Listed from the start of the block to its end, however it ends."""
        key = str(ti.id)
        task = RunningTask(
            ti_id=key,
            dag_id=ti.dag_id,
            task_id=ti.task_id,
            run_id=ti.run_id,
            try_number=ti.try_number,
            map_index=ti.map_index,
            started=time.monotonic(),
        )
        with self._lock:
            self._tasks[key] = task
        try:
            yield
        finally:
            with self._lock:
                self._tasks.pop(key, None)

    def update(self, ti_id: object, *, bundle: str | None, runtime: Runtime | None) -> None:
        """Record the bundle version and runtime a tracked TI got (no-op when not tracked)."""
        pid = runtime.pid if runtime is not None else None
        with self._lock:
            task = self._tasks.get(str(ti_id))
            if task is not None:
                self._tasks[str(ti_id)] = replace(task, bundle=bundle, runtime_pid=pid)

    def bundle_of(self, ti_id: object) -> str | None:
        with self._lock:
            task = self._tasks.get(str(ti_id))
        return task.bundle if task is not None else None

    def snapshot(self) -> list[RunningTask]:
        """Oldest first."""
        with self._lock:
            return sorted(self._tasks.values(), key=lambda t: t.started)


@dataclass
class StatusSources:
    """What a status snapshot is read from; one per `serve`."""

    settings: Settings
    pool: RuntimePool
    store: BundleStore
    running: RunningTasks
    #: The metrics endpoint, or None when it is off.
    metrics: MetricsServer | None = None
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    started: float = field(default_factory=time.monotonic)


def build_status(src: StatusSources) -> dict[str, Any]:
    """The snapshot `supervisor status --json` prints (module docstring)."""
    now = time.monotonic()
    own = src.settings.supervisor
    stats = src.pool.stats()
    return {
        "supervisor": {
            "pid": os.getpid(),
            "version": supervisor.__version__,
            "hostname": own.hostname,
            "home": str(own.home),
            "started_at": src.started_at.isoformat(),
            "uptime_s": round(now - src.started, 3),
            "metrics_url": src.metrics.url if src.metrics else None,
        },
        "queues": list(own.queues),
        "concurrency": src.settings.celery.worker_concurrency,
        "running": [t.to_json(now) for t in src.running.snapshot()],
        "runtimes": [dataclasses.asdict(r) for r in src.pool.runtimes()],
        "pool": {
            "warm_hits": stats.warm_hits,
            "cold_starts": stats.cold_starts,
            "start_failures": stats.start_failures,
            "recycled": stats.recycled,
            "live": stats.live,
        },
        "installed": [
            {"bundle": b.label, "name": b.name, "version": b.version, "active": b.active}
            for b in src.store.list()
        ],
    }


# -- server ------------------------------------------------------------------------------------


class _Handler(socketserver.BaseRequestHandler):
    server: _UnixServer

    def handle(self) -> None:
        try:
            body = json.dumps(build_status(self.server.sources)).encode() + b"\n"
        except Exception:
            log.exception("control.snapshot_failed")
            body = json.dumps({"error": "snapshot failed; see the worker log"}).encode() + b"\n"
        with contextlib.suppress(OSError):  # the client went away
            self.request.sendall(body)


class _UnixServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, sources: StatusSources) -> None:
        self.sources = sources
        super().__init__(path, _Handler)


class ControlServer:
    """The control socket, served from a daemon thread; a context manager.

    Start refuses nothing: when another live supervisor already answers on this home's socket,
    or the path is too long for a Unix socket, it logs a warning and serves without one (tasks
    matter more than `status`). A stale socket from a killed supervisor is replaced.
    """

    def __init__(self, sources: StatusSources) -> None:
        self.sources = sources
        self.path = socket_path(sources.settings.supervisor.home)
        self._server: _UnixServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> ControlServer:
        if len(os.fsencode(self.path)) > MAX_SOCKET_PATH:
            return self._disabled(f"path longer than {MAX_SOCKET_PATH} bytes; shorten home")
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if unix_socket_answers(self.path, timeout_s=1.0):
            return self._disabled("another supervisor serves this home; status shows that one")
        self.path.unlink(missing_ok=True)
        self._server = _UnixServer(str(self.path), self.sources)
        os.chmod(self.path, 0o600)
        self._thread = serve_in_thread(self._server, "control-socket")
        log.debug("control.listening", extra={"path": str(self.path)})
        return self

    def _disabled(self, reason: str) -> ControlServer:
        log.warning("control.disabled", extra={"path": str(self.path), "reason": reason})
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        stop_server(self._server, self._thread)
        self.path.unlink(missing_ok=True)
        self._server = self._thread = None

    def __enter__(self) -> ControlServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# -- client ------------------------------------------------------------------------------------


def fetch_status(home: Path, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    """The snapshot of the supervisor serving `home`.

    Raises:
        NotServing: nothing answers on `<home>/run/control.sock`, or the answer is not a
            snapshot; the message says what to do.
    """
    path = socket_path(home)
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise NotServing(
            f"the control socket path {str(path)!r} is longer than {MAX_SOCKET_PATH} bytes, so "
            "no supervisor can serve it; use a shorter supervisor.home",
            home=str(home),
        )
    try:
        raw = _read_all(path, timeout_s)
    except (FileNotFoundError, NotADirectoryError, ConnectionRefusedError) as exc:
        raise NotServing(
            f"no supervisor serving in {home}: start one with `supervisor serve`", home=str(home)
        ) from exc
    except OSError as exc:
        raise NotServing(
            f"the supervisor serving in {home} did not answer on {path} ({exc}); "
            "check that it is running and retry",
            home=str(home),
        ) from exc
    try:
        status = json.loads(raw)
    except ValueError:
        status = None
    if not isinstance(status, dict) or "supervisor" not in status:
        raise NotServing(
            f"{path} answered something that is not a status snapshot; see the worker log of "
            "the supervisor serving there",
            home=str(home),
        )
    return status


def format_status(status: dict[str, Any]) -> str:
    """The snapshot as a few readable lines, for `supervisor status` without --json."""
    own = status["supervisor"]
    lines = [
        f"supervisor {own['version']}  pid {own['pid']}  up {_duration(own['uptime_s'])}  "
        f"host {own['hostname']}",
        f"home:    {own['home']}",
        f"queues:  {', '.join(status['queues'])}  (concurrency {status['concurrency']})",
        f"metrics: {own['metrics_url'] or 'off (supervisor.metrics_port = 0)'}",
        f"running: {len(status['running'])}",
    ]
    for t in status["running"]:
        where = f"{t['bundle'] or 'bundle not resolved yet'}"
        pid = f"  runtime pid {t['runtime_pid']}" if t["runtime_pid"] else ""
        lines.append(
            f"  {t['dag_id']}.{t['task_id']}  run {t['run_id']}  try {t['try_number']}  "
            f"{where}{pid}  for {_duration(t['age_s'])}  ti {t['ti_id']}"
        )
    pool = status["pool"]
    lines.append(
        f"runtimes: {len(status['runtimes'])}  (warm hits {pool['warm_hits']}, cold starts "
        f"{pool['cold_starts']}, start failures {pool['start_failures']})"
    )
    for r in status["runtimes"]:
        state = "busy" if r["busy"] else f"idle {_duration(r['idle_s'])}"
        lines.append(
            f"  {r['bundle']}  pid {r['pid']}  {state}  {r['tasks_run']} tasks  "
            f"rss {r['rss_bytes'] / 2**20:.1f} MiB"
        )
    lines.append(f"installed: {len(status['installed'])}  (* active)")
    lines += [f"  {'*' if b['active'] else ' '} {b['bundle']}" for b in status["installed"]]
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _read_all(path: Path, timeout_s: float) -> bytes:
    chunks = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        sock.connect(str(path))
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)
