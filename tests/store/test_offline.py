"""OfflineHost and connection URIs: what `bundle test` answers to a task's host calls."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from supervisor.offline import OfflineHost, parse_connection_uri
from supervisor.plugin.messages import HostCallError, LogRecord, TaskStart

START = TaskStart(ti_id="ti", dag_id="d", task_id="t", run_id="r")


def test_uri_parsed_like_airflow() -> None:
    conn = parse_connection_uri(
        "c", "postgresql://us%40er:p%2Fss@db.example.com:5433/my%20db?sslmode=require&x="
    )
    assert conn == {
        "conn_id": "c",
        "conn_type": "postgres",
        "host": "db.example.com",
        "schema": "my db",
        "login": "us@er",
        "password": "p/ss",
        "port": 5433,
        "extra": json.dumps({"sslmode": "require", "x": ""}),
    }


def test_uri_with_dashed_scheme_and_raw_extra() -> None:
    conn = parse_connection_uri("c", "google-cloud-platform://?__extra__=%7B%22a%22%3A+1%7D")
    assert conn["conn_type"] == "google_cloud_platform"
    assert conn["host"] is None and conn["port"] is None
    assert json.loads(conn["extra"]) == {"a": 1}


def test_uri_without_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="not a URI"):
        parse_connection_uri("c", "just-a-host")


def test_variables_round_trip_and_missing_is_not_found() -> None:
    host = OfflineHost(START, variables={"a": "1"})
    assert host.call("get_variable", {"key": "a"}) == "1"
    host.call("set_variable", {"key": "b", "value": "2", "description": ""})
    host.call("delete_variable", {"key": "a"})
    assert host.variables == {"b": "2"}
    with pytest.raises(HostCallError) as info:
        host.call("get_variable", {"key": "a"})
    assert info.value.kind == "not_found"


def test_xcom_push_pull_delete_and_seeded() -> None:
    host = OfflineHost(START)
    host.seed_xcom("up", "return_value", {"n": 1})
    args = {"task_id": "up", "dag_id": "", "run_id": "", "map_index": -1,
            "include_prior_dates": False}
    assert host.call("get_xcom", {**args, "key": "return_value"}) == {"n": 1}
    host.call("set_xcom", {"key": "k", "value_json": "[1, 2]", "mapped_length": -1})
    assert host.call("get_xcom", {**args, "task_id": "t", "key": "k"}) == [1, 2]
    assert host.pushed == {"k": [1, 2]}
    host.call("delete_xcom", {"key": "k"})
    with pytest.raises(HostCallError) as info:
        host.call("get_xcom", {**args, "task_id": "t", "key": "k"})
    assert info.value.kind == "not_found"


def test_connection_and_masking() -> None:
    conn = parse_connection_uri("c", "http://u:hunter2@h")
    host = OfflineHost(START, connections={"c": conn})
    assert host.call("get_connection", {"conn_id": "c"})["password"] == "hunter2"
    host.call("mask_secret", {"value": "tok3n"})
    assert host.mask("pw hunter2 and tok3n") == "pw *** and ***"
    with pytest.raises(HostCallError) as info:
        host.call("get_connection", {"conn_id": "other"})
    assert info.value.kind == "not_found"


def test_unknown_call_kind_is_invalid_and_logs_are_collected() -> None:
    seen: list[LogRecord] = []
    host = OfflineHost(START, on_log=seen.append)
    with pytest.raises(HostCallError) as info:
        host.call("launch_rockets", {})
    assert info.value.kind == "invalid"
    record = LogRecord(timestamp=datetime.now(UTC), level="info", event="e", logger="task")
    host.log(record)
    assert host.logs == seen == [record]


def test_mask_value_walks_nested_structures() -> None:
    host = OfflineHost(START, connections={"c": parse_connection_uri("c", "http://u:pw%22x@h")})
    assert host.mask_value({"a": ['say pw"x', 3], "b": ("pw\"x",)}) == {
        "a": ["say ***", 3], "b": ["***"]
    }
