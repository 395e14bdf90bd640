"""`supervisor bundle test`: run one task of an installed bundle in its real runtime, no Airflow.

The runtime is started from the bundle's venv exactly as `serve` starts it; only the host side is
an in-memory `OfflineHost`. The outcome is reduced to the Airflow state the worker would report,
deciding retries as Airflow does (`try_number <= max_tries` means up_for_retry).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from supervisor.errors import BundleNotFound, RuntimeLost
from supervisor.offline import OfflineHost
from supervisor.plugin.messages import (
    Deferred,
    ErrorInfo,
    Failed,
    Outcome,
    Rescheduled,
    Skipped,
    Succeeded,
    TaskStart,
)
from supervisor.plugin.runtime import start_runtime
from supervisor.store import InstalledBundle


@dataclass(frozen=True)
class TaskTestResult:
    """How one offline task run ended, in Airflow's words."""

    #: success, failed, up_for_retry, skipped, up_for_reschedule or deferred.
    state: str
    return_value: Any = None
    error: dict[str, str] | None = None
    #: Outcome details that only some states have (skip reason, reschedule date, trigger).
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"state": self.state, "return_value": self.return_value}
        if self.error is not None:
            data["error"] = self.error
        return {**data, **self.details}


def make_start(
    bundle: InstalledBundle, dag_id: str, task_id: str, *, try_number: int, retries: int
) -> TaskStart:
    """A TaskStart for a manual run: fresh ti_id, run_id `manual__<now>`.

    Raises:
        BundleNotFound: the bundle has no such task; the message lists its tasks.
    """
    if bundle.description.find_task(dag_id, task_id) is None:
        tasks = ", ".join(f"{t.dag_id}/{t.task_id}" for t in bundle.description.tasks)
        raise BundleNotFound(
            f"bundle {bundle.label} has no task {dag_id}/{task_id}; its tasks: {tasks or 'none'}",
            bundle=bundle.label,
        )
    now = datetime.now(UTC)
    run_id = f"manual__{now.isoformat()}"
    return TaskStart(
        ti_id=str(uuid.uuid4()),
        dag_id=dag_id,
        task_id=task_id,
        run_id=run_id,
        try_number=try_number,
        max_tries=retries,
        dag_run={"dag_id": dag_id, "run_id": run_id, "logical_date": now.isoformat(),
                 "run_type": "manual", "conf": {}},
    )


def run_task(bundle: InstalledBundle, start: TaskStart, host: OfflineHost) -> TaskTestResult:
    """Start the bundle's runtime, run `start` against `host`, stop the runtime.

    A runtime that dies mid-task gives state "failed" with the reason, as the worker reports it.

    Raises:
        RuntimeStartError: the runtime did not come up.
    """
    with start_runtime(bundle.runtime_spec()) as runtime:
        try:
            outcome = runtime.execute(start, host)
        except RuntimeLost as exc:
            return TaskTestResult("failed", error={"type": "RuntimeLost", "message": str(exc)})
    return to_result(outcome, try_number=start.try_number, max_tries=start.max_tries)


def to_result(outcome: Outcome, *, try_number: int, max_tries: int) -> TaskTestResult:
    """The Airflow state an outcome leads to."""
    match outcome:
        case Succeeded(return_value_json=value):
            return TaskTestResult("success", json.loads(value) if value else None)
        case Failed(retryable=retryable, error=error):
            retry = retryable and try_number <= max_tries
            return TaskTestResult("up_for_retry" if retry else "failed", error=_error(error))
        case Skipped(reason=reason):
            return TaskTestResult("skipped", details={"reason": reason})
        case Rescheduled(reschedule_date=when):
            details = {"reschedule_date": when.isoformat()}
            return TaskTestResult("up_for_reschedule", details=details)
        case Deferred():
            return TaskTestResult("deferred", details={"trigger": _trigger(outcome)})
    raise TypeError(f"unknown outcome {outcome!r}")


def _error(error: ErrorInfo | None) -> dict[str, str]:
    if error is None:
        return {"type": "", "message": "task failed without error details"}
    return {"type": error.type, "message": error.message, "traceback": error.traceback}


def _trigger(outcome: Deferred) -> dict[str, Any]:
    return {
        "classpath": outcome.trigger_classpath,
        "kwargs": outcome.trigger_kwargs,
        "next_method": outcome.next_method,
        "timeout_s": outcome.timeout_s,
    }
