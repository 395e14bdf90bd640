"""`verify`: the stored wheel against its recorded sha256, venv files against their RECORDs."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.bundle_venv import site_packages
from supervisor.errors import BundleNotFound
from supervisor.store import BundleStore, InstalledBundle

from .conftest import run_cli


def test_intact_install_has_no_problems(store: BundleStore) -> None:
    assert store.verify() == []
    assert store.verify("example-etl", "2.0.0") == []


def test_modified_installed_file_is_detected(
    fresh_store: BundleStore, installed_v1: InstalledBundle
) -> None:
    module = site_packages(installed_v1.venv) / "example_etl" / "__init__.py"
    module.write_text(module.read_text() + "\nprint('tampered')\n")
    problems = fresh_store.verify()
    assert len(problems) == 1
    assert problems[0].startswith("example-etl==1.0.0: venv file example_etl/__init__.py")
    assert "modified" in problems[0]


def test_deleted_installed_file_is_detected(
    fresh_store: BundleStore, installed_v1: InstalledBundle
) -> None:
    (site_packages(installed_v1.venv) / "bundle_runtime" / "context.py").unlink()
    problems = fresh_store.verify("example-etl", "1.0.0")
    assert any("bundle_runtime/context.py" in p and "missing" in p for p in problems), problems


def test_modified_stored_wheel_is_detected(
    fresh_store: BundleStore, installed_v1: InstalledBundle
) -> None:
    (wheel,) = installed_v1.wheel_dir.glob("*.whl")
    with wheel.open("ab") as fh:
        fh.write(b"\0")
    problems = fresh_store.verify("example-etl")
    assert len(problems) == 1
    assert f"stored wheel {wheel.name} has sha256" in problems[0]
    assert f"recorded {installed_v1.sha256}" in problems[0]


def test_verify_of_unknown_bundle_raises(fresh_store: BundleStore) -> None:
    with pytest.raises(BundleNotFound):
        fresh_store.verify("nope")


def test_cli_verify_exits_1_naming_the_problem(
    fresh_store: BundleStore, installed_v1: InstalledBundle, cli_env: dict[str, str]
) -> None:
    ok = run_cli(fresh_store.home, cli_env, "bundle", "verify")
    assert ok.returncode == 0, ok.stderr
    module = site_packages(installed_v1.venv) / "example_etl" / "__init__.py"
    module.write_bytes(module.read_bytes().replace(b"v1", b"v9"))
    bad = run_cli(fresh_store.home, cli_env, "bundle", "verify", "example-etl==1.0.0")
    assert bad.returncode == 1
    assert "example_etl/__init__.py" in bad.stdout
    assert bad.stderr.strip() == "verify found 1 problems"


def test_store_paths_are_inside_home(installed_v1: InstalledBundle, tmp_path: Path) -> None:
    assert installed_v1.path == tmp_path / "home" / "bundles" / "example-etl" / "1.0.0"
    assert installed_v1.runtime_argv == (str(installed_v1.venv / "bin" / "bundle-runtime"),)
