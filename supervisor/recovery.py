"""Getting final states to Airflow no matter what: through outages, and across restarts.

`deliver` sends one final state and keeps at it while the Execution API is unreachable (the
client's own retries first, then waits that grow to `MAX_WAIT_S`), until Airflow has it, Airflow
refuses it for good, or the worker gives up at the end of its drain. A refusal is recorded in
the task log and dropped, never retried: 404/409/410 mean Airflow moved the TI on (a heartbeat
timeout during a long outage, an operator's mark), and other 4xx will not change on a resend.

`settle` runs when `serve` starts. For every row the previous process left in the journal it
makes sure that process's runtime is gone, reports the TI (failed or up_for_retry, by
`should_retry`, with the reason in its task log) or re-sends the state it had decided, and
writes the Celery result that Airflow's executor waits for. Without it a TI whose worker was
killed stays `running` until [scheduler] task_instance_heartbeat_timeout (300 s) and its
executor slot stays busy until the Celery visibility timeout.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import psutil

from supervisor.api.task import MAX_RETRY_REASON
from supervisor.errors import ApiUnavailable, ExecutionApiError, TaskInstanceGone
from supervisor.journal import REPORTED, RUNNING, Entry, Journal
from supervisor.logs.files import TaskLog, log_file_path

if TYPE_CHECKING:
    from pathlib import Path

    from supervisor.api.client import ExecutionApiClient
    from supervisor.api.task import TaskApi

log = logging.getLogger(__name__)

#: Longest wait between two attempts once the client's own retries are used up.
MAX_WAIT_S = 30.0
FIRST_WAIT_S = 1.0

T = TypeVar("T")

#: What `deliver` returns when Airflow has the state.
DELIVERED = "delivered"


class DeliveryPending(Exception):
    """The worker stopped before the API came back; the journal keeps the state for next start."""


class NotStarted(DeliveryPending):
    """The worker stopped before `/run` got through: the TI never started, give its message back."""


def keep_trying(
    call: Callable[[], T],
    *,
    give_up: threading.Event,
    on_wait: Callable[[ApiUnavailable, float], None] | None = None,
) -> T:
    """Call `call` until the Execution API answers it (what it answers is the caller's business).

    Raises:
        DeliveryPending: `give_up` was set while the API was still unreachable.
    """
    wait = FIRST_WAIT_S
    while True:
        try:
            return call()
        except ApiUnavailable as exc:
            if give_up.is_set():
                raise DeliveryPending(str(exc)) from exc
            if on_wait is not None:
                on_wait(exc, wait)
            if give_up.wait(wait):
                raise DeliveryPending(str(exc)) from exc
            wait = min(wait * 2, MAX_WAIT_S)


def deliver(
    api: TaskApi,
    state: dict[str, Any],
    *,
    give_up: threading.Event,
    on_wait: Callable[[ApiUnavailable, float], None] | None = None,
) -> str:
    """Send a final state until Airflow takes it; return DELIVERED or why Airflow refused it.

    Raises:
        DeliveryPending: `give_up` was set while the API was still unreachable.
    """
    try:
        keep_trying(lambda: api.send_state(state), give_up=give_up, on_wait=on_wait)
    except TaskInstanceGone as exc:
        return f"Airflow no longer takes a state for this TI ({exc})"
    except ExecutionApiError as exc:
        return f"Airflow refused the state ({exc})"
    return DELIVERED


def lost_state(entry: Entry, reason: str) -> dict[str, Any]:
    """The final state of a TI whose worker died under it: as a crashed task, retry if allowed."""
    now = datetime.now(UTC).isoformat()
    if entry.should_retry:
        return {"state": "up_for_retry", "end_date": now, "retry_reason": reason[:MAX_RETRY_REASON]}
    return {"state": "failed", "end_date": now}


class Settler:
    """Settles what dead workers left in their journals; see the module doc.

    That is the rows of our own journal (written by this worker's previous process) and every
    orphan journal on the home (a worker that died and came back with other queues, or not at
    all). Rows are settled in a background thread: an API outage at start must not stop the
    intake.
    """

    def __init__(
        self,
        journal: Journal,
        api: ExecutionApiClient,
        *,
        base_log_folder: Path,
        write_result: Callable[[str], None],
        give_up: threading.Event,
    ) -> None:
        self.journal = journal
        self.api = api
        self.base_log_folder = base_log_folder
        self.write_result = write_result
        self.give_up = give_up
        self.settled = threading.Event()  # every leftover row is settled
        self._thread: threading.Thread | None = None

    def start(self, home: Path) -> Settler:
        found = [(self.journal, self.journal.entries())]
        found += [
            (orphan, orphan.entries()) for orphan in Journal.orphans(home, mine=self.journal.path)
        ]
        count = sum(len(entries) for _, entries in found)
        if count:
            log.warning("journal.leftovers", extra={"count": count, "journals": len(found)})
        self._thread = threading.Thread(
            target=self._settle_all, args=(found,), name="journal-settle", daemon=True
        )
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _settle_all(self, found: list[tuple[Journal, list[Entry]]]) -> None:
        try:
            for journal, entries in found:
                for entry in entries:
                    try:
                        self.settle(journal, entry)
                    except DeliveryPending:
                        log.warning("journal.pending", extra={"ti_id": entry.ti_id})
                        return
                    except Exception:  # one bad row must not keep the others unsettled
                        log.exception("journal.settle_failed", extra={"ti_id": entry.ti_id})
            self.settled.set()
        finally:
            for journal, _ in found:
                if journal is not self.journal:
                    journal.close_orphan()

    def settle(self, journal: Journal, entry: Entry) -> None:
        """Report (or re-send) one TI's final state, then write its Celery result."""
        context = {"ti_id": entry.ti_id, "celery_id": entry.celery_id, **entry.ti}
        _stop_orphan(entry)
        if entry.phase != REPORTED:
            state = entry.state
            with self._task_log(entry) as task_log:
                if entry.phase == RUNNING or state is None:
                    reason = (
                        f"The worker running this task (supervisor pid {entry.supervisor_pid}) "
                        "stopped before it reported the task's outcome; settled when the worker "
                        "started again"
                    )
                    state = lost_state(entry, reason)
                    journal.reporting(entry.ti_id, state)
                    task_log.write(reason, level="error")
                else:
                    task_log.write(
                        f"Re-sending the final state {state['state']!r} that the worker "
                        "decided before it stopped",
                        level="warning",
                    )
                api = self.api.resume_task(entry.ti_id, entry.token)
                outcome = deliver(api, state, give_up=self.give_up)
                if outcome == DELIVERED:
                    task_log.write(
                        f"Task instance finished: {state['state']}", state=state["state"]
                    )
                else:
                    task_log.write(outcome, level="warning")
            journal.reported(entry.ti_id)
            log.info(
                "journal.settled", extra={**context, "state": state["state"], "outcome": outcome}
            )
        self.write_result(entry.celery_id)
        journal.forget(entry.ti_id)

    def _task_log(self, entry: Entry) -> TaskLog:
        bound = {
            key: entry.ti[key]
            for key in ("dag_id", "task_id", "run_id", "try_number", "map_index")
            if key in entry.ti
        }
        path = log_file_path(self.base_log_folder, entry.log_path)
        return TaskLog(path, bound={"ti_id": entry.ti_id, **bound})


def _stop_orphan(entry: Entry) -> None:
    """Kill the previous process's runtime if it outlived it (it should die with its parent)."""
    if entry.runtime_pid is None:
        return
    try:
        process = psutil.Process(entry.runtime_pid)
        started = entry.runtime_started
        if started is not None and abs(process.create_time() - started) > 0.01:
            return  # the pid now belongs to another process
        if process.status() == psutil.STATUS_ZOMBIE:
            return  # dead, only not yet reaped by its new parent
        log.warning("journal.orphan_runtime", extra={"ti_id": entry.ti_id, "pid": process.pid})
        if os.getpgid(process.pid) == process.pid:  # runtimes lead their own process group
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
    except (psutil.Error, ProcessLookupError):
        return
