"""Reading and amending wheel files (PEP 427): metadata, RECORD hashes, our source stamp.

Shared by build.py (which stamps the source commit into a wheel), runtime_wheel.py (which writes
one from scratch) and store.py (which reads name, version and stamp at install). Pure zipfile
work: no installer, no subprocess.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import re
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path

from supervisor.errors import BundleError, BundleIntegrityError

#: File added to a bundle wheel's .dist-info by `supervisor bundle build` inside a git work tree.
SOURCE_STAMP = "bundle_source.json"
#: RECORD hash algorithms we accept (PEP 376 forbids md5 and sha1).
_RECORD_ALGORITHMS = ("sha256", "sha384", "sha512")
#: dist-info files PEP 427 lets RECORD leave unhashed: itself and its signatures.
_UNHASHED = ("RECORD", "RECORD.jws", "RECORD.p7s")


@dataclass(frozen=True)
class WheelInfo:
    """What a bundle wheel says about itself."""

    #: Distribution name normalised per PEP 503 ("Example_ETL" -> "example-etl").
    name: str
    version: str
    #: `git_commit` from bundle_source.json, or None when the wheel was not built from git.
    source_commit: str | None


def normalize_name(name: str) -> str:
    """PEP 503 normalisation, the one form the store, the manifest and the CLI use."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_wheel_info(path: Path) -> WheelInfo:
    """Name, version and source commit of a wheel.

    Raises:
        BundleError: the file is missing, not a zip, or has no usable METADATA.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            dist_info = find_dist_info(zf, path)
            headers = HeaderParser().parsestr(zf.read(f"{dist_info}/METADATA").decode("utf-8"))
            stamp = _read_stamp(zf, f"{dist_info}/{SOURCE_STAMP}")
    except FileNotFoundError as exc:
        raise BundleError(f"wheel {str(path)!r} does not exist") from exc
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError) as exc:
        raise BundleError(
            f"{str(path)!r} is not a valid wheel: {exc}; give a .whl file, e.g. one made by "
            "`supervisor bundle build`"
        ) from exc
    name, version = headers.get("Name"), headers.get("Version")
    if not name or not version:
        raise BundleError(f"wheel {str(path)!r}: METADATA lacks Name or Version")
    return WheelInfo(normalize_name(name), version.strip(), stamp)


def find_dist_info(zf: zipfile.ZipFile, path: Path) -> str:
    """The wheel's single top-level `*.dist-info` directory name."""
    names = {n.split("/", 1)[0] for n in zf.namelist() if n.split("/", 1)[0].endswith(".dist-info")}
    if len(names) != 1:
        raise BundleError(
            f"{str(path)!r} is not a valid wheel: expected one .dist-info directory, "
            f"found {sorted(names)!r}"
        )
    return names.pop()


def check_record(path: Path, *, bundle: str | None = None) -> None:
    """Refuse a wheel whose files differ from its own RECORD (PEP 427 asks installers to check;
    neither uv nor pip does): an edited or damaged wheel must not become an installed version.

    Raises:
        BundleIntegrityError: a file's hash differs from RECORD, a file is missing from the
            wheel or from RECORD, RECORD is missing, or the zip data is corrupt. The message
            names the wheel and the first problem, and counts the others.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            problems = _record_problems(zf, find_dist_info(zf, path))
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:  # damaged compressed data
        problems = [f"its zip data is corrupt ({exc})"]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise BundleIntegrityError(
            f"wheel {path.name!r} does not match its own RECORD: {problems[0]}{more}; it was "
            "changed or damaged after it was built: rebuild it (`supervisor bundle build`)",
            bundle=bundle,
        )


def _record_problems(zf: zipfile.ZipFile, dist_info: str) -> list[str]:
    unhashed = {f"{dist_info}/{name}" for name in _UNHASHED}
    try:
        text = zf.read(f"{dist_info}/RECORD").decode("utf-8")
    except KeyError:
        return [f"{dist_info}/RECORD is missing"]
    recorded = {row[0]: (row[1] if len(row) > 1 else "") for row in csv.reader(io.StringIO(text))
                if row}  # fmt: skip
    problems = []
    for info in zf.infolist():
        name = info.filename
        if info.is_dir() or name in unhashed:
            continue
        expected = recorded.pop(name, None)
        if expected is None:
            problems.append(f"{name} is not listed in RECORD")
            continue
        algorithm, _, _ = expected.partition("=")
        if algorithm not in _RECORD_ALGORITHMS:
            problems.append(f"{name} has hash {expected!r} in RECORD, not sha256 or stronger")
        elif record_hash(zf.read(info), algorithm) != expected:
            problems.append(f"{name} differs from its hash in RECORD")
    problems += [f"{name} is in RECORD but not in the wheel" for name in recorded
                 if name not in unhashed]  # fmt: skip
    return problems


def _read_stamp(zf: zipfile.ZipFile, member: str) -> str | None:
    try:
        data = json.loads(zf.read(member))
    except KeyError:
        return None
    commit = data.get("git_commit") if isinstance(data, dict) else None
    return commit if isinstance(commit, str) else None


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks (wheels can be large)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def record_hash(data: bytes, algorithm: str = "sha256") -> str:
    """A RECORD hash field: `<algorithm>=` + urlsafe base64 without padding (PEP 376/427).

    Raises:
        ValueError: hashlib does not know `algorithm`.
    """
    digest = base64.urlsafe_b64encode(hashlib.new(algorithm, data).digest()).rstrip(b"=")
    return f"{algorithm}={digest.decode('ascii')}"


def record_text(files: list[tuple[str, bytes]], record_name: str) -> str:
    """RECORD contents for `files`, the RECORD itself last and unhashed."""
    lines = [f"{name},{record_hash(data)},{len(data)}" for name, data in files]
    lines.append(f"{record_name},,")
    return "\n".join(lines) + "\n"


def add_file(path: Path, name_in_dist_info: str, data: bytes) -> None:
    """Add (or replace) one file in the wheel's .dist-info and rewrite RECORD to match.

    Entries keep their order, timestamps and modes, so a deterministic wheel stays deterministic.
    The new wheel replaces the old one atomically.
    """
    with zipfile.ZipFile(path) as zf:
        dist_info = find_dist_info(zf, path)
        record_name, member = f"{dist_info}/RECORD", f"{dist_info}/{name_in_dist_info}"
        skipped = (record_name, member)
        entries = [(i, zf.read(i)) for i in zf.infolist() if i.filename not in skipped]
    date_time = entries[-1][0].date_time if entries else zipfile.ZipInfo(member).date_time
    entries.append((zip_entry(member, date_time), data))
    files = [(info.filename, content) for info, content in entries]
    record = record_text(files, record_name).encode()
    entries.append((zip_entry(record_name, date_time), record))
    write_atomically(path, zip_bytes(entries))


def zip_entry(name: str, date_time: tuple[int, int, int, int, int, int]) -> zipfile.ZipInfo:
    """A wheel member as we write them: mode 0o644, deflated, the given timestamp."""
    info = zipfile.ZipInfo(name, date_time=date_time)
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def zip_bytes(entries: list[tuple[zipfile.ZipInfo, bytes]]) -> bytes:
    """A zip archive of `entries`, in their order, as bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as out:
        for info, content in entries:
            out.writestr(info, content)
    return buffer.getvalue()


def write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and `os.replace`: readers see the old
    file or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".whl")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
