"""The docs cannot drift from the code: settings reference, env variable names, protocol names."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from bundle_runtime import protocol
from supervisor import config
from supervisor.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
OPERATING = DOCS / "operating.md"
#: Environment variables of ours or Airflow's, as a doc may name them.
_ENV_NAME = re.compile(r"\b(?:AIRFLOW__[A-Z0-9_]+|SUPERVISOR__[A-Z0-9_]+)\b")
#: Airflow settings the docs name for the Airflow side (scheduler, api-server), which this
#: worker does not read on purpose. Keep short; each needs a reason.
AIRFLOW_SIDE_ONLY = {
    "AIRFLOW__CORE__EXECUTOR",  # the scheduler's executor choice: CeleryExecutor
}
#: Values tried, in order, until one validates and changes the setting away from its default.
_SENTINELS = ("http://sentinel.invalid/execution/", "7", '{"sentinel": "x"}', "true")


def _load_script() -> ModuleType:
    path = ROOT / "scripts" / "gen_settings_doc.py"
    spec = importlib.util.spec_from_file_location("gen_settings_doc", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


gen = _load_script()


def _block() -> str:
    return gen.current_block(OPERATING.read_text(encoding="utf-8"))


def _model_settings() -> list[str]:
    """Every `section.key` in the settings model itself, not as list_settings() reports it."""
    names = []
    for section, field in config.Settings.model_fields.items():
        if section == "config_file":
            continue
        model = field.annotation
        assert isinstance(model, type), section
        names += [f"{section}.{key}" for key in model.model_fields]
    return names


def _value(settings: config.Settings, name: str) -> Any:
    section, _, key = name.partition(".")
    return getattr(getattr(settings, section), key)


def test_settings_block_is_generated_from_the_model():
    assert _block() == gen.render_block(), (
        "docs/operating.md's settings block is stale: run python scripts/gen_settings_doc.py"
    )


def test_check_mode_agrees(capsys: pytest.CaptureFixture[str]):
    assert gen.main(["--check"]) == gen.RET_OK, capsys.readouterr().err


def test_check_mode_reports_a_stale_block(tmp_path: Path):
    doc = tmp_path / "operating.md"
    doc.write_text(f"intro\n{gen.START}\nold table\n{gen.END}\noutro\n", encoding="utf-8")
    assert gen.main(["--check", "--doc", str(doc)]) == gen.RET_STALE
    assert gen.main(["--doc", str(doc)]) == gen.RET_OK
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("intro\n") and text.endswith("\noutro\n")
    assert gen.main(["--check", "--doc", str(doc)]) == gen.RET_OK


def test_missing_markers_are_an_error(tmp_path: Path):
    doc = tmp_path / "operating.md"
    doc.write_text("no block here\n", encoding="utf-8")
    assert gen.main(["--check", "--doc", str(doc)]) == gen.RET_NO_MARKERS


def test_list_settings_covers_the_whole_model():
    assert [s.name for s in config.list_settings()] == _model_settings()


@pytest.mark.parametrize("name", _model_settings())
def test_every_setting_of_the_model_is_in_the_docs(name: str):
    block = _block()
    assert f"`{name}`" in block, f"setting {name} is missing from docs/operating.md"


def test_every_env_var_in_the_block_is_one_config_reads():
    named = set(_ENV_NAME.findall(_block()))
    known = {s.env for s in config.list_settings()}
    assert named == known


@pytest.mark.parametrize("info", config.list_settings(), ids=lambda s: s.env)
def test_each_documented_env_var_really_sets_its_setting(info: config.SettingInfo):
    """Load settings with only this variable set: the documented setting must change."""
    default = _value(config.load_settings(environ={}), info.name)
    for sentinel in _SENTINELS:
        try:
            settings = config.load_settings(environ={info.env: sentinel})
        except ConfigError:
            continue  # not a valid value for this type; try the next
        if _value(settings, info.name) != default:
            return
    pytest.fail(f"setting {info.name}: no sentinel value of {info.env} changed it")


def test_env_vars_named_anywhere_in_the_docs_are_read_by_config():
    known = {s.env for s in config.list_settings()} | AIRFLOW_SIDE_ONLY
    for doc in sorted(DOCS.glob("*.md")):
        unknown = set(_ENV_NAME.findall(doc.read_text(encoding="utf-8"))) - known
        assert not unknown, f"{doc.name} names variables config.py does not read: {unknown}"


def test_protocol_names_in_the_docs_are_the_code_s():
    text = (DOCS / "protocol.md").read_text(encoding="utf-8")
    constants = {
        protocol.MAGIC_COOKIE_KEY,
        protocol.MAGIC_COOKIE_VALUE,
        protocol.PROTOCOL_VERSIONS_ENV,
        protocol.SOCKET_DIR_ENV,
        protocol.BUNDLE_ENV,
        protocol.SOCKET_NAME,
        protocol.HEALTH_SERVICE,
        protocol.ENTRY_POINT_GROUP,
    }
    for name in constants:
        assert name in text, f"docs/protocol.md does not mention {name!r}"
    named = set(re.findall(r"\bBUNDLE_RUNTIME_[A-Z_]+\b", text))
    assert named <= constants, f"docs/protocol.md names unknown variables: {named - constants}"
    assert protocol.format_handshake(1, "/tmp/bsv-1000/4242-q8x1z0kd/runtime.sock") in text
