"""The supervisor's own log (the worker log, for operators): stderr, one event per line.

Only `cli.py` calls `configure`; library modules just `logging.getLogger(__name__)` and log a short
fixed event with context in `extra` (`logger.info("bundle.installed", extra={"bundle": label})`).
This formatter prints that context as `key=value` pairs after the event, so values are never
spliced into the text (STYLE §8). Task logs are a separate stream written by `supervisor.logs`.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import TextIO

#: Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
#: `--log-level` choices.
LEVELS = ("debug", "info", "warning", "error", "critical")
DEFAULT_LEVEL = "warning"
#: Libraries whose INFO lines are per request or per message: too chatty for an operator's log.
_QUIET_LOGGERS = ("httpx", "httpcore")
#: Anything shaped like a JWT (Airflow's workload and execution tokens): never printed.
_JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]+")


class KeyValueFormatter(logging.Formatter):
    """`2026-01-02T03:04:05 info supervisor.store bundle.installed bundle=x==1 sha256=...`."""

    def __init__(self) -> None:
        super().__init__(datefmt="%Y-%m-%dT%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        head = f"{self.formatTime(record, self.datefmt)} {record.levelname.lower()} {record.name}"
        context = ""
        # Only our own records: Celery puts the whole message (the workload's token included)
        # into `extra`, and we never print that.
        if record.name.startswith("supervisor"):
            context = " ".join(
                f"{key}={_text(value)}"
                for key, value in vars(record).items()
                if key not in _STANDARD_ATTRS and not key.startswith("_")
            )
        line = " ".join(part for part in (head, record.getMessage(), context) if part)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return _JWT.sub("eyJ***", line)


def _text(value: object) -> str:
    text = str(value)
    return repr(text) if (" " in text or not text) else text


def configure(level: str = DEFAULT_LEVEL, *, stream: TextIO | None = None) -> None:
    """Send every `supervisor.*` (and library) record at `level` or above to stderr."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
