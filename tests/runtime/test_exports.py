"""The SDK's public surface and what bundle_runtime may import."""

from __future__ import annotations

import json
import subprocess
import sys

import bundle_runtime
import supervisor
from bundle_runtime import exceptions as e

from .conftest import ROOT

EXPECTED = [
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


def test_public_surface_is_pinned_and_sorted():
    assert bundle_runtime.__all__ == EXPECTED
    assert all(hasattr(bundle_runtime, name) for name in EXPECTED)


def test_runtime_version_matches_supervisor_version():
    assert bundle_runtime.__version__ == supervisor.__version__


def test_exception_tree():
    for control in (e.SkipTask, e.FailTask, e.RescheduleTask, e.DeferTask):
        assert issubclass(control, e.TaskControl)
    assert not issubclass(e.TaskCancelled, Exception)
    assert issubclass(e.HostCallFailed, RuntimeError)
    assert issubclass(e.VariableNotFound, KeyError) and issubclass(e.ConnectionNotFound, KeyError)
    assert issubclass(e.BundleDefinitionError, ValueError)


def test_runtime_imports_only_stdlib_grpc_and_protobuf():
    code = (
        "import sys, json\n"
        "import bundle_runtime, bundle_runtime.server, bundle_runtime.service\n"
        "import bundle_runtime.testing, bundle_runtime.__main__\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    modules = {m.split(".")[0] for m in json.loads(out)}
    forbidden = {"supervisor", "celery", "httpx", "psutil", "pydantic", "kombu", "redis"}
    assert not modules & forbidden


def test_importing_the_sdk_does_not_import_grpc():
    code = "import sys, bundle_runtime, bundle_runtime.testing; print('grpc' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"
