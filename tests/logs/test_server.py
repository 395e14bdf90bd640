"""The log server over real HTTP, with tokens made by PyJWT as Airflow's api-server makes them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from supervisor.errors import ConfigError
from supervisor.logs.server import LogServer
from tests.logs.tokens import log_token, raw_get

SECRET = "unit-test-secret-key-0123456789abcdef0123456789abcdef0123456789abcdef"
REL = "dag_id=d/run_id=manual__2026-01-01T00:00:00+00:00/task_id=t/attempt=1.log"
BODY = b'{"timestamp":"2026-01-01T00:00:00.000000Z","level":"info","event":"hello"}\n'


def token(filename: str = REL, *, secret: str = SECRET, **changes: Any) -> str:
    return log_token(filename, secret, **changes)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    logs = tmp_path / "logs"
    (logs / REL).parent.mkdir(parents=True)
    (logs / REL).write_bytes(BODY)
    return logs


@pytest.fixture
def server(folder: Path) -> Iterator[LogServer]:
    with LogServer(folder, secret_key=SECRET, host="127.0.0.1", port=0) as srv:
        yield srv


@pytest.fixture
def http(server: LogServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=5) as client:
        yield client


def get(http: httpx.Client, path: str, auth: str | None) -> httpx.Response:
    headers = {"Authorization": auth} if auth is not None else {}
    return http.get(path, headers=headers)


def test_valid_token_gets_the_file_with_content_length(http: httpx.Client) -> None:
    reply = get(http, f"/log/{REL}", token())
    assert reply.status_code == 200
    assert reply.content == BODY
    assert reply.headers["Content-Length"] == str(len(BODY))


def test_percent_encoded_path_matches_the_decoded_filename_claim(http: httpx.Client) -> None:
    # Airflow's requests URL-quotes ':' and '+' in run ids; the claim holds the plain path.
    encoded = REL.replace(":", "%3A").replace("+", "%2B")
    assert get(http, f"/log/{encoded}", token()).content == BODY


@pytest.mark.parametrize(
    ("name", "auth"),
    [
        ("token for another file", lambda: token("dag_id=d/other.log")),
        ("expired beyond the 30 s leeway", lambda: token(exp=int(time.time()) - 31)),
        ("wrong audience", lambda: token(aud="api")),
        ("wrong key", lambda: token(secret="another-secret-key-" + "x" * 50)),
        ("Bearer prefix", lambda: "Bearer " + token()),
        ("missing header", lambda: None),
        ("empty header", lambda: ""),
        ("no iat", lambda: token(iat=None)),
        ("no filename claim", lambda: token(filename=None)),
        ("not yet valid", lambda: token(nbf=int(time.time()) + 120)),
        (
            "HS256 instead of HS512",
            lambda: jwt.encode(
                {
                    "aud": "task-instance-logs",
                    "filename": REL,
                    "iat": int(time.time()),
                    "nbf": int(time.time()),
                    "exp": int(time.time()) + 30,
                },
                SECRET,
                algorithm="HS256",
            ),
        ),
    ],
)
def test_any_auth_failure_is_403(http: httpx.Client, name: str, auth: Any) -> None:
    reply = get(http, f"/log/{REL}", auth())
    assert reply.status_code == 403, name
    assert BODY not in reply.content


def test_expired_within_leeway_still_serves(http: httpx.Client) -> None:
    assert get(http, f"/log/{REL}", token(exp=int(time.time()) - 10)).status_code == 200


def test_missing_file_is_404(http: httpx.Client) -> None:
    missing = "dag_id=d/run_id=r/task_id=t/attempt=9.log"
    assert get(http, f"/log/{missing}", token(missing)).status_code == 404


@pytest.mark.parametrize(
    "escape", ["../secret.txt", "dag_id=d/../../secret.txt", "%2E%2E/secret.txt"]
)
def test_dotdot_never_leaves_the_folder(server: LogServer, folder: Path, escape: str) -> None:
    (folder.parent / "secret.txt").write_text("outside")
    decoded = escape.replace("%2E", ".")
    # Sent raw: httpx would remove the dot segments before sending. The token even matches.
    status, body = raw_get(server.port, f"/log/{escape}", token(decoded))
    assert status == 404
    assert b"outside" not in body


def test_absolute_path_is_refused(server: LogServer, folder: Path) -> None:
    outside = folder.parent / "secret.txt"
    outside.write_text("outside")
    # "/log/" + "/tmp/.../secret.txt": the filename claim is the absolute path, and matches.
    status, body = raw_get(server.port, f"/log/{outside}", token(str(outside)))
    assert status == 404
    assert b"outside" not in body


def test_symlink_escaping_the_folder_is_404(http: httpx.Client, folder: Path) -> None:
    outside = folder.parent / "secret.txt"
    outside.write_text("outside")
    link = folder / "dag_id=d" / "link.log"
    link.symlink_to(outside)
    reply = get(http, "/log/dag_id=d/link.log", token("dag_id=d/link.log"))
    assert reply.status_code == 404
    assert b"outside" not in reply.content


def test_symlink_inside_the_folder_is_served(http: httpx.Client, folder: Path) -> None:
    link = folder / "dag_id=d" / "alias.log"
    link.symlink_to(folder / REL)
    assert get(http, "/log/dag_id=d/alias.log", token("dag_id=d/alias.log")).content == BODY


def test_other_paths_and_methods(http: httpx.Client) -> None:
    assert get(http, "/", token()).status_code == 404
    assert http.post(f"/log/{REL}", headers={"Authorization": token()}).status_code == 405


def test_growing_file_is_served_as_seen_with_matching_length(
    http: httpx.Client, folder: Path
) -> None:
    with (folder / REL).open("ab") as f:
        f.write(BODY)
    reply = get(http, f"/log/{REL}", token())
    assert reply.content == BODY * 2
    assert int(reply.headers["Content-Length"]) == len(BODY) * 2


def test_port_taken_is_a_config_error(server: LogServer, folder: Path) -> None:
    with pytest.raises(ConfigError, match="worker_log_server_port"):
        LogServer(folder, secret_key=SECRET, host="127.0.0.1", port=server.port).start()


def test_no_secret_key_is_a_config_error(folder: Path) -> None:
    with pytest.raises(ConfigError, match="secret_key"):
        LogServer(folder, secret_key="", host="127.0.0.1", port=0)


def test_close_stops_serving(folder: Path) -> None:
    srv = LogServer(folder, secret_key=SECRET, host="127.0.0.1", port=0).start()
    port = srv.port
    srv.close()
    srv.close()  # idempotent
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/log/{REL}", headers={"Authorization": token()})
