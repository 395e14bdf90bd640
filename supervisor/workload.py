"""Airflow's ExecuteTask workload JSON -> a typed, frozen `Workload` (pure: no I/O, no celery).

Pydantic models validate the JSON at this edge and are not seen outside it. Fields we do not use
are ignored, so newer Airflow versions that add fields keep working. Everything that is not a
well-formed ExecuteTask raises `WorkloadError`, whose message says what is wrong (field path and
problem) and never contains the workload token: the message ends up in the worker log and in the
Celery result, and the token grants access to the TI until it expires.

Other workload types (`ExecuteCallback`, `TestConnection`, ...) are refused by name: this worker
runs task code from bundles, not Airflow callbacks (reference §2, §7.9).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Annotated, Any
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
)

from supervisor.errors import WorkloadError

#: The only workload type this worker runs.
EXECUTE_TASK = "ExecuteTask"
#: Larger workloads are refused before parsing. A real ExecuteTask is under 2 KiB (the captured
#: Airflow 3.3.2 one in tests/api/fixtures is about 1.2 KiB, most of it the JWT) and nothing in it
#: grows with the DAG, so 1 MiB is ample while bounding what one message can make us allocate.
MAX_WORKLOAD_BYTES = 1024 * 1024
#: The Celery task's parameter name in Airflow (`execute_workload(input: str)`).
CELERY_ARG_NAME = "input"
#: Longest offending value quoted in an error message.
_MAX_QUOTED = 60
#: Shortest string treated as a possible piece of the token when scrubbing messages.
_MIN_SCRUB = 8
#: What a JWT looks like (base64url of '{"'); such values are never quoted, whatever the field.
_JWT = re.compile(r"eyJ[A-Za-z0-9_=-]*(\.[A-Za-z0-9_=-]*)?")
#: What a token may hold: it goes into an HTTP header, where anything else breaks the request.
_TOKEN_CHARS = re.compile(r"[!-~]+")


@dataclass(frozen=True)
class BundleInfo:
    """The Airflow DAG bundle the TI's DAG came from (not one of our bundles)."""

    name: str
    #: A git commit for versioned DAG bundles; None when the bundle is not versioned.
    version: str | None


@dataclass(frozen=True)
class TaskInstance:
    """The TI the workload asks us to run (Airflow's TaskInstanceDTO, the fields we use)."""

    id: UUID
    dag_id: str
    task_id: str
    run_id: str
    try_number: int
    map_index: int = -1
    queue: str = "default"
    pool_slots: int = 1
    priority_weight: int = 1
    dag_version_id: UUID | None = None
    #: OpenTelemetry carrier ({"traceparent": ...}) or None; read-only.
    context_carrier: Mapping[str, Any] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Workload:
    """One ExecuteTask workload. `token` is the workload JWT; it never appears in `repr`."""

    ti: TaskInstance
    token: str = field(repr=False)
    dag_rel_path: str = ""
    bundle_info: BundleInfo = BundleInfo(name="", version=None)
    #: Task log path relative to [logging] base_log_folder; None when Airflow sent none.
    log_path: str | None = None

    def __repr__(self) -> str:
        return (
            f"Workload(ti={self.ti!r}, token=<hidden>, dag_rel_path={self.dag_rel_path!r}, "
            f"bundle_info={self.bundle_info!r}, log_path={self.log_path!r})"
        )


# -- the JSON edge ------------------------------------------------------------------------------


def _no_nul(value: str) -> str:
    """NUL never belongs in an id or a path, and would break opening the task log file later."""
    if "\0" in value:
        raise ValueError("must not contain a NUL character")
    return value


def _header_safe(value: str) -> str:
    """The token is sent as an HTTP header; say so here rather than fail in the API client."""
    if not _TOKEN_CHARS.fullmatch(value):
        raise ValueError("must be printable ASCII without spaces (a JWT)")
    return value


#: Every text field we use: strict (no numbers as strings) and NUL-free.
_Text = Annotated[StrictStr, AfterValidator(_no_nul)]


class _Edge(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _BundleInfoJson(_Edge):
    name: _Text
    version: _Text | None = None


class _TaskInstanceJson(_Edge):
    id: UUID
    task_id: _Text = Field(min_length=1)
    dag_id: _Text = Field(min_length=1)
    run_id: _Text = Field(min_length=1)
    try_number: StrictInt = Field(ge=0)
    map_index: StrictInt = Field(default=-1, ge=-1)
    queue: _Text = "default"
    pool_slots: StrictInt = Field(default=1, ge=0)
    priority_weight: StrictInt = 1
    dag_version_id: UUID | None = None
    context_carrier: dict[str, Any] | None = None


class _ExecuteTaskJson(_Edge):
    token: Annotated[StrictStr, AfterValidator(_header_safe)] = Field(min_length=1)
    ti: _TaskInstanceJson
    dag_rel_path: _Text
    bundle_info: _BundleInfoJson
    log_path: _Text | None = None


def parse_celery_args(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Workload:
    """The workload from `execute_workload`'s arguments: one string, positional or as `input`.

    Raises:
        WorkloadError: the arguments are not exactly one workload string, or the string is not a
            valid ExecuteTask workload.
    """
    extra_kwargs = sorted(k for k in kwargs if k != CELERY_ARG_NAME)
    given = [*args, *([kwargs[CELERY_ARG_NAME]] if CELERY_ARG_NAME in kwargs else [])]
    if len(given) != 1 or extra_kwargs:
        raise WorkloadError(
            "execute_workload expects exactly one argument, the workload JSON string; got "
            f"{len(args)} positional and keyword arguments {sorted(kwargs)!r}"
        )
    payload = given[0]
    if not isinstance(payload, str | bytes | bytearray):
        raise WorkloadError(
            f"execute_workload's argument must be the workload JSON string, not "
            f"{type(payload).__name__}"
        )
    return parse_workload(payload)


def parse_workload(json_text: str | bytes | bytearray) -> Workload:
    """Validate an ExecuteTask workload's JSON text and return it as a `Workload`.

    Raises:
        WorkloadError: oversize, not UTF-8, not JSON, not an object, not an ExecuteTask, or a
            field missing or of the wrong type. The message never contains the token.
    """
    data = _load_object(json_text)
    _check_type(data)
    _check_unicode(data)
    try:
        model = _ExecuteTaskJson.model_validate(data)
    except ValidationError as exc:
        raise WorkloadError(_describe(exc, _token_of(data))) from None
    return _to_workload(model)


def _load_object(json_text: str | bytes | bytearray) -> dict[str, Any]:
    size = _utf8_size(json_text)
    if size > MAX_WORKLOAD_BYTES:
        raise WorkloadError(
            f"workload is {size} bytes or more, over the {MAX_WORKLOAD_BYTES} allowed; a real "
            "ExecuteTask workload is under 2 KiB"
        )
    try:
        text = json_text if isinstance(json_text, str) else bytes(json_text).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WorkloadError(f"workload is not valid UTF-8 (at byte {exc.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WorkloadError(
            f"workload is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except ValueError:  # Python refuses integers of more than 4300 digits
        raise WorkloadError("workload is not usable JSON: a number is too long") from None
    except RecursionError:
        raise WorkloadError("workload is not usable JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise WorkloadError(f"workload must be a JSON object, not a JSON {_json_kind(data)}")
    return data


def _check_unicode(data: dict[str, Any]) -> None:
    """Refuse lone surrogates: JSON's \\ud800 escapes decode to strings that cannot be written
    as UTF-8, so they would fail later, in a log line or an HTTP request, far from the cause."""
    # Iterative, as json.loads accepts nesting deeper than a recursive walk could take. Paths are
    # cons cells (parent, part), rendered only for the message: building each one as a string
    # would cost O(depth) per value, quadratic for a deep body.
    stack: list[tuple[Any, _Trail]] = [(data, None)]
    while stack:
        value, trail = stack.pop()
        if isinstance(value, str):
            if not _is_unicode(value):
                raise WorkloadError(
                    f"workload field {_render(trail)} holds a lone surrogate, which is not valid "
                    "Unicode (a \\ud800-\\udfff escape alone); Airflow never sends one"
                )
        elif isinstance(value, dict):
            for key, item in value.items():
                if not _is_unicode(key):
                    raise WorkloadError(
                        f"workload has a key in {_render(trail)} that holds a lone surrogate, "
                        "which is not valid Unicode; Airflow never sends one"
                    )
                stack.append((item, (trail, key)))
        elif isinstance(value, list):
            stack.extend((item, (trail, i)) for i, item in enumerate(value))


#: A path into the JSON as nested (parent, key or index) pairs; None is the top level.
_Trail = tuple[Any, str | int] | None


def _render(trail: _Trail) -> str:
    parts: list[str] = []
    while trail is not None:
        trail, part = trail
        if isinstance(part, int):
            parts.append(f"[{part}]")
        else:
            shown = part if len(part) <= _MAX_QUOTED else part[:_MAX_QUOTED] + "..."
            parts.append("." + _one_line(shown))
    text = "".join(reversed(parts)).removeprefix(".")
    return _JWT.sub("eyJ***", text) if text else "workload"


def _is_unicode(text: str) -> bool:
    """False when `text` holds a lone surrogate (encoding is the fast way to find one)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _utf8_size(json_text: str | bytes | bytearray) -> int:
    """Byte size, without encoding strings that are oversize whatever their encoding."""
    if not isinstance(json_text, str):
        return len(json_text)
    if len(json_text) > MAX_WORKLOAD_BYTES:
        return len(json_text)
    return len(json_text.encode("utf-8", errors="surrogatepass"))


def _check_type(data: Mapping[str, Any]) -> None:
    kind = data.get("type")
    if kind == EXECUTE_TASK:
        return
    if kind is None:
        raise WorkloadError(
            f"workload has no 'type' field; this worker runs only {EXECUTE_TASK!r} workloads"
        )
    raise WorkloadError(
        f"workload type {_shown(kind, _token_of(data))} is not supported: this worker runs only "
        f"{EXECUTE_TASK!r} workloads (callbacks and connection tests need an Airflow worker)"
    )


def _to_workload(model: _ExecuteTaskJson) -> Workload:
    ti = model.ti
    carrier = MappingProxyType(dict(ti.context_carrier)) if ti.context_carrier else None
    return Workload(
        ti=TaskInstance(
            id=ti.id,
            dag_id=ti.dag_id,
            task_id=ti.task_id,
            run_id=ti.run_id,
            try_number=ti.try_number,
            map_index=ti.map_index,
            queue=ti.queue,
            pool_slots=ti.pool_slots,
            priority_weight=ti.priority_weight,
            dag_version_id=ti.dag_version_id,
            context_carrier=carrier,
        ),
        token=model.token,
        dag_rel_path=model.dag_rel_path,
        bundle_info=BundleInfo(name=model.bundle_info.name, version=model.bundle_info.version),
        log_path=model.log_path,
    )


# -- error messages -----------------------------------------------------------------------------


def _token_of(data: Mapping[str, Any]) -> str | None:
    token = data.get("token")
    return token if isinstance(token, str) and token else None


def _describe(exc: ValidationError, token: str | None) -> str:
    """All problems as 'path: problem (got ...)', never quoting the token or whole objects."""
    problems = []
    for error in exc.errors(include_url=False, include_context=False):
        path = ".".join(str(part) for part in error["loc"]) or "workload"
        problem = f"{path}: {error['msg']}"
        if error["type"] != "missing" and path != "token":
            problem += f" (got {_shown(error.get('input'), token)})"
        problems.append(problem)
    text = _one_line("invalid ExecuteTask workload: " + "; ".join(problems))
    # Belt and braces: no path above quotes the token, but a message must never carry it.
    if token and len(token) >= _MIN_SCRUB:
        text = text.replace(token, "<hidden>")
    return _JWT.sub("eyJ***", text)


def _one_line(text: str) -> str:
    """Escape what would break a log line: pydantic quotes an offending character raw."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _shown(value: Any, token: str | None) -> str:
    """A short, safe rendering of an offending value."""
    if isinstance(value, str):
        if token and (token in value or (len(value) >= _MIN_SCRUB and value in token)):
            return "<hidden: looks like the token>"
        if _JWT.search(value):
            return "<hidden: looks like a token>"
        return repr(value if len(value) <= _MAX_QUOTED else value[:_MAX_QUOTED] + "...")
    if isinstance(value, bool | int | float) or value is None:
        return f"JSON {json.dumps(value)[:_MAX_QUOTED]}"
    return f"a JSON {_json_kind(value)}"


def _json_kind(value: Any) -> str:
    kinds = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return kinds.get(type(value), "number")
