"""Execution API errors are counted by route template and status, never by TI id or key."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from supervisor.api.client import ExecutionApiClient
from supervisor.errors import ApiUnavailable, ExecutionApiError, TaskInstanceGone
from supervisor.metrics import Metrics
from tests.api.conftest import BASE_URL, TI_ID, WORKLOAD_TOKEN, FakeExecutionApi

ERRORS = "supervisor_api_errors_total"


def _client(fake: FakeExecutionApi, metrics: Metrics) -> ExecutionApiClient:
    return ExecutionApiClient(
        BASE_URL, transport=fake.transport(), sleep=lambda _s: None, retries=2, metrics=metrics
    )


def _started(client: ExecutionApiClient):  # type: ignore[no-untyped-def]
    api = client.for_task(TI_ID, WORKLOAD_TOKEN)
    api.run(hostname="h", unixname="u", pid=1, start_date=datetime.now(UTC))
    return api


def test_errors_count_by_route_template_and_status(fake: FakeExecutionApi) -> None:
    metrics = Metrics()
    with _client(fake, metrics) as client:
        api = _started(client)
        for key in ("missing-a", "missing-b"):
            with pytest.raises(ExecutionApiError):
                api.get_variable(key)
        fake.script("heartbeat", httpx.Response(410, json={"detail": "gone"}))
        with pytest.raises(TaskInstanceGone):
            api.heartbeat(hostname="h", pid=1)
        api.set_variable("fine", "1")  # a success counts nothing

    sample = metrics.registry.get_sample_value
    assert sample(ERRORS, {"endpoint": "GET variables/{key}", "status": "404"}) == 2
    heartbeat = {"endpoint": "PUT task-instances/{ti_id}/heartbeat", "status": "410"}
    assert sample(ERRORS, heartbeat) == 1
    exposed = _exposition(metrics)
    assert TI_ID not in exposed and "missing-a" not in exposed


def test_unreachable_api_counts_as_unavailable(fake: FakeExecutionApi) -> None:
    metrics = Metrics()
    fake.script("run", httpx.ConnectError("refused"), httpx.ConnectError("refused"))
    with _client(fake, metrics) as client, pytest.raises(ApiUnavailable):
        _started(client)

    labels = {"endpoint": "PATCH task-instances/{ti_id}/run", "status": "unavailable"}
    assert metrics.registry.get_sample_value(ERRORS, labels) == 1


def _exposition(metrics: Metrics) -> str:
    from prometheus_client import generate_latest  # noqa: PLC0415

    return generate_latest(metrics.registry).decode()
