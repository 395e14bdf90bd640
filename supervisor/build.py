"""`supervisor bundle build`: a bundle project directory -> a wheel that remembers its commit.

Any PEP 517 builder makes a valid bundle wheel; this one adds the source commit, which routing
matches against Airflow's `bundle_info.version` (DESIGN §4.4) so a git-versioned DAG bundle runs
exactly the code built from the same commit. The stamp is `bundle_source.json` inside the
wheel's .dist-info (RECORD rewritten), so it travels with the wheel and its sha256 covers it.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from supervisor.errors import BundleError
from supervisor.wheelfile import SOURCE_STAMP, add_file

logger = logging.getLogger(__name__)

#: Appended to the commit when the project directory has uncommitted changes.
DIRTY_SUFFIX = "-dirty"
#: Lines of builder output quoted in an error.
_TAIL_LINES = 15


def build_bundle(path: Path, out: Path, *, uv: str | None = None) -> Path:
    """Build the project at `path` into a wheel in `out` and return the wheel's path.

    `uv` is the uv executable; None means build with `python -m pip wheel` instead.

    Raises:
        BundleError: `path` is not a project, or the builder failed (its output tail is quoted).
    """
    path = path.resolve()
    if not (path / "pyproject.toml").is_file() and not (path / "setup.py").is_file():
        raise BundleError(f"{str(path)!r} is not a Python project: it has no pyproject.toml")
    out.mkdir(parents=True, exist_ok=True)
    commit = source_commit(path)  # before building: a builder may leave files behind
    with tempfile.TemporaryDirectory(dir=out, prefix=".build-") as tmp:
        built = _run_builder(path, Path(tmp), uv=uv)
        wheel = out / built.name
        shutil.move(built, wheel)
    if commit is not None:
        add_file(wheel, SOURCE_STAMP, json.dumps({"git_commit": commit}).encode())
    logger.info("bundle.built", extra={"wheel": str(wheel), "git_commit": commit})
    return wheel


def _run_builder(path: Path, out: Path, *, uv: str | None) -> Path:
    # Build into an empty private directory so the wheel is the one file found there, whatever
    # else `out` already holds.
    if uv is not None:
        argv = [uv, "build", "--wheel", "--quiet", "--out-dir", str(out), str(path)]
    else:
        argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(path)]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    wheels = sorted(out.glob("*.whl"))
    if proc.returncode != 0 or len(wheels) != 1:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-_TAIL_LINES:])
        raise BundleError(
            f"building {str(path)!r} failed: {argv[0]} exited {proc.returncode} "
            f"and made {len(wheels)} wheels\n{tail}"
        )
    return wheels[0]


def source_commit(path: Path) -> str | None:
    """HEAD's commit when `path` is inside a git work tree (+"-dirty" if it has changes).

    Any uncommitted change in the work tree counts, not only under `path`: a build may take files
    from elsewhere in the repository (the example bundle's versions share ../src).
    """
    head = _git(path, "rev-parse", "HEAD")
    if head is None:
        return None
    status = _git(path, "status", "--porcelain")
    return head + (DIRTY_SUFFIX if status else "")


def _git(path: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(
            ["git", "-C", str(path), *args], capture_output=True, text=True, check=False
        )
    except FileNotFoundError:  # no git on this machine: not a git build
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None
