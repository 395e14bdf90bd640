"""resolve(): queue mapping, then bundle_info (name map, version or commit), then dag lookup."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import pytest

from supervisor.config import Settings, SupervisorSettings
from supervisor.errors import BundleNotFound
from supervisor.plugin.messages import RuntimeDescription, TaskSpec
from supervisor.resolve import resolve
from supervisor.workload import BundleInfo, TaskInstance, Workload

COMMIT_1 = "0d5c1b2a9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b"
COMMIT_2 = "7f3e2d1c0b9a8f7e6d5c4b3a29180f7e6d5c4b3a"


@dataclass(frozen=True)
class Installed:
    """Stands in for the store's InstalledBundle."""

    name: str
    version: str
    source_commit: str | None = None
    active: bool = False
    tasks: tuple[tuple[str, str], ...] = (("sales", "extract"),)

    @property
    def label(self) -> str:
        return f"{self.name}=={self.version}"

    @property
    def description(self) -> RuntimeDescription:
        specs = tuple(TaskSpec(dag_id=d, task_id=t) for d, t in self.tasks)
        return RuntimeDescription(self.name, self.version, "0.1.0", 1, "3.11", specs)


ETL_1 = Installed("example-etl", "1.0.0", COMMIT_1, active=True)
ETL_2 = Installed("example-etl", "2.0.0", COMMIT_2, tasks=(("sales", "extract"), ("sales", "load")))
OTHER = Installed("reports", "0.3.0", active=True, tasks=(("reports", "build"),))
INSTALLED = (ETL_1, ETL_2, OTHER)


def workload(
    *,
    dag_id: str = "sales",
    task_id: str = "extract",
    queue: str = "bundles",
    bundle: str = "dags-folder",
    version: str | None = None,
) -> Workload:
    ti = TaskInstance(
        id=UUID(int=1), dag_id=dag_id, task_id=task_id, run_id="r", try_number=1, queue=queue
    )
    return Workload(ti=ti, token="t", bundle_info=BundleInfo(bundle, version))


def config(**routing: dict[str, str]) -> Settings:
    return Settings(supervisor=SupervisorSettings(**routing))


def not_found(work: Workload, cfg: Settings, installed: tuple[Installed, ...] = INSTALLED) -> str:
    with pytest.raises(BundleNotFound) as caught:
        resolve(work, installed, cfg)
    return str(caught.value)


# -- rule 1: queue_to_bundle ---------------------------------------------------------------------


def test_queue_pins_a_version_even_when_not_active() -> None:
    cfg = config(queue_to_bundle={"etl-v2": "example-etl==2.0.0"})
    assert resolve(workload(queue="etl-v2"), INSTALLED, cfg) is ETL_2


def test_queue_mapped_to_a_name_gets_the_active_version() -> None:
    cfg = config(queue_to_bundle={"etl": "example-etl"})
    assert resolve(workload(queue="etl"), INSTALLED, cfg) is ETL_1


def test_queue_rule_wins_over_bundle_info() -> None:
    cfg = config(
        queue_to_bundle={"etl-v2": "example-etl==2.0.0"},
        bundle_name_map={"dags-folder": "example-etl"},
    )
    work = workload(queue="etl-v2", version=COMMIT_1)
    assert resolve(work, INSTALLED, cfg) is ETL_2


def test_queue_pin_to_a_missing_version_does_not_fall_through() -> None:
    cfg = config(queue_to_bundle={"etl-v3": "example-etl==3.0.0"})
    message = not_found(workload(queue="etl-v3"), cfg)
    assert "no installed version of bundle 'example-etl' matches '3.0.0'" in message
    assert "queue 'etl-v3' -> 'example-etl==3.0.0' in supervisor.queue_to_bundle" in message
    assert (
        "installed: example-etl==1.0.0 (active), example-etl==2.0.0, reports==0.3.0 (active)"
        in message
    )


def test_queue_pin_to_a_missing_bundle() -> None:
    cfg = config(queue_to_bundle={"x": "nope"})
    assert "no installed bundle named 'nope'" in not_found(workload(queue="x"), cfg)


# -- rule 2: bundle_info ------------------------------------------------------------------------


def test_bundle_name_map_without_version_gets_the_active_version() -> None:
    cfg = config(bundle_name_map={"dags-folder": "example-etl"})
    assert resolve(workload(), INSTALLED, cfg) is ETL_1


def test_bundle_info_name_used_as_is_when_installed() -> None:
    work = workload(bundle="example-etl", version="2.0.0")
    assert resolve(work, INSTALLED, config()) is ETL_2


@pytest.mark.parametrize("version", [COMMIT_2, COMMIT_2[:7], COMMIT_2[:12], COMMIT_2.upper()])
def test_bundle_info_version_matches_the_source_commit(version: str) -> None:
    cfg = config(bundle_name_map={"dags-folder": "example-etl"})
    assert resolve(workload(version=version), INSTALLED, cfg) is ETL_2


def test_commit_prefix_shorter_than_7_does_not_match() -> None:
    cfg = config(bundle_name_map={"dags-folder": "example-etl"})
    message = not_found(workload(version=COMMIT_2[:6]), cfg)
    assert (
        f"no installed version or source commit of bundle 'example-etl' matches {COMMIT_2[:6]!r}"
        in message
    )


def test_bundle_info_rule_wins_over_dag_lookup() -> None:
    cfg = config(bundle_name_map={"dags-folder": "example-etl"})
    work = workload(version="1.0.0")
    assert resolve(work, INSTALLED, cfg) is ETL_1
    with pytest.raises(BundleNotFound):  # mapped, but the dag lives in another bundle
        resolve(workload(dag_id="reports", task_id="build"), INSTALLED, cfg)


def test_several_wheels_from_one_commit_prefer_the_active_one() -> None:
    rebuilt = Installed("example-etl", "1.0.1", COMMIT_1)
    work = workload(bundle="example-etl", version=COMMIT_1[:8])
    assert resolve(work, (*INSTALLED, rebuilt), config()) is ETL_1


# -- rule 3: the bundle whose manifest has the dag ---------------------------------------------


def test_dag_lookup_gets_the_active_version() -> None:
    assert resolve(workload(), INSTALLED, config()) is ETL_1
    assert resolve(workload(dag_id="reports", task_id="build"), INSTALLED, config()) is OTHER


def test_nothing_serves_the_dag() -> None:
    message = not_found(workload(dag_id="x", task_id="y"), config())
    assert message == (
        "no installed bundle serves dag 'x' task 'y' (bundle_info name='dags-folder' "
        "version=None, queue='bundles'); installed: example-etl==1.0.0 (active), "
        "example-etl==2.0.0, reports==0.3.0 (active)"
    )


def test_nothing_installed() -> None:
    assert message_ends(not_found(workload(), config(), ()), "installed: none")


def test_dag_in_two_bundles_is_ambiguous() -> None:
    twin = Installed("sales-copy", "1.0.0", active=True)
    message = not_found(workload(), config(), (*INSTALLED, twin))
    assert "served by several bundles (example-etl, sales-copy)" in message
    assert "supervisor.queue_to_bundle" in message


# -- the chosen version must have the task ------------------------------------------------------


def test_active_version_without_the_task() -> None:
    message = not_found(workload(task_id="load"), config())
    assert message.startswith(
        "bundle example-etl==1.0.0 (the only bundle with dag 'sales') has no task dag 'sales' "
        "task 'load'; it has: sales.extract; installed:"
    )


def test_pinned_version_with_the_task() -> None:
    cfg = config(queue_to_bundle={"etl-v2": "example-etl==2.0.0"})
    assert resolve(workload(task_id="load", queue="etl-v2"), INSTALLED, cfg) is ETL_2


def test_no_active_version() -> None:
    inactive = (Installed("example-etl", "1.0.0"),)
    message = not_found(workload(), config(), inactive)
    assert (
        "bundle 'example-etl' (the only bundle with dag 'sales') has no active version" in message
    )


def message_ends(message: str, suffix: str) -> bool:
    return message.endswith(suffix)
