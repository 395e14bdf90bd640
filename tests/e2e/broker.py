"""Look at Airflow's Celery messages in the Redis broker without consuming them.

Layout (kombu Redis transport, see shared/reference/airflow-stack/README.md §4): a queue is a
Redis list named after it (LPUSH by the producer); a message a worker took but has not acked yet is
parked in the hash ``unacked`` as ``[envelope, exchange, routing_key]``. The envelope's base64 body
is Celery protocol 2 ``[args, kwargs, embed]``, and ``args[0]`` is the Airflow workload as a JSON
string.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import redis

UNACKED_HASH = "unacked"


@dataclass(frozen=True)
class CeleryMessage:
    where: str  # "list:<queue>" or "unacked"
    celery_id: str
    workload: dict[str, Any]

    @property
    def ti(self) -> dict[str, Any]:
        return self.workload.get("ti") or {}


def decode_envelope(raw: str | bytes | dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(celery task id, workload) of one kombu envelope."""
    envelope = json.loads(raw) if isinstance(raw, str | bytes) else raw
    body = envelope["body"]
    if envelope.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    args, _kwargs, _embed = json.loads(body)
    return envelope["headers"]["id"], json.loads(args[0])


def celery_messages(
    client: redis.Redis, queues: tuple[str, ...] = ("default",)
) -> list[CeleryMessage]:
    """Every message waiting on ``queues`` plus every unacked one (of any queue)."""
    found = []
    for queue in queues:
        for raw in client.lrange(queue, 0, -1):
            celery_id, workload = decode_envelope(raw)
            found.append(CeleryMessage(f"list:{queue}", celery_id, workload))
    for raw in client.hvals(UNACKED_HASH):
        envelope, _exchange, _routing_key = json.loads(raw)
        celery_id, workload = decode_envelope(envelope)
        found.append(CeleryMessage(UNACKED_HASH, celery_id, workload))
    return found


def messages_of_run(
    client: redis.Redis, dag_id: str, run_id: str, queues: tuple[str, ...] = ("default",)
) -> list[CeleryMessage]:
    """The messages of one DAG run still in the broker: other tests may share this Redis DB, so a
    test checks only its own run."""
    return [
        msg
        for msg in celery_messages(client, queues)
        if msg.ti.get("dag_id") == dag_id and msg.ti.get("run_id") == run_id
    ]
