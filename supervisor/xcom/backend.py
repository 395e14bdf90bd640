"""The XCom backend interface and the default: values in Airflow's DB, through the API.

A backend is Airflow's `BaseXCom` seen from a worker: `set_json` is `serialize_value` plus the
`SetXCom` call, `get` the `GetXCom` call plus `deserialize_value`, `delete` `purge` plus the
`DeleteXCom` call. Values cross it as JSON (text in, parsed value out), already in Airflow's serde
form, which the runtime produces and decodes. Every call goes through the `TaskApi` of the TI it
acts for, so a backend holds no token and one instance serves every thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from supervisor.api.task import TaskApi

#: [core] xcom_backend values meaning "values in the metadata DB" (Airflow 3.3's default first).
DATABASE_BACKENDS = (
    "airflow.sdk.execution_time.xcom.BaseXCom",
    "airflow.sdk.bases.xcom.BaseXCom",
    "airflow.models.xcom.BaseXCom",
)
#: [core] xcom_backend of the common-io provider's object-storage backend.
OBJECT_STORAGE_BACKEND = "airflow.providers.common.io.xcom.backend.XComObjectStorageBackend"


@dataclass(frozen=True)
class XComAddress:
    """Which XCom: Airflow's (dag_id, run_id, task_id, key, map_index)."""

    dag_id: str
    run_id: str
    task_id: str
    key: str
    map_index: int = -1


class XComBackend(Protocol):
    """Stores and loads XCom values for TIs; shared by all task threads, so thread-safe."""

    def get(self, api: TaskApi, where: XComAddress, *, include_prior_dates: bool = False) -> Any:
        """The value as parsed JSON. Raises ExecutionApiError (404 when missing)."""
        ...

    def set_json(
        self, api: TaskApi, where: XComAddress, value_json: str, *, mapped_length: int | None
    ) -> None:
        """Store a value given as JSON text (serde form). Raises ExecutionApiError."""
        ...

    def delete(self, api: TaskApi, where: XComAddress) -> None:
        """Delete the XCom and whatever the backend kept for it elsewhere."""
        ...


class DatabaseXCom:
    """Values in Airflow's metadata DB, through the Execution API unchanged (Airflow's default)."""

    def get(self, api: TaskApi, where: XComAddress, *, include_prior_dates: bool = False) -> Any:
        return api.get_xcom(
            dag_id=where.dag_id,
            run_id=where.run_id,
            task_id=where.task_id,
            key=where.key,
            map_index=where.map_index,
            include_prior_dates=include_prior_dates,
        )

    def set_json(
        self, api: TaskApi, where: XComAddress, value_json: str, *, mapped_length: int | None
    ) -> None:
        api.set_xcom_json(
            dag_id=where.dag_id,
            run_id=where.run_id,
            task_id=where.task_id,
            key=where.key,
            value_json=value_json,
            map_index=where.map_index,
            mapped_length=mapped_length,
        )

    def delete(self, api: TaskApi, where: XComAddress) -> None:
        api.delete_xcom(
            dag_id=where.dag_id,
            run_id=where.run_id,
            task_id=where.task_id,
            key=where.key,
            map_index=where.map_index,
        )
