"""grpc.health.v1.Health for the runtime, on our own generated stubs (no grpcio-health-checking).

server.py sets SERVING for "" and protocol.HEALTH_SERVICE once the bundle is imported and the
server is up, and NOT_SERVING for HEALTH_SERVICE when it starts to stop.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import grpc

from ._proto import health_pb2, health_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthServicer(health_pb2_grpc.HealthServicer):
    """grpc.health.v1.Health: Check, and Watch sending each status change."""

    def __init__(self) -> None:
        self._statuses: dict[str, int] = {}
        self._changed = threading.Condition()

    def set(self, service: str, status: int) -> None:
        with self._changed:
            self._statuses[service] = status
            self._changed.notify_all()

    def Check(
        self, request: health_pb2.HealthCheckRequest, context: Any
    ) -> health_pb2.HealthCheckResponse:
        with self._changed:
            status = self._statuses.get(request.service)
        if status is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    def Watch(
        self, request: health_pb2.HealthCheckRequest, context: Any
    ) -> Iterator[health_pb2.HealthCheckResponse]:
        context.add_callback(self._wake)
        unknown = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        last = None
        while context.is_active():
            with self._changed:
                status = self._statuses.get(request.service, unknown)
                if status == last:
                    self._changed.wait()
                    continue
            last = status
            yield health_pb2.HealthCheckResponse(status=status)

    def _wake(self) -> None:
        with self._changed:
            self._changed.notify_all()
