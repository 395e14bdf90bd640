"""Re-checking an installed bundle version: stored wheel hash, manifest, and venv files.

`supervisor bundle verify` runs this on demand (DESIGN §4.4). The wheel kept in the version
directory is re-hashed against the sha256 recorded at install; every file installed in the venv
is re-hashed against its distribution's RECORD, so an edited file in site-packages shows up as
well as a swapped wheel. Problems come back as lines for people; nothing here raises on them.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

from supervisor.bundle_venv import site_packages, venv_python
from supervisor.wheelfile import normalize_name, record_hash, sha256_file

if TYPE_CHECKING:
    from supervisor.store import InstalledBundle


def check_bundle(bundle: InstalledBundle) -> list[str]:
    """Every problem found with one installed version (empty when it is intact)."""
    problems = _check_wheel(bundle)
    desc = bundle.description
    if (normalize_name(desc.bundle_name), desc.bundle_version) != (bundle.name, bundle.version):
        problems.append(
            f"manifest describes {desc.bundle_name}=={desc.bundle_version}, not this version"
        )
    if not venv_python(bundle.venv).exists():
        return [*problems, f"venv interpreter {str(venv_python(bundle.venv))!r} is missing"]
    try:
        return problems + [f"venv file {p}" for p in check_records(bundle.venv)]
    except FileNotFoundError as exc:
        return [*problems, f"venv is incomplete: {exc}"]


def _check_wheel(bundle: InstalledBundle) -> list[str]:
    wheels = sorted(bundle.wheel_dir.glob("*.whl"))
    if len(wheels) != 1:
        return [f"expected one stored wheel in {str(bundle.wheel_dir)!r}, found {len(wheels)}"]
    actual = sha256_file(wheels[0])
    if actual != bundle.sha256:
        return [f"stored wheel {wheels[0].name} has sha256 {actual}, recorded {bundle.sha256}"]
    return []


def check_records(venv: Path) -> list[str]:
    """Every installed file whose bytes no longer match its dist's RECORD, as readable lines.

    Entries outside site-packages (launchers in bin/) are skipped: installers generate them and
    the store rewrites their `#!` line on relocation. Entries without a hash (RECORD itself,
    some .pyc) cannot be checked and are skipped too.
    """
    site = site_packages(venv)
    problems: list[str] = []
    for dist_info in sorted(site.glob("*.dist-info")):
        problems += _check_record(site, dist_info)
    return problems


def _check_record(site: Path, dist_info: Path) -> list[str]:
    record = dist_info / "RECORD"
    if not record.is_file():
        return [f"{dist_info.name}: RECORD is missing"]
    problems = []
    with record.open(newline="", encoding="utf-8") as fh:
        for row in csv.reader(fh):
            if len(row) < 2 or not row[1] or row[0].startswith(("../", "/")):
                continue
            problem = _check_entry(site / row[0], row[1])
            if problem:
                problems.append(f"{row[0]} ({dist_info.name}): {problem}")
    return problems


def _check_entry(path: Path, recorded: str) -> str | None:
    algorithm = recorded.partition("=")[0]
    try:
        actual = record_hash(path.read_bytes(), algorithm)
    except FileNotFoundError:
        return "file is missing"
    except ValueError:
        return f"unknown hash algorithm {algorithm!r} in RECORD"
    return None if actual == recorded else "content differs from RECORD (modified)"
