"""A spawned runtime process: exit watching, stopping (Shutdown, SIGTERM, SIGKILL), reaping, RSS.

The watcher thread waits with `waitid(WNOWAIT)`: it learns the exit status at once (so a task
whose runtime dies fails in milliseconds, not after a gRPC timeout) without reaping. The pid stays
a zombie until `stop()` reaps it, so the final SIGKILL to the process group, which catches the
runtime's own children, can never hit a recycled pid. `stop()` always reaps and always removes
the socket directory, whatever state the process was in.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import psutil

logger = logging.getLogger(__name__)

#: How long SIGKILL may take before we give up waiting (a process stuck in the kernel).
KILL_WAIT_S = 10.0

#: Signals a runtime dies *with* (its own fault, not someone's kill), and what each means.
_FAULTS = {
    signal.SIGSEGV: "a segfault in native code",
    signal.SIGBUS: "bad memory access in native code",
    signal.SIGFPE: "arithmetic fault in native code",
    signal.SIGILL: "illegal instruction in native code",
    signal.SIGABRT: "aborted, e.g. a failed assertion in native code",
}
#: Signals a runtime is killed *by*, where we can guess who sent them.
_KILLS = {
    # The kernel's OOM killer sends SIGKILL and leaves no other trace here (dmesg has it).
    signal.SIGKILL: "possibly the kernel's OOM killer or the task memory limit",
    signal.SIGTERM: "asked to stop",
    signal.SIGPIPE: "wrote to a closed pipe",
}


def describe_exit(code: int) -> str:
    """Popen-style return code as words, naming the signal and its likely cause.

    "exited with code 3", "died with SIGSEGV (signal 11, a segfault in native code)",
    "killed by SIGKILL (signal 9, possibly the kernel's OOM killer or the task memory limit)".
    """
    if code >= 0:
        return f"exited with code {code}"
    number = -code
    try:
        sig = signal.Signals(number)
    except ValueError:
        return f"died with signal {number}"
    if sig in _FAULTS:
        return f"died with {sig.name} (signal {number}, {_FAULTS[sig]})"
    note = _KILLS.get(sig)
    return f"killed by {sig.name} (signal {number}{', ' + note if note else ''})"


class RuntimeProcess:
    """Owns one runtime's OS process: its exit status, its process group and its socket dir.

    Thread-safe. `exited` is set (and `on_exit` callbacks run, on the watcher thread) as soon as
    the process ends. `stop()` is idempotent; whoever created the object must call it.
    """

    def __init__(self, popen: subprocess.Popen[bytes], socket_dir: Path, *, bundle: str) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.socket_dir = socket_dir
        self.bundle = bundle
        self.exited = threading.Event()
        #: Popen-style: >= 0 exit code, < 0 the signal that killed it; None while running.
        self.exit_code: int | None = None
        self._callbacks: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._stopped = False
        self._stop_done = threading.Event()
        self._ps = _ps_process(self.pid)
        self._watcher = threading.Thread(
            target=self._watch, name=f"runtime-wait:{self.pid}", daemon=True
        )
        self._watcher.start()

    def on_exit(self, callback: Callable[[], None]) -> None:
        """Run `callback` when the process exits (now, if it already has)."""
        with self._lock:
            if not self.exited.is_set():
                self._callbacks.append(callback)
                return
        callback()

    def alive(self) -> bool:
        return not self.exited.is_set()

    def wait_stopped(self, timeout: float | None = None) -> bool:
        """True once `stop()` or `kill()` has finished (process reaped, socket dir removed)."""
        return self._stop_done.wait(timeout)

    def rss_bytes(self) -> int:
        """Resident memory of the runtime plus all its children; 0 once it is gone."""
        if self._ps is None or self.exited.is_set():
            return 0
        try:
            procs = [self._ps, *self._ps.children(recursive=True)]
        except psutil.Error:
            return 0
        total = 0
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total

    def stop(self, grace_s: float, *, shutdown: Callable[[], object] | None = None) -> None:
        """Shutdown (if given) -> grace -> SIGTERM to the group -> grace -> SIGKILL; then reap.

        Always reaps the process (unless the kernel will not let it die) and removes the socket
        directory. Safe to call more than once and from several threads.
        """
        self._stop(lambda: self._escalate(grace_s, shutdown))

    def kill(self) -> None:
        """SIGKILL the group at once, reap, remove the socket dir: for failed starts."""
        self._stop(self._kill_now)

    def _stop(self, end: Callable[[], None]) -> None:
        with self._lock:
            first = not self._stopped
            self._stopped = True
        if not first:  # another thread is stopping it: return when that is done
            self._stop_done.wait()
            return
        try:
            if not self.exited.is_set():
                end()
            # The leader is a zombie here, so its pgid cannot have been reused: catch leftovers.
            self._signal_group(signal.SIGKILL)
            self._reap()
        finally:
            shutil.rmtree(self.socket_dir, ignore_errors=True)
            self._stop_done.set()

    def close_pipes(self, *, readers_done: bool) -> None:
        """Close our ends of the pipes; stdout/stderr only if their reader threads have finished.

        A reader still blocked in read() means a process outside the group holds the pipe; closing
        under it could hang, so the file is left for the garbage collector.
        """
        streams = [self.popen.stdin]
        if readers_done:
            streams += [self.popen.stdout, self.popen.stderr]
        for stream in streams:
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def _escalate(self, grace_s: float, shutdown: Callable[[], object] | None) -> None:
        if shutdown is not None:
            shutdown()
            if self.exited.wait(grace_s):
                logger.debug("runtime.stop.graceful", extra=self._log_context())
                return
        self._signal_group(signal.SIGTERM)
        if self.exited.wait(grace_s):
            logger.debug("runtime.stop.sigterm", extra=self._log_context())
            return
        logger.warning("runtime.stop.sigkill", extra={**self._log_context(), "grace_s": grace_s})
        self._kill_now()

    def _kill_now(self) -> None:
        self._signal_group(signal.SIGKILL)
        if not self.exited.wait(KILL_WAIT_S):
            logger.critical("runtime.stop.unkillable", extra=self._log_context())

    def _signal_group(self, sig: signal.Signals) -> None:
        # start_new_session=True made the runtime its own group leader: pgid == pid.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def _reap(self) -> None:
        if self.exited.is_set():
            self.popen.wait()

    def _watch(self) -> None:
        code = _wait_without_reaping(self.popen)
        with self._lock:
            self.exit_code = code
            self.exited.set()
            callbacks, self._callbacks = self._callbacks, []
        logger.debug("runtime.exited", extra={**self._log_context(), "exit_code": code})
        for callback in callbacks:
            try:
                callback()
            except Exception:
                logger.exception("runtime.exit_callback_failed", extra=self._log_context())

    def _log_context(self) -> dict[str, object]:
        return {"bundle": self.bundle, "pid": self.pid}


def _wait_without_reaping(popen: subprocess.Popen[bytes]) -> int:
    """Block until the child ends and return its Popen-style code, leaving it a zombie."""
    if not hasattr(os, "waitid"):  # not Linux: reap, accepting the pgid-reuse window
        return popen.wait()
    try:
        info = os.waitid(os.P_PID, popen.pid, os.WEXITED | os.WNOWAIT)
    except ChildProcessError:
        # Someone reaped it already (stop() racing us); Popen recorded the status.
        return popen.wait()
    assert info is not None  # only WNOHANG returns None
    if info.si_code == os.CLD_EXITED:
        return info.si_status
    return -info.si_status


def _ps_process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None
