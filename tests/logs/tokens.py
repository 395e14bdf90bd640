"""Log-server tokens as Airflow's api-server makes them (JWTGenerator for log requests), and a
GET sent byte for byte, for the log-server tests here and in tests/e2e."""

from __future__ import annotations

import socket
import time
import uuid
from typing import Any

import jwt


def log_token(filename: str, secret: str, **changes: Any) -> str:
    """HS512, valid 30 s, audience task-instance-logs, `filename` claim; `changes` override
    claims (None removes one)."""
    now = int(time.time())
    claims = {
        "jti": uuid.uuid4().hex,
        "aud": "task-instance-logs",
        "nbf": now,
        "iat": now,
        "exp": now + 30,
        "filename": filename,
        **changes,
    }
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, secret, algorithm="HS512", headers={"kid": "not-used"})


def raw_get(port: int, target: str, auth: str) -> tuple[int, bytes]:
    """GET `target` from 127.0.0.1:`port` sent byte for byte (an HTTP client would remove dot
    segments first); returns the status and the body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            f"GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body
