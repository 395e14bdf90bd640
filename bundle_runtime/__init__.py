"""bundle_runtime: the SDK bundle authors import, and the process that serves their tasks.

Installed into every bundle virtualenv (as the `bundle-runtime` wheel the supervisor builds) next to
grpcio and protobuf, nothing else of the supervisor's. Importing this package starts nothing and
does not import grpc; `bundle_runtime.server.main` (the `bundle-runtime` console script) serves.

    from bundle_runtime import Bundle, Context

    bundle = Bundle()

    @bundle.task(dag_id="sales", task_id="extract")
    def extract(ctx: Context) -> dict:
        return {"rows": 42}
"""

from __future__ import annotations

from .bundle import Bundle
from .context import Connection, Context, Resume, TaskInstance
from .exceptions import (
    BundleDefinitionError,
    BundleLoadError,
    ConnectionNotFound,
    DeferTask,
    FailTask,
    HostCallFailed,
    RescheduleTask,
    SkipTask,
    TaskCancelled,
    TaskControl,
    VariableNotFound,
)

#: Kept equal to supervisor.__version__: the supervisor builds this wheel from the same tree.
__version__ = "0.1.0"

__all__ = [
    "Bundle",
    "BundleDefinitionError",
    "BundleLoadError",
    "Connection",
    "ConnectionNotFound",
    "Context",
    "DeferTask",
    "FailTask",
    "HostCallFailed",
    "RescheduleTask",
    "Resume",
    "SkipTask",
    "TaskCancelled",
    "TaskControl",
    "TaskInstance",
    "VariableNotFound",
    "__version__",
]
