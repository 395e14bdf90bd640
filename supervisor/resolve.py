"""Workload + config + installed bundles -> the one bundle version that runs the TI (pure).

First match wins (DESIGN §4.4):

1. the TI's queue mapped in `supervisor.queue_to_bundle` to "name==version" or "name";
2. `bundle_info.name`, mapped through `supervisor.bundle_name_map` or used as is when a bundle
   of that name is installed, with `bundle_info.version` matched against the wheel version or
   the recorded source commit (full, or a prefix of at least 7 hex digits);
3. the installed bundle whose manifest lists the TI's dag_id.

Without a version from the above, the bundle's active version runs. An explicit mapping that
cannot be honoured is an error, never a fall-through to other code. The chosen version must
list (dag_id, task_id). Every failure is `BundleNotFound`, naming what was asked and what is
installed. Installing a missing version on demand is the caller's business.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, TypeVar

from packaging.utils import canonicalize_name

from supervisor.errors import BundleNotFound

if TYPE_CHECKING:
    from supervisor.plugin.messages import RuntimeDescription
    from supervisor.workload import Workload

#: A git commit (or abbreviation) as `bundle_info.version` carries it for git DAG bundles.
_COMMIT = re.compile(r"[0-9a-f]{7,40}")
#: Tasks named in a "has no task" message before it says "...".
_MAX_TASKS_SHOWN = 10


class InstalledBundleLike(Protocol):
    """What resolve needs of an installed bundle version (the store's class provides it)."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def source_commit(self) -> str | None: ...
    @property
    def active(self) -> bool: ...
    @property
    def label(self) -> str: ...  # "name==version"
    @property
    def description(self) -> RuntimeDescription: ...


class _SupervisorRouting(Protocol):
    @property
    def queue_to_bundle(self) -> Mapping[str, str]: ...
    @property
    def bundle_name_map(self) -> Mapping[str, str]: ...


class RoutingConfig(Protocol):
    """The settings resolve reads (`config.Settings` provides them)."""

    @property
    def supervisor(self) -> _SupervisorRouting: ...


B = TypeVar("B", bound=InstalledBundleLike)


def resolve(workload: Workload, installed: Sequence[B], config: RoutingConfig) -> B:
    """The installed bundle version that must run `workload`'s TI.

    Raises:
        BundleNotFound: no rule picks a version, or the version lacks the TI's task.
    """
    bundle, why = _pick(workload, installed, config)
    ti = workload.ti
    if bundle.description.find_task(ti.dag_id, ti.task_id) is None:
        raise BundleNotFound(
            f"bundle {bundle.label} ({why}) has no task dag {ti.dag_id!r} task {ti.task_id!r}; "
            f"it has: {_tasks_of(bundle)}; installed: {_listing(installed)}",
            bundle=bundle.label,
        )
    return bundle


def _pick(workload: Workload, installed: Sequence[B], config: RoutingConfig) -> tuple[B, str]:
    """Apply the three rules in order; returns the bundle and why it was chosen."""
    routing = config.supervisor
    queue = workload.ti.queue
    if queue in routing.queue_to_bundle:
        target = routing.queue_to_bundle[queue]
        why = f"queue {queue!r} -> {target!r} in supervisor.queue_to_bundle"
        name, _, version = target.partition("==")
        return _by_name(name.strip(), version.strip() or None, installed, why), why
    info = workload.bundle_info
    mapped = routing.bundle_name_map.get(info.name)
    if mapped or any(b.name == canonicalize_name(info.name) for b in installed):
        name = mapped or info.name
        why = f"bundle_info name {info.name!r}" + (
            f" -> {mapped!r} in supervisor.bundle_name_map" if mapped else ""
        )
        return _by_name(name, info.version, installed, why, commit_ok=True), why
    return _by_dag(workload, installed)


def _by_name(
    name: str,
    version: str | None,
    installed: Sequence[B],
    why: str,
    *,
    commit_ok: bool = False,
) -> B:
    versions = [b for b in installed if b.name == canonicalize_name(name)]
    if not versions:
        raise BundleNotFound(
            f"no installed bundle named {name!r} ({why}); installed: {_listing(installed)}",
            bundle=name,
        )
    if version is None:
        return _active(name, versions, installed, why)
    match = _match_version(version, versions, commit_ok=commit_ok)
    if match is None:
        what = "version or source commit" if commit_ok else "version"
        raise BundleNotFound(
            f"no installed {what} of bundle {name!r} matches {version!r} ({why}); "
            f"installed: {_listing(installed)}",
            bundle=name,
        )
    return match


def _match_version(version: str, versions: Sequence[B], *, commit_ok: bool) -> B | None:
    """Exact wheel version first; then, for DAG bundle versions, the recorded source commit."""
    exact = [b for b in versions if b.version == version]
    if exact or not commit_ok:
        return exact[0] if exact else None
    by_commit = [b for b in versions if _same_commit(version, b.source_commit)]
    if len(by_commit) > 1:  # several wheels built from one commit: prefer the active one
        by_commit = [b for b in by_commit if b.active] or by_commit[-1:]
    return by_commit[0] if by_commit else None


def _same_commit(wanted: str, recorded: str | None) -> bool:
    if not recorded:
        return False
    wanted, recorded = wanted.lower(), recorded.lower()
    if not (_COMMIT.fullmatch(wanted) and _COMMIT.fullmatch(recorded)):
        return False
    short, long = sorted((wanted, recorded), key=len)
    return long.startswith(short)


def _by_dag(workload: Workload, installed: Sequence[B]) -> tuple[B, str]:
    ti, info = workload.ti, workload.bundle_info
    names = sorted({b.name for b in installed if _has_dag(b, ti.dag_id)})
    if not names:
        raise BundleNotFound(
            f"no installed bundle serves dag {ti.dag_id!r} task {ti.task_id!r} "
            f"(bundle_info name={info.name!r} version={info.version!r}, queue={ti.queue!r}); "
            f"installed: {_listing(installed)}"
        )
    if len(names) > 1:
        raise BundleNotFound(
            f"dag {ti.dag_id!r} is served by several bundles ({', '.join(names)}); map queue "
            f"{ti.queue!r} in supervisor.queue_to_bundle or bundle_info name {info.name!r} in "
            f"supervisor.bundle_name_map; installed: {_listing(installed)}"
        )
    why = f"the only bundle with dag {ti.dag_id!r}"
    versions = [b for b in installed if b.name == names[0]]
    return _active(names[0], versions, installed, why), why


def _has_dag(bundle: InstalledBundleLike, dag_id: str) -> bool:
    return any(task.dag_id == dag_id for task in bundle.description.tasks)


def _active(name: str, versions: Sequence[B], installed: Sequence[B], why: str) -> B:
    active = [b for b in versions if b.active]
    if not active:
        raise BundleNotFound(
            f"bundle {name!r} ({why}) has no active version; run `supervisor bundle activate`; "
            f"installed: {_listing(installed)}",
            bundle=name,
        )
    return active[0]


def _listing(installed: Sequence[InstalledBundleLike]) -> str:
    if not installed:
        return "none"
    ordered = sorted(installed, key=lambda b: (b.name, b.version))
    return ", ".join(b.label + (" (active)" if b.active else "") for b in ordered)


def _tasks_of(bundle: InstalledBundleLike) -> str:
    names = [f"{t.dag_id}.{t.task_id}" for t in bundle.description.tasks]
    shown = ", ".join(names[:_MAX_TASKS_SHOWN]) or "no tasks"
    return shown + (", ..." if len(names) > _MAX_TASKS_SHOWN else "")
