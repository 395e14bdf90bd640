"""Settings: precedence flag > env > TOML > default, Airflow's names, one-line ConfigErrors."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.config import (
    DEFAULT_BROKER_URL,
    DEFAULT_EXECUTION_API_SERVER_URL,
    Settings,
    list_settings,
    load_settings,
)
from supervisor.errors import ConfigError

TOML = """
[celery]
broker_url = "redis://from-toml:6379/0"
worker_concurrency = 3

[core]
execution_api_server_url = "http://toml:8080/execution"

[supervisor]
queues = ["q-toml"]
heartbeat_interval_s = 2.5
queue_to_bundle = { etl-v1 = "example-etl==1.0.0" }
"""


@pytest.fixture
def toml_file(tmp_path: Path) -> Path:
    path = tmp_path / "supervisor.toml"
    path.write_text(TOML)
    return path


def error(**kwargs: object) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(**kwargs)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_defaults(tmp_path: Path) -> None:
    settings = load_settings(environ={"SUPERVISOR_HOME": str(tmp_path)})
    assert settings.celery.broker_url == DEFAULT_BROKER_URL == "redis://127.0.0.1:6379/0"
    assert settings.core.execution_api_server_url == DEFAULT_EXECUTION_API_SERVER_URL
    assert settings.celery.worker_concurrency == 8
    assert settings.logging.worker_log_server_port == 8793
    assert settings.logging.base_log_folder == tmp_path / "logs"
    assert settings.supervisor.queues == ("bundles",)
    assert settings.supervisor.heartbeat_interval_s == 5
    assert settings.supervisor.hostname
    workers = settings.workers
    assert (workers.execution_api_retries, workers.execution_api_timeout) == (5, 5.0)
    assert (workers.execution_api_retry_wait_min, workers.execution_api_retry_wait_max) == (1, 90)
    assert settings.config_file is None


def test_precedence_flag_over_env_over_toml_over_default(toml_file: Path) -> None:
    env = {
        "SUPERVISOR_CONFIG": str(toml_file),
        "AIRFLOW__CELERY__BROKER_URL": "redis://from-env:6379/0",
        "SUPERVISOR__QUEUES": "q-env-1, q-env-2",
    }
    settings = load_settings({"supervisor.queues": ["q-flag"]}, environ=env)
    assert settings.supervisor.queues == ("q-flag",)  # flag
    assert settings.celery.broker_url == "redis://from-env:6379/0"  # env over TOML
    assert settings.celery.worker_concurrency == 3  # TOML over default
    assert settings.supervisor.heartbeat_interval_s == 2.5
    assert settings.supervisor.queue_to_bundle == {"etl-v1": "example-etl==1.0.0"}
    assert settings.core.execution_api_server_url == "http://toml:8080/execution/"
    assert settings.workers.execution_api_retries == 5  # default
    assert settings.config_file == toml_file
    env_only = load_settings(environ=env)
    assert env_only.supervisor.queues == ("q-env-1", "q-env-2")


def test_config_flag_wins_over_config_env(toml_file: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.toml"
    other.write_text("[celery]\nworker_concurrency = 11\n")
    settings = load_settings(config_file=other, environ={"SUPERVISOR_CONFIG": str(toml_file)})
    assert settings.celery.worker_concurrency == 11


def test_env_types_are_parsed() -> None:
    env = {
        "AIRFLOW__LOGGING__REMOTE_LOGGING": "True",
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "2.5",
        "SUPERVISOR__BUNDLE_NAME_MAP": '{"dags-folder": "example-etl"}',
        "SUPERVISOR__QUEUE_TO_BUNDLE": "etl-v1=example-etl==1.0.0, etl=example-etl",
        "SUPERVISOR__QUEUES": '["a", "b"]',
        "AIRFLOW__API__SECRET_KEY": "s3cret",
        "AIRFLOW__CELERY__RESULT_BACKEND": "",
    }
    settings = load_settings(environ=env)
    assert settings.logging.remote_logging is True
    assert settings.workers.execution_api_timeout == 2.5
    assert settings.supervisor.bundle_name_map == {"dags-folder": "example-etl"}
    assert settings.supervisor.queue_to_bundle == {
        "etl-v1": "example-etl==1.0.0",
        "etl": "example-etl",
    }
    assert settings.supervisor.queues == ("a", "b")
    assert settings.api.secret_key is not None
    assert settings.api.secret_key.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)
    assert settings.celery.result_backend is None


def test_home_alias_and_derived_log_folder(tmp_path: Path) -> None:
    settings = load_settings(environ={"SUPERVISOR_HOME": str(tmp_path)})
    assert settings.supervisor.home == tmp_path
    explicit = load_settings(
        environ={"SUPERVISOR_HOME": str(tmp_path), "AIRFLOW__LOGGING__BASE_LOG_FOLDER": "/logs"}
    )
    assert explicit.logging.base_log_folder == Path("/logs")


def test_result_backend_falls_back_to_the_metadata_db() -> None:
    env = {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://u:p@db/airflow"}
    assert load_settings(environ=env).result_backend == "db+postgresql://u:p@db/airflow"
    env["AIRFLOW__CELERY__RESULT_BACKEND"] = "redis://r/1"
    assert load_settings(environ=env).result_backend == "redis://r/1"


def test_bare_flag_names_and_none_flags() -> None:
    settings = load_settings({"worker_concurrency": "4", "hostname": None}, environ={})
    assert settings.celery.worker_concurrency == 4


def test_settings_are_frozen() -> None:
    settings = load_settings(environ={})
    with pytest.raises(ValueError, match="frozen"):
        settings.celery.worker_concurrency = 2  # type: ignore[misc]


# -- errors ---------------------------------------------------------------------------------------


def test_bad_env_value_names_setting_source_and_value() -> None:
    message = error(environ={"AIRFLOW__CELERY__WORKER_CONCURRENCY": "lots"})
    assert message.startswith(
        "setting celery.worker_concurrency = 'lots' (from env AIRFLOW__CELERY__WORKER_CONCURRENCY)"
    )
    assert "valid integer" in message


def test_bad_flag_value() -> None:
    message = error(flags={"celery.worker_concurrency": 0}, environ={})
    assert "setting celery.worker_concurrency = 0 (from flag celery.worker_concurrency)" in message
    assert "greater than or equal to 1" in message


def test_bad_toml_value_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[core]\nexecution_api_server_url = "localhost:8080"\n')
    message = error(config_file=path, environ={})
    assert f"[core] execution_api_server_url in {path}" in message
    assert "http://" in message


def test_bad_toml_syntax(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[celery\n")
    assert "is not valid TOML" in error(config_file=path, environ={})


def test_missing_config_file(tmp_path: Path) -> None:
    message = error(environ={"SUPERVISOR_CONFIG": str(tmp_path / "nope.toml")})
    assert "does not exist" in message


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[celery]\nbrokr_url = 'x'\n", "unknown setting [celery] brokr_url"),
        ("[nope]\na = 1\n", "unknown section [nope]"),
    ],
)
def test_unknown_toml_keys(tmp_path: Path, toml: str, expected: str) -> None:
    path = tmp_path / "x.toml"
    path.write_text(toml)
    assert expected in error(config_file=path, environ={})


def test_unknown_own_env_var_and_flag() -> None:
    assert "SUPERVISOR__QUEUS" in error(environ={"SUPERVISOR__QUEUS": "a"})
    assert "'nope'" in error(flags={"nope": 1}, environ={})


def test_bad_json_and_pairs_in_env() -> None:
    assert "not valid JSON" in error(environ={"SUPERVISOR__BUNDLE_NAME_MAP": "{oops"})
    assert "k=v" in error(environ={"SUPERVISOR__QUEUE_TO_BUNDLE": "just-a-name"})


def test_cross_field_check() -> None:
    message = error(environ={"AIRFLOW__WORKERS__EXECUTION_API_RETRY_WAIT_MIN": "100"})
    assert (
        "execution_api_retry_wait_min (100) must not exceed execution_api_retry_wait_max (90)"
        in message
    )


def test_secret_values_are_not_echoed() -> None:
    message = error(
        environ={"AIRFLOW__API__SECRET_KEY": "x", "AIRFLOW__CELERY__BROKER_URL": "nope"}
    )
    assert "celery.broker_url = 'nope'" in message
    settings = Settings()
    assert settings.api.secret_key is None


# -- the listing for docs -------------------------------------------------------------------------


def test_list_settings_covers_every_field_with_env_and_help() -> None:
    infos = {info.name: info for info in list_settings()}
    count = sum(len(type(section).model_fields) for section in _sections(Settings()))
    assert len(infos) == count
    assert all(info.help for info in infos.values())
    assert infos["celery.broker_url"].env == "AIRFLOW__CELERY__BROKER_URL"
    assert infos["celery.broker_url"].default == repr(DEFAULT_BROKER_URL)
    assert infos["celery.visibility_timeout"].env == (
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT"
    )
    assert infos["supervisor.queues"].env == "SUPERVISOR__QUEUES"
    assert infos["supervisor.hostname"].default == "fully qualified name of this host"
    for name in (
        "celery.result_backend", "celery.worker_concurrency", "operators.default_queue",
        "core.execution_api_server_url", "logging.base_log_folder", "api.secret_key",
        "logging.worker_log_server_port", "logging.remote_logging",
        "logging.remote_base_log_folder", "logging.remote_log_conn_id",
        "workers.execution_api_retries", "workers.execution_api_retry_wait_min",
        "workers.execution_api_retry_wait_max", "workers.execution_api_timeout",
        "supervisor.home", "supervisor.heartbeat_interval_s", "supervisor.start_timeout_s",
        "supervisor.max_tasks_per_runtime", "supervisor.runtime_rss_limit_mb",
        "supervisor.runtime_idle_timeout_s", "supervisor.default_task_timeout_s",
        "supervisor.bundle_name_map", "supervisor.queue_to_bundle", "supervisor.metrics_port",
    ):  # fmt: skip
        assert name in infos


def _sections(settings: Settings) -> list[object]:
    return [
        getattr(settings, name) for name in type(settings).model_fields if name != "config_file"
    ]
