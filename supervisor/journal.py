"""The journal: a durable local record of the TIs this worker owes something to Airflow.

A row is written when `/run` succeeds and deleted only once the Celery result for the message
has been written, so whatever kills the process in between (kill -9, OOM, power), the next
`supervisor serve` on the same home finds the row and settles it (recovery.py):

    running    the task was executing: the TI is reported failed or up_for_retry at once,
               instead of waiting for Airflow's heartbeat timeout (300 s by default)
    reporting  the final state was decided but not yet acknowledged by the Execution API
               (an outage, or a crash while sending): it is sent again, unchanged
    reported   Airflow has the state (or answered that the TI moved on); only the Celery
               result is still owed (without it the executor keeps the slot busy forever)

Why SQLite: one file, atomic transactions, survives kill -9 with WAL, in the standard library.
The row holds the TI's latest execution token (the API needs it to accept a state), so the file
is 0600 in a 0700 directory, like the control socket; a token is useless once its TI has a final
state, and it expires after [execution_api] jwt_expiration_time anyway.

Several workers may share a home (one per queue set, say), so each has its own journal,
`<home>/run/journals/<hostname>-<hash of its queues>.sqlite3`, locked (flock on a `.lock` file
beside it) for the worker's whole life. The same worker started twice is refused. A journal
nobody holds belongs to a worker that died: `orphans` hands it to whichever worker starts next,
so a worker restarted with other queues still settles what it left behind.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.errors import SupervisorError

JOURNAL_DIR = Path("run") / "journals"
SUFFIX = ".sqlite3"

RUNNING = "running"
REPORTING = "reporting"
REPORTED = "reported"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tis (
    ti_id        TEXT PRIMARY KEY,
    celery_id    TEXT NOT NULL,
    phase        TEXT NOT NULL,
    token        TEXT NOT NULL,
    should_retry INTEGER NOT NULL,
    ti_json      TEXT NOT NULL,
    log_path     TEXT NOT NULL,
    runtime_pid  INTEGER,
    runtime_started REAL,
    state_json   TEXT,
    supervisor_pid INTEGER NOT NULL,
    updated_at   REAL NOT NULL
)
"""


def journal_path(home: Path, hostname: str, queues: Iterable[str]) -> Path:
    """The journal of the worker `hostname` consuming `queues` on `home`."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", hostname)[:60]
    digest = hashlib.sha256(",".join(sorted(queues)).encode()).hexdigest()[:10]
    return home / JOURNAL_DIR / f"{name}-{digest}{SUFFIX}"


class JournalLocked(SupervisorError):
    """Another live `supervisor serve` holds this journal."""


@dataclass(frozen=True)
class Entry:
    """One TI the previous process owed something for; what recovery needs to settle it."""

    ti_id: str
    celery_id: str
    phase: str
    token: str
    should_retry: bool
    #: dag_id, task_id, run_id, try_number, map_index: for log lines and the task log.
    ti: dict[str, Any]
    #: The TI's log file, relative to [logging] base_log_folder.
    log_path: str
    runtime_pid: int | None
    #: psutil create_time of that runtime, so a recycled pid is never mistaken for it.
    runtime_started: float | None
    #: The final-state body (PATCH .../state), once decided.
    state: dict[str, Any] | None
    supervisor_pid: int


class Journal:
    """One worker's journal; thread-safe (one connection, one lock: writes are tiny)."""

    def __init__(self, path: Path, *, wait: bool = False) -> None:
        """Open (creating) and lock the journal at `path`; JournalLocked if someone holds it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        self._lock_fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(self._lock_fd)
            raise JournalLocked(
                f"another `supervisor serve` with this hostname and these queues runs on this "
                f"home (it holds {path.with_suffix('.lock')}); give each worker its own "
                "--hostname or queues"
            ) from None
        path.touch(mode=0o600, exist_ok=True)
        path.chmod(0o600)
        self.path = path
        self._mutex = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        # WAL + synchronous=NORMAL: a committed row survives the process being killed (the OS
        # has the pages); only a power cut may lose the last commits, which is acceptable here.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)

    @classmethod
    def orphans(cls, home: Path, *, mine: Path) -> Iterator[Journal]:
        """The journals of workers that are gone (nobody holds their lock), locked for us."""
        for path in sorted((home / JOURNAL_DIR).glob(f"*{SUFFIX}")):
            if path == mine:
                continue
            try:
                yield cls(path)
            except JournalLocked:
                continue  # a live worker's

    def close_orphan(self, *, stale_s: float = 60.0) -> None:
        """Close an orphan journal; delete it when it is empty and untouched for `stale_s`.

        The wait keeps us from deleting the journal of a worker that is starting right now (it
        has created its lock file but not locked it yet).
        """
        stale = len(self) == 0 and time.time() - self.path.stat().st_mtime > stale_s
        if stale:
            for leftover in (Path(f"{self.path}{x}") for x in ("", "-wal", "-shm")):
                leftover.unlink(missing_ok=True)
            self.path.with_suffix(".lock").unlink(missing_ok=True)
        self.close()

    def close(self) -> None:
        with self._mutex:
            self._db.close()
        os.close(self._lock_fd)  # releases the flock

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the life of one TI --------------------------------------------------------------------

    def started(
        self,
        *,
        ti_id: str,
        celery_id: str,
        token: str,
        should_retry: bool,
        ti: dict[str, Any],
        log_path: str,
        runtime_pid: int | None,
        runtime_started: float | None,
    ) -> None:
        """/run succeeded: from now on Airflow thinks this worker runs the TI."""
        self._write(
            "INSERT OR REPLACE INTO tis (ti_id, celery_id, phase, token, should_retry, ti_json,"
            " log_path, runtime_pid, runtime_started, state_json, supervisor_pid, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)",
            (
                ti_id, celery_id, RUNNING, token, int(should_retry), json.dumps(ti), log_path,
                runtime_pid, runtime_started, os.getpid(), time.time(),
            ),
        )  # fmt: skip

    def token_refreshed(self, ti_id: str, token: str) -> None:
        self._write(
            "UPDATE tis SET token = ?, updated_at = ? WHERE ti_id = ?", (token, time.time(), ti_id)
        )

    def reporting(self, ti_id: str, state: dict[str, Any]) -> None:
        """The final state is decided; written before it is sent, so a crash cannot lose it."""
        self._write(
            "UPDATE tis SET phase = ?, state_json = ?, updated_at = ? WHERE ti_id = ?",
            (REPORTING, json.dumps(state), time.time(), ti_id),
        )

    def reported(self, ti_id: str) -> None:
        """Airflow has the final state (or refused it for good); the Celery result is owed."""
        self._write(
            "UPDATE tis SET phase = ?, token = '', updated_at = ? WHERE ti_id = ?",
            (REPORTED, time.time(), ti_id),
        )

    def forget(self, ti_id: str) -> None:
        """Nothing is owed any more: the Celery result is written (or was never due)."""
        self._write("DELETE FROM tis WHERE ti_id = ?", (ti_id,))

    def result_written(self, celery_id: str) -> None:
        """Celery stored the result of `celery_id`: forget its TI if Airflow has the state.

        A TI still running or reporting keeps its row: the message was a duplicate delivery.
        """
        self._write("DELETE FROM tis WHERE celery_id = ? AND phase = ?", (celery_id, REPORTED))

    # -- reading -------------------------------------------------------------------------------

    def entries(self) -> list[Entry]:
        """Every row, oldest first."""
        with self._mutex:
            rows = self._db.execute(
                "SELECT ti_id, celery_id, phase, token, should_retry, ti_json, log_path,"
                " runtime_pid, runtime_started, state_json, supervisor_pid"
                " FROM tis ORDER BY updated_at"
            ).fetchall()
        return [
            Entry(
                ti_id=row[0],
                celery_id=row[1],
                phase=row[2],
                token=row[3],
                should_retry=bool(row[4]),
                ti=json.loads(row[5]),
                log_path=row[6],
                runtime_pid=row[7],
                runtime_started=row[8],
                state=json.loads(row[9]) if row[9] else None,
                supervisor_pid=row[10],
            )
            for row in rows
        ]

    def phases(self) -> dict[str, int]:
        """How many rows are in each phase (all three present, zero when empty)."""
        with self._mutex:
            rows = self._db.execute("SELECT phase, COUNT(*) FROM tis GROUP BY phase").fetchall()
        return {RUNNING: 0, REPORTING: 0, REPORTED: 0} | {phase: n for phase, n in rows}

    def __len__(self) -> int:
        with self._mutex:
            (count,) = self._db.execute("SELECT COUNT(*) FROM tis").fetchone()
        return int(count)

    def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        with self._mutex:
            self._db.execute(sql, params)
