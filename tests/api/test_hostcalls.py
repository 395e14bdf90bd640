"""ApiHost: each HostCall kind over the fake Execution API, defaults, errors, secrets, logs."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from supervisor.api.client import ExecutionApiClient
from supervisor.hostcalls import ApiHost
from supervisor.plugin.messages import HostCallError, LogRecord
from supervisor.workload import Workload
from tests.api.conftest import WORKLOAD_TOKEN, FakeExecutionApi

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def records() -> list[LogRecord]:
    return []


@pytest.fixture
def masked() -> list[str]:
    return []


def make_host(
    client: ExecutionApiClient,
    workload: Workload,
    records: list[LogRecord],
    masked: list[str],
    **ti_changes: Any,
) -> ApiHost:
    ti = replace(workload.ti, **ti_changes)
    api = client.for_task(ti.id, WORKLOAD_TOKEN)
    api.run(hostname="vm", unixname="root", pid=1, start_date=NOW)
    return ApiHost(api, ti, log_sink=records.append, on_secret=masked.append)


@pytest.fixture
def host(
    client: ExecutionApiClient, workload: Workload, records: list[LogRecord], masked: list[str]
) -> ApiHost:
    return make_host(client, workload, records, masked)


def call_error(host: ApiHost, kind: str, args: dict[str, Any]) -> HostCallError:
    with pytest.raises(HostCallError) as caught:
        host.call(kind, args)
    return caught.value


def test_variables(host: ApiHost, fake: FakeExecutionApi) -> None:
    assert host.call("set_variable", {"key": "k", "value": "v", "description": ""}) is None
    assert fake.seen[-1].body == {"val": "v", "description": None}
    assert host.call("get_variable", {"key": "k"}) == "v"
    assert host.call("delete_variable", {"key": "k"}) is None
    error = call_error(host, "get_variable", {"key": "k"})
    assert error.kind == "not_found"
    assert "Variable with key 'k' not found" in error.message


def test_connection_and_its_password_is_a_secret(
    host: ApiHost, fake: FakeExecutionApi, masked: list[str]
) -> None:
    fake.connections["db"] = {
        "conn_id": "db", "conn_type": "postgres", "host": "h", "schema": "s",
        "login": "u", "password": "pw", "port": 5432, "extra": None,
    }  # fmt: skip
    assert host.call("get_connection", {"conn_id": "db"}) == fake.connections["db"]
    assert host.secrets == {"pw"}
    assert masked == ["pw"]
    assert call_error(host, "get_connection", {"conn_id": "nope"}).kind == "not_found"


def test_mask_secret(host: ApiHost, masked: list[str]) -> None:
    host.call("mask_secret", {"value": "hunter2"})
    host.call("mask_secret", {"value": "hunter2"})
    host.call("mask_secret", {"value": ""})
    assert host.secrets == {"hunter2"}
    assert masked == ["hunter2"]


def test_set_xcom_always_for_the_own_ti(host: ApiHost, fake: FakeExecutionApi) -> None:
    ti = host.ti
    args = {"key": "return_value", "value_json": '{"rows": 42}', "mapped_length": -1}
    host.call("set_xcom", {**args, "dag_id": "other", "task_id": "other"})  # extras ignored
    assert fake.xcoms == {(ti.dag_id, ti.run_id, ti.task_id, "return_value", -1): {"rows": 42}}
    assert fake.seen[-1].params == {"map_index": "-1"}
    host.call("set_xcom", {"key": "k", "value_json": "[1, 2]", "mapped_length": 2})
    assert fake.seen[-1].params == {"map_index": "-1", "mapped_length": "2"}
    host.call("delete_xcom", {"key": "k"})
    assert (ti.dag_id, ti.run_id, ti.task_id, "k", -1) not in fake.xcoms


def test_set_xcom_refuses_invalid_json(host: ApiHost, fake: FakeExecutionApi) -> None:
    before = len(fake.seen)
    for bad in ("{oops", "NaN", "[Infinity]", ""):
        error = call_error(host, "set_xcom", {"key": "k", "value_json": bad, "mapped_length": -1})
        assert error.kind == "invalid"
    assert len(fake.seen) == before


def test_get_xcom_defaults_to_the_own_ti(host: ApiHost, fake: FakeExecutionApi) -> None:
    ti = host.ti
    fake.xcoms[(ti.dag_id, ti.run_id, ti.task_id, "k", -1)] = "mine"
    args = {"key": "k", "task_id": "", "dag_id": "", "run_id": "", "map_index": -1}
    assert host.call("get_xcom", {**args, "include_prior_dates": False}) == "mine"
    assert fake.seen[-1].path == f"xcoms/{ti.dag_id}/{ti.run_id}/{ti.task_id}/k"


def test_get_xcom_of_another_task(host: ApiHost, fake: FakeExecutionApi) -> None:
    ti = host.ti
    fake.xcoms[(ti.dag_id, ti.run_id, "upstream", "return_value", -1)] = [1]
    args = {"key": "return_value", "task_id": "upstream", "map_index": -1}
    assert host.call("get_xcom", {**args, "include_prior_dates": True}) == [1]
    assert fake.seen[-1].params == {"map_index": "-1", "include_prior_dates": "true"}
    error = call_error(host, "get_xcom", {**args, "task_id": "missing"})
    assert error.kind == "not_found"


def test_mapped_ti_reads_and_writes_its_own_map_index(
    client: ExecutionApiClient,
    workload: Workload,
    fake: FakeExecutionApi,
    records: list[LogRecord],
    masked: list[str],
) -> None:
    host = make_host(client, workload, records, masked, map_index=3)
    ti = host.ti
    host.call("set_xcom", {"key": "k", "value_json": "1", "mapped_length": -1})
    assert (ti.dag_id, ti.run_id, ti.task_id, "k", 3) in fake.xcoms
    assert host.call("get_xcom", {"key": "k", "map_index": -1}) == 1  # own task: own index
    fake.xcoms[(ti.dag_id, ti.run_id, "up", "k", -1)] = "unmapped"
    assert host.call("get_xcom", {"key": "k", "task_id": "up", "map_index": -1}) == "unmapped"
    fake.xcoms[(ti.dag_id, ti.run_id, "up", "k", 0)] = "zero"
    assert host.call("get_xcom", {"key": "k", "task_id": "up", "map_index": 0}) == "zero"
    host.call("delete_xcom", {"key": "k"})
    assert fake.seen[-1].params == {"map_index": "3"}


def test_unavailable_and_invalid(host: ApiHost, fake: FakeExecutionApi) -> None:
    fake.script("variable", *[httpx.Response(502) for _ in range(5)])
    assert call_error(host, "get_variable", {"key": "k"}).kind == "unavailable"
    fake.script("variable", httpx.Response(403, json={"detail": "Invalid auth token"}))
    error = call_error(host, "get_variable", {"key": "k"})
    assert (error.kind, "Invalid auth token" in error.message) == ("invalid", True)


def test_bad_calls_are_invalid(host: ApiHost) -> None:
    assert call_error(host, "launch_missiles", {}).kind == "invalid"
    assert call_error(host, "get_variable", {"key": ""}).kind == "invalid"
    assert call_error(host, "get_connection", {}).kind == "invalid"


def test_logs_go_to_the_sink(host: ApiHost, records: list[LogRecord]) -> None:
    record = LogRecord(timestamp=NOW, level="info", event="hello", logger="task")
    host.log(record)
    assert records == [record]
