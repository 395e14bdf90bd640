"""Installing bundle wheels: one venv per version, idempotent, refusing changed bytes, uv or pip."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from supervisor import runtime_wheel
from supervisor.bundle_venv import Installer, site_packages
from supervisor.errors import BundleIntegrityError, BundleNotFound
from supervisor.store import BundleStore, InstalledBundle, version_key
from supervisor.wheelfile import add_file, sha256_file
from tests.conftest import ATTRS, VERSIONS

from .conftest import run_json

#: Supervisor-side packages that must never reach a bundle venv (DESIGN §3).
FORBIDDEN = ("celery", "kombu", "httpx", "psutil", "pydantic", "pydantic_core", "supervisor")


def test_both_versions_installed_side_by_side(store: BundleStore) -> None:
    bundles = store.list()
    assert [b.label for b in bundles] == ["example-etl==1.0.0", "example-etl==2.0.0"]
    assert bundles[0].venv != bundles[1].venv
    for bundle in bundles:
        assert bundle.venv.is_dir()
        assert (bundle.path / "manifest.json").is_file()
        assert bundle.sha256 == (bundle.path / "wheel.sha256").read_text().strip()


def test_manifest_is_what_the_runtime_described(store: BundleStore) -> None:
    for version in VERSIONS:
        desc = store.get("example-etl", version).description
        assert (desc.bundle_name, desc.bundle_version) == ("example-etl", version)
        assert desc.runtime_version == runtime_wheel.runtime_version()
        assert desc.find_task("example_etl", "dep_version") is not None
        assert desc.find_task("example_etl", "flaky") is not None


def test_sha256_and_source_commit_recorded(
    store: BundleStore, example_wheels: dict[str, Path]
) -> None:
    bundle = store.get("example-etl", "2.0.0")
    assert bundle.sha256 == sha256_file(example_wheels["2.0.0"])
    assert bundle.source_commit is not None
    assert len(bundle.source_commit.removesuffix("-dirty")) == 40


def test_first_installed_version_is_active(store: BundleStore) -> None:
    assert [b.active for b in store.list()] == [True, False]
    assert store.get("example-etl").version == "1.0.0"


def test_names_are_normalised(store: BundleStore) -> None:
    assert store.get("Example_ETL", "2.0.0").label == "example-etl==2.0.0"


def test_missing_version_names_what_is_installed(store: BundleStore) -> None:
    with pytest.raises(BundleNotFound) as info:
        store.get("example-etl", "3.0.0")
    assert "example-etl==3.0.0" in str(info.value)
    assert "example-etl==1.0.0, example-etl==2.0.0" in str(info.value)


def test_reinstalling_the_same_bytes_changes_nothing(
    store: BundleStore, example_wheels: dict[str, Path]
) -> None:
    before = store.get("example-etl", "1.0.0")
    inode = before.path.stat().st_ino
    again = store.install(example_wheels["1.0.0"])
    assert again == before
    assert again.path.stat().st_ino == inode
    assert not [p for p in again.path.parent.iterdir() if p.name.startswith((".tmp", ".trash"))]


def test_same_version_with_other_bytes_is_refused(
    store: BundleStore, example_wheels: dict[str, Path], tmp_path: Path
) -> None:
    tampered = tmp_path / example_wheels["1.0.0"].name
    shutil.copyfile(example_wheels["1.0.0"], tampered)
    add_file(tampered, "extra.txt", b"not what was installed")
    installed = store.get("example-etl", "1.0.0")
    with pytest.raises(BundleIntegrityError) as info:
        store.install(tampered)
    message = str(info.value)
    assert installed.sha256 in message
    assert sha256_file(tampered) in message
    assert store.get("example-etl", "1.0.0") == installed


def test_bundle_venv_holds_no_supervisor_code(store: BundleStore, tmp_path: Path) -> None:
    for bundle in store.list():
        listing = {p.name.lower() for p in site_packages(bundle.venv).iterdir()}
        tops = {name.split("-", 1)[0].removesuffix(".py") for name in listing}
        assert not tops & set(FORBIDDEN), sorted(tops & set(FORBIDDEN))
        assert {"bundle_runtime", "grpc", "google", "attrs", "example_etl"} <= tops
        assert _importable(bundle, FORBIDDEN, cwd=tmp_path) == []
        assert _importable(bundle, ("bundle_runtime", "grpc", "attrs"), cwd=tmp_path) == [
            "bundle_runtime", "grpc", "attrs"
        ]


def _importable(bundle: InstalledBundle, modules: tuple[str, ...], *, cwd: Path) -> list[str]:
    """Which of `modules` the venv's interpreter can import (run outside the repo)."""
    code = (
        "import importlib, sys\n"
        "for m in sys.argv[1:]:\n"
        "    try:\n        importlib.import_module(m)\n"
        "    except ImportError:\n        continue\n"
        "    print(m)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(
        [str(bundle.venv / "bin" / "python"), "-c", code, *modules],
        capture_output=True, text=True, cwd=cwd, env=env, check=True,
    )
    return proc.stdout.split()


def test_bytecode_is_compiled_at_install(store: BundleStore) -> None:
    pkg = site_packages(store.get("example-etl", "1.0.0").venv) / "example_etl"
    assert list((pkg / "__pycache__").glob("__init__.*.pyc"))


def test_concurrent_installs_of_one_version_make_one_venv(
    fresh_store: BundleStore, example_wheels: dict[str, Path]
) -> None:
    results: list[InstalledBundle] = []

    def install() -> None:
        results.append(fresh_store.install(example_wheels["2.0.0"]))

    threads = [threading.Thread(target=install) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and results[0] == results[1]
    assert [b.label for b in fresh_store.list()] == ["example-etl==2.0.0"]


def test_pip_fallback_installs_a_working_bundle(
    tmp_path: Path, example_wheels: dict[str, Path], cli_env: dict[str, str]
) -> None:
    store = BundleStore(tmp_path / "home", installer=Installer.PIP)
    bundle = store.install(example_wheels["1.0.0"])
    assert "uv =" not in (bundle.venv / "pyvenv.cfg").read_text()
    assert (site_packages(bundle.venv) / "pip").is_dir()  # made by venv + pip, not uv
    assert (bundle.venv / "bin" / "bundle-runtime").read_bytes().startswith(b"#!/bin/sh\n")
    assert str(tmp_path) + "/home/bundles/example-etl/.tmp" not in (
        bundle.venv / "bin" / "bundle-runtime"
    ).read_text()
    assert store.verify() == []
    rc, result = run_json(
        store.home, cli_env, "bundle", "test", "example-etl==1.0.0", "example_etl", "dep_version"
    )
    assert rc == 0
    assert result["return_value"]["attrs"] == ATTRS["1.0.0"]


def test_versions_sort_by_pep440() -> None:
    assert sorted(["10.0.0", "9.0.0", "1.0.0rc1", "1.0.0"], key=version_key) == [
        "1.0.0rc1", "1.0.0", "9.0.0", "10.0.0"
    ]
