"""Airflow's common-io `XComObjectStorageBackend`, acted out by the worker, byte for byte.

The format (docs/xcom-object-storage.md; provider 1.11.0 `serialize_value`, `deserialize_value`,
`purge`): a value whose JSON text (`json.dumps`, default separators) is at least `threshold`
bytes goes to `<path>/<dag_id>/<run_id>/<task_id>/<uuid4>[.<suffix>]`, compressed when
`compression` is set (the suffix is fsspec's for it: gz, bz2, zip, lzma, xz), and the metadata DB
gets that URL, connection id included, as a JSON string. Smaller values go to the DB unchanged.
A reader treats a string value that starts with `<path>/` as a reference, infers compression
from its suffix, and, like the provider, returns the string itself when no such object exists.

Unlike the provider, an object that exists but cannot be read or is not JSON raises
`XComStorageError` instead of passing the reference string off as the value.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import TYPE_CHECKING, Any

import fsspec
import fsspec.compression
import fsspec.utils

from supervisor.errors import ConfigError, ExecutionApiError, XComStorageError
from supervisor.objectstore import StorageUrl, open_filesystem
from supervisor.xcom.backend import DatabaseXCom, XComAddress

if TYPE_CHECKING:
    from supervisor.api.models import Connection
    from supervisor.api.task import TaskApi

log = logging.getLogger(__name__)

#: Threshold meaning "never to object storage" (Airflow's default).
NEVER = -1
#: Path segments the provider writes when an id is empty.
_MISSING = ("NO_DAG_ID", "NO_RUN_ID", "NO_TASK_ID")


class ObjectStorageXCom:
    """XCom values over `threshold` bytes in object storage, references to them in the DB.

    Thread-safe: it keeps only its settings; filesystems come from fsspec's instance cache, and
    each access fetches the path's connection through the calling TI's `TaskApi`.
    """

    def __init__(self, *, path: str, threshold: int, compression: str | None = None) -> None:
        self.path = path
        self.threshold = threshold
        self.compression = compression
        #: What every reference starts with: the path as Airflow prints it, plus "/".
        self.prefix = path.rstrip("/") + "/"
        self._suffix = f".{compression_suffix(compression)}" if compression else ""
        self._db = DatabaseXCom()

    @classmethod
    def configured(cls, *, path: str, threshold: int, compression: str | None) -> ObjectStorageXCom:
        """Check the [common.io] settings as the worker starts. Raises ConfigError."""
        if not path:
            raise ConfigError(
                "setting common_io.xcom_objectstorage_path is empty, but core.xcom_backend "
                "names the object-storage backend; set AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH "
                "as for Airflow, e.g. s3://aws_default@bucket/xcom"
            )
        try:
            url = StorageUrl.parse(path)
            fsspec.get_filesystem_class(url.scheme)
        except (ValueError, ImportError) as exc:
            raise ConfigError(
                f"setting common_io.xcom_objectstorage_path = {path!r}: {exc}"
            ) from None
        if compression:
            compression_suffix(compression)
        return cls(path=path, threshold=threshold, compression=compression)

    # -- the backend interface -----------------------------------------------------------------

    def get(self, api: TaskApi, where: XComAddress, *, include_prior_dates: bool = False) -> Any:
        stored = self._db.get(api, where, include_prior_dates=include_prior_dates)
        if not self.is_reference(stored):
            return stored
        try:
            data = self._read(api, stored)
        except FileNotFoundError:
            return stored  # a plain string that looks like ours, as the provider reads it
        try:
            return json.loads(data)
        except ValueError as exc:
            raise XComStorageError(
                f"XCom object {stored!r} is not JSON ({exc}); written by something other than "
                "Airflow's XComObjectStorageBackend?",
                url=stored,
            ) from None

    def set_json(
        self, api: TaskApi, where: XComAddress, value_json: str, *, mapped_length: int | None
    ) -> None:
        # The provider measures json.dumps(value): re-encode so sizes and bytes match its own.
        data = json.dumps(json.loads(value_json)).encode("utf-8")
        if not self.goes_to_storage(len(data)):
            self._db.set_json(api, where, value_json, mapped_length=mapped_length)
            return
        reference = self._write(api, where, data)
        self._db.set_json(api, where, json.dumps(reference), mapped_length=mapped_length)

    def delete(self, api: TaskApi, where: XComAddress) -> None:
        """Remove the object first, then the DB row (the SDK's `BaseXCom.delete` order)."""
        try:
            stored = self._db.get(api, where)
        except ExecutionApiError as exc:
            if exc.status_code != 404:
                raise
            stored = None
        if self.is_reference(stored):
            self._unlink(api, stored)
        self._db.delete(api, where)

    # -- the format ----------------------------------------------------------------------------

    def goes_to_storage(self, size_bytes: int) -> bool:
        """The provider's rule: a threshold of -1 means never, 0 always, n from n bytes on."""
        return self.threshold >= 0 and size_bytes >= self.threshold

    def is_reference(self, value: Any) -> bool:
        return isinstance(value, str) and value.startswith(self.prefix)

    def reference_for(self, where: XComAddress) -> str:
        """A new object URL for a value of `where`; uuid4 makes collisions a non-issue."""
        ids = (where.dag_id, where.run_id, where.task_id)
        segments = [value or missing for value, missing in zip(ids, _MISSING, strict=True)]
        return self.prefix + "/".join((*segments, f"{uuid.uuid4()}{self._suffix}"))

    # -- storage -------------------------------------------------------------------------------

    def _write(self, api: TaskApi, where: XComAddress, data: bytes) -> str:
        reference = self.reference_for(where)
        url, connection = self._locate(api, reference)
        try:
            fs, path = open_filesystem(url, connection)
            fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            with fs.open(path, "wb", compression=self.compression) as out:
                out.write(data)
        except Exception as exc:  # s3fs, botocore, aiohttp and OSError all surface here
            raise XComStorageError(
                f"XCom {where.key!r} of {where.dag_id}.{where.task_id}: writing {reference!r} "
                f"({len(data)} bytes) failed: {exc}",
                url=reference,
            ) from exc
        log.debug("xcom.stored", extra={"url": reference, "bytes": len(data), "key": where.key})
        return reference

    def _read(self, api: TaskApi, reference: str) -> bytes:
        """The object's JSON bytes, decompressed. Raises FileNotFoundError, XComStorageError."""
        url, connection = self._locate(api, reference)
        try:
            fs, path = open_filesystem(url, connection)
            with fs.open(path, "rb", compression="infer") as stream:
                data: bytes = stream.read()
        except FileNotFoundError:
            raise
        except Exception as exc:
            raise XComStorageError(
                f"reading XCom object {reference!r} failed: {exc}", url=reference
            ) from exc
        return data

    def _unlink(self, api: TaskApi, reference: str) -> None:
        url, connection = self._locate(api, reference)
        try:
            fs, path = open_filesystem(url, connection)
            fs.rm_file(path)
        except FileNotFoundError:
            pass
        except Exception as exc:
            raise XComStorageError(
                f"deleting XCom object {reference!r} failed: {exc}", url=reference
            ) from exc

    def _locate(self, api: TaskApi, reference: str) -> tuple[StorageUrl, Connection | None]:
        """The object's URL and its connection. Raises ExecutionApiError (not 404)."""
        url = StorageUrl.parse(reference)
        return url, _connection(api, url.conn_id)


def _connection(api: TaskApi, conn_id: str | None) -> Connection | None:
    """The path's connection; a missing one means default credentials, as in Airflow's hooks."""
    if conn_id is None:
        return None
    try:
        return api.get_connection(conn_id)
    except ExecutionApiError as exc:
        if exc.status_code != 404:
            raise
    log.warning("xcom.connection_missing", extra={"conn_id": conn_id})
    return None


def compression_suffix(compression: str) -> str:
    """fsspec's file suffix for a compression name, as the provider picks it.

    Raises:
        ConfigError: fsspec does not know the name, or its library is not installed.
    """
    for suffix, name in fsspec.utils.compressions.items():
        if name == compression and name in fsspec.compression.compr:
            return suffix
    known = sorted(set(fsspec.utils.compressions.values()) & set(fsspec.compression.compr))
    hint = ""
    if compression in fsspec.utils.compressions:
        hint = f" (give the name, not the suffix: {fsspec.utils.compressions[compression]!r})"
    raise ConfigError(
        f"setting common_io.xcom_objectstorage_compression = {compression!r}: not supported"
        f"{hint}; supported here: {', '.join(str(k) for k in known)}"
    )
