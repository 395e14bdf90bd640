"""A runtime that starts fine and then speaks nonsense fails only its task, with a clear error.

Real processes: tests/plugin/bogus_runtime.py does a correct handshake and answers `Execute` and
`Describe` with each kind of nonsense. Whatever it sends, the supervisor's side raises a
`RuntimeLost` (its `RuntimeProtocolError` child when the runtime is alive but broke the rules)
that names the bundle, never another exception and never a hang; the runtime is not reused, and
the pool goes on serving other work.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Callable

import pytest

from supervisor.errors import RuntimeLost, RuntimeProtocolError
from supervisor.plugin.launch import RuntimeSpec
from supervisor.plugin.messages import Succeeded
from supervisor.plugin.runtime import Runtime
from supervisor.pool import RuntimePool
from tests.plugin.runtimes import REPO, RecordingHost, pythonpath, sample_spec, task_start
from tests.polling import wait_until

LABEL = "bogus-bundle==6.6.6"
StartRuntime = Callable[..., Runtime]
#: Generous bound for "does not hang": the slowest case (SIGKILL after two graces) needs ~1 s.
NO_HANG_S = 30.0


def bogus_spec(mode: str) -> RuntimeSpec:
    return RuntimeSpec(
        bundle=LABEL,
        argv=(sys.executable, "-m", "tests.plugin.bogus_runtime", mode),
        bundle_env="unused",
        env={"PYTHONPATH": pythonpath()},
        start_timeout_s=30.0,
        cwd=REPO,
    )


def _fails(runtime: Runtime, error: type[RuntimeLost] = RuntimeLost) -> str:
    """Run one task that must fail with `error`; returns the message's first line."""
    with pytest.raises(error) as info:
        runtime.execute(task_start("task", ti_id="ti-bogus"), RecordingHost())
    message = str(info.value)
    assert info.value.bundle == LABEL
    assert info.value.pid == runtime.pid
    assert len(message.splitlines()) == 1, message
    assert not runtime.reusable(), "a runtime that broke the protocol must not run another task"
    return message


# -- a live runtime that breaks the rules of the stream -----------------------------------------


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("no_result", "the stream ended without a Result"),
        ("two_results", "it sent a second Result (failed) after its first (Succeeded)"),
        ("bad_return_json", "Success.return_value_json is not JSON (Expecting property name"),
        ("bad_trigger_kwargs", "Deferred.trigger_kwargs_json must be a JSON object, got '[1, 2]'"),
        ("bad_reschedule_date", "Rescheduled.reschedule_date (4611686018427387904 s, 0 ns) is not"),
    ],
)
def test_protocol_violations_fail_the_task_naming_bundle_and_ti(
    runtimes: StartRuntime, mode: str, expected: str
) -> None:
    runtime = runtimes(bogus_spec(mode))

    message = _fails(runtime, RuntimeProtocolError)

    prefix = f"bundle {LABEL}: runtime broke the Execute protocol for ti ti-bogus: "
    assert message.startswith(prefix + expected), message
    assert message.endswith(f"(pid {runtime.pid}, ti ti-bogus (sample.task))")
    assert runtime.alive(), "the process is still up: it is the pool's to stop"


# -- bytes gRPC itself refuses ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("garbage_bytes", "INTERNAL"),
        ("invalid_utf8", "INTERNAL"),
        ("oversize", "RESOURCE_EXHAUSTED"),
        ("abort_with_status", "INTERNAL: the bogus runtime aborts the stream"),
    ],
)
def test_undecodable_or_aborted_streams_are_runtime_lost(
    runtimes: StartRuntime, mode: str, expected: str
) -> None:
    runtime = runtimes(bogus_spec(mode))

    message = _fails(runtime)

    assert message.startswith(f"bundle {LABEL}: Execute stream of ti ti-bogus failed: {expected}")
    assert f"(pid {runtime.pid}, ti ti-bogus (sample.task))" in message


def test_exit_mid_stream_names_the_exit_code_and_last_stderr_line(runtimes: StartRuntime) -> None:
    runtime = runtimes(bogus_spec("exit_midway"))

    message = _fails(runtime)

    assert message.startswith(
        f"bundle {LABEL}: runtime (pid {runtime.pid}) exited with code 3 while running "
        "ti ti-bogus (sample.task)"
    ), message
    assert "it last wrote: bogus runtime: exiting mid-task on purpose" in message


def test_a_silent_runtime_that_ignores_cancel_and_sigterm_cannot_hang_the_caller(
    runtimes: StartRuntime,
) -> None:
    runtime = runtimes(bogus_spec("silent"))
    cancel = threading.Event()
    host = RecordingHost()
    raised: list[BaseException] = []

    def run() -> None:
        try:
            runtime.execute(task_start("task", ti_id="ti-bogus"), host, cancel=cancel)
        except BaseException as exc:
            raised.append(exc)

    caller = threading.Thread(target=run, name="caller")
    caller.start()
    wait_until(lambda: host.logs, timeout=NO_HANG_S, interval=0.02, what="the task started")
    cancel.set()
    # What taskrun's watchdog does once the cancel went unanswered: stop the runtime.
    runtime.stop(grace_s=0.5)
    caller.join(NO_HANG_S)

    assert not caller.is_alive(), "execute() still blocked after the runtime was stopped"
    (error,) = raised
    assert isinstance(error, RuntimeLost) and error.bundle == LABEL
    assert str(error).startswith(f"bundle {LABEL}: "), error


# -- answers the host can live with -------------------------------------------------------------


def test_host_call_of_an_unknown_kind_is_answered_invalid(runtimes: StartRuntime) -> None:
    runtime = runtimes(bogus_spec("unknown_host_call"))
    host = RecordingHost()

    outcome = runtime.execute(task_start("task"), host)

    assert isinstance(outcome, Succeeded) and outcome.return_value_json is not None
    assert json.loads(outcome.return_value_json) == {
        "call_id": 7,
        "kind": "KIND_INVALID",
        "message": "unknown host call (the runtime is newer than the supervisor)",
    }
    assert host.calls == [], "nothing reached the host for a call it cannot name"
    assert runtime.reusable()


def test_bad_log_records_still_reach_the_task_log_and_warn(
    runtimes: StartRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = runtimes(bogus_spec("bad_log_fields"))
    host = RecordingHost()

    with caplog.at_level(logging.WARNING, logger="supervisor.plugin.client"):
        outcome = runtime.execute(task_start("task"), host)

    assert outcome == Succeeded(return_value_json='"still fine"')
    assert [(r.event, r.fields) for r in host.logs] == [
        ("fields that are not JSON", {"fields_json": "{oops"}),
        ("fields that are not an object", {"fields_json": "[1, 2]"}),
        ("a date no datetime can hold", {}),
    ]
    warnings = [r for r in caplog.records if r.getMessage() == "runtime.bad_log_record"]
    assert [(r.bundle, r.ti_id) for r in warnings] == [(LABEL, "ti-task")] * 3  # type: ignore[attr-defined]
    assert "Log.timestamp (-4611686018427387904 s, 0 ns) is not a representable date" in (
        warnings[2].problem  # type: ignore[attr-defined]
    )


# -- Describe -----------------------------------------------------------------------------------


def test_describe_with_garbage_bytes_is_runtime_lost(runtimes: StartRuntime) -> None:
    runtime = runtimes(bogus_spec("describe_garbage"))
    with pytest.raises(RuntimeLost) as info:
        runtime.describe()
    assert str(info.value).startswith(f"bundle {LABEL}: Describe failed: INTERNAL")


def test_describe_with_nonsense_names_every_problem(runtimes: StartRuntime) -> None:
    runtime = runtimes(bogus_spec("describe_junk"))
    with pytest.raises(RuntimeProtocolError) as info:
        runtime.describe()
    message = str(info.value)
    assert message.startswith(f"bundle {LABEL}: runtime answered Describe with nonsense: ")
    for problem in (
        "bundle name '' and version '' must both be set",
        "protocol_version 99 is not one this supervisor speaks [1]",
        "task ('', 't') has an empty dag_id or task_id",
        "task ('d', 't') has timeout_s nan, not a duration",
        "task ('d', 't') is listed twice",
        "task ('d', 't') has timeout_s -5.0, not a duration",
    ):
        assert problem in message


def test_a_sane_describe_from_the_same_fake_is_accepted(runtimes: StartRuntime) -> None:
    """The fake itself is fine where it means to be: the failures above are the nonsense."""
    description = runtimes(bogus_spec("no_result")).describe()
    assert (description.bundle_name, description.bundle_version) == ("bogus-bundle", "6.6.6")


# -- the pool keeps serving ---------------------------------------------------------------------


def test_pool_retires_the_bogus_runtime_and_keeps_serving(
    pools: Callable[..., RuntimePool],
) -> None:
    pool = pools(grace_s=1.0)
    bogus, good = bogus_spec("two_results"), sample_spec()

    with pytest.raises(RuntimeProtocolError), pool.lease(bogus) as runtime:
        first_pid = runtime.pid
        runtime.execute(task_start("task"), RecordingHost())
    wait_until(lambda: not runtime.alive(), timeout=NO_HANG_S, what="bogus runtime retired")

    with pool.lease(good) as sample:
        assert isinstance(sample.execute(task_start("echo"), RecordingHost()), Succeeded)
    with pytest.raises(RuntimeProtocolError), pool.lease(bogus) as again:
        assert again.pid != first_pid, "a fresh process, not the one that broke the protocol"
        again.execute(task_start("task"), RecordingHost())
