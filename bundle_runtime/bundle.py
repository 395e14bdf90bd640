"""Bundle: the registry of task functions a bundle wheel exposes, and how a runtime loads it.

A bundle module creates one `Bundle`, decorates its task functions with `@bundle.task(...)` and
names the object in the wheel's entry-point group `protocol.ENTRY_POINT_GROUP`. The runtime finds
it with `load_bundle(<distribution name>)`; name and version then come from the wheel metadata.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

from .exceptions import BundleDefinitionError, BundleLoadError
from .protocol import ENTRY_POINT_GROUP

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

    from .context import Context

TaskFunction = Callable[["Context"], Any]
F = TypeVar("F", bound=TaskFunction)

#: Version reported for a bundle loaded from a `module:attr` spec without an explicit version.
DEV_VERSION = "0+dev"


@dataclass(frozen=True)
class TaskDefinition:
    """One registered task: its Airflow identity, its function and declared options."""

    dag_id: str
    task_id: str
    fn: TaskFunction
    #: Execution timeout the task declares, in seconds; None when it declares none.
    timeout_s: float | None = None

    @property
    def doc(self) -> str:
        """First line of the function's docstring, for `supervisor bundle list`."""
        lines = (self.fn.__doc__ or "").strip().splitlines()
        return lines[0].strip() if lines else ""


class Bundle:
    """A registry of task functions keyed by Airflow's (dag_id, task_id).

    Create one per bundle at import time; registration is not thread-safe and is meant to finish
    while the module imports. `name` and `version` default to the wheel's metadata when the runtime
    loads the bundle through its entry point.
    """

    def __init__(self, name: str | None = None, version: str | None = None) -> None:
        self._name = name
        self._version = version
        self._tasks: dict[tuple[str, str], TaskDefinition] = {}

    def __repr__(self) -> str:
        return f"<Bundle {self.name}=={self.version} tasks={len(self._tasks)}>"

    @property
    def name(self) -> str:
        return self._name or "unnamed"

    @property
    def version(self) -> str:
        return self._version or DEV_VERSION

    @property
    def tasks(self) -> Mapping[tuple[str, str], TaskDefinition]:
        """Registered tasks in registration order, read-only."""
        return MappingProxyType(self._tasks)

    def task(
        self, *, dag_id: str, task_id: str, timeout_s: float | None = None
    ) -> Callable[[F], F]:
        """Register `fn(ctx) -> value` as the code of Airflow task (dag_id, task_id).

        The return value becomes the task's `return_value` XCom and must be JSON-able.

        Raises:
            BundleDefinitionError: an empty id, a bad timeout, or (dag_id, task_id) taken.
        """
        _check_id("dag_id", dag_id)
        _check_id("task_id", task_id)
        if timeout_s is not None and not timeout_s > 0:
            raise BundleDefinitionError(f"timeout_s must be positive or None, got {timeout_s!r}")

        def register(fn: F) -> F:
            if not callable(fn):
                raise BundleDefinitionError(f"@bundle.task needs a function, got {fn!r}")
            existing = self._tasks.get((dag_id, task_id))
            if existing is not None:
                raise BundleDefinitionError(
                    f"task {dag_id}.{task_id} is registered twice: by "
                    f"{_describe(existing.fn)} and {_describe(fn)}"
                )
            self._tasks[(dag_id, task_id)] = TaskDefinition(dag_id, task_id, fn, timeout_s)
            return fn

        return register

    def get_task(self, dag_id: str, task_id: str) -> TaskDefinition | None:
        return self._tasks.get((dag_id, task_id))

    def _adopt_metadata(self, name: str, version: str) -> None:
        """Fill in name/version from wheel metadata where the author left them unset."""
        self._name = self._name or name
        self._version = self._version or version


def _check_id(what: str, value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise BundleDefinitionError(f"{what} must be a non-empty string, got {value!r}")


def _describe(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def normalize_name(name: str) -> str:
    """PEP 503 normalised distribution name ("Example_ETL" -> "example-etl")."""
    return re.sub(r"[-_.]+", "-", name).lower()


def load_bundle(spec: str) -> Bundle:
    """Load the Bundle named by `spec`: an entry-point name, or `package.module:attr`.

    Import errors of the bundle's own code propagate unchanged so their traceback shows the bug.

    Raises:
        BundleLoadError: nothing matches `spec`, or it is not a Bundle.
    """
    if ":" in spec:
        return _load_from_module(spec)
    return _load_from_entry_point(spec)


def _load_from_module(spec: str) -> Bundle:
    module_name, _, attr = spec.partition(":")
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = sorted(n for n in vars(module) if isinstance(vars(module)[n], Bundle))
            raise BundleLoadError(
                f"bundle spec {spec!r}: module {module_name!r} has no attribute {attr!r}; "
                f"Bundle objects in it: {names or 'none'}"
            )
        obj = getattr(obj, part)
    bundle = _expect_bundle(obj, spec)
    bundle._adopt_metadata(module_name.split(".")[0], DEV_VERSION)
    return bundle


def _load_from_entry_point(name: str) -> Bundle:
    from importlib.metadata import entry_points  # noqa: PLC0415 - only on this path

    available = list(entry_points(group=ENTRY_POINT_GROUP))
    wanted = normalize_name(name)
    matches = [ep for ep in available if normalize_name(ep.name) == wanted]
    if not matches:
        found = sorted(f"{ep.name} ({ep.value})" for ep in available)
        raise BundleLoadError(
            f"bundle {name!r}: no entry point of that name in group {ENTRY_POINT_GROUP!r}; "
            f"installed: {found or 'none'}. A bundle wheel declares "
            f'[project.entry-points."{ENTRY_POINT_GROUP}"] {wanted} = "package.module:bundle"'
        )
    if len(matches) > 1:
        raise BundleLoadError(
            f"bundle {name!r}: {len(matches)} entry points match in group "
            f"{ENTRY_POINT_GROUP!r}: {sorted(ep.value for ep in matches)}"
        )
    entry_point = matches[0]
    bundle = _expect_bundle(entry_point.load(), f"{entry_point.name} = {entry_point.value}")
    bundle._adopt_metadata(*_distribution_of(entry_point, default_name=wanted))
    return bundle


def _distribution_of(entry_point: EntryPoint, *, default_name: str) -> tuple[str, str]:
    dist = entry_point.dist
    if dist is None:
        return default_name, DEV_VERSION
    return normalize_name(dist.metadata["Name"] or default_name), dist.version


def _expect_bundle(obj: object, where: str) -> Bundle:
    if not isinstance(obj, Bundle):
        raise BundleLoadError(
            f"bundle spec {where!r} resolves to {type(obj).__name__} {obj!r}, not a "
            "bundle_runtime.Bundle"
        )
    return obj
