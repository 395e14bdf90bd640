"""Pydantic models of the Execution API replies we read (API version 2026-06-30).

Only fields the supervisor uses are declared; unknown fields are ignored so a newer server's
additions do not break us. Request bodies are built as plain dicts in `client.py`: the server's
request models ("*Payload") are strict, so we send exactly the documented fields and no model of
ours can add one by accident.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Reply(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class TIRunContext(_Reply):
    """What `PATCH /task-instances/{id}/run` returns: the TI's run context (reference §1.5.1)."""

    #: The DAG run as JSON (dag_id, run_id, logical_date, conf, ...); passed on to the runtime.
    dag_run: dict[str, Any]
    max_tries: int = 0
    #: The server's decision: a failure of this try becomes up_for_retry (else failed).
    should_retry: bool = False
    task_reschedule_count: int = 0
    #: XCom keys left by earlier tries; the worker must delete them before running.
    xcom_keys_to_clear: tuple[str, ...] = ()
    #: Set when resuming after a deferral; "__fail__" means the trigger failed or timed out.
    next_method: str | None = None
    #: Serde-encoded JSON object, or a Fernet-encrypted string.
    next_kwargs: dict[str, Any] | str | None = None
    #: The original start time, only when resuming.
    start_date: datetime | None = None


class Connection(_Reply):
    """`GET /connections/{conn_id}`; `extra` is a JSON string or None, as Airflow stores it."""

    conn_id: str
    conn_type: str
    host: str | None = None
    #: Airflow's field name is "schema", which pydantic reserves.
    schema_: str | None = Field(default=None, alias="schema")
    login: str | None = None
    password: str | None = None
    port: int | None = None
    extra: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The connection with Airflow's field names, as the runtime receives it."""
        return self.model_dump(by_alias=True)


class VariableReply(_Reply):
    """`GET /variables/{key}`: the raw string value (JSON variables are parsed by the caller)."""

    key: str
    value: str | None = None


class XComReply(_Reply):
    """`GET /xcoms/...`: the stored JSON value, unchanged."""

    key: str
    value: Any = None
