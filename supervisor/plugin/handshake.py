"""Reading and checking a runtime's handshake line (bundle_runtime/protocol.py has the format).

Only the first stdout line is examined, as go-plugin does; it must be the handshake, so any text
before it is reported verbatim (go-plugin #164: an import that prints is the usual culprit). After
the handshake the reader keeps draining stdout, logging stray lines at WARNING, so the pipe never
fills and blocks the runtime.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import PurePosixPath
from typing import IO, TYPE_CHECKING, Final

from bundle_runtime import protocol
from supervisor.errors import HandshakeError, ProtocolVersionError, StartTimeout
from supervisor.plugin.process import describe_exit
from supervisor.plugin.stderr import read_lines

if TYPE_CHECKING:
    from supervisor.plugin.process import RuntimeProcess
    from supervisor.plugin.stderr import StderrPump

logger = logging.getLogger("supervisor.runtime")

#: How long to wait for the last bytes of a dead runtime's stdout and stderr.
_DRAIN_S = 2.0
_EOF: Final = object()
_EXITED: Final = object()


class StdoutReader:
    """Reads one runtime's stdout on a daemon thread: first line for the handshake, rest logged."""

    def __init__(self, stream: IO[bytes], *, bundle: str, pid: int) -> None:
        self._stream = stream
        self.bundle = bundle
        self.pid = pid
        self._events: queue.Queue[object] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=f"runtime-stdout:{pid}", daemon=True)

    def start(self) -> StdoutReader:
        self._thread.start()
        return self

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def process_exited(self) -> None:
        """Wake a handshake wait: called by the process watcher when the runtime exits."""
        self._events.put(_EXITED)

    def next_event(self, timeout: float) -> object:
        """The first line (str), _EOF, _EXITED, or None when nothing came within `timeout`."""
        try:
            return self._events.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return None

    def _run(self) -> None:
        first = True
        for line in read_lines(self._stream):
            if first:
                first = False
                self._events.put(line)
                continue
            logger.warning(
                "%s", line, extra={"bundle": self.bundle, "pid": self.pid, "stream": "stdout"}
            )
        self._events.put(_EOF)


def read_handshake(
    reader: StdoutReader,
    process: RuntimeProcess,
    stderr: StderrPump,
    *,
    deadline: float,
    timeout_s: float,
    protocol_versions: tuple[int, ...],
) -> protocol.Handshake:
    """Wait for the handshake line until `deadline` (time.monotonic()), parse and check it.

    `timeout_s` is the whole start budget, quoted in the timeout message.

    Raises:
        HandshakeError: stray stdout, a malformed line, or the runtime exited first.
        ProtocolVersionError: the runtime chose a version the supervisor does not speak.
        StartTimeout: no line before the deadline.
    """
    line = _wait_first_line(reader, process, stderr, deadline=deadline, timeout_s=timeout_s)
    try:
        handshake = protocol.parse_handshake(line)
    except protocol.HandshakeFormatError:
        raise HandshakeError(
            f"bundle {reader.bundle}: runtime wrote {line!r} to stdout before its handshake "
            "line; task code must log or use stderr at import time",
            bundle=reader.bundle,
            pid=reader.pid,
            stderr_tail=stderr.tail(),
        ) from None
    check_handshake(
        handshake, bundle=reader.bundle, pid=reader.pid, protocol_versions=protocol_versions
    )
    return handshake


def _wait_first_line(
    reader: StdoutReader,
    process: RuntimeProcess,
    stderr: StderrPump,
    *,
    deadline: float,
    timeout_s: float,
) -> str:
    event = reader.next_event(deadline - time.monotonic())
    if event is None:
        raise StartTimeout(
            f"bundle {reader.bundle}: runtime (pid {reader.pid}) wrote no handshake line within "
            f"{timeout_s:g}s; raise the start timeout if the bundle imports slowly",
            bundle=reader.bundle,
            pid=reader.pid,
            stderr_tail=stderr.tail(),
        )
    if event is _EXITED:
        # The line may still sit in the pipe: a runtime can print it and die at once.
        event = reader.next_event(_DRAIN_S)
    if isinstance(event, str):
        return event
    raise _exited_early(reader, process, stderr)


def _exited_early(
    reader: StdoutReader, process: RuntimeProcess, stderr: StderrPump
) -> HandshakeError:
    process.exited.wait(_DRAIN_S)
    stderr.join(_DRAIN_S)
    last = stderr.last_problem()
    code = process.exit_code
    what = "closed its stdout" if code is None else describe_exit(code)
    return HandshakeError(
        f"bundle {reader.bundle}: runtime (pid {reader.pid}) {what} before its handshake line"
        + (f": {last}" if last else "; it wrote nothing to stderr"),
        bundle=reader.bundle,
        pid=reader.pid,
        stderr_tail=stderr.tail(),
    )


def check_handshake(
    handshake: protocol.Handshake, *, bundle: str, pid: int, protocol_versions: tuple[int, ...]
) -> None:
    """Refuse versions, networks and protocols the supervisor does not speak."""
    if handshake.core_version != protocol.CORE_PROTOCOL_VERSION:
        raise ProtocolVersionError(
            f"bundle {bundle}: runtime speaks handshake core version {handshake.core_version}, "
            f"the supervisor speaks {protocol.CORE_PROTOCOL_VERSION}; reinstall the bundle so its "
            "venv gets a bundle-runtime matching this supervisor",
            bundle=bundle,
            pid=pid,
        )
    if handshake.app_version not in protocol_versions:
        raise ProtocolVersionError(
            f"bundle {bundle}: runtime chose protocol version {handshake.app_version}, the "
            f"supervisor speaks {list(protocol_versions)}; rebuild the bundle against a "
            "bundle-runtime that speaks one of these",
            bundle=bundle,
            pid=pid,
        )
    if handshake.network != "unix" or handshake.protocol != "grpc":
        raise HandshakeError(
            f"bundle {bundle}: runtime offered {handshake.protocol!r} over "
            f"{handshake.network!r}; the supervisor speaks only 'grpc' over 'unix'",
            bundle=bundle,
            pid=pid,
        )
    if not PurePosixPath(handshake.address).is_absolute():
        raise HandshakeError(
            f"bundle {bundle}: runtime gave socket address {handshake.address!r}, "
            "expected an absolute path",
            bundle=bundle,
            pid=pid,
        )
