"""Workload parsing: the real captured message, rejections, and properties over arbitrary input."""

from __future__ import annotations

import contextlib
import copy
import json
from typing import Any
from uuid import UUID

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor.errors import WorkloadError
from supervisor.workload import MAX_WORKLOAD_BYTES, parse_celery_args, parse_workload
from tests.api.conftest import load_fixture

TOKEN = "eyJhbGciOiJIUzUxMiJ9.eyJzdWIiOiJ4In0.c2VjcmV0LXNpZ25hdHVyZQ"


@pytest.fixture
def data(celery_message_args: tuple[Any, ...]) -> dict[str, Any]:
    """The captured workload as a dict, with a token we can look for in messages."""
    loaded = json.loads(celery_message_args[0])
    loaded["token"] = TOKEN
    return loaded


def rejected(payload: Any) -> str:
    text = payload if isinstance(payload, str | bytes) else json.dumps(payload)
    with pytest.raises(WorkloadError) as caught:
        parse_workload(text)
    message = str(caught.value)
    assert TOKEN not in message
    return message


# -- the real message ---------------------------------------------------------------------------


def test_parses_the_captured_celery_message(celery_message_args: tuple[Any, ...]) -> None:
    workload = parse_celery_args(celery_message_args, {})
    expected = load_fixture("celery-message.json")["decoded"]["workload"]
    ti = workload.ti
    assert ti.id == UUID(expected["ti"]["id"])
    assert (ti.dag_id, ti.task_id, ti.run_id) == (
        "bundles_demo",
        "external_step",
        "manual_capture_1",
    )
    assert (ti.try_number, ti.map_index, ti.queue) == (1, -1, "bundles")
    assert (ti.pool_slots, ti.priority_weight) == (1, 2)
    assert ti.dag_version_id == UUID("01a24283-131f-771c-b4f8-56eb4cae9731")
    assert ti.context_carrier is not None and "traceparent" in ti.context_carrier
    assert workload.token == expected["token"]
    assert (workload.bundle_info.name, workload.bundle_info.version) == ("dags-folder", None)
    assert workload.dag_rel_path == "bundles_demo.py"
    assert workload.log_path == (
        "dag_id=bundles_demo/run_id=manual_capture_1/task_id=external_step/attempt=1.log"
    )


def test_repr_and_str_hide_the_token(celery_message_args: tuple[Any, ...]) -> None:
    workload = parse_celery_args(celery_message_args, {})
    assert workload.token not in repr(workload)
    assert workload.token not in str(workload)
    assert "token=<hidden>" in repr(workload)


def test_accepts_bytes_and_the_input_keyword(celery_message_args: tuple[Any, ...]) -> None:
    text = celery_message_args[0]
    assert parse_workload(text.encode()).ti.task_id == "external_step"
    assert parse_celery_args((), {"input": text}).ti.task_id == "external_step"


def test_unknown_fields_are_ignored(data: dict[str, Any]) -> None:
    data["new_top_level"] = {"x": 1}
    data["ti"]["new_ti_field"] = [1, 2]
    data["bundle_info"]["extra"] = True
    assert parse_workload(json.dumps(data)).ti.task_id == "external_step"


def test_optional_ti_fields_default_as_in_airflow(data: dict[str, Any]) -> None:
    for name in ("map_index", "queue", "pool_slots", "priority_weight", "dag_version_id"):
        del data["ti"][name]
    del data["ti"]["context_carrier"]
    ti = parse_workload(json.dumps(data)).ti
    assert (ti.map_index, ti.queue, ti.dag_version_id, ti.context_carrier) == (
        -1, "default", None, None
    )  # fmt: skip


# -- rejections ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ExecuteCallback", "TestConnection", "RunTrigger", "Nope"])
def test_other_workload_types_are_refused_by_name(data: dict[str, Any], kind: str) -> None:
    data["type"] = kind
    message = rejected(data)
    assert repr(kind) in message
    assert "only 'ExecuteTask'" in message


def test_missing_type(data: dict[str, Any]) -> None:
    del data["type"]
    assert "no 'type' field" in rejected(data)


def test_type_that_is_not_a_string(data: dict[str, Any]) -> None:
    data["type"] = {"a": 1}
    assert "a JSON object" in rejected(data)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("{", "not valid JSON"),
        ("", "not valid JSON"),
        (b"\xff\xfe{}", "not valid UTF-8"),
        ("[1, 2]", "must be a JSON object, not a JSON array"),
        ("null", "not a JSON null"),
        ("1" * 5000, "number is too long"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ],
)
def test_malformed_text(payload: str | bytes, expected: str) -> None:
    assert expected in rejected(payload)


def test_oversize_refused_before_parsing() -> None:
    message = rejected(" " * (MAX_WORKLOAD_BYTES + 1))
    assert "over the 1048576 allowed" in message


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("ti", "id"), "not-a-uuid", "ti.id: Input should be a valid UUID"),
        (("ti", "try_number"), "1", "ti.try_number: Input should be a valid integer (got '1')"),
        (("ti", "map_index"), -2, "ti.map_index: Input should be greater than or equal to -1"),
        (("ti", "dag_id"), 5, "ti.dag_id: Input should be a valid string (got JSON 5)"),
        (("bundle_info", "version"), 3, "bundle_info.version: Input should be a valid string"),
        (("token",), 12, "token: Input should be a valid string"),
        (("ti",), [1], "ti: Input should be a valid dictionary"),
    ],
)
def test_wrong_types_name_the_field(
    data: dict[str, Any], path: tuple[str, ...], value: Any, expected: str
) -> None:
    target = data
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    assert expected in rejected(data)


def test_missing_fields_are_all_listed(data: dict[str, Any]) -> None:
    del data["ti"]["task_id"], data["dag_rel_path"], data["token"]
    message = rejected(data)
    for name in ("ti.task_id: Field required", "dag_rel_path: Field required", "token: Field"):
        assert name in message


def test_token_in_another_field_is_not_quoted(data: dict[str, Any]) -> None:
    data["ti"]["id"] = TOKEN
    data["type"] = TOKEN
    assert "<hidden" in rejected(data)
    data["type"] = "ExecuteTask"
    assert "<hidden" in rejected(data)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((), {}), (("a", "b"), {}), (("a",), {"x": 1}), ((), {"input": "a", "other": 2})],
)
def test_celery_args_must_be_one_string(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    with pytest.raises(WorkloadError, match="exactly one argument"):
        parse_celery_args(args, kwargs)


def test_celery_arg_of_the_wrong_type() -> None:
    with pytest.raises(WorkloadError, match="not dict"):
        parse_celery_args(({"token": TOKEN},), {})


# -- properties ---------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
tokens = st.from_regex(r"eyJ[A-Za-z0-9_-]{16,40}\.[A-Za-z0-9_-]{8,20}", fullmatch=True)
FIELD_PATHS = [
    ("token",), ("type",), ("dag_rel_path",), ("log_path",), ("bundle_info",),
    ("bundle_info", "name"), ("bundle_info", "version"), ("ti",), ("ti", "id"),
    ("ti", "task_id"), ("ti", "dag_id"), ("ti", "run_id"), ("ti", "try_number"),
    ("ti", "map_index"), ("ti", "queue"), ("ti", "pool_slots"), ("ti", "context_carrier"),
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_workload_error(payload: bytes) -> None:
    with contextlib.suppress(WorkloadError):
        parse_workload(payload)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_arbitrary_json_raises_only_workload_error(value: Any) -> None:
    with contextlib.suppress(WorkloadError):
        parse_workload(json.dumps(value))


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    token=tokens,
    edits=st.lists(
        st.tuples(
            st.sampled_from(FIELD_PATHS), st.one_of(st.just("<delete>"), json_values, tokens)
        ),
        max_size=3,
    ),
)
def test_mutated_workloads_never_leak_the_token(
    data: dict[str, Any], token: str, edits: list[tuple[tuple[str, ...], Any]]
) -> None:
    mutated = copy.deepcopy(data)
    mutated["token"] = token
    for path, value in edits:
        _edit(mutated, path, token if value == "<token>" else value)
    try:
        workload = parse_workload(json.dumps(mutated))
    except WorkloadError as exc:
        assert token not in str(exc)
        assert token not in repr(exc)
    else:  # the token may still show if an edit planted it in another field, as data
        planted = any(value == token for _, value in edits)
        assert planted or token not in repr(workload)


def _edit(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    target: Any = data
    for part in path[:-1]:
        if not isinstance(target, dict) or not isinstance(target.get(part), dict):
            return
        target = target[part]
    if value == "<delete>":
        target.pop(path[-1], None)
    else:
        target[path[-1]] = value
