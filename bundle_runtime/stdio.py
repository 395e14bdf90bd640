"""Where output goes: the task's print()/stderr/logging while it runs, diagnostics otherwise.

While a task runs (`capture_task_output`), sys.stdout and sys.stderr are replaced by line writers
that turn each line into a Log record ("task.stdout" at info, "task.stderr" at error), and a root
logging handler turns `logging` records into Log records. Outside a task, and always for the
runtime's own `bundle_runtime.*` loggers, records go to the real stderr as go-plugin style JSON
lines (`install_runtime_logging`), which the supervisor re-emits under its own logger.

Writes to file descriptor 1 or 2 from C code or child processes are not captured; server.py points
fd 1 at stderr so they can never corrupt the handshake line.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TextIO

from .host import ErrorInfo, LogRecord, error_info

Sink = Callable[[LogRecord], None]

STDOUT_LOGGER = "task.stdout"
STDERR_LOGGER = "task.stderr"
#: Our own loggers: always runtime diagnostics, never task log lines.
RUNTIME_LOGGER_PREFIX = "bundle_runtime"
_RECORD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

_active_sink: Sink | None = None


class _LineWriter(io.TextIOBase):
    """A text stream that emits one Log record per complete line; thread-safe."""

    def __init__(self, sink: Sink, logger: str, level: str, original: TextIO) -> None:
        super().__init__()
        self._sink = sink
        self._logger = logger
        self._level = level
        self._original = original
        self._buffer = ""
        self._lock = threading.Lock()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._original, "encoding", "utf-8")

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    @property
    def buffer(self) -> Any:
        """Binary writes (sys.stdout.buffer.write) bypass capture, like writes to the fd."""
        return self._original.buffer

    def fileno(self) -> int:
        # C extensions and subprocess ask for a real descriptor; theirs bypasses capture.
        return self._original.fileno()

    def write(self, text: str) -> int:
        with self._lock:
            self._buffer += text
            *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            self._emit(line)
        return len(text)

    def flush(self) -> None:
        """Lines are emitted as they complete; a partial line waits for close()."""

    def close_capture(self) -> None:
        with self._lock:
            rest, self._buffer = self._buffer, ""
        if rest:
            self._emit(rest)

    def _emit(self, line: str) -> None:
        self._sink(LogRecord(self._level, line.rstrip("\r"), self._logger))


class _TaskLogHandler(logging.Handler):
    """Root handler active during a task: logging records -> Log records."""

    def __init__(self, sink: Sink) -> None:
        super().__init__(logging.NOTSET)
        self._sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(RUNTIME_LOGGER_PREFIX):
            return
        try:
            self._sink(_to_log_record(record))
        except Exception:
            self.handleError(record)


def _to_log_record(record: logging.LogRecord) -> LogRecord:
    error: ErrorInfo | None = None
    if record.exc_info and record.exc_info[1] is not None:
        error = error_info(record.exc_info[1])
    return LogRecord(
        level=record.levelname.lower(),
        event=record.getMessage(),
        logger=record.name,
        error=error,
        timestamp=datetime.fromtimestamp(record.created, UTC),
    )


@contextmanager
def capture_task_output(sink: Sink) -> Iterator[None]:
    """Send print(), sys.stderr and logging to `sink` until the block ends.

    One task at a time per process (the runtime's rule), so the swap is process-wide: output from
    any thread during the task is the task's output.
    """
    global _active_sink  # noqa: PLW0603 - one task per process; see docstring
    root = logging.getLogger()
    saved = sys.stdout, sys.stderr, root.level
    out = _LineWriter(sink, STDOUT_LOGGER, "info", sys.stdout)
    err = _LineWriter(sink, STDERR_LOGGER, "error", sys.stderr)
    handler = _TaskLogHandler(sink)
    sys.stdout, sys.stderr = out, err
    root.addHandler(handler)
    # Airflow logs tasks at INFO; the root default (WARNING) would drop logger.info in tasks.
    if root.level > logging.INFO:
        root.setLevel(logging.INFO)
    _active_sink = sink
    try:
        yield
    finally:
        _active_sink = None
        root.removeHandler(handler)
        sys.stdout, sys.stderr, level = saved
        root.setLevel(level)
        out.close_capture()
        err.close_capture()


class JsonLinesHandler(logging.Handler):
    """Runtime diagnostics as JSON lines on stderr: {"@level","@message","@timestamp",...}.

    Skips task records while a task's output is captured (the task handler has them).
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__(logging.NOTSET)
        self._stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        if _active_sink is not None and not record.name.startswith(RUNTIME_LOGGER_PREFIX):
            return
        try:
            self._stream.write(json.dumps(_json_fields(record), default=str) + "\n")
            self._stream.flush()
        except Exception:
            self.handleError(record)


def _json_fields(record: logging.LogRecord) -> dict[str, Any]:
    stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="microseconds")
    fields: dict[str, Any] = {
        "@level": record.levelname.lower(),
        "@message": record.getMessage(),
        "@module": record.name,
        "@timestamp": stamp.replace("+00:00", "Z"),
    }
    fields.update((k, v) for k, v in vars(record).items() if k not in _RECORD_ATTRS)
    if record.exc_info and record.exc_info[1] is not None:
        fields["error"] = str(record.exc_info[1])
        fields["traceback"] = error_info(record.exc_info[1]).traceback
    return fields


def install_runtime_logging(level: int = logging.INFO) -> None:
    """Route the process's logging to JSON lines on the real stderr (server.main only)."""
    root = logging.getLogger()
    root.handlers[:] = [JsonLinesHandler(sys.__stderr__ or sys.stderr)]
    root.setLevel(level)
