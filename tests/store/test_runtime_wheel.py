"""The bundle-runtime wheel: deterministic, valid, and nothing but bundle_runtime."""

from __future__ import annotations

import zipfile
from email.parser import HeaderParser
from pathlib import Path

from supervisor import runtime_wheel
from supervisor.wheelfile import record_hash


def _read(wheel: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(wheel) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def test_same_sources_give_same_bytes(tmp_path: Path) -> None:
    first = runtime_wheel.ensure_runtime_wheel(tmp_path / "a").read_bytes()
    second = runtime_wheel.ensure_runtime_wheel(tmp_path / "b").read_bytes()
    assert first == second


def test_identical_cached_wheel_is_not_rewritten(tmp_path: Path) -> None:
    wheel = runtime_wheel.ensure_runtime_wheel(tmp_path)
    inode = wheel.stat().st_ino
    assert runtime_wheel.ensure_runtime_wheel(tmp_path) == wheel
    assert wheel.stat().st_ino == inode


def test_changed_sources_replace_the_cached_wheel(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text('__version__ = "9.9.9"\n')
    wheel = runtime_wheel.ensure_runtime_wheel(tmp_path / "wheels", pkg_dir=pkg)
    assert wheel.name == "bundle_runtime-9.9.9-py3-none-any.whl"
    before = wheel.read_bytes()
    (pkg / "extra.py").write_text("X = 1\n")
    rebuilt = runtime_wheel.ensure_runtime_wheel(tmp_path / "wheels", pkg_dir=pkg)
    assert rebuilt.read_bytes() != before


def test_wheel_holds_only_the_runtime_package_and_valid_metadata(tmp_path: Path) -> None:
    files = _read(runtime_wheel.ensure_runtime_wheel(tmp_path))
    version = runtime_wheel.runtime_version()
    dist_info = f"bundle_runtime-{version}.dist-info"
    tops = {name.split("/", 1)[0] for name in files}
    assert tops == {"bundle_runtime", dist_info}
    assert "bundle_runtime/server.py" in files
    assert "bundle_runtime/_proto/runtime_pb2.py" in files
    assert not any("__pycache__" in name for name in files)
    meta = HeaderParser().parsestr(files[f"{dist_info}/METADATA"].decode())
    assert meta["Name"] == "bundle-runtime"
    assert meta["Version"] == version
    assert sorted(meta.get_all("Requires-Dist")) == ["grpcio>=1.66.2", "protobuf>=5.27.2"]
    entry_points = files[f"{dist_info}/entry_points.txt"].decode()
    assert "bundle-runtime = bundle_runtime.server:main" in entry_points


def test_record_lists_every_file_with_its_hash(tmp_path: Path) -> None:
    files = _read(runtime_wheel.ensure_runtime_wheel(tmp_path))
    record_name = next(n for n in files if n.endswith("/RECORD"))
    rows = [line.split(",") for line in files[record_name].decode().splitlines()]
    recorded = {path: (digest, size) for path, digest, size in rows}
    assert set(recorded) == set(files)
    for name, data in files.items():
        if name != record_name:
            assert recorded[name] == (record_hash(data), str(len(data)))
