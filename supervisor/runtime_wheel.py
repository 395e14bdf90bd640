"""The `bundle-runtime` wheel: exactly the supervisor's `bundle_runtime` package, and nothing else.

Every bundle venv gets the runtime the installing supervisor was built with, so both sides of the
protocol come from one source tree. The supervisor's own distribution also carries `supervisor`
and its dependencies (celery, httpx, ...), which must never reach a bundle venv; hence this wheel,
zipped straight from the package directory with no build backend involved.

The build is deterministic (sorted entries, fixed timestamps and modes), so the same sources give
the same bytes and the cached file in `<home>/wheels/` only changes when the sources do. The
store passes that directory to the installer as `--find-links`.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import supervisor
from supervisor.wheelfile import record_text, write_atomically, zip_bytes, zip_entry

#: Distribution name bundles depend on (`dependencies = ["bundle-runtime"]`).
DIST_NAME = "bundle-runtime"
#: Import package shipped in the wheel.
PACKAGE = "bundle_runtime"
#: What the runtime needs besides the standard library; the oldest versions the generated code
#: supports (scripts/gen_proto.py), kept in step with pyproject.toml.
REQUIRES_DIST = ("grpcio>=1.66.2", "protobuf>=5.27.2")
REQUIRES_PYTHON = ">=3.11"
#: The console script the store's RuntimeSpec runs.
CONSOLE_SCRIPTS = ("bundle-runtime = bundle_runtime.server:main",)
#: Zip timestamps cannot be before 1980; one fixed value makes builds reproducible.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_SKIPPED_DIRS = {"__pycache__"}
_SKIPPED_SUFFIXES = (".pyc", ".pyo")


def package_dir() -> Path:
    """Where the importable `bundle_runtime` package lives (found without importing it)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {PACKAGE!r} is not importable; reinstall the supervisor")
    return Path(next(iter(spec.submodule_search_locations)))


def runtime_version(pkg_dir: Path | None = None) -> str:
    """`bundle_runtime.__version__`, read from source so the SDK is not imported here."""
    init = (pkg_dir or package_dir()) / "__init__.py"
    if init.is_file():
        for node in ast.parse(init.read_text(encoding="utf-8")).body:
            if (
                isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
            ):
                return node.value.value
    return supervisor.__version__


def wheel_name(version: str) -> str:
    return f"{PACKAGE}-{version}-py3-none-any.whl"


def ensure_runtime_wheel(wheels_dir: Path, *, pkg_dir: Path | None = None) -> Path:
    """Build the runtime wheel into `wheels_dir` unless an identical one is already there.

    Writes through a temporary file and `os.replace`, so concurrent installers never see a
    half-written wheel. Returns the wheel's path.
    """
    pkg_dir = pkg_dir or package_dir()
    version = runtime_version(pkg_dir)
    data = build_wheel_bytes(pkg_dir, version)
    target = wheels_dir / wheel_name(version)
    if target.is_file() and target.read_bytes() == data:
        return target
    wheels_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(target, data)
    return target


def build_wheel_bytes(pkg_dir: Path, version: str) -> bytes:
    """The wheel as bytes: package files, then METADATA, WHEEL, entry_points.txt and RECORD."""
    dist_info = f"{PACKAGE}-{version}.dist-info"
    files: list[tuple[str, bytes]] = [
        (f"{PACKAGE}/{rel}", path.read_bytes()) for rel, path in _package_files(pkg_dir)
    ]
    files += [
        (f"{dist_info}/METADATA", _metadata(version).encode()),
        (f"{dist_info}/WHEEL", _wheel_file().encode()),
        (f"{dist_info}/entry_points.txt", _entry_points().encode()),
    ]
    files.append((f"{dist_info}/RECORD", record_text(files, f"{dist_info}/RECORD").encode()))
    return zip_bytes([(zip_entry(name, _ZIP_EPOCH), data) for name, data in files])


def _package_files(pkg_dir: Path) -> list[tuple[str, Path]]:
    found = []
    for path in pkg_dir.rglob("*"):
        rel = path.relative_to(pkg_dir)
        if path.is_dir() or _SKIPPED_DIRS & set(rel.parts) or path.suffix in _SKIPPED_SUFFIXES:
            continue
        found.append((rel.as_posix(), path))
    return sorted(found)


def _metadata(version: str) -> str:
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {DIST_NAME}",
        f"Version: {version}",
        "Summary: Runtime for airflow-bundle-supervisor bundles (SDK and gRPC server)",
        "License: Apache-2.0",
        f"Requires-Python: {REQUIRES_PYTHON}",
        *(f"Requires-Dist: {req}" for req in REQUIRES_DIST),
    ]
    return "\n".join(lines) + "\n"


def _wheel_file() -> str:
    return (
        "Wheel-Version: 1.0\n"
        f"Generator: airflow-bundle-supervisor {supervisor.__version__}\n"
        "Root-Is-Purelib: true\n"
        "Tag: py3-none-any\n"
    )


def _entry_points() -> str:
    return "[console_scripts]\n" + "".join(f"{line}\n" for line in CONSOLE_SCRIPTS)
