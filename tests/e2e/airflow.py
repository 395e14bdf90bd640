"""A small client for Airflow 3's public REST API (/api/v2), for the e2e tests.

Only what the tests need: unpause, trigger with conf, wait for a run, task instances, task logs,
variables, connections and XComs. The local stack runs SimpleAuthManager with all_admins, so no
token is sent. Every non-2xx answer raises AirflowAPIError with the method, path, status and body.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.polling import wait_until

FINISHED_RUN_STATES = frozenset({"success", "failed"})


class AirflowAPIError(Exception):
    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path} -> {status}: {body[:500]}")
        self.status = status
        self.body = body


class AirflowClient:
    def __init__(self, base_url: str, *, timeout: float = 15.0) -> None:
        """``base_url`` is the api-server root, e.g. http://127.0.0.1:8080."""
        self._http = httpx.Client(base_url=base_url.rstrip("/") + "/api/v2", timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AirflowClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------------------------- plumbing

    def _call(self, method: str, path: str, *, ok_missing: bool = False, **kwargs: Any) -> Any:
        """JSON body of the answer; None for 204, and for 404 when ``ok_missing``."""
        response = self._http.request(method, path, **kwargs)
        if ok_missing and response.status_code == 404:
            return None
        if response.is_error:
            raise AirflowAPIError(method, path, response.status_code, response.text)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def _create_or_replace(self, collection: str, key: str, body: dict[str, Any]) -> None:
        """POST to `/<collection>`; when `key` exists already (409), PATCH it instead."""
        try:
            self._call("POST", f"/{collection}", json=body)
        except AirflowAPIError as exc:
            if exc.status != 409:
                raise
            self._call("PATCH", f"/{collection}/{key}", json=body)

    # -------------------------------------------------------------------------------- DAGs and runs

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/monitor/health")

    def get_dag(self, dag_id: str) -> dict[str, Any] | None:
        return self._call("GET", f"/dags/{dag_id}", ok_missing=True)

    def tasks(self, dag_id: str) -> list[dict[str, Any]]:
        """The DAG's tasks as serialized: task_id, queue, operator_name, downstream_task_ids, ..."""
        return self._call("GET", f"/dags/{dag_id}/tasks")["tasks"]

    def unpause(self, dag_id: str) -> None:
        self._call("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(
        self, dag_id: str, *, conf: dict[str, Any] | None = None, run_id: str | None = None
    ) -> str:
        """Start a manual run now; returns its run_id (a unique ``e2e__...`` one by default)."""
        run_id = run_id or f"e2e__{dag_id}__{uuid.uuid4().hex[:12]}"
        body = {"dag_run_id": run_id, "logical_date": None, "conf": conf or {}}
        return self._call("POST", f"/dags/{dag_id}/dagRuns", json=body)["dag_run_id"]

    def get_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}")

    def wait_for_run(
        self, dag_id: str, run_id: str, *, timeout: float = 120.0, interval: float = 0.3
    ) -> dict[str, Any]:
        """Poll until the run is success or failed and return it; on timeout the error message lists
        the task instances' states, which is usually what explains it."""
        try:
            return wait_until(
                lambda: (
                    (run := self.get_run(dag_id, run_id))["state"] in FINISHED_RUN_STATES and run
                ),
                timeout=timeout,
                interval=interval,
                what=f"run {dag_id}/{run_id} finished",
            )
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; {self.describe_run(dag_id, run_id)}") from None

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """task_id, state, try_number, hostname, queue, pid, queued_when, start_date, end_date..."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances"
        return self._call("GET", path, params={"limit": 1000})["task_instances"]

    def task_instance(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        return self._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")

    def set_task_instance_state(self, dag_id: str, run_id: str, task_id: str, state: str) -> None:
        """What an operator does with "Mark as success/failed" in the UI."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
        self._call("PATCH", path, json={"new_state": state})

    def describe_run(self, dag_id: str, run_id: str) -> str:
        """One line for assertion messages: run state and each TI's state/try/hostname."""
        run = self.get_run(dag_id, run_id)
        tis = ", ".join(
            f"{ti['task_id']}={ti['state']}(try {ti['try_number']}, host {ti['hostname'] or '-'})"
            for ti in sorted(self.task_instances(dag_id, run_id), key=lambda ti: ti["task_id"])
        )
        return f"run {dag_id}/{run_id} state={run['state']}: {tis}"

    def task_log(
        self, dag_id: str, run_id: str, task_id: str, try_number: int = 1, *, map_index: int = -1
    ) -> list[dict[str, Any]]:
        """The task's log as structured events ({"event": ..., "level": ..., ...}).

        The endpoint only serves JSON or NDJSON (text/plain is refused). Plain-string lines are
        returned as {"event": line}.
        """
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
        body = self._call(
            "GET",
            path,
            params={"map_index": map_index, "full_content": True},
            headers={"Accept": "application/json"},
        )
        content = body["content"]
        return [line if isinstance(line, dict) else {"event": line} for line in content]

    # -------------------------------------------------------------------------------- XComs

    def xcom(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        key: str = "return_value",
        *,
        map_index: int = -1,
    ) -> Any:
        """The XCom's value (deserialized JSON); AirflowAPIError 404 when there is none."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        entry = self._call("GET", path, params={"map_index": map_index, "deserialize": True})
        return entry["value"]

    def xcom_stored(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        """What the metadata DB holds for the XCom (deserialize=false): a backend's reference."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        return self._call("GET", path, params={"deserialize": False})["value"]

    def xcom_entries(self, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]:
        """All XCom entries of a task instance (key, map_index, timestamp; no values)."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries"
        return self._call("GET", path, params={"limit": 1000})["xcom_entries"]

    # -------------------------------------------------------------------------------- variables

    def set_variable(self, key: str, value: str, *, description: str | None = None) -> None:
        """Create, or overwrite if it exists. Values are strings (json.dumps structured ones)."""
        body = {"key": key, "value": value, "description": description}
        self._create_or_replace("variables", key, body)

    def get_variable(self, key: str) -> str | None:
        variable = self._call("GET", f"/variables/{key}", ok_missing=True)
        return None if variable is None else variable["value"]

    def delete_variable(self, key: str) -> None:
        self._call("DELETE", f"/variables/{key}", ok_missing=True)

    # -------------------------------------------------------------------------------- connections

    def set_connection(self, conn_id: str, conn_type: str, **fields: Any) -> None:
        """Create, or overwrite if it exists. ``fields``: host, schema, login, password, port, and
        extra (a JSON string)."""
        body = {"connection_id": conn_id, "conn_type": conn_type, **fields}
        self._create_or_replace("connections", conn_id, body)

    def get_connection(self, conn_id: str) -> dict[str, Any] | None:
        """connection_id, conn_type, host, schema, login, password, port, extra; None if missing."""
        return self._call("GET", f"/connections/{conn_id}", ok_missing=True)

    def delete_connection(self, conn_id: str) -> None:
        self._call("DELETE", f"/connections/{conn_id}", ok_missing=True)
