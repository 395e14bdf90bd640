"""Prometheus metrics of `supervisor serve`: every name, label and bucket lives here.

Components report events with one call each (`task_finished`, `warm_hit`, `cold_start`,
`queue_wait`, `api_error`); gauges of what exists right now (live runtimes, their RSS, recorded
install times) are collected at scrape time from the pool and the store (`watch`). `serve.py`
serves the registry on `supervisor.metrics_port` (`MetricsServer`).

Each `Metrics` has its own `CollectorRegistry`, never prometheus_client's global one, so tests
(and several pools in one process) count separately. Label values are low-cardinality by design:
bundle name and version, Airflow states, route templates (`task-instances/{ti_id}/run`), never a
TI id or a pid.

    supervisor_tasks_total{state,bundle,version}            counter
    supervisor_runtime_starts_total{bundle,version,kind}    counter, kind = warm | cold
    supervisor_runtime_start_failures_total{bundle,version} counter
    supervisor_runtime_spawn_seconds{bundle,version}        histogram, spawn -> health SERVING
    supervisor_queue_wait_seconds                           histogram, message taken -> /run
    supervisor_api_errors_total{endpoint,status}            counter
    supervisor_runtimes{bundle,version,state}               gauge, state = idle | busy
    supervisor_runtime_rss_bytes{bundle,version}            gauge, sum over that version's runtimes
    supervisor_bundle_install_seconds{bundle,version}       gauge, recorded by `bundle install`
    supervisor_journal_tis{phase}                           gauge, journal rows: running |
                                                            reporting (a state waits for the API) |
                                                            reported (a Celery result is owed)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from supervisor.background import stop_server
from supervisor.errors import ConfigError

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from supervisor.journal import Journal
    from supervisor.pool import RuntimePool
    from supervisor.store import BundleStore

log = logging.getLogger(__name__)

#: `state` of a TI the worker could not take to a final state (Celery stores FAILURE for it).
NOT_REPORTED = "not_reported"
#: Seconds; runtimes start in ~0.5 s, a cold venv import can take several.
SPAWN_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0)
#: Seconds; a warm lease is milliseconds, a cold start or a wait under max_runtimes much longer.
QUEUE_WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Route templates of the Execution API paths we call, by first path segment.
_ROUTES = {
    "variables": "variables/{key}",
    "connections": "connections/{conn_id}",
    "xcoms": "xcoms/{dag_id}/{run_id}/{task_id}/{key}",
}


def split_label(label: str | None) -> tuple[str, str]:
    """`name==version` -> (name, version); ("", "") when no bundle was resolved."""
    name, _, version = (label or "").partition("==")
    return name, version


def endpoint_of(method: str, path: str) -> str:
    """A low-cardinality endpoint label: the method and the route template, never ids."""
    parts = path.strip("/").split("/")
    if parts[0] == "task-instances":
        leaf = parts[2] if len(parts) > 2 else ""
        return f"{method} task-instances/{{ti_id}}/{leaf}".rstrip("/")
    return f"{method} {_ROUTES.get(parts[0], parts[0] + '/...')}"


class Metrics:
    """The supervisor's metrics in their own registry; thread-safe (prometheus_client locks).

    One per `supervisor serve`, shared by the pool, the API client and taskrun. Each hook is one
    labelled add under prometheus_client's lock, with values the caller already has.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        bundle = ["bundle", "version"]
        self._tasks = Counter(
            "supervisor_tasks", "Task instances handled, by the final state reported to Airflow "
            "(gone: Airflow took the TI away; not_reported: the worker could not report one).",
            ["state", *bundle], registry=self.registry,
        )  # fmt: skip
        self._starts = Counter(
            "supervisor_runtime_starts", "Runtime leases: warm (an idle runtime reused) or cold "
            "(a new process started).", [*bundle, "kind"], registry=self.registry,
        )  # fmt: skip
        self._start_failures = Counter(
            "supervisor_runtime_start_failures", "Runtimes that did not come up.", bundle,
            registry=self.registry,
        )  # fmt: skip
        self._spawn = Histogram(
            "supervisor_runtime_spawn_seconds", "Seconds from spawning a runtime to its health "
            "SERVING.", bundle, buckets=SPAWN_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self._queue_wait = Histogram(
            "supervisor_queue_wait_seconds", "Seconds from this worker taking a TI's Celery "
            "message to the TI's /run: resolving the version and leasing a runtime. Time spent in "
            "the broker is not included.", buckets=QUEUE_WAIT_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self._api_errors = Counter(
            "supervisor_api_errors", "Execution API calls that failed, by route and HTTP status "
            "(unavailable: no answer after the retries).", ["endpoint", "status"],
            registry=self.registry,
        )  # fmt: skip

    # -- events: one call each -----------------------------------------------------------------

    def task_finished(self, bundle_label: str | None, state: str) -> None:
        self._tasks.labels(state, *split_label(bundle_label)).inc()

    def warm_hit(self, bundle_label: str) -> None:
        self._starts.labels(*split_label(bundle_label), "warm").inc()

    def cold_start(self, bundle_label: str, spawn_s: float) -> None:
        name, version = split_label(bundle_label)
        self._starts.labels(name, version, "cold").inc()
        self._spawn.labels(name, version).observe(spawn_s)

    def start_failed(self, bundle_label: str) -> None:
        self._start_failures.labels(*split_label(bundle_label)).inc()

    def queue_wait(self, seconds: float) -> None:
        self._queue_wait.observe(max(seconds, 0.0))

    def api_error(self, method: str, path: str, status_code: int | None) -> None:
        status = str(status_code) if status_code else "unavailable"
        self._api_errors.labels(endpoint_of(method, path), status).inc()

    # -- scrape-time state ---------------------------------------------------------------------

    def watch(
        self,
        *,
        pool: RuntimePool | None = None,
        store: BundleStore | None = None,
        journal: Journal | None = None,
    ) -> None:
        """Collect live runtimes and RSS from `pool`, install times from `store` and the TIs
        the journal holds by phase, per scrape."""
        self.registry.register(_StateCollector(pool, store, journal))


class _StateCollector(Collector):
    """Gauges read at scrape time; a failing read logs and yields what it has."""

    def __init__(
        self, pool: RuntimePool | None, store: BundleStore | None, journal: Journal | None
    ) -> None:
        self._pool = pool
        self._store = store
        self._journal = journal

    def describe(self) -> list[Metric]:
        return []  # unchecked collector: names are fixed here, values need a scrape

    def collect(self) -> Iterator[Metric]:
        if self._pool is not None:
            yield from self._runtime_gauges(self._pool)
        if self._store is not None:
            yield self._install_gauge(self._store)
        if self._journal is not None:
            yield self._journal_gauge(self._journal)

    def _journal_gauge(self, journal: Journal) -> Metric:
        gauge = GaugeMetricFamily(
            "supervisor_journal_tis", "TIs in this worker's journal by phase: running, reporting "
            "(the final state waits for the Execution API), reported (the Celery result is owed).",
            labels=["phase"],
        )  # fmt: skip
        for phase, count in sorted(journal.phases().items()):
            gauge.add_metric([phase], count)
        return gauge

    def _runtime_gauges(self, pool: RuntimePool) -> Iterator[Metric]:
        runtimes = GaugeMetricFamily(
            "supervisor_runtimes", "Live runtime processes, idle or busy.",
            labels=["bundle", "version", "state"],
        )  # fmt: skip
        rss = GaugeMetricFamily(
            "supervisor_runtime_rss_bytes", "Resident memory of a version's runtimes and their "
            "children, summed.", labels=["bundle", "version"],
        )  # fmt: skip
        counts: dict[tuple[str, str, str], int] = {}
        totals: dict[tuple[str, str], int] = {}
        for info in pool.runtimes():
            key = split_label(info.bundle)
            state = "busy" if info.busy else "idle"
            counts[(*key, state)] = counts.get((*key, state), 0) + 1
            totals[key] = totals.get(key, 0) + info.rss_bytes
        for labels, count in sorted(counts.items()):
            runtimes.add_metric(list(labels), count)
        for key, total in sorted(totals.items()):
            rss.add_metric(list(key), total)
        yield runtimes
        yield rss

    def _install_gauge(self, store: BundleStore) -> Metric:
        gauge = GaugeMetricFamily(
            "supervisor_bundle_install_seconds", "Seconds `supervisor bundle install` took for "
            "each installed version (venv, packages, first start); absent when not recorded.",
            labels=["bundle", "version"],
        )  # fmt: skip
        try:
            bundles = store.list()
        except Exception:
            log.warning("metrics.store_unreadable", exc_info=True)
            return gauge
        for bundle in bundles:
            if bundle.install_s is not None:
                gauge.add_metric([bundle.name, bundle.version], bundle.install_s)
        return gauge


class MetricsServer:
    """`/metrics` over HTTP on (host, port) in a daemon thread; a context manager.

    `port=0` in the constructor picks a free port (tests); `port` then holds the bound one.
    """

    def __init__(self, metrics: Metrics, *, host: str, port: int) -> None:
        self._metrics = metrics
        self.host = host
        self.port = port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def start(self) -> MetricsServer:
        """Listen now. Raises ConfigError when the address cannot be bound."""
        try:
            server, thread = start_http_server(
                self.port, self.host, registry=self._metrics.registry
            )
        except OSError as exc:
            raise ConfigError(
                f"setting supervisor.metrics_port = {self.port}: cannot listen on "
                f"{self.host}:{self.port} ({exc.strerror or exc}); choose a free port, or 0 to "
                "turn metrics off"
            ) from exc
        thread.name = "metrics-http"
        self._server, self._thread = server, thread
        self.port = server.server_port
        log.debug("metrics.listening", extra={"host": self.host, "port": self.port})
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        stop_server(self._server, self._thread)
        self._server = self._thread = None

    def __enter__(self) -> MetricsServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
