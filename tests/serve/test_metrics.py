"""supervisor/metrics.py: names, labels and the /metrics endpoint, without a serve process."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from supervisor.errors import ConfigError
from supervisor.metrics import Metrics, MetricsServer, endpoint_of, split_label
from supervisor.store import BundleStore


@pytest.mark.parametrize(
    ("method", "path", "endpoint"),
    [
        ("PATCH", "task-instances/0196-abc/run", "PATCH task-instances/{ti_id}/run"),
        ("PUT", "task-instances/0196-abc/heartbeat", "PUT task-instances/{ti_id}/heartbeat"),
        ("PATCH", "task-instances/0196-abc/state", "PATCH task-instances/{ti_id}/state"),
        ("GET", "variables/my%2Fkey", "GET variables/{key}"),
        ("GET", "connections/pg", "GET connections/{conn_id}"),
        ("POST", "xcoms/d/r%3A1/t/a/b", "POST xcoms/{dag_id}/{run_id}/{task_id}/{key}"),
        ("GET", "assets/by-name", "GET assets/..."),
    ],
)
def test_endpoint_label_is_the_route_template(method: str, path: str, endpoint: str) -> None:
    assert endpoint_of(method, path) == endpoint


def test_bundle_labels_split_name_and_version() -> None:
    assert split_label("example-etl==2.0.0") == ("example-etl", "2.0.0")
    assert split_label(None) == ("", "")


def test_task_counters_by_state_and_version() -> None:
    metrics = Metrics()
    metrics.task_finished("example-etl==1.0.0", "success")
    metrics.task_finished("example-etl==1.0.0", "success")
    metrics.task_finished("example-etl==2.0.0", "up_for_retry")
    metrics.task_finished(None, "failed")  # no version resolved

    sample = metrics.registry.get_sample_value
    name = "supervisor_tasks_total"
    assert sample(name, {"state": "success", "bundle": "example-etl", "version": "1.0.0"}) == 2
    assert sample(name, {"state": "up_for_retry", "bundle": "example-etl", "version": "2.0.0"}) == 1
    assert sample(name, {"state": "failed", "bundle": "", "version": ""}) == 1


def test_queue_wait_histogram_observes_seconds() -> None:
    metrics = Metrics()
    metrics.queue_wait(0.02)
    metrics.queue_wait(3.0)

    sample = metrics.registry.get_sample_value
    assert sample("supervisor_queue_wait_seconds_count") == 2
    assert sample("supervisor_queue_wait_seconds_bucket", {"le": "0.025"}) == 1
    assert sample("supervisor_queue_wait_seconds_sum") == pytest.approx(3.02)


def test_install_seconds_come_from_the_store(session_home: Path) -> None:
    metrics = Metrics()
    metrics.watch(store=BundleStore(session_home))

    for version in ("1.0.0", "2.0.0"):
        labels = {"bundle": "example-etl", "version": version}
        seconds = metrics.registry.get_sample_value("supervisor_bundle_install_seconds", labels)
        assert seconds is not None and seconds > 0


def test_registries_are_private() -> None:
    one, two = Metrics(), Metrics()
    one.task_finished("b==1", "success")
    labels = {"state": "success", "bundle": "b", "version": "1"}
    assert two.registry.get_sample_value("supervisor_tasks_total", labels) is None


def test_server_serves_the_registry_and_stops() -> None:
    metrics = Metrics()
    metrics.task_finished("b==1", "success")
    with MetricsServer(metrics, host="127.0.0.1", port=0) as server:
        body = httpx.get(server.url, timeout=5).text
    assert 'supervisor_tasks_total{bundle="b",state="success",version="1"} 1.0' in body
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url, timeout=5)


def test_a_taken_port_is_one_clear_config_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"metrics_port = {port}: cannot listen on .*free"):
            MetricsServer(Metrics(), host="127.0.0.1", port=port).start()
