"""Spawning one runtime process: its environment, its private socket directory, its process group.

This module owns everything up to and including `Popen`; reading the handshake is handshake.py's,
stopping and reaping is process.py's. The runtime is started as a new session (its own process
group, so a stop can signal the whole tree: go-plugin #136) with stdin a pipe we hold open: the
runtime kills itself on EOF, which is how it dies with us even after `kill -9` of the supervisor.
We never set `preexec_fn` (unsafe with threads and after gRPC is initialised, grpc/grpc#4113), so
`subprocess` may use vfork/posix_spawn.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import stat
import subprocess
import tempfile
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from bundle_runtime import protocol
from supervisor.background import unix_socket_answers
from supervisor.errors import RuntimeStartError

logger = logging.getLogger(__name__)

#: Default start budget (handshake line plus health SERVING); Python start-up is mostly imports.
DEFAULT_START_TIMEOUT_S = 30.0
#: Prefixes of inherited environment variables that never reach a runtime: Airflow's settings
#: (AIRFLOW__*) carry the API secret key and broker passwords, AIRFLOW_CONN_* and AIRFLOW_VAR_*
#: hold connections and variables; the supervisor's own (SUPERVISOR_*) name its state. Task code
#: reads variables and connections through host calls only.
DROPPED_ENV_PREFIXES = ("AIRFLOW", "SUPERVISOR_")
#: Directory names we create under the socket root: "<supervisor pid>-<random>", so stale ones
#: left by a supervisor that was killed can be recognised and removed.
_SOCKET_DIR_RE = re.compile(r"^(\d+)-")
_SPAWNER: ThreadPoolExecutor | None = None
_SPAWNER_LOCK = threading.Lock()


@dataclass(frozen=True)
class RuntimeSpec:
    """How to start a runtime for one installed bundle version; the pool's key.

    `env` is extra environment on top of the supervisor's own (minus AIRFLOW*); the Airflow
    token must never be put there. The protocol variables are always set last, so `env` cannot
    override them.
    """

    #: Label "name==version" used in every message and log line about this runtime.
    bundle: str
    #: Command that starts the runtime, e.g. ("<venv>/bin/bundle-runtime",).
    argv: tuple[str, ...]
    #: Value of BUNDLE_RUNTIME_BUNDLE: a distribution name or "module:attr".
    bundle_env: str
    env: Mapping[str, str] = field(default_factory=dict)
    start_timeout_s: float = DEFAULT_START_TIMEOUT_S
    cwd: Path | None = None

    def __post_init__(self) -> None:
        if not self.argv:
            raise ValueError(f"bundle {self.bundle}: RuntimeSpec.argv is empty")
        leaked = sorted(k for k in self.env if k.startswith(DROPPED_ENV_PREFIXES))
        if leaked:
            raise ValueError(
                f"bundle {self.bundle}: RuntimeSpec.env must not carry Airflow settings "
                f"({', '.join(leaked)}); runtimes never see Airflow's secrets"
            )
        object.__setattr__(self, "argv", tuple(self.argv))
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))

    def __hash__(self) -> int:
        # Explicit because `env` is a mapping; equality stays the dataclass's field comparison.
        return hash(
            (
                self.bundle,
                self.argv,
                self.bundle_env,
                tuple(sorted(self.env.items())),
                self.start_timeout_s,
                self.cwd,
            )
        )


@dataclass(frozen=True)
class Launched:
    """A freshly spawned runtime: the process, and the socket directory it must bind in."""

    popen: subprocess.Popen[bytes]
    socket_dir: Path
    socket_path: Path


def default_socket_root() -> Path:
    """`/tmp/bsv-<uid>`: short on purpose, since sun_path holds 107 bytes (terraform#22198)."""
    return Path(f"/tmp/bsv-{os.getuid()}")


def runtime_env(
    spec: RuntimeSpec,
    socket_dir: Path,
    *,
    cookie: str = protocol.MAGIC_COOKIE_VALUE,
    protocol_versions: tuple[int, ...] = protocol.APP_PROTOCOL_VERSIONS,
) -> dict[str, str]:
    """The runtime's environment: ours minus Airflow settings, then spec.env, then the protocol."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(DROPPED_ENV_PREFIXES)}
    env.update(spec.env)
    env[protocol.MAGIC_COOKIE_KEY] = cookie
    env[protocol.PROTOCOL_VERSIONS_ENV] = ",".join(str(v) for v in protocol_versions)
    env[protocol.SOCKET_DIR_ENV] = str(socket_dir)
    env[protocol.BUNDLE_ENV] = spec.bundle_env
    return env


def launch(
    spec: RuntimeSpec,
    *,
    socket_root: Path | None = None,
    cookie: str = protocol.MAGIC_COOKIE_VALUE,
    protocol_versions: tuple[int, ...] = protocol.APP_PROTOCOL_VERSIONS,
) -> Launched:
    """Make the socket directory, check the socket path fits, and spawn the runtime.

    `cookie` and `protocol_versions` exist so tests can provoke handshake faults.

    Raises:
        RuntimeStartError: the socket path would be too long, or the command could not be run.
    """
    socket_dir = make_socket_dir(socket_root or default_socket_root(), bundle=spec.bundle)
    try:
        socket_path = socket_dir / protocol.SOCKET_NAME
        check_socket_path(socket_path, bundle=spec.bundle)
        env = runtime_env(spec, socket_dir, cookie=cookie, protocol_versions=protocol_versions)
        popen = _spawn(spec, env)
    except BaseException:
        shutil.rmtree(socket_dir, ignore_errors=True)
        raise
    logger.debug("runtime.spawned", extra={"bundle": spec.bundle, "pid": popen.pid})
    return Launched(popen=popen, socket_dir=socket_dir, socket_path=socket_path)


def _spawn(spec: RuntimeSpec, env: dict[str, str]) -> subprocess.Popen[bytes]:
    # The runtime sets PR_SET_PDEATHSIG, which fires when the *thread* that forked it exits
    # (golang/go#27505), not the process: spawn from one long-lived thread, never from a task's.
    return _spawner().submit(_popen, spec, env).result()


def _spawner() -> ThreadPoolExecutor:
    global _SPAWNER  # noqa: PLW0603 - one per process, made on first use
    with _SPAWNER_LOCK:
        if _SPAWNER is None:
            # Executor workers never exit on idle, so the forking thread lives as long as we do.
            _SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="runtime-spawner")
        return _SPAWNER


def _popen(spec: RuntimeSpec, env: dict[str, str]) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(
            spec.argv,
            env=env,
            cwd=spec.cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            close_fds=True,  # another runtime holding our stdin pipe would defeat the EOF lifeline
            start_new_session=True,
        )
    except OSError as exc:
        raise RuntimeStartError(
            f"bundle {spec.bundle}: could not run the runtime command {list(spec.argv)!r}: {exc}; "
            "check that the bundle's venv is installed",
            bundle=spec.bundle,
        ) from exc


def check_socket_path(socket_path: Path, *, bundle: str) -> None:
    """Refuse a socket path the kernel would reject, before anything is spawned."""
    size = len(os.fsencode(socket_path))
    if size > protocol.MAX_SOCKET_PATH_BYTES:
        raise RuntimeStartError(
            f"bundle {bundle}: socket path {str(socket_path)!r} is {size} bytes, longer than the "
            f"{protocol.MAX_SOCKET_PATH_BYTES} a Unix socket path may have; "
            "configure a shorter socket root directory",
            bundle=bundle,
        )


def make_socket_dir(root: Path, *, bundle: str) -> Path:
    """A fresh 0700 directory under `root` (itself made 0700 and checked to be ours)."""
    try:
        _ensure_private_root(root)
        _sweep_stale(root)
        return Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=root))
    except OSError as exc:
        raise RuntimeStartError(
            f"bundle {bundle}: could not create a socket directory under {str(root)!r}: {exc}",
            bundle=bundle,
        ) from exc


def _ensure_private_root(root: Path) -> None:
    # /tmp is shared: someone else could have made the directory first, or a symlink. Refuse both.
    with contextlib.suppress(FileExistsError):
        root.mkdir(mode=0o700, parents=True)
    info = root.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise PermissionError(f"{str(root)!r} is not a directory owned by uid {os.getuid()}")
    if stat.S_IMODE(info.st_mode) != 0o700:
        root.chmod(0o700)


def _sweep_stale(root: Path) -> None:
    """Remove socket dirs of supervisors that were killed before they could clean up.

    Stale means: the supervisor pid in the name is gone and nothing answers on the socket (the
    second check guards against pid namespaces sharing one /tmp).
    """
    for entry in root.iterdir():
        match = _SOCKET_DIR_RE.match(entry.name)
        if (
            match
            and not _pid_exists(int(match.group(1)))
            and not unix_socket_answers(entry / protocol.SOCKET_NAME, timeout_s=0.2)
        ):
            shutil.rmtree(entry, ignore_errors=True)


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
