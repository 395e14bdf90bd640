"""One task instance end to end: resolve, lease a runtime, /run, heartbeat, Execute, final state.

`TaskRunner.handle` is what the Celery intake calls for each ExecuteTask workload; it returns only
after the TI's final state reached the Execution API (or Airflow told us the TI is no longer ours),
so the Celery result written after it is never early. The phases, in order:

1. resolve the bundle version and lease a warm runtime for it (a failure is remembered, not
   raised: the TI must still be started so that the failure can be reported through the API);
2. `/run` with the runtime's pid (a duplicate delivery gets 409 previous_state=running, which the
   intake ignores), then a journal row (journal.py) so a restart can settle the TI; delete
   `xcom_keys_to_clear`;
3. heartbeat every `heartbeat_interval_s` in a named thread: 404/409/410 cancel the task and
   nothing is reported; `max_failed_heartbeats` refusals in a row cancel it too, an unreachable
   API only after [scheduler] task_instance_heartbeat_timeout;
4. Execute on the runtime, serving its HostCalls through the API (`hostcalls.ApiHost`), with a
   watchdog (limits.py) that cancels at the task's timeout, kills the runtime if the task ignores
   that, and kills it at once past the memory limit;
5. map the outcome to Airflow's final state: success (return_value pushed first), up_for_retry
   only when `should_retry`, failed, skipped, up_for_reschedule or deferred; journal it, then
   send it until Airflow has it (recovery.py), so an API outage or a restart loses nothing.

Two streams, never mixed: the task log (Airflow's file, what the UI shows, human sentences) and
the worker log (one INFO line as a TI starts and one as it ends, short events with context).
"""

from __future__ import annotations

import getpass
import logging
import os
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import psutil

from supervisor.control import RunningTasks
from supervisor.errors import (
    AlreadyRunning,
    ApiUnavailable,
    BundleError,
    ExecutionApiError,
    RuntimeLost,
    RuntimeStartError,
    TaskInstanceGone,
    XComStorageError,
)
from supervisor.hostcalls import ApiHost
from supervisor.limits import MB, Limits, TaskLimits
from supervisor.logs.files import TaskLog, log_file_path
from supervisor.metrics import NOT_REPORTED, Metrics
from supervisor.plugin.messages import (
    Deferred,
    ErrorInfo,
    Failed,
    LogRecord,
    Outcome,
    Rescheduled,
    Skipped,
    Succeeded,
    TaskStart,
)
from supervisor.recovery import DELIVERED, DeliveryPending, NotStarted, deliver, keep_trying
from supervisor.resolve import resolve
from supervisor.xcom.backend import DatabaseXCom, XComAddress

if TYPE_CHECKING:
    from supervisor.api.client import ExecutionApiClient
    from supervisor.api.models import TIRunContext
    from supervisor.api.task import TaskApi
    from supervisor.config import Settings
    from supervisor.drain import Drain
    from supervisor.journal import Journal
    from supervisor.logs.remote import RemoteLogs
    from supervisor.plugin.runtime import Runtime
    from supervisor.pool import RuntimePool
    from supervisor.store import BundleStore, InstalledBundle
    from supervisor.workload import Workload
    from supervisor.xcom.backend import XComBackend

log = logging.getLogger(__name__)

#: What taskrun returns when Airflow took the TI away: nothing was reported.
GONE = "gone"


@dataclass
class TaskRunner:
    """Runs TIs for the intake; shared by all Celery threads (it holds no per-TI state)."""

    settings: Settings
    api: ExecutionApiClient
    store: BundleStore
    pool: RuntimePool
    #: Where XCom values live ([core] xcom_backend); the runtime never knows.
    xcom: XComBackend = field(default_factory=DatabaseXCom)
    #: Uploads each finished TI's log when [logging] remote_logging is on.
    remote_logs: RemoteLogs | None = None
    metrics: Metrics = field(default_factory=Metrics)
    #: The TIs in flight, for `supervisor status`.
    running: RunningTasks = field(default_factory=RunningTasks)
    #: Durable record of what each TI still owes Airflow (journal.py); None: nothing survives us.
    journal: Journal | None = None
    #: The shutdown clock (drain.py); None: TIs are never cut short.
    drain: Drain | None = None
    #: Set when state deliveries must stop waiting for the API (the drain's end).
    give_up: threading.Event = field(default_factory=threading.Event)

    def handle(self, workload: Workload, celery_id: str) -> None:
        """Run one workload to its final state; raises AlreadyRunning for duplicates."""
        with self.running.track(workload.ti):
            try:
                TaskRun(self, workload, celery_id).run()
            except (AlreadyRunning, DeliveryPending):
                raise  # a duplicate; or a state the journal keeps for the next start
            except Exception:
                self.metrics.task_finished(self.running.bundle_of(workload.ti.id), NOT_REPORTED)
                raise

    def result_written(self, celery_id: str) -> None:
        """Celery stored the message's result: the TI owes nothing more (journal row goes)."""
        if self.journal is not None:
            self.journal.result_written(celery_id)


class TaskRun:
    """The state of one TI while it runs; used once, from one Celery thread."""

    def __init__(self, runner: TaskRunner, workload: Workload, celery_id: str) -> None:
        self.runner = runner
        self.settings = runner.settings
        self.workload = workload
        self.ti = workload.ti
        self.cancel = threading.Event()  # ask the task to stop
        self.cancel_reason = ""
        self.done = threading.Event()  # the Execute stream has ended
        self.gone = threading.Event()  # Airflow moved the TI on: report nothing
        self.hostname = self.settings.supervisor.hostname
        self.context: dict[str, Any] = {
            "ti_id": str(self.ti.id),
            "dag_id": self.ti.dag_id,
            "task_id": self.ti.task_id,
            "run_id": self.ti.run_id,
            "try_number": self.ti.try_number,
            "celery_id": celery_id,
        }
        self.task_log: TaskLog | None = None
        self.journal = runner.journal
        #: Milliseconds per phase (prepare, run, execute, report) for ti.finished.
        self.phase_ms: dict[str, float] = {}
        self._lap_at = time.monotonic()

    # -- phases --------------------------------------------------------------------------------

    def run(self) -> None:
        started = self._lap_at = time.monotonic()
        path = log_file_path(self.settings.logging.base_log_folder, self._log_path())
        with ExitStack() as stack:
            bound = {k: v for k, v in self.context.items() if k != "celery_id"}
            bound["map_index"] = self.ti.map_index  # what Airflow binds to every task log line
            self.task_log = stack.enter_context(TaskLog(path, bound=bound))
            bundle, runtime, problem = self._prepare(stack)
            self._lap("prepare")
            self.runner.running.update(self.ti.id, bundle=bundle and bundle.label, runtime=runtime)
            self.runner.metrics.queue_wait(time.monotonic() - started)
            pid = runtime.pid if runtime else os.getpid()
            api = self.runner.api.for_task(self.ti.id, self.workload.token, on_refresh=self._token)
            start = {"hostname": self.hostname, "unixname": getpass.getuser(), "pid": pid}
            start_date = datetime.now(UTC)
            try:  # through an outage too: until /run answers, nothing has started
                context = keep_trying(
                    lambda: api.run(**start, start_date=start_date),
                    give_up=self.runner.give_up,
                    on_wait=self._waiting("/run is tried"),
                )
            except DeliveryPending as exc:
                raise NotStarted(str(exc)) from exc
            self._journal_started(api, context, runtime)
            api.state_sender = lambda body: self._deliver(api, body)
            self._lap("run")
            log.info("ti.started", extra={**self.context, "bundle": bundle and bundle.label})
            self._clear_xcoms(api, context)
            if bundle is None or runtime is None:
                state = self._report_failure(api, context, problem or "no runtime")
            else:
                state = self._execute(api, context, bundle, runtime)
            if state == GONE and self.journal is not None:
                self.journal.reported(str(self.ti.id))  # nothing to report; the result is owed
        if self.runner.remote_logs is not None:  # queued: never delays or fails the TI
            self.runner.remote_logs.upload(
                path, self._log_path(), get_connection=api.get_connection, context=self.context
            )
        self._lap("report")
        duration_s = round(time.monotonic() - started, 3)
        log.info(
            "ti.finished",
            extra={**self.context, "state": state, "duration_s": duration_s, **self.phase_ms},
        )
        self.runner.metrics.task_finished(bundle and bundle.label, state)

    def _journal_started(
        self, api: TaskApi, context: TIRunContext, runtime: Runtime | None
    ) -> None:
        """Airflow now thinks we run this TI: record what a restart needs to settle it."""
        if self.journal is None:
            return
        self.journal.started(
            ti_id=str(self.ti.id),
            celery_id=self.context["celery_id"],
            token=api.execution_token or "",
            should_retry=context.should_retry,
            ti={k: v for k, v in self.context.items() if k not in ("ti_id", "celery_id")}
            | {"map_index": self.ti.map_index},
            log_path=self._log_path(),
            runtime_pid=runtime.pid if runtime else None,
            runtime_started=_create_time(runtime.pid) if runtime else None,
        )

    def _token(self, token: str) -> None:
        if self.journal is not None:
            self.journal.token_refreshed(str(self.ti.id), token)

    def _deliver(self, api: TaskApi, state: dict[str, Any]) -> None:
        """Journal the final state, then send it until Airflow has it (recovery.deliver).

        Raises DeliveryPending when the worker stops first: the journal keeps the state and the
        intake leaves the Celery result unwritten, for the next start to finish both.
        """
        ti_id = str(self.ti.id)
        if self.journal is not None:
            self.journal.reporting(ti_id, state)

        waiting = self._waiting(f"the final state {state['state']!r} is sent")
        outcome = deliver(api, state, give_up=self.runner.give_up, on_wait=waiting)
        if outcome != DELIVERED:
            self._note(f"Final state {state['state']!r} not recorded: {outcome}", level="warning")
            log.warning("ti.state_refused", extra={**self.context, "reason": outcome})
        if self.journal is not None:
            self.journal.reported(ti_id)

    def _waiting(self, what: str) -> Callable[[ApiUnavailable, float], None]:
        """What to say while the Execution API is unreachable and `what` waits for it."""

        def waiting(exc: ApiUnavailable, wait_s: float) -> None:
            self._note(
                f"Execution API unreachable; {what} again in {wait_s:g}s ({exc})", level="warning"
            )
            log.warning("ti.api_unreachable", extra={**self.context, "wait_s": wait_s})

        return waiting

    def _lap(self, phase: str) -> None:
        """End `phase` now; its duration goes into ti.finished as `<phase>_ms`."""
        now = time.monotonic()
        self.phase_ms[f"{phase}_ms"] = round((now - self._lap_at) * 1000, 1)
        self._lap_at = now

    def _log_path(self) -> str:
        """The workload's log_path, or Airflow's default template when it sent none."""
        if self.workload.log_path:
            return self.workload.log_path
        ti = self.ti
        mapped = f"map_index={ti.map_index}/" if ti.map_index >= 0 else ""
        return (
            f"dag_id={ti.dag_id}/run_id={ti.run_id}/task_id={ti.task_id}/{mapped}"
            f"attempt={ti.try_number}.log"
        )

    def _prepare(
        self, stack: ExitStack
    ) -> tuple[InstalledBundle | None, Runtime | None, str | None]:
        """Resolve the bundle and lease a runtime; a failure is returned as text, not raised."""
        try:
            bundle = resolve(self.workload, self.runner.store.list(), self.settings)
        except BundleError as exc:
            return None, None, str(exc)
        spec = bundle.runtime_spec(start_timeout_s=self.settings.supervisor.start_timeout_s)
        try:
            runtime = stack.enter_context(self.runner.pool.lease(spec))
        except RuntimeStartError as exc:
            return bundle, None, str(exc)
        return bundle, runtime, None

    def _clear_xcoms(self, api: TaskApi, context: TIRunContext) -> None:
        """Airflow leaves XComs of earlier tries for the worker to delete (reference §1.5.1)."""
        for key in context.xcom_keys_to_clear:
            self.runner.xcom.delete(api, self._own_xcom(key))

    def _own_xcom(self, key: str) -> XComAddress:
        ti = self.ti
        return XComAddress(ti.dag_id, ti.run_id, ti.task_id, key, ti.map_index)

    def _task_start(self, context: TIRunContext, timeout_s: float) -> TaskStart:
        next_kwargs = context.next_kwargs
        if isinstance(next_kwargs, str):
            raise ExecutionApiError(
                "next_kwargs arrived encrypted; this worker needs them as JSON "
                "(Execution API 2026-06-30 sends serde JSON unless the deployment encrypts them)"
            )
        return TaskStart(
            ti_id=str(self.ti.id),
            dag_id=self.ti.dag_id,
            task_id=self.ti.task_id,
            run_id=self.ti.run_id,
            try_number=self.ti.try_number,
            map_index=self.ti.map_index,
            queue=self.ti.queue or "",
            dag_run=context.dag_run,
            params=context.dag_run.get("conf") or {},
            max_tries=context.max_tries,
            timeout_s=timeout_s,
            task_reschedule_count=context.task_reschedule_count,
            next_method=context.next_method,
            next_kwargs=next_kwargs,
        )

    def _execute(
        self, api: TaskApi, context: TIRunContext, bundle: InstalledBundle, runtime: Runtime
    ) -> str:
        task = bundle.description.find_task(self.ti.dag_id, self.ti.task_id)
        timeout_s = (
            task.timeout_s if task else 0
        ) or self.settings.supervisor.default_task_timeout_s
        start = self._task_start(context, timeout_s or 0.0)
        resumed = f", resuming in {start.next_method}()" if start.next_method else ""
        self._note(
            f"Running in bundle {bundle.label} (runtime pid {runtime.pid}){resumed}",
            bundle=bundle.label,
            runtime_pid=runtime.pid,
        )
        host = ApiHost(
            api, self.ti, log_sink=self._task_line, on_secret=self._secret, xcom=self.runner.xcom
        )
        heartbeat = threading.Thread(
            target=self._heartbeat,
            args=(api, runtime.pid),
            name=f"heartbeat:{self.ti.id}",
            daemon=True,
        )
        heartbeat.start()
        watchdog = self._start_watchdog(runtime, timeout_s)
        drain = self.runner.drain
        drained = drain.watch(lambda why: self._cut_short(runtime, why)) if drain else nullcontext()
        try:
            with drained:
                outcome: Outcome = runtime.execute(start, host, cancel=self.cancel)
        except RuntimeLost as exc:
            outcome = watchdog.lost(exc)
        finally:
            self.done.set()  # stops the heartbeat
            heartbeat.join()
            watchdog.stop()
        outcome = watchdog.verdict(outcome)  # a limit it enforced is the reason
        self._lap("execute")
        if self.gone.is_set():
            self._note(f"Stopped without reporting a state: {self.cancel_reason}", level="warning")
            return GONE
        if self.cancel_reason:
            self._note(f"Task cancelled: {self.cancel_reason}", level="error")
        return self._report(api, context, outcome)

    # -- final state ---------------------------------------------------------------------------

    def _report(self, api: TaskApi, context: TIRunContext, outcome: Outcome) -> str:
        now = datetime.now(UTC)
        outcome = self._push_return_value(api, outcome)
        match outcome:
            case Succeeded():
                api.finish_success(end_date=now)
                return self._final("success")
            case Failed(retryable=retryable, error=error):
                reason = f"{error.type}: {error.message}" if error else "task failed"
                self._note(reason, level="error")
                if retryable and context.should_retry:
                    api.retry(end_date=now, retry_reason=reason)
                    return self._final("up_for_retry")
                api.finish("failed", end_date=now)
                return self._final("failed")
            case Skipped(reason=reason):
                api.finish("skipped", end_date=now)
                return self._final("skipped", reason=reason)
            case Rescheduled(reschedule_date=when):
                api.reschedule(reschedule_date=when, end_date=now)
                return self._final("up_for_reschedule", reschedule_date=when.isoformat())
            case Deferred() as deferred:
                api.defer(
                    classpath=deferred.trigger_classpath,
                    trigger_kwargs=deferred.trigger_kwargs,
                    next_method=deferred.next_method,
                    next_kwargs=deferred.next_kwargs,
                    trigger_timeout_s=deferred.timeout_s or None,
                )
                return self._final("deferred", trigger=deferred.trigger_classpath)
        raise AssertionError(f"unknown outcome {outcome!r}")

    def _push_return_value(self, api: TaskApi, outcome: Outcome) -> Outcome:
        """Push a success's return value; object storage failing fails the try, as in Airflow."""
        if not isinstance(outcome, Succeeded) or outcome.return_value_json is None:
            return outcome
        where, value = self._own_xcom("return_value"), outcome.return_value_json
        try:
            keep_trying(
                lambda: self.runner.xcom.set_json(api, where, value, mapped_length=None),
                give_up=self.runner.give_up,
                on_wait=self._waiting("the return value is pushed"),
            )
        except XComStorageError as exc:
            error = ErrorInfo(type="XComStorageError", message=str(exc))
            return Failed(retryable=True, error=error)
        return outcome

    def _report_failure(self, api: TaskApi, context: TIRunContext, problem: str) -> str:
        """The TI could not be run at all (unknown bundle, version or task; runtime won't start)."""
        self._note(problem, level="error")
        log.error("ti.not_runnable", extra={**self.context, "reason": problem.splitlines()[0]})
        now = datetime.now(UTC)
        if context.should_retry:
            api.retry(end_date=now, retry_reason=problem.splitlines()[0])
            return self._final("up_for_retry")
        api.finish("failed", end_date=now)
        return self._final("failed")

    def _final(self, state: str, **fields: object) -> str:
        self._note(f"Task instance finished: {state}", state=state, **fields)
        return state

    # -- background ----------------------------------------------------------------------------

    def _heartbeat(self, api: TaskApi, pid: int) -> None:
        """Heartbeat until the task ends; cancel it when Airflow says stop or keeps refusing.

        An unreachable API (network errors, 5xx) is an outage, not a refusal: the task keeps
        running until Airflow's own heartbeat timeout would have failed the TI anyway, so an
        outage shorter than that costs nothing. Other errors count towards
        [workers] max_failed_heartbeats in a row, as in Airflow's supervisor.
        """
        failures = 0
        limit = self.settings.workers.max_failed_heartbeats
        outage_limit_s = self.settings.scheduler.task_instance_heartbeat_timeout
        last_ok = time.monotonic()
        while not self.done.wait(self.settings.supervisor.heartbeat_interval_s):
            try:
                api.heartbeat(hostname=self.hostname, pid=pid)
                failures, last_ok = 0, time.monotonic()
            except TaskInstanceGone as exc:
                self.gone.set()
                self._stop(f"Airflow no longer expects this TI to run here ({exc})")
                return
            except ApiUnavailable as exc:
                silent_s = time.monotonic() - last_ok
                self._note(f"Heartbeat failed, Execution API unreachable: {exc}", level="warning")
                log.warning("ti.heartbeat_failed", extra={**self.context, "silent_s": silent_s})
                if silent_s >= outage_limit_s:
                    self._stop(f"no heartbeat reached Airflow for {silent_s:.0f}s")
            except ExecutionApiError as exc:
                failures += 1
                self._note(f"Heartbeat failed ({failures}/{limit}): {exc}", level="warning")
                log.warning("ti.heartbeat_failed", extra={**self.context, "failures": failures})
                if failures >= limit:
                    self._stop(f"{failures} heartbeats failed in a row")

    def _start_watchdog(self, runtime: Runtime, timeout_s: float | None) -> TaskLimits:
        """Enforce the task's timeout and the memory limit on its runtime (limits.py)."""
        own = self.settings.supervisor
        limits = Limits(
            timeout_s=timeout_s or 0.0,
            memory_limit_bytes=own.task_memory_limit_mb * MB,
            cancel_grace_s=own.cancel_grace_s,
        )
        return TaskLimits(
            runtime, limits, cancel=self._stop, note=self._note, context=self.context
        ).start()

    def _cut_short(self, runtime: Runtime, reason: str) -> None:
        """Cancel the task (drain over); stop its runtime if it ignores that for a grace."""
        self._stop(reason)
        grace_s = self.settings.supervisor.cancel_grace_s

        def escalate() -> None:
            if not self.done.wait(grace_s):
                self._note(
                    f"Stopping runtime pid {runtime.pid}: task ignored its cancel for {grace_s:g}s",
                    level="error",
                )
                runtime.stop(grace_s=0)

        threading.Thread(target=escalate, name=f"cut-short:{self.ti.id}", daemon=True).start()

    def _stop(self, reason: str) -> None:
        if not self.cancel_reason:
            self.cancel_reason = reason
        self.cancel.set()

    # -- task log ------------------------------------------------------------------------------

    def _task_line(self, record: LogRecord) -> None:
        """A log record from the task's runtime, in Airflow's format."""
        fields = dict(record.fields)
        if record.error:
            fields["error_detail"] = [
                {
                    "exc_type": record.error.type,
                    "exc_value": record.error.message,
                    "frames": [],
                    "traceback": record.error.traceback,
                }
            ]
        assert self.task_log is not None
        self.task_log.write(
            record.event,
            level=record.level,
            logger=record.logger,
            timestamp=record.timestamp,
            **fields,
        )

    def _secret(self, value: str) -> None:
        assert self.task_log is not None
        self.task_log.add_secret(value)

    def _note(self, message: str, *, level: str = "info", **fields: object) -> None:
        """A line of the supervisor's about this TI, in its task log (what the UI shows)."""
        if self.task_log is not None:
            self.task_log.write(message, level=level, logger="supervisor", **fields)


def _create_time(pid: int) -> float | None:
    """When `pid` started, so that a restart never mistakes a reused pid for our runtime."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None
