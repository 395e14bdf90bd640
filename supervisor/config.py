"""Typed, frozen settings and where they come from: flags > environment > TOML file > defaults.

Where a setting means what an Airflow setting means, it has Airflow's section, key and
environment variable (`AIRFLOW__CELERY__BROKER_URL`, ...), so one environment serves Airflow and
this worker. Our own settings live in section `supervisor` (env `SUPERVISOR__<KEY>`, TOML table
`[supervisor]`). The TOML file mirrors Airflow's sections:

    [celery]
    broker_url = "redis://redis:6379/0"
    [core]
    execution_api_server_url = "http://airflow-api:8080/execution/"
    [supervisor]
    queues = ["bundles", "etl-v1"]
    queue_to_bundle = { etl-v1 = "example-etl==1.0.0" }

In the environment, list settings take `a,b` or a JSON list, map settings a JSON object or
`k=v,k2=v2`. Any bad or unknown setting raises `ConfigError` with one line naming the setting,
where it came from and the offending value. `list_settings()` describes every setting for docs.
The loader is ours rather than pydantic-settings' sources so each error can name its source.
"""

from __future__ import annotations

import json
import os
import socket
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticUndefined

from supervisor.errors import ConfigError

#: Environment variable naming the TOML file (the `--config` flag wins over it).
CONFIG_ENV = "SUPERVISOR_CONFIG"
#: Short alias for `SUPERVISOR__HOME`, which wins when both are set.
HOME_ENV = "SUPERVISOR_HOME"
#: Prefix of our own environment variables.
OWN_ENV_PREFIX = "SUPERVISOR__"

DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
DEFAULT_EXECUTION_API_SERVER_URL = "http://localhost:8080/execution/"
#: Airflow's provider defaults to 16. Each of our slots is a whole Python interpreter in a bundle
#: venv with that bundle's imports (often 100-300 MB with pandas and friends) plus its warm
#: siblings for other versions, so 8 keeps a default install inside a 4 GB worker.
DEFAULT_WORKER_CONCURRENCY = 8
#: Airflow's [celery_broker_transport_options] visibility_timeout for Redis brokers (24 h).
DEFAULT_VISIBILITY_TIMEOUT_S = 86400
DEFAULT_WORKER_LOG_SERVER_PORT = 8793
#: Every IPv4 interface, as Airflow's serve_logs (which has no host option): the api-server fetches
#: from http://<hostname sent in /run>:<port>, usually from another machine.
DEFAULT_LOG_SERVER_HOST = "0.0.0.0"  # noqa: S104
#: Every IPv4 interface: Prometheus scrapes from another machine; the port is off by default.
DEFAULT_METRICS_HOST = "0.0.0.0"  # noqa: S104
#: The control socket of a running `serve`, under supervisor.home; `supervisor status` reads it.
CONTROL_SOCKET = Path("run") / "control.sock"
DEFAULT_QUEUES = ("bundles",)
#: Airflow 3.3's [core] xcom_backend: values in the metadata DB.
DEFAULT_XCOM_BACKEND = "airflow.sdk.execution_time.xcom.BaseXCom"
DEFAULT_HOME = Path("~/.local/state/airflow-bundle-supervisor")


def _setting(default: Any = PydanticUndefined, doc: str = "", **extra: Any) -> Any:
    """A field with its help text; `env=` overrides the derived variable, `shown=` the default."""
    schema = {k: extra.pop(k) for k in ("env", "shown") if k in extra}
    factory = extra.pop("default_factory", None)
    if factory is not None:
        return Field(default_factory=factory, description=doc, json_schema_extra=schema, **extra)
    return Field(default, description=doc, json_schema_extra=schema, **extra)


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CelerySettings(_Section):
    broker_url: str = _setting(DEFAULT_BROKER_URL, "Celery broker Airflow publishes workloads to.")
    result_backend: str | None = _setting(
        None, "Celery result backend Airflow reads; unset means db+[database] sql_alchemy_conn."
    )
    worker_concurrency: int = _setting(
        DEFAULT_WORKER_CONCURRENCY, "Task instances run at once (one runtime each).", ge=1
    )
    visibility_timeout: int = _setting(
        DEFAULT_VISIBILITY_TIMEOUT_S,
        "Seconds before Redis redelivers an unacked message.",
        env="AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT",
        ge=1,
    )

    @field_validator("broker_url")
    @classmethod
    def _has_scheme(cls, value: str) -> str:
        if "://" not in value:
            raise ValueError("expected a URL such as redis://host:6379/0")
        return value


class DatabaseSettings(_Section):
    sql_alchemy_conn: SecretStr | None = _setting(
        None, "Airflow's metadata DB; only used to derive the default result backend."
    )


class CoreSettings(_Section):
    execution_api_server_url: str = _setting(
        DEFAULT_EXECUTION_API_SERVER_URL, "Base URL of Airflow's Task Execution API."
    )
    xcom_backend: str = _setting(
        DEFAULT_XCOM_BACKEND,
        "XCom backend, as Airflow's; also ...common.io.xcom.backend.XComObjectStorageBackend.",
    )

    @field_validator("execution_api_server_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("expected an http:// or https:// URL ending in /execution/")
        return value if value.endswith("/") else value + "/"


class CommonIoSettings(_Section):
    """Airflow's [common.io] (TOML `[common.io]`): the object-storage XCom backend's settings."""

    xcom_objectstorage_path: str = _setting(
        "", "Where large XComs go, as Airflow's: s3://<conn_id>@<bucket>/<prefix>."
    )
    xcom_objectstorage_threshold: int = _setting(
        -1, "Bytes of JSON from which a value goes to object storage (-1: never, 0: always).", ge=-1
    )
    xcom_objectstorage_compression: str = _setting(
        "", "Compression of XCom objects: gzip, bz2, zip, lzma, xz; empty: none."
    )


class OperatorsSettings(_Section):
    default_queue: str = _setting("default", "Airflow's default queue (callbacks go there).")


class LoggingSettings(_Section):
    base_log_folder: Path = _setting(
        default_factory=lambda: DEFAULT_HOME.expanduser() / "logs",
        doc="Root of task log files; Airflow's log_path is relative to it.",
        shown="<supervisor.home>/logs",
    )
    worker_log_server_port: int = _setting(
        DEFAULT_WORKER_LOG_SERVER_PORT, "Port of the log server Airflow's UI reads.", ge=1, le=65535
    )
    remote_logging: bool = _setting(False, "Upload each task log after the task.")
    remote_base_log_folder: str = _setting("", "Where remote logs go (s3://, gs://, file path).")
    remote_log_conn_id: str = _setting("", "Airflow connection for the remote log store.")

    @field_validator("base_log_folder")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()


class ApiSettings(_Section):
    secret_key: SecretStr | None = _setting(
        None, "Signs the log server's JWTs; as on the API server."
    )


class WorkersSettings(_Section):
    execution_api_retries: int = _setting(5, "Attempts per Execution API call.", ge=1)
    execution_api_retry_wait_min: float = _setting(1.0, "Shortest wait between attempts (s).", ge=0)
    execution_api_retry_wait_max: float = _setting(90.0, "Longest wait between attempts (s).", ge=0)
    execution_api_timeout: float = _setting(5.0, "Timeout of one Execution API request (s).", gt=0)
    max_failed_heartbeats: int = _setting(3, "Failed heartbeats in a row that stop a task.", ge=1)

    @model_validator(mode="after")
    def _wait_order(self) -> WorkersSettings:
        if self.execution_api_retry_wait_min > self.execution_api_retry_wait_max:
            raise ValueError(
                f"execution_api_retry_wait_min ({self.execution_api_retry_wait_min:g}) must not "
                f"exceed execution_api_retry_wait_max ({self.execution_api_retry_wait_max:g})"
            )
        return self


class SchedulerSettings(_Section):
    task_instance_heartbeat_timeout: int = _setting(
        300,
        "Airflow fails a TI without a heartbeat this long; we keep a TI through an API outage "
        "until then.",
        ge=1,
    )


class SupervisorSettings(_Section):
    home: Path = _setting(
        default_factory=DEFAULT_HOME.expanduser,
        doc="State directory: installed bundles, their venvs, caches (also env SUPERVISOR_HOME).",
        shown=str(DEFAULT_HOME),
    )
    queues: tuple[str, ...] = _setting(DEFAULT_QUEUES, "Celery queues to consume.", min_length=1)
    hostname: str = _setting(
        default_factory=socket.getfqdn,
        doc="Name sent to Airflow in /run and heartbeats; it must reach this host by it.",
        shown="fully qualified name of this host",
        min_length=1,
    )
    heartbeat_interval_s: float = _setting(5.0, "Seconds between TI heartbeats.", gt=0, le=60)
    drain_grace_s: float = _setting(
        300.0,
        "On SIGTERM, running TIs get this long to finish before they are cancelled "
        "(a second SIGTERM or SIGINT ends it at once).",
        ge=0,
    )
    start_timeout_s: float = _setting(30.0, "Seconds a runtime may take to start.", gt=0)
    max_tasks_per_runtime: int = _setting(
        100, "Recycle a runtime after this many tasks (0: never).", ge=0
    )
    runtime_rss_limit_mb: int = _setting(
        1024, "Recycle a runtime whose RSS exceeds this after a task (0: never).", ge=0
    )
    runtime_idle_timeout_s: float = _setting(
        300.0, "Stop a runtime idle this long (the last warm one of its version).", gt=0
    )
    runtime_spare_idle_timeout_s: float = _setting(
        30.0,
        "Stop a version's other idle runtimes (left by a burst of parallel tasks) after this.",
        gt=0,
    )
    max_runtimes: int = _setting(
        32, "Most runtime processes alive at once, all versions (0: no cap; LRU idle go first).",
        ge=0,
    )
    default_task_timeout_s: float = _setting(
        0.0, "Timeout for tasks that declare none (0: no limit).", ge=0
    )
    # Off by default: what a task may use depends on the host and the bundle (pandas jobs often
    # need GBs), and a default that kills working tasks after an upgrade is worse than none.
    task_memory_limit_mb: int = _setting(
        0,
        "Kill a runtime whose RSS, children included, exceeds this during a task; the TI fails "
        "or retries (0: off).",
        ge=0,
    )
    cancel_grace_s: float = _setting(
        3.0,
        "Seconds a timed-out task gets to stop after its cancel before its runtime's process "
        "group is killed.",
        gt=0,
    )
    bundle_name_map: dict[str, str] = _setting(
        default_factory=dict,
        doc='Airflow DAG bundle name -> our bundle, e.g. {"dags-folder": "sales"}.',
    )
    queue_to_bundle: dict[str, str] = _setting(
        default_factory=dict,
        doc='Queue -> "name==version" or "name", e.g. {"etl-v1": "sales==1.4.0"}.',
    )
    metrics_port: int = _setting(
        0, "Port of the Prometheus /metrics endpoint (0: off).", ge=0, le=65535
    )
    metrics_host: str = _setting(
        DEFAULT_METRICS_HOST,
        "Address the metrics endpoint binds to (0.0.0.0: every IPv4 interface).",
        min_length=1,
    )
    skip_serve_logs: bool = _setting(
        False, "No log server on [logging] worker_log_server_port (Airflow's --skip-serve-logs)."
    )
    log_server_host: str = _setting(
        DEFAULT_LOG_SERVER_HOST,
        "Address the log server binds; '::' for IPv6 as well, 127.0.0.1 for this host only.",
        min_length=1,
    )

    @field_validator("home")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("queues")
    @classmethod
    def _no_blank_queue(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not q.strip() for q in value):
            raise ValueError("queue names must not be blank")
        return value


class Settings(_Section):
    """Every setting of the worker, grouped as Airflow groups them; immutable once loaded."""

    celery: CelerySettings = CelerySettings()
    database: DatabaseSettings = DatabaseSettings()
    core: CoreSettings = CoreSettings()
    common_io: CommonIoSettings = CommonIoSettings()
    operators: OperatorsSettings = OperatorsSettings()
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    api: ApiSettings = ApiSettings()
    workers: WorkersSettings = WorkersSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    supervisor: SupervisorSettings = Field(default_factory=SupervisorSettings)
    #: The TOML file the settings were read from, if any.
    config_file: Path | None = None

    @property
    def result_backend(self) -> str | None:
        """The result backend Airflow reads: [celery] result_backend, else db+ the metadata DB."""
        if self.celery.result_backend:
            return self.celery.result_backend
        conn = self.database.sql_alchemy_conn
        return "db+" + conn.get_secret_value() if conn else None


#: Section name -> its model, in declaration order.
_SECTIONS: dict[str, type[_Section]] = {
    name: field.annotation  # type: ignore[misc]
    for name, field in Settings.model_fields.items()
    if name != "config_file"
}


@dataclass(frozen=True)
class SettingInfo:
    """One setting, described for docs and `--help` (see `list_settings`)."""

    name: str  # "section.key"
    env: str
    default: str
    help: str


def _extra(section: str, key: str) -> dict[str, Any]:
    extra = _SECTIONS[section].model_fields[key].json_schema_extra
    return extra if isinstance(extra, dict) else {}


def env_name(section: str, key: str) -> str:
    """The environment variable of a setting: Airflow's own, or SUPERVISOR__<KEY> for ours."""
    if "env" in _extra(section, key):
        return str(_extra(section, key)["env"])
    if section == "supervisor":
        return OWN_ENV_PREFIX + key.upper()
    return f"AIRFLOW__{section.upper()}__{key.upper()}"


def list_settings() -> tuple[SettingInfo, ...]:
    """Every setting with its env variable, default and help, in declaration order."""
    infos = []
    for section, model in _SECTIONS.items():
        for key, field in model.model_fields.items():
            shown = _extra(section, key).get("shown")
            default = shown or repr(field.get_default(call_default_factory=True))
            name, env = f"{section}.{key}", env_name(section, key)
            infos.append(SettingInfo(name, env, str(default), field.description or ""))
    return tuple(infos)


# -- loading -----------------------------------------------------------------------------------

_Key = tuple[str, str]
#: (raw value, where it came from) per setting.
_Layer = dict[_Key, tuple[Any, str]]


def load_settings(
    flags: Mapping[str, Any] | None = None,
    *,
    config_file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge defaults, the TOML file, the environment and flags (last wins) and validate.

    Args:
        flags: command-line values keyed "section.key" (or a bare key that is unique, such as
            "queues"); None values are ignored so argparse defaults of None fall through.
        config_file: the --config path; SUPERVISOR_CONFIG is used when this is None.
        environ: the environment to read (os.environ by default).

    Raises:
        ConfigError: one line naming the setting, its source and the offending value.
    """
    env = os.environ if environ is None else environ
    path = (
        Path(config_file)
        if config_file
        else (Path(env[CONFIG_ENV]) if env.get(CONFIG_ENV) else None)
    )
    merged: _Layer = {}
    if path is not None:
        merged.update(_from_toml(path))
    merged.update(_from_env(env))
    merged.update(_from_flags(flags or {}))
    _derive_log_folder(merged)
    return _validate(merged, path)


def _known_keys() -> dict[str, _Key]:
    return {
        key: (section, key) for section, model in _SECTIONS.items() for key in model.model_fields
    }


def _from_toml(path: Path) -> _Layer:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"config file {str(path)!r} does not exist (from --config or {CONFIG_ENV})"
        ) from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
    layer: _Layer = {}
    for section, table in _undot(data).items():
        if section not in _SECTIONS or not isinstance(table, dict):
            known = ", ".join(_SECTIONS)
            raise ConfigError(
                f"config file {str(path)!r}: unknown section [{section}]; known: {known}"
            )
        for key, value in table.items():
            if key not in _SECTIONS[section].model_fields:
                raise ConfigError(f"config file {str(path)!r}: unknown setting [{section}] {key}")
            layer[(section, key)] = (value, f"[{section}] {key} in {path}")
    return layer


def _undot(data: dict[str, Any]) -> dict[str, Any]:
    """Airflow's dotted sections: TOML reads `[common.io]` as table "io" inside "common"."""
    out: dict[str, Any] = {}
    for name, table in data.items():
        inner = table if name not in _SECTIONS and isinstance(table, dict) else {}
        if inner and all(f"{name}_{sub}" in _SECTIONS for sub in inner):
            out.update({f"{name}_{sub}": sub_table for sub, sub_table in inner.items()})
        else:
            out[name] = table
    return out


def _from_env(env: Mapping[str, str]) -> _Layer:
    layer: _Layer = {}
    names = {env_name(*k): k for k in _known_keys().values()}
    for name in env:
        if name.startswith(OWN_ENV_PREFIX) and name not in names:
            raise ConfigError(
                f"unknown environment variable {name}; known: "
                + ", ".join(sorted(n for n in names if n.startswith(OWN_ENV_PREFIX)))
            )
    if env.get(HOME_ENV):
        layer[("supervisor", "home")] = (env[HOME_ENV], f"env {HOME_ENV}")
    for name, key in names.items():
        if name in env:
            layer[key] = (_parse_text(key, env[name]), f"env {name}")
    return layer


def _from_flags(flags: Mapping[str, Any]) -> _Layer:
    known = _known_keys()
    layer: _Layer = {}
    for name, value in flags.items():
        if value is None:
            continue
        section, _, key = name.rpartition(".")
        target = (section, key) if section else known.get(key)
        if (
            target is None
            or target[0] not in _SECTIONS
            or target[1] not in _SECTIONS[target[0]].model_fields
        ):
            raise ConfigError(f"unknown setting {name!r} given as a flag")
        raw = _parse_text(target, value) if isinstance(value, str) else value
        layer[target] = (raw, f"flag {name}")
    return layer


def _parse_text(key: _Key, text: str) -> Any:
    """Turn env/flag text into the shape of the field: lists, maps, or None for empty optionals."""
    annotation = _SECTIONS[key[0]].model_fields[key[1]].annotation
    origin = typing.get_origin(annotation)
    stripped = text.strip()
    if origin in (tuple, list):
        if stripped.startswith("["):
            return _json(key, stripped)
        return [part.strip() for part in stripped.split(",")] if stripped else []
    if origin is dict:
        if stripped.startswith("{"):
            return _json(key, stripped)
        pairs = [part.partition("=") for part in stripped.split(",") if part.strip()]
        if any(not sep for _, sep, _ in pairs):
            raise ConfigError(
                f"setting {key[0]}.{key[1]} = {text!r}: expected a JSON object or k=v,k2=v2"
            )
        return {k.strip(): v.strip() for k, _, v in pairs}
    if stripped == "" and type(None) in typing.get_args(annotation):
        return None
    return text


def _json(key: _Key, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"setting {key[0]}.{key[1]} = {text!r}: not valid JSON ({exc.msg})"
        ) from None


def _derive_log_folder(merged: _Layer) -> None:
    """Without an explicit base_log_folder, logs live under the (possibly configured) home."""
    home = merged.get(("supervisor", "home"))
    if home is not None and ("logging", "base_log_folder") not in merged:
        merged[("logging", "base_log_folder")] = (Path(str(home[0])) / "logs", home[1])


def _validate(merged: _Layer, path: Path | None) -> Settings:
    nested: dict[str, dict[str, Any]] = {}
    for (section, key), (value, _) in merged.items():
        nested.setdefault(section, {})[key] = value
    try:
        return Settings.model_validate({**nested, "config_file": path})
    except ValidationError as exc:
        raise ConfigError(_describe(exc.errors()[0], merged)) from None


def _describe(error: Mapping[str, Any], merged: _Layer) -> str:
    loc = tuple(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if len(loc) < 2:
        return f"settings [{loc[0] if loc else '?'}]: {message}"
    raw, source = merged.get((loc[0], loc[1]), (error.get("input"), "default"))
    if loc[1] in ("secret_key", "sql_alchemy_conn"):
        raw = "<hidden>"
    return f"setting {loc[0]}.{loc[1]} = {raw!r} (from {source}): {message}"
