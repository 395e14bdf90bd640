"""The journal and the delivery of final states, against the in-memory Execution API.

Fast unit tests of journal.py and recovery.py; tests/serve/test_recovery.py proves the same
promises end to end with real processes, kill -9 and real outages.
"""

from __future__ import annotations

import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from supervisor import recovery
from supervisor.api.client import ExecutionApiClient
from supervisor.journal import REPORTED, REPORTING, RUNNING, Journal, JournalLocked, journal_path
from supervisor.metrics import Metrics
from supervisor.recovery import DELIVERED, DeliveryPending, Settler, deliver

from .conftest import BASE_URL, FakeExecutionApi

TI = "0198c5a4-1111-7222-8333-444455556666"
TI_FIELDS = {"dag_id": "d", "task_id": "t", "run_id": "r", "try_number": 1, "map_index": -1}
SUCCESS = {"state": "success", "end_date": "2026-01-01T00:00:00+00:00", "task_outlets": [],
           "outlet_events": []}  # fmt: skip


@pytest.fixture(autouse=True)
def quick_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """recovery's own waits (1 s, doubling) shrink to milliseconds."""
    monkeypatch.setattr(recovery, "FIRST_WAIT_S", 0.001)


@pytest.fixture
def one_try(fake: FakeExecutionApi) -> Iterator[ExecutionApiClient]:
    """A client without retries of its own: every failure reaches recovery at once."""
    with ExecutionApiClient(BASE_URL, transport=fake.transport(), retries=1) as client:
        yield client


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    with Journal(journal_path(tmp_path, "worker-1", ["q"])) as journal:
        yield journal


def _running_ti(fake: FakeExecutionApi, client: ExecutionApiClient, journal: Journal) -> str:
    """A TI that is running in the fake, with its journal row and a valid execution token."""
    fake.states[TI] = "running"
    token = fake.issue()
    journal.started(
        ti_id=TI, celery_id="celery-1", token=token, should_retry=True, ti=TI_FIELDS,
        log_path="d/t.log", runtime_pid=None, runtime_started=None,
    )  # fmt: skip
    return token


def _refused() -> httpx.Response:
    return httpx.Response(409, json={"detail": {"reason": "invalid_state"}})


# -- journal -----------------------------------------------------------------------------------


def test_the_journal_is_private_and_holds_one_row_per_ti_through_its_phases(
    journal: Journal,
) -> None:
    journal.started(
        ti_id=TI, celery_id="c", token="tok-1", should_retry=False, ti=TI_FIELDS,
        log_path="d/t.log", runtime_pid=123, runtime_started=1.5,
    )  # fmt: skip
    journal.token_refreshed(TI, "tok-2")
    assert [(e.phase, e.token, e.runtime_pid) for e in journal.entries()] == [
        (RUNNING, "tok-2", 123)
    ]
    journal.reporting(TI, SUCCESS)
    assert journal.entries()[0].state == SUCCESS
    assert journal.entries()[0].phase == REPORTING
    journal.reported(TI)
    (entry,) = journal.entries()
    assert (entry.phase, entry.token) == (REPORTED, "")  # the token is not kept once useless
    assert stat.S_IMODE(journal.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(journal.path.parent.stat().st_mode) == 0o700


def test_a_result_written_forgets_only_a_reported_ti(journal: Journal) -> None:
    journal.started(
        ti_id=TI, celery_id="c", token="t", should_retry=False, ti=TI_FIELDS, log_path="l",
        runtime_pid=None, runtime_started=None,
    )  # fmt: skip
    journal.result_written("c")  # a duplicate delivery's result: the TI still runs
    assert len(journal) == 1
    journal.reported(TI)
    journal.result_written("c")
    assert len(journal) == 0


def test_the_same_worker_cannot_hold_its_journal_twice_but_others_can(
    tmp_path: Path, journal: Journal
) -> None:
    with pytest.raises(JournalLocked, match="another `supervisor serve` with this hostname"):
        Journal(journal_path(tmp_path, "worker-1", ["q"]))
    with Journal(journal_path(tmp_path, "worker-1", ["other"])) as other:
        assert other.path != journal.path


def test_orphans_are_the_journals_nobody_holds(tmp_path: Path, journal: Journal) -> None:
    Journal(journal_path(tmp_path, "dead-worker", ["q"])).close()
    held = Journal(journal_path(tmp_path, "live-worker", ["q"]))
    try:
        orphans = list(Journal.orphans(tmp_path, mine=journal.path))
        assert [o.path.name.split("-")[0] for o in orphans] == ["dead"]
        for orphan in orphans:
            orphan.close_orphan(stale_s=0)
        assert not journal_path(tmp_path, "dead-worker", ["q"]).exists()
    finally:
        held.close()


# -- delivery ----------------------------------------------------------------------------------


def test_a_state_is_sent_again_until_the_api_answers(
    fake: FakeExecutionApi, one_try: ExecutionApiClient, journal: Journal
) -> None:
    token = _running_ti(fake, one_try, journal)
    down = httpx.ConnectError("connection refused")
    fake.script("state", down, down, down)
    waited: list[float] = []
    api = one_try.resume_task(TI, token)

    outcome = deliver(
        api, SUCCESS, give_up=threading.Event(), on_wait=lambda _, s: waited.append(s)
    )

    assert outcome == DELIVERED
    assert fake.states[TI] == "success"
    assert waited == [0.001, 0.002, 0.004]  # growing waits, capped at MAX_WAIT_S


def test_a_state_airflow_refuses_is_dropped_not_retried(
    fake: FakeExecutionApi, one_try: ExecutionApiClient, journal: Journal
) -> None:
    token = _running_ti(fake, one_try, journal)
    fake.script("state", _refused())
    api = one_try.resume_task(TI, token)

    outcome = deliver(api, SUCCESS, give_up=threading.Event())

    assert outcome.startswith("Airflow no longer takes a state for this TI")
    assert len(fake.calls("state")) == 1


def test_delivery_gives_up_to_the_journal_when_the_worker_stops(
    fake: FakeExecutionApi, one_try: ExecutionApiClient, journal: Journal
) -> None:
    token = _running_ti(fake, one_try, journal)
    give_up = threading.Event()
    fake.script("state", *[httpx.ConnectError("down")] * 3)

    def stop_on_second_wait(_: Exception, __: float) -> None:
        if len(fake.calls("state")) == 2:
            give_up.set()

    with pytest.raises(DeliveryPending):
        deliver(
            one_try.resume_task(TI, token), SUCCESS, give_up=give_up, on_wait=stop_on_second_wait
        )
    assert fake.states[TI] == "running"


# -- settling what a dead process left ---------------------------------------------------------


def _settler(
    journal: Journal, client: ExecutionApiClient, tmp_path: Path
) -> tuple[Settler, list[str]]:
    results: list[str] = []
    settler = Settler(
        journal, client, base_log_folder=tmp_path / "logs", write_result=results.append,
        give_up=threading.Event(),
    )  # fmt: skip
    return settler, results


def test_a_ti_that_was_running_is_reported_up_for_retry_with_the_reason_in_its_log(
    fake: FakeExecutionApi, one_try: ExecutionApiClient, journal: Journal, tmp_path: Path
) -> None:
    _running_ti(fake, one_try, journal)
    settler, results = _settler(journal, one_try, tmp_path)

    settler.start(tmp_path).join(timeout=30)

    assert settler.settled.is_set()
    assert fake.states[TI] == "up_for_retry"
    (sent,) = [c.body for c in fake.calls("state")]
    assert "stopped before it reported the task's outcome" in sent["retry_reason"]
    assert results == ["celery-1"]
    assert len(journal) == 0
    log = (tmp_path / "logs" / "d" / "t.log").read_text()
    assert "stopped before it reported" in log and "Task instance finished: up_for_retry" in log


def test_a_decided_state_is_sent_unchanged(
    fake: FakeExecutionApi, one_try: ExecutionApiClient, journal: Journal, tmp_path: Path
) -> None:
    _running_ti(fake, one_try, journal)
    journal.reporting(TI, SUCCESS)
    settler, results = _settler(journal, one_try, tmp_path)

    settler.start(tmp_path).join(timeout=30)

    assert [c.body for c in fake.calls("state")] == [SUCCESS]
    assert fake.states[TI] == "success"
    assert results == ["celery-1"]
    assert len(journal) == 0


def test_a_reported_ti_only_gets_its_celery_result(
    fake: FakeExecutionApi, one_try: ExecutionApiClient, journal: Journal, tmp_path: Path
) -> None:
    _running_ti(fake, one_try, journal)
    journal.reported(TI)
    settler, results = _settler(journal, one_try, tmp_path)

    settler.start(tmp_path).join(timeout=30)

    assert not fake.calls("state")
    assert results == ["celery-1"]
    assert len(journal) == 0


def test_rows_of_a_dead_workers_journal_are_settled_too(
    fake: FakeExecutionApi, one_try: ExecutionApiClient, journal: Journal, tmp_path: Path
) -> None:
    with Journal(journal_path(tmp_path, "gone-worker", ["old"])) as old:
        _running_ti(fake, one_try, old)
    settler, results = _settler(journal, one_try, tmp_path)

    settler.start(tmp_path).join(timeout=30)

    assert fake.states[TI] == "up_for_retry"
    assert results == ["celery-1"]
    with Journal(journal_path(tmp_path, "gone-worker", ["old"])) as old:
        assert len(old) == 0


def test_metrics_count_the_journal_by_phase(journal: Journal) -> None:
    metrics = Metrics()
    metrics.watch(journal=journal)
    for n, ti_id in enumerate(("a", "b", "c")):
        journal.started(
            ti_id=ti_id, celery_id=f"c{n}", token="t", should_retry=False, ti=TI_FIELDS,
            log_path="l", runtime_pid=None, runtime_started=None,
        )  # fmt: skip
    journal.reporting("b", SUCCESS)
    journal.reported("c")

    def gauge(phase: str) -> float | None:
        return metrics.registry.get_sample_value("supervisor_journal_tis", {"phase": phase})

    assert (gauge("running"), gauge("reporting"), gauge("reported")) == (1, 1, 1)
    journal.result_written("c2")
    assert gauge("reported") == 0
