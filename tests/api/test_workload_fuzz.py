"""Bad input at the workload edge, property-based: whatever a Celery message carries, parsing ends
in a `Workload` that mirrors the input or a `WorkloadError` whose message is one non-empty line
without the token. Any other exception is a bug: it would escape `execute_workload` as a worker
crash with a traceback instead of a clear FAILURE.

tests/api/test_workload.py holds the example-based cases and properties over arbitrary bytes and
JSON; this file aims at what is near the real message (the Airflow 3.3.2 capture, mutated), at
the Celery call shape, sizes around the limit, deep nesting, broken UTF-8 and lone surrogates.
Together the properties here generate 1,400 cases (see `EXAMPLES`).
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any
from uuid import UUID

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from supervisor.errors import WorkloadError
from supervisor.workload import MAX_WORKLOAD_BYTES, Workload, parse_celery_args, parse_workload
from tests.api.conftest import load_fixture

#: Shaped like a JWT so that masking has something to find; signed by nobody.
TOKEN = "eyJhbGciOiJIUzUxMiJ9.eyJzdWIiOiJmdXp6In0.ZnV6ei1zaWduYXR1cmUtbm90LXJlYWw"
#: max_examples per property; the sum is what the module docstring promises.
EXAMPLES = {
    "celery_args": 200,
    "mutated": 350,
    "bytes": 300,
    "type": 100,
    "size": 100,
    "nesting": 100,
    "unicode": 250,
}
FIXTURE_OK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


def _real_workload() -> dict[str, Any]:
    """The captured ExecuteTask as a dict, its token swapped for ours (read once per module)."""
    envelope = json.loads(load_fixture("celery-message.json")["raw_envelope"])
    args, _kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
    data: dict[str, Any] = json.loads(args[0])
    data["token"] = TOKEN
    return data


REAL = _real_workload()
REAL_TEXT = json.dumps(REAL)


def outcome(parse: Any, *args: Any) -> Workload | WorkloadError:
    """Call `parse`; a WorkloadError is returned after checking its message, anything else
    propagates and fails the test."""
    try:
        return parse(*args)  # type: ignore[no-any-return]
    except WorkloadError as exc:
        message = str(exc)
        assert message.strip(), "an empty message"
        assert len(message.splitlines()) == 1 and "\n" not in message, message
        assert message.isprintable(), message
        for secret in (TOKEN, *TOKEN.split(".")):
            assert secret not in message, message
        assert len(message) < 10_000, "messages quote values shortened"
        return exc


def _mirrors(workload: Workload, data: dict[str, Any]) -> None:
    """An accepted workload says what the JSON said."""
    ti = data["ti"]
    assert workload.token == data["token"]
    assert (workload.ti.dag_id, workload.ti.task_id, workload.ti.run_id) == (
        ti["dag_id"], ti["task_id"], ti["run_id"]
    )  # fmt: skip
    assert workload.ti.id == UUID(ti["id"])
    assert workload.ti.try_number == ti["try_number"]
    assert workload.ti.map_index == ti.get("map_index", -1)
    assert workload.dag_rel_path == data["dag_rel_path"]
    assert workload.bundle_info.name == data["bundle_info"]["name"]
    assert workload.log_path == data.get("log_path")
    assert "token=<hidden>" in repr(workload)
    if workload.token == TOKEN:  # a short mutated token may well appear elsewhere, as data
        assert TOKEN not in repr(workload)


# -- strategies ---------------------------------------------------------------------------------

json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)  # fmt: skip
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=15,
)
#: Text that breaks things downstream: NUL, newlines, lone surrogates, huge, RTL and emoji.
nasty_text = st.one_of(
    st.text(max_size=30),
    st.text(alphabet=st.characters(codec=None, categories=None), max_size=30),
    st.sampled_from(["", "\0", "a\0b", "\n", "line\nbreak", "\u2028", "\ud800", "x\udfffy",
                     "\u202e", "😀" * 5, " ", "../../etc/passwd", "eyJfake.eyJfake"]),
    st.integers(min_value=1, max_value=200_000).map(lambda n: "x" * n),
)  # fmt: skip
FIELDS: list[tuple[str, ...]] = [
    ("type",), ("token",), ("dag_rel_path",), ("log_path",), ("bundle_info",),
    ("bundle_info", "name"), ("bundle_info", "version"), ("ti",), ("ti", "id"),
    ("ti", "task_id"), ("ti", "dag_id"), ("ti", "run_id"), ("ti", "try_number"),
    ("ti", "map_index"), ("ti", "queue"), ("ti", "pool_slots"), ("ti", "priority_weight"),
    ("ti", "dag_version_id"), ("ti", "context_carrier"), ("ti", "hostname"), ("new_field",),
]  # fmt: skip
DELETE = object()
edits = st.lists(
    st.tuples(st.sampled_from(FIELDS), st.one_of(st.just(DELETE), json_values, nasty_text)),
    min_size=1,
    max_size=4,
)


def _apply(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    target: Any = data
    for part in path[:-1]:
        if not isinstance(target, dict) or not isinstance(target.get(part), dict):
            return
        target = target[part]
    if value is DELETE:
        target.pop(path[-1], None)
    else:
        target[path[-1]] = value


# -- the Celery call ----------------------------------------------------------------------------


@settings(max_examples=EXAMPLES["celery_args"], deadline=None)
@given(
    args=st.lists(st.one_of(json_values, st.just(REAL_TEXT)), max_size=3),
    kwargs=st.dictionaries(
        st.one_of(st.just("input"), st.text(max_size=8)),
        st.one_of(json_values, st.just(REAL_TEXT)),
        max_size=3,
    ),
)
def test_any_celery_call_shape_is_a_workload_or_one_clear_error(
    args: list[Any], kwargs: dict[str, Any]
) -> None:
    result = outcome(parse_celery_args, tuple(args), kwargs)
    given_ = [*args, *([kwargs["input"]] if "input" in kwargs else [])]
    exactly_the_real_one = given_ == [REAL_TEXT] and set(kwargs) <= {"input"}
    assert isinstance(result, Workload) == exactly_the_real_one, result
    if isinstance(result, WorkloadError) and (len(given_) != 1 or set(kwargs) - {"input"}):
        assert "exactly one argument" in str(result)


# -- the real message, mutated ------------------------------------------------------------------


@settings(max_examples=EXAMPLES["mutated"], deadline=None, suppress_health_check=FIXTURE_OK)
@given(changes=edits, as_bytes=st.booleans())
def test_mutated_real_workload_is_mirrored_or_refused_clearly(
    changes: list[tuple[tuple[str, ...], Any]], as_bytes: bool
) -> None:
    data = copy.deepcopy(REAL)
    for path, value in changes:
        _apply(data, path, value)
    text = json.dumps(data)  # ASCII: lone surrogates and NULs travel as \\u escapes
    result = outcome(parse_workload, text.encode() if as_bytes else text)
    if isinstance(result, Workload):
        _mirrors(result, data)
    # Bytes only add a decoding step: the other form must end the same way.
    again = outcome(parse_workload, text if as_bytes else text.encode())
    assert type(again) is type(result) and str(again) == str(result)


@settings(max_examples=EXAMPLES["bytes"], deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["flip", "insert", "delete", "truncate"]),
            st.integers(min_value=0, max_value=len(REAL_TEXT) - 1),
            st.binary(min_size=1, max_size=4),
        ),
        min_size=1,
        max_size=3,
    )
)
def test_corrupted_bytes_of_the_real_message_never_crash(
    corruptions: list[tuple[str, int, bytes]],
) -> None:
    body = bytearray(REAL_TEXT.encode())
    for kind, offset, junk in corruptions:
        at = min(offset, len(body))
        if kind == "flip" and at < len(body):
            body[at] ^= junk[0] or 0x80
        elif kind == "insert":
            body[at:at] = junk
        elif kind == "delete":
            del body[at : at + len(junk)]
        else:
            del body[at:]
    result = outcome(parse_workload, bytes(body))
    if isinstance(result, Workload):
        _mirrors(result, json.loads(bytes(body)))


# -- workload types -----------------------------------------------------------------------------


@settings(max_examples=EXAMPLES["type"], deadline=None)
@given(st.one_of(json_values, nasty_text))
def test_any_other_workload_type_is_refused_naming_executetask(kind: Any) -> None:
    assume(kind != "ExecuteTask")
    data = {**REAL, "type": kind}
    result = outcome(parse_workload, json.dumps(data))
    assert isinstance(result, WorkloadError)
    assert "'ExecuteTask'" in str(result)


# -- size ---------------------------------------------------------------------------------------


@settings(max_examples=EXAMPLES["size"], deadline=None)
@given(
    extra=st.integers(min_value=-3000, max_value=3000),
    char=st.sampled_from(["x", "é", "€", "😀"]),
    as_bytes=st.booleans(),
)
def test_size_limit_is_exact_in_utf8_bytes(extra: int, char: str, as_bytes: bool) -> None:
    skeleton = json.dumps({**REAL, "filler": ""}, ensure_ascii=False)
    per_char = len(char.encode())
    count = max(0, (MAX_WORKLOAD_BYTES + extra - len(skeleton.encode())) // per_char)
    text = json.dumps({**REAL, "filler": char * count}, ensure_ascii=False)
    size = len(text.encode())
    result = outcome(parse_workload, text.encode() if as_bytes else text)
    if size <= MAX_WORKLOAD_BYTES:
        assert isinstance(result, Workload), result
    else:
        assert isinstance(result, WorkloadError)
        assert f"over the {MAX_WORKLOAD_BYTES} allowed" in str(result)


def test_a_huge_body_is_refused_before_it_is_decoded() -> None:
    """64 MiB of invalid UTF-8: the size check comes first, so no decode error and no copy."""
    result = outcome(parse_workload, b"\xff" * (64 * 1024 * 1024))
    assert isinstance(result, WorkloadError) and "over the" in str(result)


# -- nesting ------------------------------------------------------------------------------------


@settings(max_examples=EXAMPLES["nesting"], deadline=None)
@given(
    depth=st.integers(min_value=1, max_value=200_000),
    where=st.sampled_from(["extra", "context_carrier", "ti"]),
    bracket=st.sampled_from(["[]", "{}"]),
)
def test_deep_nesting_is_accepted_or_refused_never_a_recursion_error(
    depth: int, where: str, bracket: str
) -> None:
    opening, closing = ('{"k":', "}") if bracket == "{}" else ("[", "]")
    depth = min(depth, (MAX_WORKLOAD_BYTES - 4096) // (len(opening) + len(closing)))
    nested = opening * depth + ("1" if bracket == "{}" else "") + closing * depth
    if where == "ti":
        text = REAL_TEXT.replace('"ti": {', f'"ti": {{"deep": {nested}, ', 1)
    elif where == "context_carrier":
        text = REAL_TEXT.replace('"context_carrier": {', f'"context_carrier": {{"deep": {nested}, ')
    else:
        text = REAL_TEXT[:-1] + f', "deep": {nested}}}'
    result = outcome(parse_workload, text)
    if depth <= SHALLOW:
        assert isinstance(result, Workload), result
    if isinstance(result, WorkloadError):
        assert "nested too deeply" in str(result), result


#: Nesting every JSON parser takes; deeper, Python's may run out of stack (then: refused).
SHALLOW = 200


# -- broken UTF-8 and lone surrogates -----------------------------------------------------------

_TEXT_NAMES = {"token", "dag_rel_path", "log_path", "name", "version", "task_id", "dag_id",
               "run_id", "queue", "hostname", "new_field"}  # fmt: skip
STRING_FIELDS = [p for p in FIELDS if p[-1] in _TEXT_NAMES]


@settings(max_examples=EXAMPLES["unicode"], deadline=None)
@given(
    path=st.sampled_from(STRING_FIELDS),
    prefix=st.text(alphabet="abc\u00e9", max_size=3),
    surrogate=st.integers(min_value=0xD800, max_value=0xDFFF),
    form=st.sampled_from(["escape", "raw_str", "cesu_bytes", "latin1_bytes"]),
)
def test_broken_unicode_in_any_string_field_is_refused_naming_the_field(
    path: tuple[str, ...], prefix: str, surrogate: int, form: str
) -> None:
    data = copy.deepcopy(REAL)
    marker = "MARKER"
    _apply(data, path, prefix + marker)
    text = json.dumps(data)
    if form == "escape":  # what json.dumps of a Python str with a lone surrogate produces
        payload: str | bytes = text.replace(marker, f"\\u{surrogate:04x}")
    elif form == "raw_str":  # a str handed over as is, e.g. by a Python caller
        payload = text.replace(marker, chr(surrogate))
    elif form == "cesu_bytes":  # a surrogate encoded as if it were a character: invalid UTF-8
        payload = text.replace(marker, chr(surrogate)).encode("utf-8", "surrogatepass")
    else:  # latin-1 bytes where UTF-8 was promised
        payload = text.replace(marker, "café").encode("latin-1")
    result = outcome(parse_workload, payload)
    assert isinstance(result, WorkloadError), f"{form} in {path} was accepted"
    message = str(result)
    if form in ("cesu_bytes", "latin1_bytes"):
        assert message.startswith("workload is not valid UTF-8 (at byte ")
    else:
        assert f"workload field {'.'.join(path)} holds a lone surrogate" in message


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("ti", "dag_id"), "a\0b", "ti.dag_id: Value error, must not contain a NUL character"),
        (("log_path",), "x\0.log", "log_path: Value error, must not contain a NUL character"),
        (("bundle_info", "name"), "\0", "bundle_info.name: Value error, must not contain a NUL"),
        (("token",), TOKEN + "\n", "token: Value error, must be printable ASCII"),
        (("token",), "tö" + TOKEN, "token: Value error, must be printable ASCII"),
        (("ti", "id"), "0" * 31 + "\n", "ti.id: Input should be a valid UUID"),
    ],
)
def test_text_that_would_break_later_is_refused_now(
    path: tuple[str, ...], value: str, expected: str
) -> None:
    """NUL would fail opening the task log; a newline in the token, the HTTP header; pydantic
    quotes the offending character raw, which must not split the log line."""
    data = copy.deepcopy(REAL)
    _apply(data, path, value)
    result = outcome(parse_workload, json.dumps(data))
    assert isinstance(result, WorkloadError)
    assert expected in str(result)
