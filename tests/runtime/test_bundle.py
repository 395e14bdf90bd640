"""Bundle registration and loading (entry point and module:attr)."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import pytest

from bundle_runtime import Bundle, BundleDefinitionError, BundleLoadError
from bundle_runtime.bundle import load_bundle, normalize_name
from bundle_runtime.protocol import ENTRY_POINT_GROUP


def test_duplicate_task_raises_value_error_naming_both_functions():
    bundle = Bundle()

    @bundle.task(dag_id="d", task_id="t")
    def first(ctx):
        """First."""

    with pytest.raises(ValueError, match=r"d\.t is registered twice: by .*first and .*second"):

        @bundle.task(dag_id="d", task_id="t")
        def second(ctx):
            pass


@pytest.mark.parametrize("dag_id", ["", "  ", None])
def test_empty_ids_are_refused(dag_id):
    with pytest.raises(BundleDefinitionError, match="dag_id must be a non-empty string"):
        Bundle().task(dag_id=dag_id, task_id="t")


def test_tasks_mapping_is_read_only_and_keeps_options():
    bundle = Bundle()

    @bundle.task(dag_id="d", task_id="t", timeout_s=12.5)
    def fn(ctx):
        """Summary line.

        Body.
        """

    task = bundle.tasks[("d", "t")]
    assert (task.fn, task.timeout_s, task.doc) == (fn, 12.5, "Summary line.")
    with pytest.raises(TypeError):
        bundle.tasks[("d", "x")] = task  # type: ignore[index]


def test_module_spec_loads_and_names_missing_attributes():
    bundle = load_bundle("tests.runtime.sample_bundle:bundle")
    assert (bundle.name, bundle.version) == ("sample", "1.0.0")
    with pytest.raises(BundleLoadError, match=r"has no attribute 'nope'.*\['bundle'\]"):
        load_bundle("tests.runtime.sample_bundle:nope")
    with pytest.raises(BundleLoadError, match="resolves to str"):
        load_bundle("tests.runtime.sample_bundle:DAG")


@pytest.fixture
def installed_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fake installed wheel `Example_ETL 2.0.0` with an entry point, on sys.path."""
    package = tmp_path / "example_etl_pkg"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from bundle_runtime import Bundle\nbundle = Bundle()\n"
        "@bundle.task(dag_id='etl', task_id='load')\ndef load(ctx):\n    return 1\n"
    )
    dist_info = tmp_path / "Example_ETL-2.0.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: Example_ETL\nVersion: 2.0.0\n"
    )
    (dist_info / "entry_points.txt").write_text(
        textwrap.dedent(f"""
        [{ENTRY_POINT_GROUP}]
        example-etl = example_etl_pkg:bundle
        """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield "example-etl"
    sys.modules.pop("example_etl_pkg", None)


def test_entry_point_name_loads_with_wheel_metadata(installed_bundle: str):
    bundle = load_bundle("Example_ETL")  # any spelling that normalises the same
    assert (bundle.name, bundle.version) == ("example-etl", "2.0.0")
    assert list(bundle.tasks) == [("etl", "load")]


def test_unknown_entry_point_names_what_is_installed(installed_bundle: str):
    with pytest.raises(BundleLoadError) as info:
        load_bundle("sales")
    message = str(info.value)
    assert "bundle 'sales': no entry point of that name" in message
    assert ENTRY_POINT_GROUP in message
    assert "example-etl (example_etl_pkg:bundle)" in message


def test_normalize_name_follows_pep_503():
    assert normalize_name("Example_ETL.tasks") == "example-etl-tasks"
