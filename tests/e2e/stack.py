"""What the ``airflow_stack`` fixture hands to tests: the stack's settings and a REST client."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .airflow import AirflowClient


@dataclass(frozen=True)
class AirflowStack:
    env: dict[str, str]  # the stack's environment (AF_* and AIRFLOW__* variables)
    client: AirflowClient

    @property
    def api_url(self) -> str:
        return self.env["AF_API_URL"]

    @property
    def execution_api_url(self) -> str:
        return self.env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]

    @property
    def broker_url(self) -> str:
        return self.env["AF_BROKER_URL"]

    @property
    def result_backend(self) -> str:
        return self.env["AF_RESULT_BACKEND"]

    @property
    def airflow_home(self) -> Path:
        return Path(self.env["AIRFLOW_HOME"])

    @property
    def dags_folder(self) -> Path:
        return Path(self.env["AF_DAGS_FOLDER"])

    @property
    def logs_folder(self) -> Path:
        return Path(self.env["AIRFLOW__LOGGING__BASE_LOG_FOLDER"])
