"""One real runtime: Describe, Execute (outcomes, host calls, logs, cancel), loss, stop."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable

import psutil
import pytest

from supervisor.errors import RuntimeLost
from supervisor.plugin.messages import Failed, Skipped, Succeeded
from supervisor.plugin.runtime import Runtime
from tests.plugin.runtimes import RecordingHost, still_running, task_start

StartRuntime = Callable[..., Runtime]


def test_describe_lists_the_sample_tasks(runtimes: StartRuntime) -> None:
    description = runtimes().describe()

    assert description.protocol_version == 1
    assert description.find_task("sample", "echo") is not None
    assert [t.task_id for t in description.tasks][:3] == ["echo", "nothing", "pid"]


def test_outcomes_travel_as_values(runtimes: StartRuntime) -> None:
    runtime = runtimes()
    host = RecordingHost()

    start = task_start("echo", try_number=2, task_reschedule_count=3, params={"a": 1})
    echoed = runtime.execute(start, host)
    nothing = runtime.execute(task_start("nothing"), host)
    boom = runtime.execute(task_start("boom"), host)
    fail = runtime.execute(task_start("fail"), host)
    skip = runtime.execute(task_start("skip"), host)

    assert isinstance(echoed, Succeeded) and echoed.return_value_json is not None
    assert json.loads(echoed.return_value_json) == {
        "task_id": "echo",
        "try_number": 2,
        "task_reschedule_count": 3,
        "params": {"a": 1},
    }
    assert nothing == Succeeded(return_value_json=None)
    assert isinstance(boom, Failed) and boom.retryable and boom.error is not None
    assert (boom.error.type, boom.error.message) == ("ValueError", "boom from the sample bundle")
    assert "sample_bundle.py" in boom.error.traceback
    assert isinstance(fail, Failed) and not fail.retryable
    assert skip == Skipped(reason="nothing to do")
    assert runtime.tasks_run == 5


def test_host_calls_round_trip_and_logs_arrive_in_order(runtimes: StartRuntime) -> None:
    runtime = runtimes()
    host = RecordingHost({"greeting": "hello"})

    outcome = runtime.execute(task_start("host_calls"), host)

    assert outcome == Succeeded(json.dumps({"greeting": "hello", "missing": "fallback"}))
    assert host.calls == [
        ("get_variable", {"key": "greeting"}),
        ("get_variable", {"key": "missing"}),  # answered NOT_FOUND; the SDK used its default
        ("set_variable", {"key": "answer", "value": "42", "description": ""}),
    ]
    assert host.variables["answer"] == "42"
    assert [(r.level, r.event, r.fields) for r in host.logs] == [
        ("info", "first", {"n": 1}),
        ("info", "second", {"n": 2}),
        ("warning", "third", {"n": 3}),
    ]


def test_cancel_ends_the_task_with_a_result(runtimes: StartRuntime) -> None:
    runtime = runtimes()
    cancel = threading.Event()
    host = RecordingHost(on_ready=cancel.set)

    outcome = runtime.execute(task_start("wait"), host, cancel=cancel)

    assert isinstance(outcome, Failed) and outcome.retryable and outcome.error is not None
    assert "cancelled by the supervisor" in outcome.error.message
    # The task may still be running in the process: it must not serve another one.
    assert runtime.alive() and not runtime.reusable()


def test_sigkill_mid_task_raises_runtime_lost_naming_the_signal(runtimes: StartRuntime) -> None:
    runtime = runtimes()
    host = RecordingHost(on_ready=lambda: os.kill(runtime.pid, signal.SIGKILL))

    with pytest.raises(RuntimeLost) as info:
        runtime.execute(task_start("wait"), host)

    assert str(info.value).startswith(
        f"bundle sample-bundle==0.0.0: runtime (pid {runtime.pid}) killed by SIGKILL (signal 9, "
        "possibly the kernel's OOM killer or the task memory limit) while running ti ti-wait "
        "(sample.wait)"
    )
    assert (info.value.pid, info.value.exit_code) == (runtime.pid, -9)
    assert not runtime.alive() and not runtime.reusable()
    with pytest.raises(RuntimeLost, match="had already exited"):
        runtime.execute(task_start("echo"), host)


def test_stop_leaves_no_process_and_no_socket_dir(runtimes: StartRuntime) -> None:
    runtime = runtimes()
    outcome = runtime.execute(task_start("spawn_child"), RecordingHost())
    assert isinstance(outcome, Succeeded) and outcome.return_value_json is not None
    grandchild = psutil.Process(int(outcome.return_value_json))
    assert runtime.socket_dir.is_dir()

    runtime.stop()

    assert runtime.wait_stopped(0)
    assert not psutil.pid_exists(runtime.pid)
    assert not runtime.socket_dir.exists()
    # The task's own child was in the runtime's process group: the final SIGKILL got it too.
    assert still_running([grandchild], timeout=5) == []
    runtime.stop()  # idempotent


def test_second_concurrent_execute_is_refused(runtimes: StartRuntime) -> None:
    runtime = runtimes()
    refused: list[BaseException] = []

    def try_second() -> None:
        try:
            runtime.execute(task_start("echo"), RecordingHost())
        except RuntimeError as exc:
            refused.append(exc)

    def on_ready() -> None:
        thread = threading.Thread(target=try_second)
        thread.start()
        thread.join()

    cancel = threading.Event()
    host = RecordingHost(on_ready=lambda: (on_ready(), cancel.set()))
    outcome = runtime.execute(task_start("wait"), host, cancel=cancel)

    assert isinstance(outcome, Failed)
    assert [str(e) for e in refused] == [f"runtime pid {runtime.pid} is already running a task"]


def test_an_unstopped_runtime_warns(runtimes: StartRuntime) -> None:
    runtime = runtimes()
    with pytest.warns(ResourceWarning, match="was never stopped"):
        runtime.__del__()
