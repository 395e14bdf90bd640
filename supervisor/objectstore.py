"""Object-storage URLs as Airflow writes them, and fsspec filesystems for them.

Airflow names a location with the connection in the user part of the URL
(`s3://aws_default@bucket/prefix`, as `airflow.sdk.ObjectStoragePath` does); the filesystem gets
that connection's credentials. `StorageUrl` splits such a URL; `open_filesystem` builds the
fsspec filesystem from the scheme and a connection the caller fetched (through the Execution
API, with a TI's token). XCom's object storage and remote logs both map connections here.

S3 (`s3`, `s3a`, `s3n`) reads the connection as Airflow's amazon provider does (`aws/fs/s3.py`
over `AwsConnectionWrapper`): login/password or extra `aws_access_key_id`/`aws_secret_access_key`,
extra `aws_session_token`, `region_name`, `endpoint_url` (or `service_config.s3.endpoint_url`) and
`config_kwargs`; without keys, botocore's default chain (env, profile, instance role). Role
assumption and request signers are not supported. Other schemes (`file`, `memory`, ...) get
fsspec's filesystem for the scheme, without credentials.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import fsspec

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

    from supervisor.api.models import Connection

#: Schemes served by s3fs with an AWS connection (the amazon provider's `schemes`).
S3_SCHEMES = frozenset({"s3", "s3a", "s3n"})


@dataclass(frozen=True)
class StorageUrl:
    """An object-storage URL split into scheme, connection id and the URL without it."""

    #: "s3", "file", ...
    scheme: str
    #: The Airflow connection named in the user part, or None.
    conn_id: str | None
    #: The URL without the connection: what fsspec understands.
    bare: str

    @classmethod
    def parse(cls, url: str) -> StorageUrl:
        """Split `url`; raises ValueError when it has no `scheme://`."""
        scheme, sep, rest = url.partition("://")
        if not sep or not scheme or urlsplit(url).scheme != scheme.lower():
            raise ValueError(
                f"{url!r} is not a URL with a scheme, such as s3://conn_id@bucket/path"
            )
        user = urlsplit(url).netloc.rpartition("@")[0]
        bare = f"{scheme}://{rest.removeprefix(user + '@') if user else rest}"
        return cls(scheme=scheme.lower(), conn_id=user or None, bare=bare)


def open_filesystem(
    url: StorageUrl, connection: Connection | None
) -> tuple[AbstractFileSystem, str]:
    """The filesystem for `url` with `connection`'s credentials, and the path inside it.

    fsspec caches filesystem instances by their arguments, so repeated calls with the same
    connection reuse one client.
    """
    options = s3_options(connection) if url.scheme in S3_SCHEMES else {}
    fs, path = fsspec.core.url_to_fs(url.bare, **options)
    return fs, path


def s3_options(connection: Connection | None) -> dict[str, Any]:
    """s3fs arguments from an Airflow AWS connection (None: botocore's default chain)."""
    # s3fs lists directories into a cache; other writers' objects must never be missed.
    options: dict[str, Any] = {"use_listings_cache": False}
    if connection is None:
        return options
    extra = connection_extra(connection)
    key = connection.login or extra.get("aws_access_key_id")
    secret = connection.password or extra.get("aws_secret_access_key")
    if key and secret:
        options["key"], options["secret"] = key, secret
    if token := extra.get("aws_session_token"):
        options["token"] = token
    service = extra.get("service_config") or {}
    if endpoint := (service.get("s3") or {}).get("endpoint_url") or extra.get("endpoint_url"):
        options["endpoint_url"] = endpoint
    if region := extra.get("region_name"):
        options["client_kwargs"] = {"region_name": region}
    if config_kwargs := extra.get("config_kwargs"):
        options["config_kwargs"] = dict(config_kwargs)
    return options


def connection_extra(connection: Connection) -> dict[str, Any]:
    """The connection's extra as a dict; ValueError naming the connection when it is not one.

    Airflow itself logs a bad extra and carries on with {}; we refuse it, because credentials
    silently falling back to the environment's write where nobody expects.
    """
    try:
        extra = json.loads(connection.extra or "{}")
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"connection {connection.conn_id!r}: extra is not a JSON object ({exc.msg})"
        ) from None
    if not isinstance(extra, dict):
        raise ValueError(f"connection {connection.conn_id!r}: extra is not a JSON object")
    return extra
