"""A runtime's stderr, re-emitted as the supervisor's logging; the last lines kept for errors.

The runtime writes its own diagnostics as JSON lines (`@level`, `@message`, `@timestamp`, other
keys as context), as go-plugin plugins write hclog JSON (`log_entry.go`, `client.go` logStderr).
We re-log them under "supervisor.runtime" with the bundle and pid. Anything else (an interpreter
traceback, a C library's complaint) is kept verbatim at WARNING: the runtime routes a task's own
output into its task log, so a raw line here is an anomaly an operator should see.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
from collections.abc import Iterator
from typing import IO, Any

logger = logging.getLogger("supervisor.runtime")

#: Lines kept for error messages (RuntimeStartError.stderr_tail, RuntimeLost).
TAIL_LINES = 50
#: Longer lines arrive in pieces (go-plugin's PluginLogBufferSize is the same 64 KiB).
MAX_LINE_BYTES = 64 * 1024
#: How faulthandler's dump starts (bundle_runtime/server.py enables it): the line that explains a
#: crash; the stack and module list after it do not.
FATAL_PREFIX = "Fatal Python error:"

_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}
# Attributes of LogRecord: `extra` may not overwrite them (logging raises KeyError).
_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class StderrPump:
    """Reads one runtime's stderr on a daemon thread until EOF.

    Thread-safe: `tail()` may be called from any thread while the pump runs. The pump never closes
    the stream; whoever owns the process closes it after `join()`.
    """

    def __init__(self, stream: IO[bytes], *, bundle: str, pid: int) -> None:
        self._stream = stream
        self.bundle = bundle
        self.pid = pid
        self._tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._lock = threading.Lock()
        self._last_problem = ""
        self._crashed = False
        self._thread = threading.Thread(target=self._run, name=f"runtime-stderr:{pid}", daemon=True)

    def start(self) -> StderrPump:
        self._thread.start()
        return self

    def join(self, timeout: float) -> bool:
        """Wait for EOF; True when the pump has read everything."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def tail(self) -> str:
        """The last lines, readable: JSON lines as "level: message key=value", others verbatim."""
        with self._lock:
            return "\n".join(self._tail)

    def last_problem(self) -> str:
        """The last raw line or JSON line at WARNING or above: the likeliest explanation.

        After a crash, faulthandler's "Fatal Python error: ..." line, not the dump that follows.
        """
        with self._lock:
            return self._last_problem

    def _run(self) -> None:
        for line in read_lines(self._stream):
            if line.strip():
                self._handle(line)

    def _handle(self, line: str) -> None:
        entry = _parse_json_line(line)
        if entry is None:
            self._remember(line, problem=True)
            logger.warning("%s", line, extra={"bundle": self.bundle, "pid": self.pid, "raw": True})
            return
        level_name = str(entry.pop("@level", "info")).lower()
        message = str(entry.pop("@message", ""))
        entry.pop("@timestamp", None)
        level = _LEVELS.get(level_name, logging.INFO)
        self._remember(_readable(level_name, message, entry), problem=level >= logging.WARNING)
        extra = {_safe_key(k): v for k, v in entry.items()}
        extra.update(bundle=self.bundle, pid=self.pid)
        logger.log(level, "%s", message, extra=extra)

    def _remember(self, text: str, *, problem: bool) -> None:
        with self._lock:
            self._tail.append(text)
            if problem and not self._crashed:
                self._last_problem = text
            self._crashed = self._crashed or text.startswith(FATAL_PREFIX)


def read_lines(stream: IO[bytes]) -> Iterator[str]:
    """A runtime pipe's lines until EOF, decoded, without line ends; long ones in pieces."""
    for raw in iter(lambda: stream.readline(MAX_LINE_BYTES), b""):
        yield raw.decode("utf-8", errors="replace").rstrip("\r\n")


def _parse_json_line(line: str) -> dict[str, Any] | None:
    if not line.startswith("{"):
        return None
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) and "@message" in entry else None


def _readable(level: str, message: str, fields: dict[str, Any]) -> str:
    context = " ".join(f"{k}={v!r}" for k, v in fields.items())
    return f"{level}: {message} {context}".rstrip()


def _safe_key(key: str) -> str:
    key = key.lstrip("@")
    return f"runtime_{key}" if key in _RESERVED or key in {"bundle", "pid"} else key
