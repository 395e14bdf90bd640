"""`build_bundle`: a wheel per project, stamped with the git commit when built from git."""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from supervisor.build import build_bundle
from supervisor.bundle_venv import find_uv
from supervisor.errors import BundleError
from supervisor.wheelfile import SOURCE_STAMP, read_wheel_info, record_hash
from tests.conftest import EXAMPLES, REPO


def _head() -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_wheel_built_in_git_records_the_commit(example_wheels: dict[str, Path]) -> None:
    info = read_wheel_info(example_wheels["1.0.0"])
    assert (info.name, info.version) == ("example-etl", "1.0.0")
    assert info.source_commit is not None
    assert info.source_commit.removesuffix("-dirty") == _head()


def test_stamped_wheel_record_still_matches_every_file(example_wheels: dict[str, Path]) -> None:
    with zipfile.ZipFile(example_wheels["2.0.0"]) as zf:
        files = {name: zf.read(name) for name in zf.namelist()}
    record_name = next(n for n in files if n.endswith(".dist-info/RECORD"))
    rows = [line.split(",") for line in files[record_name].decode().splitlines()]
    assert {row[0] for row in rows} == set(files)
    for path, digest, _size in rows:
        if path != record_name:
            assert digest == record_hash(files[path]), path
    stamp = next(n for n in files if n.endswith(SOURCE_STAMP))
    assert json.loads(files[stamp])["git_commit"]


def test_project_outside_git_gets_no_stamp(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLES, tmp_path / "example-etl")
    wheel = build_bundle(tmp_path / "example-etl" / "1.0.0", tmp_path / "out", uv=find_uv())
    assert wheel.parent == tmp_path / "out"
    assert read_wheel_info(wheel).source_commit is None


def test_dirty_tree_is_marked(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLES, repo)
    project = repo / "1.0.0"
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], check=True)
    clean = read_wheel_info(build_bundle(project, tmp_path / "clean", uv=find_uv()))
    assert clean.source_commit is not None and not clean.source_commit.endswith("-dirty")
    # The shared source lives outside the version's folder, and still counts.
    (repo / "src" / "example_etl" / "__init__.py").write_text("# changed\n", encoding="utf-8")
    dirty = read_wheel_info(build_bundle(project, tmp_path / "dirty", uv=find_uv()))
    assert dirty.source_commit == clean.source_commit + "-dirty"


def test_not_a_project_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"no pyproject\.toml"):
        build_bundle(tmp_path, tmp_path / "out", uv=find_uv())


def test_builder_failure_quotes_its_output(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project\n", encoding="utf-8")
    with pytest.raises(BundleError, match=r"building .* failed"):
        build_bundle(tmp_path, tmp_path / "out", uv=find_uv())
