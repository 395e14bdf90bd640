"""The `bundle-runtime` entry point: check, protect, load, serve, print the handshake, wait, exit.

Start-up phases, in order (go-plugin `server.go` `Serve`, split into named steps):
1. cookie: run by hand without the supervisor's magic cookie -> explain and exit 1;
2. negotiate the app protocol version with PROTOCOL_VERSIONS_ENV;
3. protect stdout: keep fd 1 for the one handshake line, point fd 1 at stderr for everyone else,
   and let a fatal signal (segfault, abort) dump the crashing thread's Python stack to stderr;
4. die with the parent: PR_SET_PDEATHSIG and stdin EOF (the supervisor holds the write end);
5. choose the socket path; 6. import the bundle; 7. serve gRPC, then print the handshake line;
8. wait for Shutdown or SIGTERM, let the current task finish, stop, exit 0.

Imports stay lean (grpc only after the cheap checks): targets are spawn -> healthy <= 0.5 s and
idle RSS <= 45 MB.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, NoReturn

from . import protocol

if TYPE_CHECKING:
    import grpc

    from .bundle import Bundle
    from .health import HealthServicer
    from .service import BundleRuntimeServicer

#: Exit codes. The supervisor reads the reason from stderr; the code only says "did not serve".
RET_OK = 0
#: Anything that prevents serving: no cookie, no common version, bad socket dir, bundle import.
RET_FAILED = 1

DEFAULT_MAX_WORKERS = 8
#: Seconds in-flight RPCs get once the server stops (the current task has already finished).
DEFAULT_STOP_GRACE_S = 2.0
_PR_SET_PDEATHSIG = 1

NOT_A_PROGRAM = (
    "This binary is a plugin for the Airflow bundle supervisor; it is not meant to be run "
    "directly. Use `supervisor bundle test` to run a bundle's task by hand, or "
    "bundle_runtime.testing.run_task in your own test suite. "
    f"(The supervisor sets {protocol.MAGIC_COOKIE_KEY}; it was missing or wrong.)"
)


def main() -> NoReturn:
    """Run the runtime until Shutdown or SIGTERM; never returns."""
    parent_pid = os.getppid()
    _check_cookie()
    version = _negotiate_version()
    handshake_fd = _protect_stdout()
    _dump_traceback_on_crash()
    _die_with_parent(parent_pid)
    socket_path = _socket_path()
    from .stdio import install_runtime_logging  # noqa: PLC0415 - after the cheap checks

    install_runtime_logging()
    # Ctrl-C reaches the whole foreground group; the supervisor stays in charge (go-plugin does it).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    bundle = _load_bundle()
    shutdown = threading.Event()
    server, servicer, health = _serve(bundle, version, socket_path, shutdown)
    _handle_sigterm(shutdown, servicer)
    _write_handshake(handshake_fd, protocol.format_handshake(version, socket_path))
    _wait_and_stop(server, servicer, health, shutdown)
    _exit(RET_OK)


def _fail(message: str) -> NoReturn:
    sys.stderr.write(message.rstrip("\n") + "\n")
    _exit(RET_FAILED)


def _exit(code: int) -> NoReturn:
    """Flush and leave at once: a task's stray non-daemon threads must not keep us alive."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def _check_cookie() -> None:
    if os.environ.get(protocol.MAGIC_COOKIE_KEY) != protocol.MAGIC_COOKIE_VALUE:
        _fail(NOT_A_PROGRAM)


def _negotiate_version() -> int:
    raw = os.environ.get(protocol.PROTOCOL_VERSIONS_ENV, "")
    try:
        offered = protocol.parse_versions(raw)
    except ValueError:
        _fail(f"{protocol.PROTOCOL_VERSIONS_ENV}={raw!r} is not a comma-separated list of integers")
    version = protocol.choose_version(offered)
    if version is None:
        ours = list(protocol.APP_PROTOCOL_VERSIONS)
        upgrade = (
            "reinstall the bundle with this supervisor so its venv gets a newer bundle-runtime"
            if offered and max(offered) > max(ours)
            else "upgrade the supervisor"
        )
        _fail(
            f"no common protocol version: the supervisor offered {list(offered)}, this "
            f"bundle-runtime speaks {ours}; {upgrade}"
        )
    return version


def _protect_stdout() -> int:
    """Keep a private copy of stdout for the handshake; fd 1 becomes stderr for everyone else.

    Anything user code prints, even os.write(1, ...) from C, then lands on stderr and can never
    precede or corrupt the handshake line.
    """
    sys.stdout.flush()
    handshake_fd = os.dup(1)  # non-inheritable: task subprocesses never get it
    os.dup2(2, 1)
    return handshake_fd


def _dump_traceback_on_crash() -> None:
    """faulthandler: on SIGSEGV, SIGBUS, SIGFPE, SIGILL or SIGABRT, print the Python stack first.

    The supervisor keeps our stderr's last lines and quotes the dump in the task log, so a task
    that crashes in native code shows which of its lines called it. Only the crashing thread: the
    gRPC threads' stacks would push the task's out of that tail.
    """
    faulthandler.enable(file=sys.stderr, all_threads=False)


def _die_with_parent(parent_pid: int) -> None:
    """Exit when the supervisor dies, even after kill -9 of it (no orphans, DESIGN 4.5).

    PR_SET_PDEATHSIG fires when the *thread* that forked us exits, so the supervisor must spawn
    runtimes from a long-lived thread. The stdin watcher covers what prctl cannot: a parent that
    died before prctl ran, and non-Linux systems.
    """
    if sys.platform.startswith("linux"):
        import ctypes  # noqa: PLC0415 - Linux only

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:
            _fail("the supervisor exited while this runtime was starting")
    if _stdin_is_pipe():
        threading.Thread(target=_watch_stdin, name="stdin-watch", daemon=True).start()


def _stdin_is_pipe() -> bool:
    import stat  # noqa: PLC0415

    try:
        mode = os.fstat(0).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def _watch_stdin() -> None:
    """Block on stdin; EOF means the supervisor is gone: kill our whole process group."""
    try:
        while os.read(0, 4096):
            pass
    except OSError:
        pass
    # The supervisor starts us with start_new_session=True; only then is the group ours to kill.
    if os.getpgrp() == os.getpid():
        os.killpg(0, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def _socket_path() -> str:
    directory = os.environ.get(protocol.SOCKET_DIR_ENV)
    if not directory or not os.path.isdir(directory):
        _fail(f"{protocol.SOCKET_DIR_ENV}={directory!r} is not a directory; the supervisor sets it")
    path = os.path.join(directory, protocol.SOCKET_NAME)
    size = len(os.fsencode(path))
    if size > protocol.MAX_SOCKET_PATH_BYTES:
        _fail(
            f"socket path {path!r} is {size} bytes, longer than the "
            f"{protocol.MAX_SOCKET_PATH_BYTES} Unix sockets allow; use a shorter "
            f"{protocol.SOCKET_DIR_ENV} (e.g. under /tmp)"
        )
    if os.path.lexists(path):
        os.unlink(path)  # a stale socket from a runtime that died in the same private dir
    return path


def _load_bundle() -> Bundle:
    from .bundle import load_bundle  # noqa: PLC0415

    spec = os.environ.get(protocol.BUNDLE_ENV, "")
    if not spec:
        _fail(f"{protocol.BUNDLE_ENV} is not set; the supervisor sets it to the bundle's name")
    try:
        return load_bundle(spec)
    except BaseException:  # SystemExit at import time is a load failure too
        import traceback  # noqa: PLC0415

        traceback.print_exc(file=sys.stderr)
        _fail(f"bundle {spec!r} failed to load; see the traceback above")


def _handle_sigterm(shutdown: threading.Event, servicer: BundleRuntimeServicer) -> None:
    """SIGTERM is the supervisor's second step after Shutdown: cancel the task, report, exit."""

    def on_sigterm(signum: int, frame: object) -> None:
        shutdown.set()
        servicer.cancel_current("the runtime received SIGTERM")

    signal.signal(signal.SIGTERM, on_sigterm)


def _serve(
    bundle: Bundle, version: int, socket_path: str, shutdown: threading.Event
) -> tuple[grpc.Server, BundleRuntimeServicer, HealthServicer]:
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    import grpc  # noqa: PLC0415

    from ._proto import health_pb2_grpc, runtime_pb2_grpc  # noqa: PLC0415
    from .health import SERVING, HealthServicer  # noqa: PLC0415
    from .service import BundleRuntimeServicer  # noqa: PLC0415

    servicer = BundleRuntimeServicer(bundle, version, shutdown)
    health = HealthServicer()
    server = grpc.server(
        ThreadPoolExecutor(DEFAULT_MAX_WORKERS, thread_name_prefix="grpc"),
        options=[
            ("grpc.max_receive_message_length", protocol.MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", protocol.MAX_MESSAGE_BYTES),
        ],
    )
    runtime_pb2_grpc.add_BundleRuntimeServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    old_umask = os.umask(0o177)  # the socket is born 0600, not just chmod-ed later
    try:
        server.add_insecure_port(f"unix:{socket_path}")
        server.start()
    finally:
        os.umask(old_umask)
    os.chmod(socket_path, 0o600)
    health.set("", SERVING)
    health.set(protocol.HEALTH_SERVICE, SERVING)
    return server, servicer, health


def _write_handshake(fd: int, line: str) -> None:
    os.write(fd, (line + "\n").encode())


def _wait_and_stop(
    server: grpc.Server,
    servicer: BundleRuntimeServicer,
    health: HealthServicer,
    shutdown: threading.Event,
) -> None:
    """Drain, then stop: the current task ends with its Result before the server goes away."""
    import logging  # noqa: PLC0415

    from .health import NOT_SERVING  # noqa: PLC0415

    log = logging.getLogger(__name__)
    log.info("runtime serving", extra={"pid": os.getpid()})
    shutdown.wait()
    health.set(protocol.HEALTH_SERVICE, NOT_SERVING)
    if not servicer.wait_idle(0):
        log.info("runtime stopping after the current task")
        servicer.wait_idle()
    server.stop(DEFAULT_STOP_GRACE_S).wait()
    log.info("runtime stopped")
