"""The `supervisor bundle ...` commands, run as real subprocesses against real bundle venvs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from supervisor.wheelfile import add_file
from tests.conftest import ATTRS, EXAMPLES, VERSIONS

from .conftest import assert_one_line_error, run_cli, run_json

TEST = ("bundle", "test")


def _test(home: Path, env: dict[str, str], task_id: str, *extra: str,
          bundle: str = "example-etl==1.0.0") -> tuple[int, dict]:
    return run_json(home, env, *TEST, bundle, "example_etl", task_id, *extra)


@pytest.mark.parametrize("version", VERSIONS)
def test_each_version_reports_its_own_attrs(
    session_home: Path, cli_env: dict[str, str], version: str
) -> None:
    rc, result = _test(session_home, cli_env, "dep_version", bundle=f"example-etl=={version}")
    assert rc == 0
    assert result["state"] == "success"
    assert result["return_value"] == {"attrs": ATTRS[version], "bundle_version": version}
    assert result["bundle"] == f"example-etl=={version}"


def test_without_version_the_active_one_runs(session_home: Path, cli_env: dict[str, str]) -> None:
    rc, result = _test(session_home, cli_env, "dep_version", bundle="example-etl")
    assert (rc, result["return_value"]["bundle_version"]) == (0, "1.0.0")


def test_variables(session_home: Path, cli_env: dict[str, str]) -> None:
    rc, result = _test(session_home, cli_env, "read_variable", "--var", "example_var=hello=world")
    assert (rc, result["state"], result["return_value"]) == (0, "success", "hello=world")
    rc, result = _test(session_home, cli_env, "write_variable")
    assert result["state"] == "success"
    assert result["return_value"] == "written by example-etl v1 try 1"


def test_missing_variable_fails_the_task(session_home: Path, cli_env: dict[str, str]) -> None:
    rc, result = _test(session_home, cli_env, "read_variable")
    assert (rc, result["state"]) == (1, "failed")
    assert "example_var" in result["error"]["message"]


def test_connection_never_returns_or_logs_the_password(
    session_home: Path, cli_env: dict[str, str]
) -> None:
    uri = "example_conn=postgres://etl%40corp:s3cr%2Ft@db.example.com:5433/sales"
    rc, result = _test(session_home, cli_env, "use_connection", "--conn", uri)
    assert rc == 0
    assert result["return_value"] == {"host": "db.example.com", "login": "etl@corp", "port": 5433}
    assert any(r["event"] == "connecting" and r["host"] == "db.example.com"
               for r in result["logs"])
    plain = run_cli(session_home, cli_env, *TEST, "example-etl", "example_etl",
                    "use_connection", "--conn", uri)
    assert "connecting" in plain.stdout and "s3cr/t" not in plain.stdout + plain.stderr


def test_xcom_push_and_pull(session_home: Path, cli_env: dict[str, str]) -> None:
    rc, pushed = _test(session_home, cli_env, "push_xcom")
    assert (rc, pushed["return_value"], pushed["xcom"]) == (0, {"pushed": True},
                                                            {"numbers": [1, 2, 3]})
    rc, pulled = _test(session_home, cli_env, "pull_xcom", "--xcom", "push_xcom.numbers=[1,2,3]")
    assert (rc, pulled["state"], pulled["return_value"]) == (0, "success", 6)


def test_skip_and_fail(session_home: Path, cli_env: dict[str, str]) -> None:
    rc, skipped = _test(session_home, cli_env, "skip_me")
    assert (rc, skipped["state"], skipped["return_value"]) == (0, "skipped", None)
    rc, failed = _test(session_home, cli_env, "fail_hard", "--retries", "3")
    assert (rc, failed["state"]) == (1, "failed")  # FailTask never retries
    assert "retrying will not help" in failed["error"]["message"]


@pytest.mark.parametrize(
    ("extra", "state", "rc"),
    [
        ((), "failed", 1),
        (("--retries", "1"), "up_for_retry", 1),
        (("--retries", "1", "--try-number", "2"), "success", 0),
    ],
)
def test_flaky_retries(
    session_home: Path, cli_env: dict[str, str], extra: tuple[str, ...], state: str, rc: int
) -> None:
    code, result = _test(session_home, cli_env, "flaky", *extra)
    assert (code, result["state"]) == (rc, state)
    if state == "success":
        assert result["return_value"] == "ok"
    else:
        assert result["error"]["type"] == "RuntimeError"


def test_runtime_dying_mid_task_fails_with_reason(
    session_home: Path, cli_env: dict[str, str]
) -> None:
    rc, result = _test(session_home, cli_env, "crash", bundle="example-etl==2.0.0")
    assert (rc, result["state"]) == (1, "failed")
    assert result["error"]["type"] == "RuntimeLost"
    assert "exited with code 3" in result["error"]["message"]


def test_plain_output_ends_with_state_and_return_value(
    session_home: Path, cli_env: dict[str, str]
) -> None:
    proc = run_cli(session_home, cli_env, *TEST, "example-etl==2.0.0", "example_etl", "dep_version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-2:] == [
        "state: success", 'return_value: {"attrs": "25.3.0", "bundle_version": "2.0.0"}'
    ]


def test_unknown_task_names_the_bundles_tasks(session_home: Path, cli_env: dict[str, str]) -> None:
    proc = run_cli(session_home, cli_env, *TEST, "example-etl==1.0.0", "example_etl", "nope")
    assert_one_line_error(proc, "example_etl/nope", "example_etl/dep_version", "example_etl/flaky")
    assert proc.returncode == 1 and proc.stdout == ""


def test_user_errors_are_one_line(session_home: Path, cli_env: dict[str, str]) -> None:
    assert_one_line_error(
        run_cli(session_home, cli_env, *TEST, "nope", "d", "t"), "nope", "example-etl==1.0.0"
    )
    usage = run_cli(session_home, cli_env, "bundle", "activate", "example-etl")
    assert usage.returncode == 2
    assert_one_line_error(usage, "NAME==VERSION")
    bad_var = run_cli(session_home, cli_env, *TEST, "example-etl", "example_etl", "noop",
                      "--var", "novalue")
    assert bad_var.returncode == 2
    assert_one_line_error(bad_var, "KEY=VALUE")
    assert_one_line_error(
        run_cli(session_home, cli_env, "bundle", "install", "/nonexistent.whl"), "does not exist"
    )


def test_list_json(session_home: Path, cli_env: dict[str, str]) -> None:
    rc, listing = run_json(session_home, cli_env, "bundle", "list")
    assert rc == 0
    assert [(b["name"], b["version"], b["active"]) for b in listing] == [
        ("example-etl", "1.0.0", True), ("example-etl", "2.0.0", False)
    ]
    assert {"dag_id": "example_etl", "task_id": "noop"} in listing[0]["tasks"]
    assert all(len(b["sha256"]) == 64 for b in listing)


def test_install_activate_remove_lifecycle(
    tmp_path: Path, cli_env: dict[str, str], example_wheels: dict[str, Path]
) -> None:
    home = tmp_path / "home"
    wheels = [str(example_wheels[v]) for v in VERSIONS]
    first = run_cli(home, cli_env, "bundle", "install", *wheels)
    assert first.returncode == 0, first.stderr
    assert "example-etl==1.0.0 installed (active)" in first.stdout
    again = run_cli(home, cli_env, "bundle", "install", wheels[1])
    assert again.returncode == 0 and "example-etl==2.0.0 installed" in again.stdout

    assert run_cli(home, cli_env, "bundle", "activate", "example-etl==2.0.0").returncode == 0
    _, listing = run_json(home, cli_env, "bundle", "list")
    assert [b["active"] for b in listing] == [False, True]

    removed = run_cli(home, cli_env, "bundle", "remove", "example-etl==2.0.0")
    assert removed.returncode == 0
    assert "active: example-etl==1.0.0" in removed.stdout
    _, listing = run_json(home, cli_env, "bundle", "list")
    assert [(b["version"], b["active"]) for b in listing] == [("1.0.0", True)]
    assert not (home / "bundles" / "example-etl" / "2.0.0").exists()

    assert_one_line_error(run_cli(home, cli_env, "bundle", "remove", "example-etl==2.0.0"),
                          "example-etl==2.0.0", "installed: example-etl==1.0.0")
    assert run_cli(home, cli_env, "bundle", "remove", "example-etl==1.0.0").returncode == 0
    assert run_json(home, cli_env, "bundle", "list") == (0, [])


def test_cli_refuses_other_bytes_for_an_installed_version(
    session_home: Path, cli_env: dict[str, str], example_wheels: dict[str, Path], tmp_path: Path
) -> None:
    tampered = tmp_path / example_wheels["2.0.0"].name
    shutil.copyfile(example_wheels["2.0.0"], tampered)
    add_file(tampered, "extra.txt", b"x")
    proc = run_cli(session_home, cli_env, "bundle", "install", str(tampered))
    assert_one_line_error(proc, "example-etl==2.0.0 is already installed", "sha256")


def test_build_prints_the_wheel_path(tmp_path: Path, cli_env: dict[str, str]) -> None:
    proc = run_cli(tmp_path, cli_env, "bundle", "build", str(EXAMPLES / "2.0.0"),
                   "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(tmp_path / "out" / "example_etl-2.0.0-py3-none-any.whl")


def test_help_documents_every_command(cli_env: dict[str, str], tmp_path: Path) -> None:
    proc = run_cli(tmp_path, cli_env, "--help")
    assert proc.returncode == 0
    for command in ("build", "install", "list", "remove", "activate", "verify", "test"):
        assert f"bundle {command}" in proc.stdout


def test_wheel_without_entry_point_is_not_installed(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    project = tmp_path / "no-entry"
    (project / "no_entry").mkdir(parents=True)
    (project / "no_entry" / "__init__.py").write_text("")
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling>=1.24"]\nbuild-backend = "hatchling.build"\n'
        '[project]\nname = "no-entry"\nversion = "0.1.0"\ndependencies = ["bundle-runtime"]\n'
    )
    home = tmp_path / "home"
    built = run_cli(home, cli_env, "bundle", "build", str(project))
    assert built.returncode == 0, built.stderr
    proc = run_cli(home, cli_env, "bundle", "install", built.stdout.strip())
    assert_one_line_error(proc, "no-entry==0.1.0 was not installed", "failed to load")
    assert proc.returncode == 1
    assert run_json(home, cli_env, "bundle", "list") == (0, [])
    leftovers = [p.name for p in (home / "bundles" / "no-entry").iterdir()]
    assert leftovers == [".0.1.0.lock"]
