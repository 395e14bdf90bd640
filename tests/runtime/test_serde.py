"""bundle_runtime.serde writes what airflow.sdk.serde writes, and reads it back."""

from __future__ import annotations

import decimal
import json
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from bundle_runtime import serde

# Captured from apache-airflow-task-sdk 1.3.2: json.dumps(airflow.sdk.serde.serialize(value)).
AIRFLOW_DATETIME = (
    '{"__classname__": "datetime.datetime", "__version__": 2, "__data__": {"timestamp": '
    '1767268800.0, "tz": {"__classname__": "builtins.tuple", "__version__": 1, "__data__": '
    '["UTC", "pendulum.tz.timezone.FixedTimezone", 1, true]}}}'
)
AIRFLOW_MIXED = (
    '{"t": {"__classname__": "builtins.tuple", "__version__": 1, "__data__": [1, 2]}, '
    '"td": {"__classname__": "datetime.timedelta", "__version__": 2, "__data__": 5.0}}'
)


def test_datetime_is_encoded_exactly_as_airflow_does():
    moment = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert json.dumps(serde.serialize(moment)) == AIRFLOW_DATETIME


def test_tuple_and_timedelta_are_encoded_exactly_as_airflow_does():
    value = {"t": (1, 2), "td": timedelta(seconds=5)}
    assert json.dumps(serde.serialize(value)) == AIRFLOW_MIXED


def test_airflow_encodings_decode_to_python_values():
    assert serde.deserialize(json.loads(AIRFLOW_DATETIME)) == datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert serde.deserialize(json.loads(AIRFLOW_MIXED)) == {"t": (1, 2), "td": timedelta(seconds=5)}


@pytest.mark.parametrize(
    "value",
    [
        None,
        1,
        1.5,
        "s",
        [1, "a", None],
        {"a": {"b": [1, 2]}},
        (1, (2, 3)),
        {1, 2},
        frozenset({"x"}),
        date(2026, 5, 1),
        timedelta(hours=1, microseconds=5),
        datetime(2026, 5, 1, 10, 30, 1, 250000, tzinfo=timezone(timedelta(hours=2))),
    ],
)
def test_round_trip_through_json(value):
    assert serde.deserialize(json.loads(json.dumps(serde.serialize(value)))) == value


def test_plain_json_is_left_alone():
    value = {"answer": 42, "items": [1.5, "x", None, True]}
    assert serde.serialize(value) == value
    assert serde.deserialize(value) == value


def test_unknown_wrappers_pass_through_untouched():
    wrapped = {"__classname__": "pandas.DataFrame", "__version__": 1, "__data__": "..."}
    assert serde.deserialize(wrapped) == wrapped


def test_unsupported_types_name_the_type():
    with pytest.raises(TypeError, match=r"decimal\.Decimal"):
        serde.serialize(decimal.Decimal("1.5"))


def test_reserved_key_is_refused():
    with pytest.raises(TypeError, match="__classname__"):
        serde.serialize({"__classname__": "x"})
