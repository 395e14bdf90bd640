"""`start_runtime` and `Runtime`: one started runtime process, ready to run tasks one at a time.

Start, in named phases: launch (launch.py) -> handshake (handshake.py) -> connect and wait for
health (client.py). Any failure kills and reaps the process and raises a RuntimeStartError that
names the bundle. The pool (supervisor/pool.py) decides when a Runtime is reused or stopped.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from pathlib import Path
from types import TracebackType

from bundle_runtime import protocol
from supervisor.errors import RuntimeLost, RuntimeProtocolError, RuntimeStartError
from supervisor.plugin.client import RuntimeClient
from supervisor.plugin.handshake import StdoutReader, read_handshake
from supervisor.plugin.launch import RuntimeSpec, launch
from supervisor.plugin.messages import Host, Outcome, RuntimeDescription, TaskStart
from supervisor.plugin.process import RuntimeProcess, describe_exit
from supervisor.plugin.stderr import StderrPump

logger = logging.getLogger(__name__)

#: Default wait between Shutdown and SIGTERM, and between SIGTERM and SIGKILL.
DEFAULT_GRACE_S = 2.0
#: How long a broken Execute stream waits for the process exit status (to name the signal).
_EXIT_STATUS_WAIT_S = 2.0
#: How long to wait for the stdout/stderr readers to reach EOF after the process is gone.
_DRAIN_S = 2.0


class _Parts:
    """The pieces of one runtime, torn down together whatever state they reached."""

    def __init__(self, spec: RuntimeSpec, process: RuntimeProcess) -> None:
        self.process = process
        popen = process.popen
        assert popen.stdout is not None and popen.stderr is not None
        self.stderr = StderrPump(popen.stderr, bundle=spec.bundle, pid=process.pid).start()
        self.stdout = StdoutReader(popen.stdout, bundle=spec.bundle, pid=process.pid).start()
        process.on_exit(self.stdout.process_exited)
        self.client: RuntimeClient | None = None

    def teardown(self, grace_s: float | None) -> None:
        """Stop (grace_s) or kill (None) the process, close the channel and the pipes."""
        client = self.client
        if grace_s is None:
            self.process.kill()
        else:
            self.process.stop(grace_s, shutdown=client.shutdown if client else None)
        if client is not None:
            client.close()
        readers_done = self.stdout.join(_DRAIN_S) & self.stderr.join(_DRAIN_S)
        self.process.close_pipes(readers_done=readers_done)


def start_runtime(
    spec: RuntimeSpec,
    *,
    socket_root: Path | None = None,
    cookie: str = protocol.MAGIC_COOKIE_VALUE,
    protocol_versions: tuple[int, ...] = protocol.APP_PROTOCOL_VERSIONS,
) -> Runtime:
    """Spawn a runtime for `spec` and return it once it reports health SERVING.

    `cookie` and `protocol_versions` are test hooks for provoking handshake faults.

    Raises:
        RuntimeStartError: (HandshakeError, ProtocolVersionError, StartTimeout or the base) the
            process did not come up; it has been killed and reaped.
    """
    began = time.monotonic()
    deadline = began + spec.start_timeout_s
    launched = launch(
        spec, socket_root=socket_root, cookie=cookie, protocol_versions=protocol_versions
    )
    process = RuntimeProcess(launched.popen, launched.socket_dir, bundle=spec.bundle)
    parts = _Parts(spec, process)
    try:
        _connect(spec, parts, deadline=deadline, protocol_versions=protocol_versions)
    except BaseException as exc:
        parts.teardown(None)
        error = _as_start_error(spec, parts, exc)
        if error is exc:
            raise
        raise error from exc
    spawn_s = time.monotonic() - began
    logger.debug(
        "runtime.started",
        extra={"bundle": spec.bundle, "pid": process.pid, "spawn_s": round(spawn_s, 4)},
    )
    return Runtime(spec, parts, spawn_s=spawn_s)


def _connect(
    spec: RuntimeSpec, parts: _Parts, *, deadline: float, protocol_versions: tuple[int, ...]
) -> None:
    handshake = read_handshake(
        parts.stdout,
        parts.process,
        parts.stderr,
        deadline=deadline,
        timeout_s=spec.start_timeout_s,
        protocol_versions=protocol_versions,
    )
    client = RuntimeClient(handshake.address, bundle=spec.bundle, pid=parts.process.pid)
    parts.client = client
    parts.process.on_exit(client.abort)
    if not client.wait_healthy(deadline, abort=parts.process.exited):
        code = parts.process.exit_code
        raise RuntimeStartError(
            f"bundle {spec.bundle}: runtime (pid {parts.process.pid}) "
            f"{describe_exit(code) if code is not None else 'exited'} after its handshake line, "
            "before reporting health SERVING",
            bundle=spec.bundle,
            pid=parts.process.pid,
        )


def _as_start_error(spec: RuntimeSpec, parts: _Parts, exc: BaseException) -> BaseException:
    """Our start errors gain the complete stderr tail; anything else is wrapped, naming the bundle.

    Called after teardown, when the stderr reader has read everything the runtime wrote.
    """
    if isinstance(exc, RuntimeStartError):
        if not exc.stderr_tail:
            exc.stderr_tail = parts.stderr.tail()
        return exc
    if not isinstance(exc, Exception):  # KeyboardInterrupt and friends pass through
        return exc
    return RuntimeStartError(
        f"bundle {spec.bundle}: runtime (pid {parts.process.pid}) failed to start: {exc!r}",
        bundle=spec.bundle,
        pid=parts.process.pid,
        stderr_tail=parts.stderr.tail(),
    )


class Runtime:
    """One started runtime process for one bundle version; runs one task at a time.

    Made by `start_runtime`. Whoever holds it (normally the pool) must call `stop()` or use it as
    a context manager; one never stopped warns in `__del__`. Thread-safe: `alive()`, `rss_bytes()`
    and `stop()` may be called from any thread; a second concurrent `execute()` is refused.
    `last_used` is a time.monotonic() value.
    """

    def __init__(self, spec: RuntimeSpec, parts: _Parts, *, spawn_s: float) -> None:
        assert parts.client is not None
        self.spec = spec
        self.pid = parts.process.pid
        #: The private 0700 directory holding the socket; removed by stop().
        self.socket_dir = parts.process.socket_dir
        #: Seconds from spawn to health SERVING.
        self.spawn_s = spawn_s
        self.tasks_run = 0
        self.last_used = time.monotonic()
        self._parts = parts
        self._client = parts.client
        self._busy = threading.Lock()
        self._tainted = False
        self._stopped = False

    def __enter__(self) -> Runtime:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __del__(self) -> None:
        if not getattr(self, "_stopped", True):
            warnings.warn(
                f"runtime for bundle {self.spec.bundle} (pid {self.pid}) was never stopped; "
                "call Runtime.stop() or use it as a context manager",
                ResourceWarning,
                stacklevel=1,
                source=self,
            )

    def describe(self) -> RuntimeDescription:
        """What the runtime serves (Describe). Raises RuntimeLost if it cannot answer."""
        try:
            return self._client.describe()
        except RuntimeLost:
            self._tainted = True
            raise

    def execute(
        self, start: TaskStart, host: Host, *, cancel: threading.Event | None = None
    ) -> Outcome:
        """Run one task instance; see RuntimeClient.execute.

        Raises:
            RuntimeLost: the process died (message names the exit code or signal and the pid)
                or the stream broke; RuntimeProtocolError when the runtime broke the protocol.
                The Runtime must then be stopped, not reused.
            RuntimeError: the Runtime is stopped or already running a task (a caller bug).
        """
        if not self._busy.acquire(blocking=False):
            raise RuntimeError(f"runtime pid {self.pid} is already running a task")
        try:
            self._check_usable(start)
        except BaseException:
            self._busy.release()
            raise
        try:
            outcome = self._client.execute(start, host, cancel=cancel)
            if cancel is not None and cancel.is_set():
                # A task told to stop may still run on in the runtime (a thread blocked in C
                # code ignores the cancel): never hand this process to another task.
                self._tainted = True
            return outcome
        except RuntimeLost as exc:
            self._tainted = True
            raise self._lost(start, exc) from exc
        except BaseException:
            self._tainted = True
            raise
        finally:
            self.tasks_run += 1
            self.last_used = time.monotonic()
            self._busy.release()

    def alive(self) -> bool:
        return not self._stopped and self._parts.process.alive()

    def reusable(self) -> bool:
        """Alive, and its last call ended with an answer, not an exception or a cancel."""
        return self.alive() and not self._tainted

    def rss_bytes(self) -> int:
        """Resident memory of the runtime and its children (psutil); 0 once gone."""
        return self._parts.process.rss_bytes()

    def stderr_tail(self) -> str:
        return self._parts.stderr.tail()

    def stop(self, grace_s: float = DEFAULT_GRACE_S) -> None:
        """Shutdown, then SIGTERM, then SIGKILL to the process group; reap; remove the socket dir.

        Idempotent; a concurrent second call returns once the first has finished.
        """
        self._stopped = True
        self._parts.teardown(grace_s)
        logger.debug(
            "runtime.stopped",
            extra={"bundle": self.spec.bundle, "pid": self.pid, "tasks_run": self.tasks_run},
        )

    def wait_stopped(self, timeout: float | None = None) -> bool:
        """True once `stop()` has reaped the process and removed its socket dir."""
        return self._parts.process.wait_stopped(timeout)

    def _check_usable(self, start: TaskStart) -> None:
        if self._stopped:
            raise RuntimeError(f"runtime pid {self.pid} is stopped")
        if not self._parts.process.alive():
            raise RuntimeLost(
                f"bundle {self.spec.bundle}: runtime (pid {self.pid}) had already exited "
                f"before ti {start.ti_id} started",
                bundle=self.spec.bundle,
                pid=self.pid,
            )

    def _lost(self, start: TaskStart, exc: RuntimeLost) -> RuntimeLost:
        """Name the exit code or signal when the process is gone; the stream error otherwise."""
        process = self._parts.process
        ti = f"ti {start.ti_id} ({start.dag_id}.{start.task_id})"
        if isinstance(exc, RuntimeProtocolError):  # the runtime is alive: no exit status to await
            return RuntimeProtocolError(
                f"{exc} (pid {self.pid}, {ti})", bundle=self.spec.bundle, pid=self.pid
            )
        if not process.exited.wait(_EXIT_STATUS_WAIT_S) or process.exit_code is None:
            return RuntimeLost(
                f"{exc} (pid {self.pid}, {ti})", bundle=self.spec.bundle, pid=self.pid
            )
        self._parts.stderr.join(_DRAIN_S)
        last = self._parts.stderr.last_problem()
        return RuntimeLost(
            f"bundle {self.spec.bundle}: runtime (pid {self.pid}) "
            f"{describe_exit(process.exit_code)} while running {ti}"
            + (f"; it last wrote: {last}" if last else ""),
            bundle=self.spec.bundle,
            pid=self.pid,
            exit_code=process.exit_code,
        )
