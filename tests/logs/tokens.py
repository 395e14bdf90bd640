"""Log-server tokens as Airflow's api-server makes them (JWTGenerator for log requests)."""

from __future__ import annotations

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
