"""Damaged bundles: a wheel that does not match its RECORD is never installed; a damaged venv is
named by `verify`, and a task routed to it fails to start with a clear RuntimeStartError while
the other version keeps serving (real wheels, venvs and runtime processes).

tests/store/test_verify.py covers an edited or deleted site-packages file and a swapped stored
wheel as `verify` sees them; this file adds the install-time check and what serving does.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from supervisor.bundle_venv import site_packages, venv_python
from supervisor.errors import BundleIntegrityError, RuntimeStartError
from supervisor.offline import OfflineHost
from supervisor.plugin.messages import Succeeded, TaskStart
from supervisor.pool import RuntimePool
from supervisor.store import BundleStore, InstalledBundle

from .conftest import assert_one_line_error, run_cli

V1 = "example-etl==1.0.0"
Tamper = Callable[[str, bytes], tuple[str, bytes] | None]


def _rewrite(
    wheel: Path, out_dir: Path, tamper: Tamper, extra: dict[str, bytes] | None = None
) -> Path:
    """A copy of `wheel` with each member passed through `tamper(name, data)` (None drops it),
    RECORD left as it was: what an edit after the build looks like."""
    out_dir.mkdir(exist_ok=True)
    out = out_dir / wheel.name
    with zipfile.ZipFile(wheel) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            kept = tamper(info.filename, zin.read(info))
            if kept is not None:
                zout.writestr(kept[0], kept[1])
        for name, data in (extra or {}).items():
            zout.writestr(name, data)
    return out


def _edit_module(name: str, data: bytes) -> tuple[str, bytes]:
    if name == "example_etl/__init__.py":
        return name, data + b"\nprint('added after the build')\n"
    return name, data


def _drop_module(name: str, data: bytes) -> tuple[str, bytes] | None:
    return None if name == "example_etl/__init__.py" else (name, data)


def _drop_record(name: str, data: bytes) -> tuple[str, bytes] | None:
    return None if name.endswith(".dist-info/RECORD") else (name, data)


def _keep(name: str, data: bytes) -> tuple[str, bytes]:
    return name, data


@pytest.mark.parametrize(
    ("tamper", "extra", "expected"),
    [
        (_edit_module, None, "example_etl/__init__.py differs from its hash in RECORD"),
        (_drop_module, None, "example_etl/__init__.py is in RECORD but not in the wheel"),
        (_keep, {"example_etl/backdoor.py": b"import os\n"},
         "example_etl/backdoor.py is not listed in RECORD"),
        (_drop_record, None, "example_etl-1.0.0.dist-info/RECORD is missing"),
    ],
    ids=["edited", "removed", "added", "no-record"],
)  # fmt: skip
def test_wheel_that_does_not_match_its_record_is_refused(
    fresh_store: BundleStore,
    example_wheels: dict[str, Path],
    tmp_path: Path,
    tamper: Tamper,
    extra: dict[str, bytes] | None,
    expected: str,
) -> None:
    bad = _rewrite(example_wheels["1.0.0"], tmp_path / "bad", tamper, extra)

    with pytest.raises(BundleIntegrityError) as info:
        fresh_store.install(bad)

    message = str(info.value)
    assert message.startswith(
        f"wheel 'example_etl-1.0.0-py3-none-any.whl' does not match its own RECORD: {expected}"
    ), message
    assert message.endswith("rebuild it (`supervisor bundle build`)")
    assert info.value.bundle == V1
    assert fresh_store.list() == []
    leftovers = (
        list(fresh_store.bundles_dir.glob("*/.tmp-*")) if fresh_store.bundles_dir.exists() else []
    )
    assert leftovers == [], "nothing half-built is left behind"


def test_wheel_with_corrupt_zip_data_is_refused(
    fresh_store: BundleStore, example_wheels: dict[str, Path], tmp_path: Path
) -> None:
    """A flipped byte inside a compressed member: the zip's own CRC catches it."""
    good = example_wheels["1.0.0"]
    with zipfile.ZipFile(good) as zf:
        member = zf.getinfo("example_etl/__init__.py")
        start = member.header_offset + 30 + len(member.filename) + len(member.extra)
    data = bytearray(good.read_bytes())
    data[start + member.compress_size // 2] ^= 0xFF
    bad = tmp_path / good.name
    bad.write_bytes(bytes(data))

    with pytest.raises(BundleIntegrityError, match=r"does not match its own RECORD: its zip data"):
        fresh_store.install(bad)
    assert fresh_store.list() == []


def test_cli_install_of_a_tampered_wheel_is_one_line_and_exit_nonzero(
    fresh_store: BundleStore, example_wheels: dict[str, Path], tmp_path: Path,
    cli_env: dict[str, str],
) -> None:  # fmt: skip
    bad = _rewrite(example_wheels["1.0.0"], tmp_path / "bad", _edit_module)
    proc = run_cli(fresh_store.home, cli_env, "bundle", "install", str(bad))
    assert_one_line_error(proc, "example_etl/__init__.py differs from its hash in RECORD")
    assert fresh_store.list() == []


def test_intact_wheels_pass_the_record_check(
    fresh_store: BundleStore, example_wheels: dict[str, Path]
) -> None:
    """The check refuses only damage: both example wheels (stamped by build) install."""
    for version in ("1.0.0", "2.0.0"):
        assert fresh_store.install(example_wheels[version]).version == version


# -- damaged venvs: verify names them, serving fails only their tasks ---------------------------


@pytest.fixture
def both(fresh_store: BundleStore, example_wheels: dict[str, Path]) -> dict[str, InstalledBundle]:
    """Both example versions in a fresh home, for damaging 1.0.0."""
    return {v: fresh_store.install(example_wheels[v]) for v in ("1.0.0", "2.0.0")}


@pytest.fixture
def pool() -> Iterator[RuntimePool]:
    pool = RuntimePool(grace_s=1.0)
    yield pool
    pool.close(grace_s=1.0)


def _remove_python(bundle: InstalledBundle) -> str:
    venv_python(bundle.venv).unlink()
    return f"{V1}: venv interpreter {str(venv_python(bundle.venv))!r} is missing"


def _truncate_module(bundle: InstalledBundle) -> str:
    (site_packages(bundle.venv) / "example_etl" / "__init__.py").write_bytes(b"")
    return f"{V1}: venv file example_etl/__init__.py (example_etl-1.0.0.dist-info): content differs"


@pytest.mark.parametrize(
    ("damage", "start_error"),
    [
        (_remove_python, "exited with code 127 before its handshake line: "),
        (_truncate_module, "failed to load"),
    ],
    ids=["python-deleted", "module-truncated"],
)
def test_damaged_venv_is_named_by_verify_and_fails_only_its_tasks(
    fresh_store: BundleStore,
    both: dict[str, InstalledBundle],
    pool: RuntimePool,
    cli_env: dict[str, str],
    damage: Callable[[InstalledBundle], str],
    start_error: str,
) -> None:
    problem = damage(both["1.0.0"])

    assert any(p.startswith(problem) for p in fresh_store.verify()), fresh_store.verify()
    assert fresh_store.verify("example-etl", "2.0.0") == []
    proc = run_cli(fresh_store.home, cli_env, "bundle", "verify")
    assert proc.returncode == 1 and problem in proc.stdout, proc.stdout + proc.stderr

    with pytest.raises(RuntimeStartError) as info, pool.lease(both["1.0.0"].runtime_spec()):
        pass
    first_line = str(info.value).splitlines()[0]
    assert first_line.startswith(f"bundle {V1}: runtime (pid "), first_line
    assert start_error in first_line, first_line
    if damage is _remove_python:
        assert f"{venv_python(both['1.0.0'].venv)}: not found" in first_line
    assert info.value.bundle == V1

    start = TaskStart(ti_id="ti-v2", dag_id="example_etl", task_id="dep_version", run_id="r")
    with pool.lease(both["2.0.0"].runtime_spec()) as runtime:
        outcome = runtime.execute(start, OfflineHost(start))
    assert isinstance(outcome, Succeeded), outcome
