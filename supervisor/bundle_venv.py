"""Making one bundle venv: uv, or venv + pip, with bytecode compiled at install time.

The store decides where and when; this module only runs installers. uv is preferred: it links
files from its cache instead of copying them (which needs the cache on the venv's filesystem, so
the store keeps it under its home) and makes a venv in milliseconds. The fallback, `python -m
venv` + pip, works anywhere but costs seconds. Either way bytecode is compiled at install time:
these machines export PYTHONDONTWRITEBYTECODE=1, so a runtime would otherwise recompile its
imports on every start.

Venvs are built in a temporary directory and renamed into place, so they must not hard-code their
own path: uv gets `--relocatable`; after pip, the launcher scripts' `#!` lines are rewritten.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path

from supervisor.errors import BundleInstallError

logger = logging.getLogger(__name__)

#: Lines of installer output quoted in an install error.
_TAIL_LINES = 20


class Installer(StrEnum):
    """Which tool builds bundle venvs."""

    #: uv when it can be found, else venv + pip.
    AUTO = "auto"
    #: `uv venv` + `uv pip install --compile-bytecode`.
    UV = "uv"
    #: `python -m venv` + pip + compileall.
    PIP = "pip"


def find_uv() -> str | None:
    """The uv executable: next to our interpreter (uv is our dependency), else on PATH."""
    sibling = Path(sys.executable).parent / "uv"
    if sibling.is_file() and os.access(sibling, os.X_OK):
        return str(sibling)
    return shutil.which("uv")


def resolve_installer(choice: Installer | str) -> tuple[Installer, str | None]:
    """The concrete installer for `choice`, and the uv path when it is uv.

    Raises:
        BundleInstallError: uv was asked for and cannot be found.
    """
    choice = Installer(choice)
    uv = find_uv() if choice is not Installer.PIP else None
    if choice is Installer.UV and uv is None:
        raise BundleInstallError("installer 'uv' was requested but no uv executable was found")
    return (Installer.UV, uv) if uv is not None else (Installer.PIP, None)


def create_venv(
    venv: Path,
    wheels: Sequence[Path],
    *,
    python: str,
    installer: Installer,
    uv: str | None,
    find_links: Path,
    cache_dir: Path,
) -> None:
    """Create `venv` from interpreter `python` and install `wheels` (and their dependencies).

    Raises:
        BundleInstallError: an installer command failed; its output tail is in the message.
    """
    if installer is Installer.UV and uv is not None:
        _create_with_uv(venv, wheels, python=python, uv=uv, find_links=find_links, cache=cache_dir)
    else:
        _create_with_pip(venv, wheels, python=python, find_links=find_links)
    logger.debug("venv.created", extra={"venv": str(venv), "installer": installer.value})


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def site_packages(venv: Path) -> Path:
    """The venv's purelib directory (lib/pythonX.Y/site-packages)."""
    found = sorted(venv.glob("lib/python*/site-packages"))
    if not found:
        raise FileNotFoundError(f"no site-packages under {str(venv)!r}")
    return found[0]


def _create_with_uv(
    venv: Path, wheels: Sequence[Path], *, python: str, uv: str, find_links: Path, cache: Path
) -> None:
    env = {**os.environ, "UV_CACHE_DIR": str(cache)}
    _run([uv, "venv", "--quiet", "--no-config", "--relocatable", "--python", python, str(venv)],
         env=env)
    _run(
        [uv, "pip", "install", "--quiet", "--no-config", "--compile-bytecode",
         "--python", str(venv_python(venv)), "--find-links", str(find_links),
         *map(str, wheels)],
        env=env,
    )


def _create_with_pip(venv: Path, wheels: Sequence[Path], *, python: str, find_links: Path) -> None:
    _run([python, "-m", "venv", str(venv)])
    vpy = str(venv_python(venv))
    _run([vpy, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
          "--find-links", str(find_links), *map(str, wheels)])
    # pip compiles too, but only where it may write; make sure, as uv's --compile-bytecode does.
    _run([vpy, "-m", "compileall", "-q", str(site_packages(venv))])
    _rewrite_shebangs(venv)


def _rewrite_shebangs(venv: Path) -> None:
    """Make pip's launchers find the interpreter next to them, wherever the venv is moved.

    pip writes the temporary venv's absolute interpreter path, either as `#!<python>` or, for
    long paths, as a three-line `/bin/sh` prologue; both are replaced by `_TRAMPOLINE`.
    """
    python = str(venv_python(venv)).encode()
    for script in (venv / "bin").iterdir():
        if script.is_symlink() or not script.is_file():
            continue
        data = script.read_bytes()
        lines = data.split(b"\n", 3)
        if data.startswith(b"#!" + python + b"\n"):
            script.write_bytes(_TRAMPOLINE + data[len(python) + 3 :])
        elif data.startswith(b"#!/bin/sh\n") and len(lines) == 4 and python in lines[1]:
            script.write_bytes(_TRAMPOLINE + lines[3])


#: A `#!` prologue that finds the interpreter next to the script, wherever the venv now lives;
#: the same one uv writes into relocatable venvs. It is valid Python too (a string statement).
_TRAMPOLINE = (
    b"#!/bin/sh\n"
    b"'''exec' \"$(dirname -- \"$(realpath -- \"$0\")\")\"/'python' \"$0\" \"$@\"\n"
    b"' '''\n"
)


def _run(argv: list[str], *, env: dict[str, str] | None = None) -> None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    except OSError as exc:
        raise BundleInstallError(f"could not run {argv[0]!r}: {exc}") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-_TAIL_LINES:])
        raise BundleInstallError(
            f"{Path(argv[0]).name} {' '.join(argv[1:3])} exited {proc.returncode}\n{tail}"
        )
