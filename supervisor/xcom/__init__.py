"""Where XCom values live: the XCom backend interface and its two implementations.

    __init__.py       `backend_from_settings`: [core] xcom_backend and [common.io] -> a backend
    backend.py        `XComBackend` (get / set_json / delete for one TI's `TaskApi`),
                      `DatabaseXCom` (values in Airflow's DB: the default)
    objectstorage.py  `ObjectStorageXCom`: Airflow's common-io `XComObjectStorageBackend`, same
                      format, so Python tasks and bundles read each other's values

The backend is the supervisor's business only: runtimes send and receive plain JSON values and
never learn where they were kept (docs/xcom-object-storage.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from supervisor.errors import ConfigError
from supervisor.xcom.backend import (
    DATABASE_BACKENDS,
    OBJECT_STORAGE_BACKEND,
    DatabaseXCom,
    XComAddress,
    XComBackend,
)
from supervisor.xcom.objectstorage import ObjectStorageXCom

if TYPE_CHECKING:
    from supervisor.config import Settings

__all__ = [
    "DatabaseXCom",
    "ObjectStorageXCom",
    "XComAddress",
    "XComBackend",
    "backend_from_settings",
]


def backend_from_settings(settings: Settings) -> XComBackend:
    """The backend [core] xcom_backend names, configured from [common.io].

    Raises:
        ConfigError: a backend this worker cannot act as, or a bad [common.io] setting.
    """
    name = settings.core.xcom_backend
    if name in DATABASE_BACKENDS:
        return DatabaseXCom()
    if name == OBJECT_STORAGE_BACKEND:
        io = settings.common_io
        return ObjectStorageXCom.configured(
            path=io.xcom_objectstorage_path,
            threshold=io.xcom_objectstorage_threshold,
            compression=io.xcom_objectstorage_compression or None,
        )
    raise ConfigError(
        f"setting core.xcom_backend = {name!r}: this worker cannot act as that backend; "
        f"supported: {', '.join((*DATABASE_BACKENDS, OBJECT_STORAGE_BACKEND))}"
    )
