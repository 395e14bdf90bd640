"""The worker log server: serves task log files to Airflow's api-server while (and after) they run.

Airflow's api-server fetches `http://{hostname sent in /run}:{its [logging] worker_log_server_port}
/log/{log_path}` for a running or deferred TI, and for a finished one when it finds no local or
remote log (reference §4.5). The rules are those of `airflow.utils.serve_logs.log_server`:

- `Authorization: <JWT>`, raw (no "Bearer "): HS512 signed with [api] secret_key, audience
  `task-instance-logs`, `exp`, `iat` and `nbf` required, 30 s leeway, and the `filename` claim
  equal to the percent-decoded path after `/log/`. Any failure: 403.
- 200 with `Content-Length` (the api-server ignores a 200 without one), 404 for a missing file.
- Nothing outside base_log_folder is ever read: the resolved path (symlinks followed) must stay
  inside the resolved folder, or the answer is 404.

The stdlib's ThreadingHTTPServer is enough: a handful of GETs per UI refresh, each reading one file;
one thread per request, daemon threads so a stuck client never blocks stop. What it leaves to
others: writing the files (files.py) and uploading them (remote.py).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import jwt

from supervisor.background import serve_in_thread, stop_server
from supervisor.errors import ConfigError

log = logging.getLogger(__name__)

#: Airflow's `aud` claim for worker log requests.
AUDIENCE = "task-instance-logs"
#: Airflow signs with HS512 when [api] secret_key is the key; nothing else is accepted.
ALGORITHMS = ["HS512"]
#: `[webserver] log_request_clock_grace` fallback: token lifetime and the leeway we allow.
DEFAULT_LEEWAY_S = 30.0
#: Seconds a client may take per socket operation before its thread gives up.
REQUEST_TIMEOUT_S = 30.0
#: Bytes per read when streaming a file.
CHUNK_BYTES = 64 * 1024
PREFIX = "/log/"
#: How often the serving loop checks for close(); close() waits up to this long.
POLL_INTERVAL_S = 0.05


class LogServer:
    """Serves one folder of task logs over HTTP with Airflow's JWT rules; a context manager.

    `start()` binds and serves from a thread named `log-server`; `close()` stops accepting, and
    is idempotent. Port 0 picks a free port (tests); `port` tells which one was bound.
    """

    def __init__(
        self,
        folder: Path,
        *,
        secret_key: str,
        host: str,
        port: int,
        leeway_s: float = DEFAULT_LEEWAY_S,
    ) -> None:
        if not secret_key:
            raise ConfigError(
                "log server: [api] secret_key is not set (AIRFLOW__API__SECRET_KEY); it must be "
                "the api-server's, which signs the log requests"
            )
        self.folder = folder
        self.host = host
        self._secret_key = secret_key
        self._leeway_s = leeway_s
        self._requested_port = port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (after start), else the configured one."""
        return self._httpd.server_address[1] if self._httpd else self._requested_port

    def start(self) -> LogServer:
        """Bind and serve in the background; raises ConfigError when the address is taken."""
        handler = type("Handler", (_Handler,), {"server_config": self})
        server_class = _IPv6Server if ":" in self.host else _IPv4Server
        try:
            self._httpd = server_class((self.host, self._requested_port), handler)
        except OSError as exc:
            raise ConfigError(
                f"log server: cannot listen on {self.host}:{self._requested_port} ({exc}); set "
                "[logging] worker_log_server_port (AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT) to "
                "the port the api-server uses and free it, or SUPERVISOR__SKIP_SERVE_LOGS=true"
            ) from exc
        self._thread = serve_in_thread(self._httpd, "log-server", poll_interval_s=POLL_INTERVAL_S)
        log.info(
            "log_server.started",
            extra={"host": self.host, "port": self.port, "folder": str(self.folder)},
        )
        return self

    def close(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        port = httpd.server_address[1]
        stop_server(httpd, self._thread)
        log.debug("log_server.stopped", extra={"port": port})

    def __enter__(self) -> LogServer:
        return self.start() if self._httpd is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the rules, apart from the wire ---------------------------------------------------------

    def authorize(self, authorization: str | None, filename: str) -> str | None:
        """None when the raw JWT allows reading `filename`, else why not (for the worker log)."""
        if not authorization:
            return "no Authorization header"
        try:
            claims = jwt.decode(
                authorization,
                self._secret_key,
                algorithms=ALGORITHMS,
                audience=AUDIENCE,
                leeway=self._leeway_s,
                options={"require": ["exp", "iat", "nbf"]},
            )
        except jwt.PyJWTError as exc:
            return f"{type(exc).__name__}: {exc}"
        if claims.get("filename") != filename:
            return "token is for another file"
        return None

    def resolve(self, filename: str) -> Path | None:
        """The file to serve for `filename`, or None if missing or outside the folder."""
        base = self.folder.resolve()
        if not filename or filename.startswith("/") or "\x00" in filename:
            return None
        path = (base / filename).resolve()
        if not path.is_relative_to(base) or not path.is_file():
            return None
        return path


class _IPv4Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _IPv6Server(_IPv4Server):
    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        # Dual-stack on "::", like uvicorn in Airflow's serve_logs.
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class _Handler(BaseHTTPRequestHandler):
    """GET /log/<path> only; everything else is 404 or 405."""

    server_config: LogServer
    timeout = REQUEST_TIMEOUT_S
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if not path.startswith(PREFIX):
            self._reply(HTTPStatus.NOT_FOUND)
            return
        filename = unquote(path.removeprefix(PREFIX))
        refusal = self.server_config.authorize(self.headers.get("Authorization"), filename)
        if refusal is not None:
            # The token itself is never logged.
            log.warning("log_server.forbidden", extra={"file": filename, "reason": refusal})
            self._reply(HTTPStatus.FORBIDDEN)
            return
        file = self.server_config.resolve(filename)
        if file is None:
            self._reply(HTTPStatus.NOT_FOUND)
            return
        self._send_file(file)

    def _send_file(self, file: Path) -> None:
        with file.open("rb") as f:
            # The file may still grow (a running task): send the size seen now, exactly.
            size = os.fstat(f.fileno()).st_size
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            left = size
            while left > 0:
                chunk = f.read(min(CHUNK_BYTES, left))
                if not chunk:  # truncated under us: the client sees a short body
                    break
                self.wfile.write(chunk)
                left -= len(chunk)

    def do_POST(self) -> None:
        self._reply(HTTPStatus.METHOD_NOT_ALLOWED)

    do_PUT = do_DELETE = do_PATCH = do_POST

    def _reply(self, status: HTTPStatus) -> None:
        body = f"{status.value} {status.phrase}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # the stdlib's signature
        line = format % args
        log.debug("log_server.request", extra={"client": self.client_address[0], "line": line})
