"""Exceptions of the bundle SDK: what task code raises on purpose, and what the SDK raises.

Task control is not an error: a task raises these to choose its outcome, and the runtime turns
each into a Result kind (dramatiq's `Retry` and arq's `Retry` are likewise not logged as errors).
Everything else a task raises becomes a retryable `Failed` result with its traceback.

    TaskControl(Exception)          raised on purpose by task code; never logged as an error
    ├── SkipTask                    -> Skipped
    ├── FailTask                    -> Failed, no retry
    ├── RescheduleTask              -> Rescheduled (sensor "reschedule" mode)
    └── DeferTask                   -> Deferred to Airflow's triggerer
    TaskCancelled(BaseException)    raised into a running task when the supervisor cancels it
    HostCallFailed(RuntimeError)    the supervisor could not do what the task asked (kind, message)
    VariableNotFound(KeyError)      ctx.variables.get without a default, key missing
    ConnectionNotFound(KeyError)    ctx.connections.get, conn_id missing
    BundleDefinitionError(ValueError)  misuse of Bundle / @bundle.task (duplicates, bad ids)
    BundleLoadError(RuntimeError)   a bundle spec that names nothing loadable
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any


class TaskControl(Exception):
    """Base of the exceptions a task raises on purpose to pick its outcome."""


class SkipTask(TaskControl):
    """End the task as skipped (Airflow's AirflowSkipException)."""

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason


class FailTask(TaskControl):
    """Fail the task without using its remaining retries (Airflow's AirflowFailException)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RescheduleTask(TaskControl):
    """Give the worker slot back and run again later (a sensor in reschedule mode).

    `reschedule_date` is an absolute time (naive values are taken as UTC) or a delay from now.
    """

    def __init__(self, reschedule_date: datetime | timedelta) -> None:
        if not isinstance(reschedule_date, datetime | timedelta):
            got = type(reschedule_date).__name__
            raise TypeError(f"RescheduleTask needs a datetime or timedelta, got {got}")
        super().__init__(reschedule_date)
        self.reschedule_date = reschedule_date


class DeferTask(TaskControl):
    """Hand the task to Airflow's triggerer; it resumes by calling `method_name` with `kwargs`.

    The task function is called again on resume with `ctx.resume` set to
    `Resume(method=method_name, kwargs=<kwargs plus the trigger event>)`. `trigger_kwargs` must be
    JSON-able; datetime and timedelta values are encoded in Airflow's serialization format.
    """

    def __init__(
        self,
        trigger_classpath: str,
        trigger_kwargs: dict[str, Any],
        *,
        method_name: str = "execute_complete",
        kwargs: dict[str, Any] | None = None,
        timeout: timedelta | float | None = None,
    ) -> None:
        if not trigger_classpath or not isinstance(trigger_classpath, str):
            raise ValueError(f"DeferTask needs a trigger class path, got {trigger_classpath!r}")
        super().__init__(trigger_classpath)
        self.trigger_classpath = trigger_classpath
        self.trigger_kwargs = dict(trigger_kwargs)
        self.method_name = method_name
        self.kwargs = dict(kwargs or {})
        self.timeout = timeout


class TaskCancelled(BaseException):
    """Raised inside a running task when the supervisor cancels it (timeout, drain, lost TI).

    A BaseException, like asyncio.CancelledError, so that `except Exception:` in task code does
    not swallow it; clean up in `finally` and let it propagate.
    """


class HostCallFailed(RuntimeError):
    """The supervisor could not do what the task asked through the context.

    `kind` is "invalid" (the call was malformed or not allowed for this task instance),
    "unavailable" (Airflow unreachable, or the supervisor's stream is gone) or "not_found" where
    the accessor has no better error. The task may retry.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class _NotFound(KeyError):
    """A KeyError whose str() is the message, not its repr."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message

    def __str__(self) -> str:
        return self.message


class VariableNotFound(_NotFound):
    """The Airflow Variable does not exist and no default was given."""


class ConnectionNotFound(_NotFound):
    """The Airflow Connection does not exist."""


class BundleDefinitionError(ValueError):
    """Bundle or @bundle.task used wrongly: a duplicate (dag_id, task_id), an empty id, ..."""


class BundleLoadError(RuntimeError):
    """A bundle spec (entry-point name or `module:attr`) that names nothing loadable."""
