"""ExecutionApiClient and TaskApi against the fake Execution API and the Airflow 3.3.2 capture."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from supervisor.api.client import API_VERSION, ExecutionApiClient
from supervisor.api.task import TaskApi
from supervisor.errors import (
    AlreadyRunning,
    ApiUnavailable,
    ExecutionApiError,
    TaskInstanceGone,
)
from tests.api.conftest import (
    BASE_URL,
    TI_ID,
    WORKLOAD_TOKEN,
    FakeExecutionApi,
    payload_problem,
)

NOW = datetime(2026, 12, 4, 19, 25, 1, 213831, tzinfo=UTC)


def start(client: ExecutionApiClient) -> TaskApi:
    api = client.for_task(TI_ID, WORKLOAD_TOKEN)
    api.run(hostname="vm", unixname="root", pid=10619, start_date=NOW)
    return api


def server_error() -> httpx.Response:
    return httpx.Response(500, json={"message": "Internal server error"})


# -- headers and tokens -------------------------------------------------------------------------


def test_every_request_carries_the_pinned_version_header(
    client: ExecutionApiClient, fake: FakeExecutionApi
) -> None:
    fake.variables["v"] = "x"
    api = start(client)
    api.heartbeat(hostname="vm", pid=10619)
    api.get_variable("v")
    api.finish_success(end_date=NOW)
    assert len(fake.seen) == 4
    assert {s.headers["airflow-api-version"] for s in fake.seen} == {API_VERSION}
    assert API_VERSION == "2026-06-30"


def test_workload_token_only_on_run_then_the_refreshed_token(
    client: ExecutionApiClient, fake: FakeExecutionApi
) -> None:
    api = start(client)
    api.heartbeat(hostname="vm", pid=10619)
    api.finish("failed", end_date=NOW)
    tokens = [(s.path.rsplit("/", 1)[-1], s.token) for s in fake.seen]
    assert tokens == [
        ("run", WORKLOAD_TOKEN),
        ("heartbeat", "execution-token-1"),
        ("state", "execution-token-1"),
    ]
    assert api.execution_token == "execution-token-1"


def test_token_swapped_mid_stream_on_any_reply(
    client: ExecutionApiClient, fake: FakeExecutionApi
) -> None:
    api = start(client)
    fake.refresh_next = "execution-token-2"
    api.heartbeat(hostname="vm", pid=10619)  # its reply carries the new token
    api.heartbeat(hostname="vm", pid=10619)
    fake.refresh_next = "execution-token-3"
    fake.script("heartbeat", httpx.Response(409, json={"detail": {"reason": "not_running"}}))
    with pytest.raises(TaskInstanceGone):
        api.heartbeat(hostname="vm", pid=10619)  # an error reply refreshes too
    api.finish("skipped", end_date=NOW)
    assert [s.token for s in fake.seen[1:]] == [
        "execution-token-1",
        "execution-token-2",
        "execution-token-2",
        "execution-token-3",
    ]


def test_calls_before_run_refuse_to_send_the_workload_token(
    client: ExecutionApiClient, fake: FakeExecutionApi
) -> None:
    api = client.for_task(TI_ID, WORKLOAD_TOKEN)
    with pytest.raises(RuntimeError, match="run"):
        api.heartbeat(hostname="vm", pid=1)
    assert fake.seen == []


def test_run_without_refreshed_token_is_an_error(
    client: ExecutionApiClient, fake: FakeExecutionApi, run_context: dict[str, Any]
) -> None:
    fake.script("run", httpx.Response(200, json=run_context))
    api = client.for_task(TI_ID, WORKLOAD_TOKEN)
    with pytest.raises(ExecutionApiError, match="no Refreshed-API-Token"):
        api.run(hostname="vm", unixname="root", pid=1, start_date=NOW)


def test_resume_task_uses_the_execution_token(
    client: ExecutionApiClient, fake: FakeExecutionApi
) -> None:
    token = fake.issue()
    client.resume_task(TI_ID, token).finish("failed", end_date=NOW)
    assert fake.seen[0].token == token


def test_tokens_never_logged(
    client: ExecutionApiClient, fake: FakeExecutionApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    api = start(client)
    fake.script("heartbeat", server_error())
    api.heartbeat(hostname="vm", pid=10619)
    assert caplog.records, "expected debug and retry lines"
    assert WORKLOAD_TOKEN not in caplog.text
    assert "execution-token" not in caplog.text


# -- retries and error mapping ------------------------------------------------------------------


def test_5xx_retried_then_success(
    client: ExecutionApiClient, fake: FakeExecutionApi, waits: list[float]
) -> None:
    api = start(client)
    fake.script("heartbeat", server_error(), httpx.Response(503))
    api.heartbeat(hostname="vm", pid=10619)
    assert len(fake.calls("heartbeat")) == 3
    assert len(waits) == 2
    assert all(1.0 <= w <= 90.0 for w in waits)


def test_connect_errors_retried(
    client: ExecutionApiClient, fake: FakeExecutionApi, waits: list[float]
) -> None:
    fake.script("run", httpx.ConnectError("refused"), httpx.ConnectError("refused"))
    api = start(client)
    assert len(fake.calls("run")) == 3
    assert api.execution_token == "execution-token-1"


@pytest.mark.parametrize("status", [400, 401, 403, 422])
def test_4xx_never_retried(
    client: ExecutionApiClient, fake: FakeExecutionApi, waits: list[float], status: int
) -> None:
    api = start(client)
    fake.script("heartbeat", httpx.Response(status, json={"detail": "no"}))
    with pytest.raises(ExecutionApiError) as caught:
        api.heartbeat(hostname="vm", pid=10619)
    assert type(caught.value) is ExecutionApiError
    assert caught.value.status_code == status
    assert len(fake.calls("heartbeat")) == 1
    assert waits == []


def test_exhausted_retries_raise_api_unavailable(
    client: ExecutionApiClient, fake: FakeExecutionApi, waits: list[float]
) -> None:
    api = start(client)
    fake.script("state", *[server_error() for _ in range(5)])
    with pytest.raises(ApiUnavailable) as caught:
        api.finish("failed", end_date=NOW)
    assert len(fake.calls("state")) == 5
    assert len(waits) == 4
    assert caught.value.status_code == 500
    assert "after 5 attempts" in str(caught.value)


def test_timeouts_map_to_api_unavailable(
    client: ExecutionApiClient, fake: FakeExecutionApi
) -> None:
    api = start(client)
    fake.script("heartbeat", *[httpx.ReadTimeout("slow") for _ in range(5)])
    with pytest.raises(ApiUnavailable, match=r"timed out after 5s") as caught:
        api.heartbeat(hostname="vm", pid=10619)
    assert isinstance(caught.value.__cause__, httpx.TimeoutException)
    assert len(fake.calls("heartbeat")) == 5


def test_per_request_timeout_is_configured() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return httpx.Response(200, json={"key": "k", "value": "v"})

    client = ExecutionApiClient(BASE_URL, transport=httpx.MockTransport(handler), timeout_s=2.5)
    client.resume_task(TI_ID, "t").get_variable("k")
    assert seen == [{"connect": 2.5, "read": 2.5, "write": 2.5, "pool": 2.5}]


def test_close_interrupts_a_retry_wait(fake: FakeExecutionApi) -> None:
    client = ExecutionApiClient(
        BASE_URL, transport=fake.transport(), retry_wait_min_s=30, retry_wait_max_s=30
    )
    api = client.resume_task(TI_ID, fake.issue())
    fake.script("heartbeat", server_error())
    threading.Timer(0.05, client.close).start()
    with pytest.raises(ApiUnavailable, match="closed"):
        api.heartbeat(hostname="vm", pid=1)


def test_run_409_previous_state_running_is_already_running(
    client: ExecutionApiClient, fake: FakeExecutionApi, transcript: list[dict[str, Any]]
) -> None:
    recorded = transcript[8]["response"]  # "run again, other pid (expected 409)"
    fake.script("run", httpx.Response(recorded["status"], json=recorded["json"]))
    with pytest.raises(AlreadyRunning) as caught:
        client.for_task(TI_ID, WORKLOAD_TOKEN).run(
            hostname="vm", unixname="root", pid=10620, start_date=NOW
        )
    assert isinstance(caught.value, TaskInstanceGone)
    assert caught.value.detail["previous_state"] == "running"
    assert caught.value.status_code == 409


def test_run_409_other_state_is_gone_but_not_already_running(
    client: ExecutionApiClient, fake: FakeExecutionApi
) -> None:
    detail = {"reason": "invalid_state", "previous_state": "success"}
    fake.script("run", httpx.Response(409, json={"detail": detail}))
    with pytest.raises(TaskInstanceGone) as caught:
        client.for_task(TI_ID, WORKLOAD_TOKEN).run(
            hostname="vm", unixname="root", pid=1, start_date=NOW
        )
    assert not isinstance(caught.value, AlreadyRunning)
    assert caught.value.detail == detail
    assert "previous_state='success'" in str(caught.value)


@pytest.mark.parametrize("entry", [10, 34])  # running_elsewhere, not_running
def test_heartbeat_409_from_capture_is_gone(
    client: ExecutionApiClient,
    fake: FakeExecutionApi,
    transcript: list[dict[str, Any]],
    entry: int,
) -> None:
    api = start(client)
    recorded = transcript[entry]["response"]
    fake.script("heartbeat", httpx.Response(recorded["status"], json=recorded["json"]))
    with pytest.raises(TaskInstanceGone) as caught:
        api.heartbeat(hostname="vm", pid=10619)
    assert caught.value.detail == recorded["json"]["detail"]


@pytest.mark.parametrize("status", [404, 410])
def test_heartbeat_404_410_are_gone(
    client: ExecutionApiClient, fake: FakeExecutionApi, status: int
) -> None:
    api = start(client)
    fake.script("heartbeat", httpx.Response(status, json={"detail": {"reason": "not_found"}}))
    with pytest.raises(TaskInstanceGone):
        api.heartbeat(hostname="vm", pid=10619)


def test_404_outside_ti_routes_is_not_gone(
    client: ExecutionApiClient, fake: FakeExecutionApi
) -> None:
    api = start(client)
    with pytest.raises(ExecutionApiError) as caught:
        api.get_variable("nope")
    assert not isinstance(caught.value, TaskInstanceGone)
    assert caught.value.status_code == 404
    assert caught.value.detail["reason"] == "not_found"


def test_422_detail_drops_echoed_input(client: ExecutionApiClient, fake: FakeExecutionApi) -> None:
    api = start(client)
    detail = [{"type": "x", "loc": ["body", "val"], "msg": "bad", "input": "s3cret"}]
    fake.script("variable", httpx.Response(422, json={"detail": detail}))
    with pytest.raises(ExecutionApiError) as caught:
        api.set_variable("k", "s3cret")
    assert "s3cret" not in str(caught.value)
    assert "s3cret" not in repr(caught.value.detail)
    assert "body.val: bad" in str(caught.value)


def test_naive_datetimes_are_refused_before_sending(
    client: ExecutionApiClient, fake: FakeExecutionApi
) -> None:
    api = start(client)
    with pytest.raises(ValueError, match="timezone"):
        api.finish("failed", end_date=datetime(2026, 1, 1))
    assert len(fake.seen) == 1


def test_finish_refuses_states_the_server_would_turn_into_failed(
    client: ExecutionApiClient,
) -> None:
    api = start(client)
    for state in ("success", "queued", "scheduled", "restarting", "running"):
        with pytest.raises(ValueError, match=state):
            api.finish(state, end_date=NOW)


def test_shared_client_from_many_threads(
    client: ExecutionApiClient, fake: FakeExecutionApi
) -> None:
    apis = []
    for i in range(8):
        api = client.for_task(f"00000000-0000-0000-0000-00000000000{i}", WORKLOAD_TOKEN)
        api.run(hostname="vm", unixname="root", pid=i, start_date=NOW)
        apis.append(api)
    errors: list[BaseException] = []

    def beat(api: TaskApi) -> None:
        try:
            for _ in range(20):
                api.heartbeat(hostname="vm", pid=1)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=beat, args=(api,), name=f"hb:{i}") for i, api in enumerate(apis)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(fake.calls("heartbeat")) == 160
    assert {s.token for s in fake.calls("heartbeat")} == {
        f"execution-token-{i}" for i in range(1, 9)
    }


# -- payloads: exactly the 2026-06-30 strict shapes --------------------------------------------


def test_run_and_heartbeat_bodies_match_the_capture(
    client: ExecutionApiClient, fake: FakeExecutionApi, transcript: list[dict[str, Any]]
) -> None:
    run = transcript[5]["request"]
    start_date = datetime.fromisoformat(run["json"]["start_date"])
    api = client.for_task(TI_ID, WORKLOAD_TOKEN)
    context = api.run(hostname="vm", unixname="root", pid=10619, start_date=start_date)
    api.heartbeat(hostname="vm", pid=10619)
    sent_run, sent_heartbeat = fake.seen
    assert (sent_run.method, sent_run.raw_path, sent_run.body) == (
        run["method"], run["url"], run["json"]
    )  # fmt: skip
    heartbeat = transcript[9]["request"]
    assert (sent_heartbeat.method, sent_heartbeat.raw_path, sent_heartbeat.body) == (
        heartbeat["method"], heartbeat["url"], heartbeat["json"]
    )  # fmt: skip
    assert context.dag_run["run_id"] == "manual_capture_1"
    assert (context.max_tries, context.should_retry, context.xcom_keys_to_clear) == (0, False, ())


def test_success_body_matches_the_capture(
    client: ExecutionApiClient, fake: FakeExecutionApi, transcript: list[dict[str, Any]]
) -> None:
    recorded = transcript[32]["request"]
    api = start(client)
    api.finish_success(end_date=datetime.fromisoformat(recorded["json"]["end_date"]))
    sent = fake.seen[-1]
    assert (sent.method, sent.raw_path, sent.body) == (
        recorded["method"], recorded["url"], recorded["json"]
    )  # fmt: skip


def _state_bodies(api: TaskApi) -> None:
    later = NOW + timedelta(minutes=5)
    api.finish_success(
        end_date=NOW,
        task_outlets=[{"name": "a", "uri": "s3://a", "type": "Asset"}],
        outlet_events=[{"dest_asset_key": {"name": "a", "uri": "s3://a"}, "extra": {}}],
    )
    api.finish("failed", end_date=NOW)
    api.finish("skipped", end_date=NOW, rendered_map_index="eu")
    api.finish("removed", end_date=NOW)
    api.finish("upstream_failed", end_date=NOW)
    api.retry(end_date=NOW)
    api.retry(end_date=NOW, retry_reason="x" * 900, retry_delay_s=30.0)
    api.reschedule(reschedule_date=later, end_date=NOW)
    api.defer(
        classpath="airflow.triggers.temporal.DateTimeTrigger",
        trigger_kwargs={"moment": later.isoformat()},
        next_method="execute_complete",
        next_kwargs={},
    )
    api.defer(
        classpath="airflow.triggers.temporal.DateTimeTrigger",
        trigger_kwargs="gAAAA-fernet",
        next_method="resume",
        next_kwargs={"a": 1},
        trigger_timeout_s=60.0,
    )


def test_every_state_payload_has_exactly_the_strict_fields(
    client: ExecutionApiClient, fake: FakeExecutionApi
) -> None:
    _state_bodies(start(client))
    sent = fake.calls("state")
    assert len(sent) == 10  # the fake answers 422 to any extra or missing field
    for call in sent:
        assert payload_problem(call.body["state"], call.body) is None, call.body
    by_state = [call.body for call in sent]
    assert by_state[0]["task_outlets"] == [{"name": "a", "uri": "s3://a", "type": "Asset"}]
    assert by_state[2]["rendered_map_index"] == "eu"
    assert "retry_reason" not in by_state[5]
    assert len(by_state[6]["retry_reason"]) == 500
    assert by_state[6]["retry_delay_seconds"] == 30.0
    assert by_state[7] == {
        "state": "up_for_reschedule",
        "reschedule_date": "2026-12-04T19:30:01.213831+00:00",
        "end_date": "2026-12-04T19:25:01.213831+00:00",
    }
    assert set(by_state[8]) == {
        "state",
        "classpath",
        "trigger_kwargs",
        "next_method",
        "next_kwargs",
    }
    assert by_state[9]["trigger_timeout"] == 60.0
    assert by_state[9]["trigger_kwargs"] == "gAAAA-fernet"


def test_datetimes_keep_their_offset(client: ExecutionApiClient, fake: FakeExecutionApi) -> None:
    api = start(client)
    api.finish("failed", end_date=datetime(2026, 1, 1, 2, tzinfo=timezone(timedelta(hours=2))))
    assert fake.seen[-1].body["end_date"] == "2026-01-01T02:00:00+02:00"


# -- variables, connections, XComs --------------------------------------------------------------


def test_variable_round_trip(client: ExecutionApiClient, fake: FakeExecutionApi) -> None:
    api = start(client)
    api.set_variable("my_var", "hello-var", "research")
    assert fake.seen[-1].body == {"val": "hello-var", "description": "research"}
    assert api.get_variable("my_var") == "hello-var"
    api.delete_variable("my_var")
    assert fake.variables == {}


def test_connection_parsed_as_captured(
    client: ExecutionApiClient, fake: FakeExecutionApi, transcript: list[dict[str, Any]]
) -> None:
    recorded = transcript[13]["response"]["json"]
    fake.connections["my_conn"] = recorded
    connection = start(client).get_connection("my_conn")
    assert connection.password == "p"
    assert connection.to_json() == recorded


def test_xcom_push_matches_the_capture(
    client: ExecutionApiClient, fake: FakeExecutionApi, transcript: list[dict[str, Any]]
) -> None:
    recorded = transcript[14]["request"]
    api = start(client)
    api.set_xcom_json(
        dag_id="bundles_demo",
        run_id="manual_capture_1",
        task_id="external_step",
        key="return_value",
        value_json='{"answer": 42, "from": "manual_exec"}',
    )
    sent = fake.seen[-1]
    assert (sent.method, sent.raw_path, sent.body) == (
        recorded["method"], recorded["url"], recorded["json"]
    )  # fmt: skip
    assert sent.params == {"map_index": "-1"}
    assert sent.headers["content-type"] == "application/json"


def test_xcom_paths_are_quoted_and_keys_keep_slashes(
    client: ExecutionApiClient, fake: FakeExecutionApi
) -> None:
    api = start(client)
    where = {"dag_id": "d", "run_id": "manual__2026-01-01T00:00:00+00:00", "task_id": "t"}
    api.set_xcom(**where, key="a/b", value=None, map_index=3, mapped_length=2)
    sent = fake.seen[-1]
    assert sent.raw_path == "/execution/xcoms/d/manual__2026-01-01T00%3A00%3A00%2B00%3A00/t/a/b"
    assert sent.body is None and sent.params == {"map_index": "3", "mapped_length": "2"}
    assert api.get_xcom(**where, key="a/b", map_index=3) is None
    assert fake.seen[-1].params == {"map_index": "3", "include_prior_dates": "false"}
    api.delete_xcom(**where, key="a/b", map_index=3)
    assert fake.xcoms == {}


def test_set_xcom_refuses_nan(client: ExecutionApiClient) -> None:
    api = start(client)
    with pytest.raises(ValueError):
        api.set_xcom(dag_id="d", run_id="r", task_id="t", key="k", value=float("nan"))


def test_a_non_json_reply_is_an_error(client: ExecutionApiClient, fake: FakeExecutionApi) -> None:
    api = start(client)
    fake.script("variable", httpx.Response(200, text="<html>proxy</html>"))
    with pytest.raises(ExecutionApiError, match="not JSON"):
        api.get_variable("k")


def test_a_closed_client_is_unavailable(client: ExecutionApiClient) -> None:
    api = start(client)
    client.close()
    with pytest.raises(ApiUnavailable, match="closed"):
        api.heartbeat(hostname="vm", pid=1)
