"""Bundles on disk: one venv per (bundle, version), its manifest, wheel hash and the active version.

Layout under the store's home (DESIGN §4.4)::

    <home>/bundles/<name>/<version>/venv/            the bundle's own virtualenv
    <home>/bundles/<name>/<version>/wheel/<file>.whl  the installed wheel, kept for `verify`
    <home>/bundles/<name>/<version>/wheel.sha256      sha256 of that wheel at install time
    <home>/bundles/<name>/<version>/manifest.json     what the runtime's Describe said at install
    <home>/bundles/<name>/<version>/source.json       {"git_commit": ...} when the wheel has one
    <home>/bundles/<name>/<version>/install.json      when and how long the install took
    <home>/bundles/<name>/active                      the version used when none is asked for
    <home>/bundles/<name>/.<version>.lock             per-version install lock (fcntl)
    <home>/wheels/                                    the bundle-runtime wheel (runtime_wheel.py)
    <home>/cache/uv/                                  uv's cache, on the venvs' filesystem

A version directory appears complete or not at all: it is built as `.tmp-<version>-*` next to
its final place and renamed, so readers trust any version directory that exists (Terraform's
plugin cache learned this the hard way, go-plugin.md §4.4). Installed versions are immutable;
installing the same name==version with other bytes is refused, never overwritten.

Thread/process safety: installs and removals of one version serialise on its lock file; reads
take no lock. Building venvs is bundle_venv.py's job, starting runtimes is plugin's.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from supervisor.bundle_venv import Installer, create_venv, resolve_installer
from supervisor.errors import (
    BundleError,
    BundleInstallError,
    BundleIntegrityError,
    BundleNotFound,
    SupervisorError,
)
from supervisor.integrity import check_bundle
from supervisor.plugin.launch import RuntimeSpec
from supervisor.plugin.messages import RuntimeDescription
from supervisor.plugin.runtime import start_runtime
from supervisor.runtime_wheel import ensure_runtime_wheel
from supervisor.wheelfile import (
    WheelInfo,
    check_record,
    normalize_name,
    read_wheel_info,
    sha256_file,
)

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
WHEEL_SHA256 = "wheel.sha256"
SOURCE = "source.json"
INSTALL = "install.json"
WHEEL_DIR = "wheel"
VENV_DIR = "venv"
ACTIVE = "active"


@dataclass(frozen=True)
class InstalledBundle:
    """One installed bundle version, as read from its directory. A snapshot: it does not follow
    later activations or removals."""

    name: str
    version: str
    #: The version directory, `<home>/bundles/<name>/<version>`.
    path: Path
    #: Hex sha256 of the wheel as installed.
    sha256: str
    source_commit: str | None
    active: bool
    #: What the runtime's Describe returned at install time (the manifest).
    description: RuntimeDescription
    #: Seconds the install took (venv, packages, first Describe); None for older installs.
    install_s: float | None = None

    @property
    def label(self) -> str:
        """`name==version`, the one way messages and logs name a bundle version."""
        return f"{self.name}=={self.version}"

    @property
    def venv(self) -> Path:
        return self.path / VENV_DIR

    @property
    def wheel_dir(self) -> Path:
        """Where the installed wheel is kept, for `verify` to re-hash."""
        return self.path / WHEEL_DIR

    @property
    def runtime_argv(self) -> tuple[str, ...]:
        return (str(self.venv / "bin" / "bundle-runtime"),)

    def runtime_spec(self, **kw: Any) -> RuntimeSpec:
        """How the pool or `bundle test` starts this version's runtime; `kw` as in RuntimeSpec."""
        return RuntimeSpec(bundle=self.label, argv=self.runtime_argv, bundle_env=self.name, **kw)


class BundleStore:
    """The bundles installed under one home directory.

    `installer` picks how venvs are made (uv when found, by default). `cache_dir` is uv's cache:
    by default `$UV_CACHE_DIR` when the operator set it, else `<home>/cache/uv`; it must share a
    filesystem with `home`, or uv copies every file instead of linking it (go-plugin.md §6.4).
    """

    def __init__(
        self,
        home: Path,
        *,
        installer: Installer | str = Installer.AUTO,
        cache_dir: Path | None = None,
    ) -> None:
        self.home = home
        self.bundles_dir = home / "bundles"
        self.wheels_dir = home / "wheels"
        env_cache = os.environ.get("UV_CACHE_DIR")
        self.cache_dir = cache_dir or (Path(env_cache) if env_cache else home / "cache" / "uv")
        self.installer = Installer(installer)

    # -- install ----------------------------------------------------------------------------

    def install(self, wheel: Path, *, python: str | None = None) -> InstalledBundle:
        """Install `wheel` into its own venv; a no-op when the same bytes are installed.

        The first version installed of a bundle becomes its active version.

        Raises:
            BundleIntegrityError: this name==version is installed from a different wheel, or
                the wheel's files do not match its RECORD.
            BundleInstallError: the venv, the packages or the runtime's Describe failed.
            BundleError: `wheel` is missing or not a wheel.
        """
        info = read_wheel_info(wheel)
        check_record(wheel, bundle=f"{info.name}=={info.version}")
        sha256 = sha256_file(wheel)
        installed = self._installed_same(info, sha256, wheel)
        if installed is not None:
            return installed
        with self._lock(info.name, info.version):
            installed = self._installed_same(info, sha256, wheel)  # another process may have won
            if installed is None:
                self._install_locked(wheel, info, sha256, python or sys.executable)
                if self._read_active(info.name) is None:
                    self._write_active(info.name, info.version)
        return self.get(info.name, info.version)

    def _installed_same(self, info: WheelInfo, sha256: str, wheel: Path) -> InstalledBundle | None:
        vdir = self._version_dir(info.name, info.version)
        if not vdir.is_dir():
            return None
        recorded = (vdir / WHEEL_SHA256).read_text(encoding="ascii").strip()
        if recorded != sha256:
            raise BundleIntegrityError(
                f"bundle {info.name}=={info.version} is already installed from a wheel with "
                f"sha256 {recorded}, but {str(wheel)!r} has sha256 {sha256}; an installed version "
                "never changes: bump the version, or remove the installed one first",
                bundle=f"{info.name}=={info.version}",
            )
        return self._load(info.name, info.version, active=self._read_active(info.name))

    def _install_locked(self, wheel: Path, info: WheelInfo, sha256: str, python: str) -> None:
        label = f"{info.name}=={info.version}"
        name_dir = self.bundles_dir / info.name
        tmp = Path(tempfile.mkdtemp(dir=name_dir, prefix=f".tmp-{info.version}-"))
        began = time.monotonic()
        try:
            self._populate(tmp, wheel, info, sha256, python)
            record = {"installed_at": datetime.now(UTC).isoformat(),
                      "install_s": round(time.monotonic() - began, 3)}  # fmt: skip
            _write_json(tmp / INSTALL, record)
            os.rename(tmp, self._version_dir(info.name, info.version))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        logger.info("bundle.installed", extra={"bundle": label, "sha256": sha256})

    def _populate(self, tmp: Path, wheel: Path, info: WheelInfo, sha256: str, python: str) -> None:
        label = f"{info.name}=={info.version}"
        stored = tmp / WHEEL_DIR / wheel.name
        stored.parent.mkdir()
        shutil.copyfile(wheel, stored)
        if sha256_file(stored) != sha256:  # the file changed while we were installing it
            raise BundleIntegrityError(f"wheel {str(wheel)!r} changed during install", bundle=label)
        kind, uv = resolve_installer(self.installer)
        create_venv(
            tmp / VENV_DIR,
            [stored, ensure_runtime_wheel(self.wheels_dir)],
            python=python,
            installer=kind,
            uv=uv,
            find_links=self.wheels_dir,
            cache_dir=self.cache_dir,
        )
        description = _describe(tmp / VENV_DIR, info)
        _write_json(tmp / MANIFEST, description.to_json())
        (tmp / WHEEL_SHA256).write_text(sha256 + "\n", encoding="ascii")
        if info.source_commit is not None:
            _write_json(tmp / SOURCE, {"git_commit": info.source_commit})

    # -- read -------------------------------------------------------------------------------

    def list(self) -> builtins.list[InstalledBundle]:
        """Every installed version, by name then version (PEP 440 order)."""
        if not self.bundles_dir.is_dir():
            return []
        found = []
        for name_dir in sorted(self.bundles_dir.iterdir()):
            if name_dir.is_dir() and not name_dir.name.startswith("."):
                name = name_dir.name
                versions = sorted(self._versions(name), key=version_key)
                active = self._read_active(name)  # once per bundle, not per version
                found += [self._load(name, v, active=active) for v in versions]
        return found

    def get(self, name: str, version: str | None = None) -> InstalledBundle:
        """One installed version; `version=None` means the bundle's active version.

        Raises:
            BundleNotFound: no such bundle or version; the message names what is installed.
        """
        name = normalize_name(name)
        versions = self._versions(name)
        if version is None:
            version = self._read_active(name) or (
                max(versions, key=version_key) if versions else None
            )
        if version is None or version not in versions:
            asked = name if version is None else f"{name}=={version}"
            raise BundleNotFound(
                f"bundle {asked} is not installed; {self._installed_summary()}", bundle=asked
            )
        return self._load(name, version, active=self._read_active(name))

    def _load(self, name: str, version: str, *, active: str | None) -> InstalledBundle:
        """One version's entry; `active` is the bundle's active version, read by the caller."""
        vdir = self._version_dir(name, version)
        try:
            description = RuntimeDescription.from_json(_read_json(vdir / MANIFEST))
            sha256 = (vdir / WHEEL_SHA256).read_text(encoding="ascii").strip()
            source = _read_json(vdir / SOURCE) if (vdir / SOURCE).is_file() else {}
            install = _read_json(vdir / INSTALL) if (vdir / INSTALL).is_file() else {}
        except (OSError, ValueError, TypeError) as exc:
            raise BundleError(
                f"bundle {name}=={version}: its store entry {str(vdir)!r} is unreadable ({exc}); "
                "remove and reinstall it",
                bundle=f"{name}=={version}",
            ) from exc
        return InstalledBundle(
            name=name,
            version=version,
            path=vdir,
            sha256=sha256,
            source_commit=source.get("git_commit"),
            active=active == version,
            description=description,
            install_s=install.get("install_s"),
        )

    def _installed_summary(self) -> str:
        labels = [b.label for b in self.list()]
        if not labels:
            return "no bundles are installed (add one with `supervisor bundle install WHEEL`)"
        return "installed: " + ", ".join(labels)

    # -- change -----------------------------------------------------------------------------

    def activate(self, name: str, version: str) -> InstalledBundle:
        """Make `version` the one used when a workload names no version.

        Raises:
            BundleNotFound: that version is not installed.
        """
        bundle = self.get(name, version)
        self._write_active(bundle.name, bundle.version)
        logger.info("bundle.activated", extra={"bundle": bundle.label})
        return self.get(bundle.name, bundle.version)

    def remove(self, name: str, version: str) -> InstalledBundle | None:
        """Delete one version; returns the bundle's active version afterwards, if any is left.

        When the active version goes, the newest remaining one becomes active. Runtimes already
        started from the removed venv keep their open files; new ones cannot start.

        Raises:
            BundleNotFound: that version is not installed.
        """
        bundle = self.get(name, version)
        with self._lock(bundle.name, bundle.version):
            trash = bundle.path.with_name(f".trash-{bundle.version}-{os.getpid()}")
            os.rename(bundle.path, trash)  # gone for readers at once, then deleted at leisure
            shutil.rmtree(trash, ignore_errors=True)
        logger.info("bundle.removed", extra={"bundle": bundle.label})
        return self._settle_active(bundle.name, removed=bundle.version)

    def _settle_active(self, name: str, *, removed: str) -> InstalledBundle | None:
        remaining = self._versions(name)
        active = self._read_active(name)
        if not remaining:
            (self.bundles_dir / name / ACTIVE).unlink(missing_ok=True)
            return None
        if active == removed or active not in remaining:
            self._write_active(name, max(remaining, key=version_key))
        return self.get(name)

    # -- integrity --------------------------------------------------------------------------

    def verify(self, name: str | None = None, version: str | None = None) -> builtins.list[str]:
        """Re-check installed versions; returns one line per problem (empty when all is well).

        Checks the stored wheel against the recorded sha256, the manifest against the version
        directory, and every installed file in the venv against its dist's RECORD.

        Raises:
            BundleNotFound: `name` (or `name==version`) is not installed.
        """
        if name is None:
            bundles = self.list()
        elif version is None:
            bundles = [b for b in self.list() if b.name == normalize_name(name)]
            if not bundles:
                self.get(name)  # raises BundleNotFound with the summary
        else:
            bundles = [self.get(name, version)]
        return [f"{b.label}: {p}" for b in bundles for p in check_bundle(b)]

    # -- layout helpers ---------------------------------------------------------------------

    def _version_dir(self, name: str, version: str) -> Path:
        return self.bundles_dir / name / version

    def _versions(self, name: str) -> builtins.list[str]:
        name_dir = self.bundles_dir / name
        if not name_dir.is_dir():
            return []
        return [
            d.name
            for d in name_dir.iterdir()
            if d.is_dir() and not d.name.startswith(".") and (d / MANIFEST).is_file()
        ]

    def _read_active(self, name: str) -> str | None:
        try:
            value = (self.bundles_dir / name / ACTIVE).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return value or None

    def _write_active(self, name: str, version: str) -> None:
        target = self.bundles_dir / name / ACTIVE
        tmp = target.with_name(f".{ACTIVE}-{os.getpid()}")
        tmp.write_text(version + "\n", encoding="utf-8")
        os.replace(tmp, target)

    @contextlib.contextmanager
    def _lock(self, name: str, version: str) -> Iterator[None]:
        """Exclusive per-version lock (flock: released by the kernel if we die holding it)."""
        name_dir = self.bundles_dir / name
        name_dir.mkdir(parents=True, exist_ok=True)
        with (name_dir / f".{version}.lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def version_key(version: str) -> tuple[int, Any]:
    """Sort key: PEP 440 order; a version PEP 440 cannot parse sorts first, as plain text."""
    with contextlib.suppress(InvalidVersion):
        return (1, Version(version))
    return (0, version)


def _describe(venv: Path, info: WheelInfo) -> RuntimeDescription:
    """Start the freshly installed runtime once and ask what it serves.

    Raises:
        BundleInstallError: the runtime did not start, or serves another name or version.
    """
    label = f"{info.name}=={info.version}"
    spec = RuntimeSpec(
        bundle=label, argv=(str(venv / "bin" / "bundle-runtime"),), bundle_env=info.name
    )
    try:
        with start_runtime(spec) as runtime:
            description = runtime.describe()
    except SupervisorError as exc:
        raise BundleInstallError(
            f"bundle {label} was not installed: its runtime failed to start from the new venv: "
            f"{exc}",
            bundle=label,
        ) from exc
    served = (normalize_name(description.bundle_name), description.bundle_version)
    if served != (info.name, info.version):
        raise BundleInstallError(
            f"bundle {label}: the installed runtime serves {served[0]}=={served[1]} instead; "
            "check the bundle's entry point in group bundle_runtime.bundles",
            bundle=label,
        )
    return description


def _read_json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{str(path)!r} does not hold a JSON object")
    return data


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
