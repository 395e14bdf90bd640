"""The SDK through bundle_runtime.testing: every outcome kind and every context accessor."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from bundle_runtime import Connection, Resume
from bundle_runtime.testing import run_task

from . import sample_bundle
from .sample_bundle import DAG, DEFER_MOMENT, bundle


def run(task_id: str, **kwargs):
    return run_task(bundle, DAG, task_id, **kwargs)


def test_return_value_becomes_json_round_tripped_result():
    result = run("ok")
    assert result.state == "success"
    assert result.return_value == {"rows": 42, "ti": "ok"}
    assert result.error is None


def test_none_return_is_success_without_value():
    result = run("none")
    assert (result.state, result.return_value) == ("success", None)


def test_context_carries_ti_dag_run_and_params():
    result = run("context", dag_run={"conf": {"x": 1}}, params={"p": "v"}, try_number=3)
    assert result.return_value == {
        "ti": ["sample", "context", "manual__test", 3, -1],
        "dag_run": {"conf": {"x": 1}},
        "params": {"p": "v"},
    }


def test_skip_task_is_skipped_with_reason():
    result = run("skip")
    assert (result.state, result.skip_reason) == ("skipped", "nothing to do")


def test_fail_task_fails_without_retry():
    result = run("fail")
    assert result.state == "failed"
    assert result.retryable is False
    assert result.error.type == "bundle_runtime.exceptions.FailTask"
    assert result.error.message == "input is broken"


def test_any_exception_fails_retryable_with_traceback_logged():
    result = run("boom")
    assert (result.state, result.retryable) == ("failed", True)
    assert (result.error.type, result.error.message) == ("ValueError", "boom")
    assert 'raise ValueError("boom")' in result.error.traceback
    logged = [r for r in result.logs if r.error is not None and r.error.type == "ValueError"]
    assert logged and logged[0].level == "error"


def test_system_exit_in_a_task_is_a_failure_not_an_exit():
    result = run("exit")
    assert (result.state, result.error.type, result.error.message) == ("failed", "SystemExit", "3")


def test_reschedule_with_timedelta_is_relative_to_now_in_utc():
    before = datetime.now(UTC)
    result = run("reschedule")
    after = datetime.now(UTC)
    assert result.state == "up_for_reschedule"
    assert result.reschedule_date.tzinfo is not None
    assert before + timedelta(minutes=5) <= result.reschedule_date <= after + timedelta(minutes=5)


def test_reschedule_with_naive_datetime_is_taken_as_utc():
    result = run("reschedule_at")
    assert result.reschedule_date == datetime(2031, 1, 1, 12, 0, tzinfo=UTC)


def test_defer_carries_trigger_and_resume_method():
    result = run("defer")
    assert result.state == "deferred"
    deferral = result.deferral
    assert deferral.trigger_classpath.endswith("DateTimeTrigger")
    # Airflow's serde shape (Execution API 2026-06-30), as airflow.sdk.serde.serialize writes it.
    utc = ["UTC", "pendulum.tz.timezone.FixedTimezone", 1, True]
    assert deferral.trigger_kwargs == {
        "moment": {
            "__classname__": "datetime.datetime",
            "__version__": 2,
            "__data__": {
                "timestamp": DEFER_MOMENT.timestamp(),
                "tz": {"__classname__": "builtins.tuple", "__version__": 1, "__data__": utc},
            },
        }
    }
    assert (deferral.method, deferral.kwargs, deferral.timeout_s) == (
        "resume_here",
        {"attempt": 1},
        3600.0,
    )


def test_resume_calls_the_function_again_with_ctx_resume():
    resume = Resume("resume_here", {"attempt": 1, "event": "2030-01-02"})
    result = run("defer", resume=resume)
    assert result.state == "success"
    assert result.return_value == {
        "method": "resume_here",
        "kwargs": {"attempt": 1, "event": "2030-01-02"},
    }


def test_resume_with_fail_method_fails_without_calling_user_code():
    resume = Resume("__fail__", {"error": "Trigger timeout", "traceback": ["line 1\n", "line 2\n"]})
    result = run("ok", resume=resume)
    assert result.state == "failed"
    assert result.error.type == "TaskDeferralTimeout"
    assert "Trigger timeout" in result.error.message
    assert result.error.traceback == "line 1\nline 2\n"
    assert result.return_value is None


def test_non_json_return_value_fails_naming_the_type():
    result = run("not_json")
    assert (result.state, result.retryable, result.error.type) == ("failed", True, "TypeError")
    assert "returned a complex" in result.error.message
    assert "sample.not_json" in result.error.message


def test_unknown_task_fails_naming_registered_tasks():
    result = run_task(bundle, DAG, "does_not_exist")
    assert (result.state, result.retryable) == ("failed", False)
    assert result.error.type == "LookupError"
    assert "sample.does_not_exist" in result.error.message
    assert "sample.ok" in result.error.message


def test_variables_get_set_delete():
    result = run("variables", variables={"greeting": "hi", "old": "x"})
    assert result.return_value == {
        "greeting": "hi",
        "default": "fallback",
        "missing_raises": True,
        "json": {"a": [1, 2]},
    }
    assert result.variables["plain"] == "5"
    assert json.loads(result.variables["config"]) == {"a": [1, 2]}
    assert "old" not in result.variables


def test_connections_get_masks_password_and_builds_uri():
    warehouse = Connection(
        "warehouse",
        conn_type="postgres",
        host="db.local",
        schema="sales",
        login="etl",
        password="p@ss",
        port=5432,
        extra='{"sslmode": "require"}',
    )
    result = run("connection", connections={"warehouse": warehouse})
    assert result.return_value == {
        "host": "db.local",
        "port": 5432,
        "uri": "postgres://etl:p%40ss@db.local:5432/sales?sslmode=require",
        "extra": {"sslmode": "require"},
        "missing": "connection 'nope' does not exist",
    }
    assert result.masked == ["p@ss"]


def test_xcom_pull_push_delete():
    result = run("xcom", xcoms={("extract", "return_value"): {"rows": 2}})
    assert result.return_value == {"upstream": {"rows": 2}, "absent": "dflt", "own": 3}
    assert result.pushed_xcoms == {"count": 3}


def test_xcom_push_of_non_json_value_raises_type_error_in_the_task():
    result = run("xcom_bad")
    assert result.return_value.startswith("XCom 'when': value of type complex is not JSON-able")


def test_mask_secret_sends_every_string():
    assert run("secrets").masked == ["s3cr3t", "t0k"]


def test_print_stderr_and_logging_become_tagged_log_records():
    result = run("output")
    by_logger = {}
    for record in result.logs:
        by_logger.setdefault(record.logger, []).append(record)
    assert [(r.level, r.event) for r in by_logger["task.stdout"]] == [
        ("info", "hello from print"),
        ("info", "partial line without newline"),
    ]
    assert [(r.level, r.event) for r in by_logger["task.stderr"]] == [("error", "line on stderr")]
    lib = by_logger["sample.lib"]
    assert [(r.level, r.event) for r in lib] == [
        ("info", "from logging module"),
        ("error", "handled with logging"),
    ]
    assert lib[1].error.type == "KeyError" and "inner" in lib[1].error.traceback
    task = by_logger["task"]
    assert (task[0].event, task[0].fields) == ("structured", {"rows": 3, "table": "sales"})
    assert task[1].event == "handled with ctx.log" and task[1].error.type == "KeyError"


def test_capture_is_undone_after_the_task(capsys: pytest.CaptureFixture[str]):
    run("output")
    print("after the task")
    assert "after the task" in capsys.readouterr().out


def test_sample_bundle_module_registers_in_order():
    keys = list(sample_bundle.bundle.tasks)
    assert keys[0] == (DAG, "ok") and (DAG, "sleep") in keys


def test_task_sees_how_often_it_was_rescheduled():
    first = run_task(bundle, DAG, "poke")
    later = run_task(bundle, DAG, "poke", task_reschedule_count=1)
    assert (first.state, later.state, later.return_value) == ("up_for_reschedule", "success", 1)
