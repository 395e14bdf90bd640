"""Airflow's "serde" JSON encoding for the few non-JSON types that cross into Airflow.

Airflow 3 stores XCom values, deferred `trigger_kwargs` and `next_kwargs` (Execution API
2026-06-30) as JSON in which non-JSON values are wrapped as
`{"__classname__": ..., "__version__": ..., "__data__": ...}` (airflow.sdk.serde). Python tasks
and the triggerer decode those wrappers, so what a bundle sends must use them, and what Python
tasks wrote must be decoded before bundle code sees it. This module covers tuple, set, frozenset,
datetime, date and timedelta, the types that commonly cross; anything else that json cannot encode
raises TypeError naming the type. Unknown wrappers are passed through as dicts, untouched.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

CLASSNAME = "__classname__"
VERSION = "__version__"
DATA = "__data__"

#: How Airflow encodes the UTC zone inside a datetime (serializers/timezone.py, as a tuple).
_UTC_TZ = {
    CLASSNAME: "builtins.tuple",
    VERSION: 1,
    DATA: ["UTC", "pendulum.tz.timezone.FixedTimezone", 1, True],
}
_COLLECTIONS: dict[type, str] = {
    tuple: "builtins.tuple",
    set: "builtins.set",
    frozenset: "builtins.frozenset",
}
_DATETIMES = {"datetime.datetime", "pendulum.datetime.DateTime"}
_DATES = {"datetime.date", "pendulum.date.Date"}


def _wrap(classname: str, version: int, data: Any) -> dict[str, Any]:
    return {CLASSNAME: classname, VERSION: version, DATA: data}


def serialize(value: Any) -> Any:  # noqa: PLR0911 - one return per type
    """A JSON-able copy of `value`, with serde wrappers where plain JSON would lose the type."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list):
        return [serialize(v) for v in value]
    if isinstance(value, dict):
        if CLASSNAME in value:
            raise TypeError(f"a dict key {CLASSNAME!r} is reserved by Airflow's serialization")
        return {str(k): serialize(v) for k, v in value.items()}
    for kind, classname in _COLLECTIONS.items():
        if isinstance(value, kind):
            return _wrap(classname, 1, [serialize(v) for v in value])
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return _wrap("datetime.datetime", 2, {"timestamp": aware.timestamp(), "tz": _UTC_TZ})
    if isinstance(value, date):
        return _wrap("datetime.date", 2, value.isoformat())
    if isinstance(value, timedelta):
        return _wrap("datetime.timedelta", 2, value.total_seconds())
    raise TypeError(
        f"a value of type {type(value).__module__}.{type(value).__qualname__} "
        "cannot be sent to Airflow (use JSON types, tuple, set, datetime, date, timedelta)"
    )


def deserialize(value: Any) -> Any:  # noqa: PLR0911 - one return per type
    """Undo `serialize` (and Airflow's own encoding of the same types); other values unchanged."""
    if isinstance(value, list):
        return [deserialize(v) for v in value]
    if not isinstance(value, dict):
        return value
    if CLASSNAME not in value or DATA not in value:
        return {k: deserialize(v) for k, v in value.items()}
    classname, data = value[CLASSNAME], value[DATA]
    if classname == "builtins.tuple":
        return tuple(deserialize(v) for v in data)
    if classname == "builtins.set":
        return {deserialize(v) for v in data}
    if classname == "builtins.frozenset":
        return frozenset(deserialize(v) for v in data)
    if classname in _DATETIMES and isinstance(data, dict) and "timestamp" in data:
        return datetime.fromtimestamp(data["timestamp"], tz=UTC)
    if classname in _DATES and isinstance(data, str):
        return date.fromisoformat(data)
    if classname == "datetime.timedelta" and isinstance(data, int | float):
        return timedelta(seconds=data)
    return value
