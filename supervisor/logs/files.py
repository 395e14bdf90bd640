"""One task instance's log file, in the JSON-lines format Airflow's UI reads.

Airflow's own supervisor appends to `{base_log_folder}/{log_path}` (so a task resumed after
a deferral adds to the same file), creates folders 0o775 and the file 0o664, and writes one JSON
object per line with `timestamp`, lower-case `level`, `event` first (reference §4.4). We do the
same, so the api-server on this host shows a bundle task's log exactly like a Python task's.
"""

from __future__ import annotations

import json
import os
import re
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from supervisor.errors import WorkloadError

FOLDER_MODE = 0o775
FILE_MODE = 0o664
MASK = "***"
#: Anything shaped like a JWT; Airflow masks these as "eyJ***" too.
_JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]+")


def log_file_path(base_log_folder: Path, log_path: str) -> Path:
    """Resolve a workload's relative log_path under base_log_folder, refusing escapes."""
    base = base_log_folder.resolve()
    path = (base / log_path).resolve()
    if not path.is_relative_to(base) or path == base:
        raise WorkloadError(f"log_path {log_path!r} points outside base_log_folder {str(base)!r}")
    return path


class TaskLog:
    """Appends JSON lines to one task's log file; thread-safe; masks registered secrets.

    Open it as a context manager (or call close()); every write is flushed so the api-server and
    the log server always see complete lines.
    """

    def __init__(self, path: Path, *, bound: dict[str, Any] | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=FOLDER_MODE)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
        self.path = path
        self._file = os.fdopen(fd, "ab")
        self._bound = dict(bound or {})
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def add_secret(self, value: str) -> None:
        """Mask `value` in every later line (connection passwords, ctx.mask_secret)."""
        if value and len(value) >= 3:
            with self._lock:
                self._secrets.add(value)

    def write(
        self,
        event: str,
        *,
        level: str = "info",
        logger: str = "supervisor",
        timestamp: datetime | None = None,
        **fields: Any,
    ) -> None:
        """Append one record: timestamp, level, event, logger, then bound and extra fields."""
        when = (timestamp or datetime.now(UTC)).astimezone(UTC)
        record = {
            "timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": level.lower(),
            "event": event,
            "logger": logger,
            **self._bound,
            **fields,
        }
        line = self._mask(json.dumps(record, default=str, ensure_ascii=False))
        with self._lock:
            if not self._file.closed:
                self._file.write(line.encode() + b"\n")
                self._file.flush()

    def _mask(self, text: str) -> str:
        text = _JWT.sub("eyJ***", text)
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(json.dumps(secret)[1:-1], MASK)
        return text

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def __enter__(self) -> TaskLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
