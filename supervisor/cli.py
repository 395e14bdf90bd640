"""The `supervisor` command: argument parsing, logging setup, settings, one call per command.

Each command is one `cmd_*` function taking the parsed arguments and returning an exit code; the
work happens in the modules it calls (store, build, tasktest). A new top-level command is one
`_add_<name>_command(commands)` function plus its `cmd_<name>`, listed in `build_parser`.

Every error a user can cause (bad arguments, a missing bundle, a refused wheel, a broken config)
ends as one line on stderr and a non-zero exit code, never a traceback; `--log-level debug` shows
the detail lines (installer output, runtime stderr) that follow the first line of a message.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import supervisor
from supervisor import control, logsetup, tasktest
from supervisor.build import build_bundle
from supervisor.bundle_venv import Installer, find_uv
from supervisor.config import Settings, load_settings
from supervisor.errors import RuntimeLost, RuntimeStartError, SupervisorError
from supervisor.offline import OfflineHost, parse_connection_uri
from supervisor.plugin import stderr as runtime_stderr
from supervisor.plugin.messages import LogRecord, TaskStart
from supervisor.store import BundleStore, InstalledBundle

logger = logging.getLogger(__name__)

#: The command did what was asked.
RET_OK = 0
#: The command ran and failed: an error, problems found by verify, a task that failed.
RET_FAILURE = 1
#: The command line was wrong (argparse uses the same code).
RET_USAGE = 2
#: Interrupted by Ctrl-C (128 + SIGINT, as shells report it).
RET_INTERRUPTED = 130
#: The exit codes as `supervisor --help` and docs/operating.md list them.
EXIT_CODES = (
    (RET_OK, "the command did what was asked"),
    (RET_FAILURE, "an error (one line on stderr says what to do), problems found by `bundle "
     "verify`, a `bundle test` task that ended failed or up_for_retry, no supervisor serving "
     "for `status`"),
    (RET_USAGE, "the command line was wrong"),
    (RET_INTERRUPTED, "interrupted by Ctrl-C"),
)
#: `bundle test` states that make its exit code RET_FAILURE.
_FAILED_STATES = frozenset({"failed", "up_for_retry"})

Command = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """A command-line value that parses but makes no sense; exits RET_USAGE."""


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: `supervisor ...`."""
    sys.exit(run(argv))


def run(argv: Sequence[str] | None = None) -> int:
    """Parse `argv`, run the command, turn errors into one line and an exit code."""
    args = build_parser().parse_args(argv)
    args.log_level = args.log_level or args.default_log_level
    logsetup.configure(args.log_level)
    verbose = args.log_level in ("debug", "info")
    if not verbose:
        # A runtime's stderr (tracebacks included) is re-emitted as warnings for operators of
        # `serve`; at a terminal it would bury the one line that says what went wrong.
        runtime_stderr.logger.setLevel(logging.CRITICAL)
    command: Command = args.command
    try:
        return command(args)
    except UsageError as exc:
        return _fail(f"supervisor: {exc}", RET_USAGE)
    except SupervisorError as exc:
        first, _, detail = str(exc).partition("\n")
        logger.debug("error.detail", extra={"detail": detail or first})
        hint = " (--log-level info shows the runtime's output)" if not verbose else ""
        return _fail(first + (hint if _mentions_runtime(exc) else ""), RET_FAILURE)
    except KeyboardInterrupt:
        return _fail("interrupted", RET_INTERRUPTED)
    except OSError as exc:  # a path the user gave (or its permissions) is the usual cause
        where = f"{exc.filename}: " if exc.filename else ""
        return _fail(
            f"{where}{exc.strerror or exc}; check the path and its permissions", RET_FAILURE
        )


def _mentions_runtime(exc: SupervisorError) -> bool:
    """Errors whose explanation is in the runtime's stderr (start failures, lost runtimes)."""
    cause = exc.__cause__
    return isinstance(exc, RuntimeStartError | RuntimeLost) or isinstance(
        cause, RuntimeStartError | RuntimeLost
    )


def _fail(line: str, code: int) -> int:
    print(line, file=sys.stderr)
    return code


# -- parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree; `supervisor --help` and `supervisor bundle --help` list it."""
    parser = argparse.ArgumentParser(
        prog="supervisor",
        description="Airflow 3 worker that runs each task in the venv of its bundle version.",
        parents=[_common_options(suppress=False)],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(default_log_level=logsetup.DEFAULT_LEVEL)
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {supervisor.__version__}"
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _add_serve_command(commands)
    _add_status_command(commands)
    _add_bundle_commands(commands)
    parser.epilog = _command_index(commands) + "\n\n" + _exit_code_index()
    return parser


def _exit_code_index() -> str:
    lines = ["exit codes:"]
    for code, meaning in EXIT_CODES:
        lines += textwrap.wrap(
            meaning, width=88, initial_indent=f"  {code:<4} ", subsequent_indent=" " * 7
        )
    return "\n".join(lines)


def _command_index(commands: argparse._SubParsersAction[Any]) -> str:
    """Every leaf command with its one-line help, so `supervisor --help` documents them all."""
    lines = ["all commands:"]
    helps = {action.dest: action.help for action in commands._choices_actions}
    for name, sub in commands.choices.items():
        nested = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
        if not nested:
            lines.append(f"  {name:<18} {helps.get(name) or ''}")
        for action in nested:
            lines += [
                f"  {name} {choice.dest:<{17 - len(name)}} {choice.help}"
                for choice in action._choices_actions
            ]
    return "\n".join(lines)


def _common_options(*, suppress: bool) -> argparse.ArgumentParser:
    """Options accepted before the command and after it (`supervisor bundle list --home X`).

    On subcommands the defaults are suppressed so they do not overwrite a value given earlier.
    """
    common = argparse.ArgumentParser(add_help=False)

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    common.add_argument(
        "--home", type=Path, default=default(None), metavar="DIR",
        help="state directory (bundles, caches); default: env SUPERVISOR_HOME, the config "
        "file's [supervisor] home, or ~/.local/state/airflow-bundle-supervisor",
    )
    common.add_argument(
        "--config", type=Path, default=default(None), metavar="FILE",
        help="TOML settings file (default: env SUPERVISOR_CONFIG)",
    )
    common.add_argument(
        "--log-level", choices=logsetup.LEVELS, default=default(None),
        help=f"level of the supervisor's own log on stderr (default: {logsetup.DEFAULT_LEVEL}; "
        "info for serve)",
    )
    return common


def _add_serve_command(commands: argparse._SubParsersAction[Any]) -> None:
    p = commands.add_parser(
        "serve", parents=[_common_options(suppress=True)],
        help="consume Airflow's Celery workloads and run them in bundle runtimes",
        description="Run the worker: consume Airflow's CeleryExecutor messages, run each task in "
        "the venv of its bundle version, report through Airflow's Execution API. Settings come "
        "from Airflow's own AIRFLOW__* variables, SUPERVISOR__* variables, the TOML file and these "
        "flags (flags win). SIGTERM drains: no new tasks, running ones finish.",
    )
    p.add_argument("--queues", metavar="Q1,Q2", help="Celery queues to consume (default: bundles)")
    p.add_argument("--concurrency", type=int, metavar="N", help="task instances run at once")
    p.add_argument("--hostname", metavar="NAME",
                   help="hostname reported to Airflow (its api-server fetches live logs there)")
    p.add_argument("--execution-api-url", metavar="URL",
                   help="Airflow's Execution API, e.g. http://airflow:8080/execution/")
    p.set_defaults(command=cmd_serve, default_log_level="info")


def _add_status_command(commands: argparse._SubParsersAction[Any]) -> None:
    p = commands.add_parser(
        "status", parents=[_common_options(suppress=True)],
        help="show what the running supervisor is doing (queues, running TIs, runtimes)",
        description="Ask the `supervisor serve` of this home, over its control socket "
        "<home>/run/control.sock, what it is doing: its queues, the task instances it runs now, "
        "its warm runtimes and the installed bundle versions. Exit 1 when none is serving.",
    )
    p.add_argument("--json", action="store_true", help="print the snapshot as one JSON object")
    p.set_defaults(command=cmd_status)


def _add_bundle_commands(commands: argparse._SubParsersAction[Any]) -> None:
    bundle = commands.add_parser(
        "bundle", help="build, install and inspect bundles (versioned wheels of task code)",
        description="Bundles are wheels of task code; each installed version has its own venv.",
    )
    sub = bundle.add_subparsers(title="bundle commands", metavar="COMMAND", required=True)
    common = [_common_options(suppress=True)]

    p = sub.add_parser("build", parents=common, help="build a bundle project into a wheel")
    p.add_argument("path", type=Path, metavar="PATH", help="project directory (pyproject.toml)")
    p.add_argument("--out", type=Path, metavar="DIR", help="output directory (default PATH/dist)")
    p.set_defaults(command=cmd_bundle_build)

    p = sub.add_parser("install", parents=common, help="install wheels, each into its own venv")
    p.add_argument("wheels", type=Path, nargs="+", metavar="WHEEL")
    p.add_argument("--python", metavar="PATH", help="interpreter for the venv (default: ours)")
    p.add_argument("--installer", choices=[i.value for i in Installer], default="auto",
                   help="uv, pip (venv + pip), or auto: uv when found (default)")
    p.set_defaults(command=cmd_bundle_install)

    p = sub.add_parser("list", parents=common, help="list installed bundle versions")
    p.add_argument("--json", action="store_true", help="print one JSON array")
    p.set_defaults(command=cmd_bundle_list)

    for name, func, text in (
        ("remove", cmd_bundle_remove, "delete an installed version"),
        ("activate", cmd_bundle_activate, "use this version when a task names none"),
    ):
        p = sub.add_parser(name, parents=common, help=text)
        p.add_argument("target", metavar="NAME==VERSION")
        p.set_defaults(command=func)

    p = sub.add_parser("verify", parents=common,
                       help="re-check wheel hashes and installed files; exit 1 on problems")
    p.add_argument("target", nargs="?", metavar="NAME[==VERSION]", help="default: everything")
    p.set_defaults(command=cmd_bundle_verify)

    _add_bundle_test_command(sub, common)


def _add_bundle_test_command(
    sub: argparse._SubParsersAction[Any], common: list[argparse.ArgumentParser]
) -> None:
    p = sub.add_parser(
        "test", parents=common, help="run one task in its bundle's runtime, without Airflow",
        description="Run one task in the bundle's real runtime against in-memory variables, "
        "connections and XComs. Exit 0 unless the task ends failed or up_for_retry.",
    )
    p.add_argument("target", metavar="NAME[==VERSION]", help="default version: the active one")
    p.add_argument("dag_id", metavar="DAG_ID")
    p.add_argument("task_id", metavar="TASK_ID")
    p.add_argument("--var", action="append", default=[], metavar="KEY=VALUE",
                   help="an Airflow variable (repeatable)")
    p.add_argument("--conn", action="append", default=[], metavar="CONN_ID=URI",
                   help="a connection as an Airflow URI, e.g. postgres://u:p@host:5432/db")
    p.add_argument("--xcom", action="append", default=[], metavar="TASK_ID[.KEY]=JSON",
                   help="an XCom another task pushed (KEY defaults to return_value)")
    p.add_argument("--try-number", type=int, default=1, metavar="N", help="default: 1")
    p.add_argument("--retries", type=int, default=0, metavar="N",
                   help="retries the task has; decides failed vs up_for_retry (default: 0)")
    p.add_argument("--json", action="store_true",
                   help="print exactly one JSON object (state, return_value, error, logs)")
    p.set_defaults(command=cmd_bundle_test)


# -- commands ---------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from supervisor.serve import serve  # noqa: PLC0415 - celery and httpx only for this command

    flags = {
        "supervisor.home": args.home,
        "supervisor.queues": args.queues,
        "supervisor.hostname": args.hostname,
        "celery.worker_concurrency": args.concurrency,
        "core.execution_api_server_url": args.execution_api_url,
    }
    return serve(load_settings(flags, config_file=args.config))


def cmd_status(args: argparse.Namespace) -> int:
    status = control.fetch_status(_settings(args).supervisor.home)
    print(json.dumps(status, indent=2) if args.json else control.format_status(status))
    return RET_OK


def cmd_bundle_build(args: argparse.Namespace) -> int:
    wheel = build_bundle(args.path, args.out or args.path / "dist", uv=find_uv())
    print(wheel)
    return RET_OK


def cmd_bundle_install(args: argparse.Namespace) -> int:
    store = _store(args, installer=args.installer)
    for wheel in args.wheels:
        bundle = store.install(wheel, python=args.python)
        active = " (active)" if bundle.active else ""
        print(f"{bundle.label} installed{active}: sha256 {bundle.sha256}")
    return RET_OK


def cmd_bundle_list(args: argparse.Namespace) -> int:
    bundles = _store(args).list()
    if args.json:
        print(json.dumps([_bundle_json(b) for b in bundles], indent=2))
        return RET_OK
    if not bundles:
        print("no bundles installed")
    for b in bundles:
        mark = "*" if b.active else " "
        source = f" commit {b.source_commit}" if b.source_commit else ""
        print(f"{mark} {b.label}  sha256 {b.sha256[:12]}  {len(b.description.tasks)} tasks{source}")
    return RET_OK


def cmd_bundle_remove(args: argparse.Namespace) -> int:
    name, version = _exact(args.target)
    active = _store(args).remove(name, version)
    print(f"{name}=={version} removed" + (f"; active: {active.label}" if active else ""))
    return RET_OK


def cmd_bundle_activate(args: argparse.Namespace) -> int:
    name, version = _exact(args.target)
    print(f"{_store(args).activate(name, version).label} is active")
    return RET_OK


def cmd_bundle_verify(args: argparse.Namespace) -> int:
    name, version = _target(args.target) if args.target else (None, None)
    store = _store(args)
    problems = store.verify(name, version)
    for line in problems:
        print(line)
    if problems:
        return _fail(f"verify found {len(problems)} problems", RET_FAILURE)
    print("all bundles intact" if name is None else f"{args.target}: intact")
    return RET_OK


def cmd_bundle_test(args: argparse.Namespace) -> int:
    name, version = _target(args.target)
    bundle = _store(args).get(name, version)
    start = tasktest.make_start(
        bundle, args.dag_id, args.task_id, try_number=args.try_number, retries=args.retries
    )
    host = _offline_host(args, start)
    result = tasktest.run_task(bundle, start, host)
    if args.json:
        logs = [_log_json(host, r) for r in host.logs]
        print(json.dumps({**result.to_json(), "bundle": bundle.label, "xcom": host.pushed,
                          "logs": logs}))
    else:
        print(f"state: {result.state}")
        print(f"return_value: {json.dumps(result.return_value)}")
        if result.error:
            print(f"error: {result.error['type']}: {result.error['message']}")
    return RET_FAILURE if result.state in _FAILED_STATES else RET_OK


# -- helpers ----------------------------------------------------------------------------------


def _settings(args: argparse.Namespace) -> Settings:
    """Settings of a command that takes only --home and --config (None flags fall through)."""
    return load_settings({"supervisor.home": args.home}, config_file=args.config)


def _store(args: argparse.Namespace, *, installer: str = Installer.AUTO) -> BundleStore:
    return BundleStore(_settings(args).supervisor.home, installer=installer)


def _target(text: str) -> tuple[str, str | None]:
    name, sep, version = text.partition("==")
    if not name or (sep and not version):
        raise UsageError(f"{text!r} is not NAME or NAME==VERSION")
    return name, version or None


def _exact(text: str) -> tuple[str, str]:
    name, version = _target(text)
    if version is None:
        raise UsageError(f"{text!r} names no version; write NAME==VERSION")
    return name, version


def _offline_host(args: argparse.Namespace, start: TaskStart) -> OfflineHost:
    try:
        variables = dict(_pair(v, "--var") for v in args.var)
        connections = {k: parse_connection_uri(k, uri)
                       for k, uri in (_pair(c, "--conn") for c in args.conn)}
        xcoms = [(*_xcom_target(k), json.loads(v))
                 for k, v in (_pair(x, "--xcom") for x in args.xcom)]
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    host = OfflineHost(start, variables=variables, connections=connections)
    if not args.json:
        host.on_log = lambda record: print(_log_line(host.mask, record))
    for task_id, key, value in xcoms:
        host.seed_xcom(task_id, key, value)
    return host


def _pair(text: str, option: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not key or not sep:
        raise ValueError(f"{option} {text!r}: expected KEY=VALUE")
    return key, value


def _xcom_target(text: str) -> tuple[str, str]:
    task_id, _, key = text.rpartition(".")
    return (task_id, key) if task_id else (text, "return_value")


def _bundle_json(b: InstalledBundle) -> dict[str, Any]:
    d = b.description
    return {
        "name": b.name, "version": b.version, "active": b.active, "sha256": b.sha256,
        "source_commit": b.source_commit, "path": str(b.path),
        "runtime_version": d.runtime_version, "python_version": d.python_version,
        "tasks": [{"dag_id": t.dag_id, "task_id": t.task_id} for t in d.tasks],
    }


def _log_json(host: OfflineHost, r: LogRecord) -> dict[str, Any]:
    record = {"timestamp": r.timestamp.isoformat(), "level": r.level, "event": r.event,
              "logger": r.logger, **r.fields}
    if r.error is not None:
        record["error"] = {"type": r.error.type, "message": r.error.message}
    return {k: host.mask_value(v) for k, v in record.items()}


def _log_line(mask: Callable[[str], str], r: LogRecord) -> str:
    fields = " ".join(f"{k}={v}" for k, v in r.fields.items())
    line = f"{r.timestamp:%H:%M:%S} {r.level:<7} {r.logger}: {r.event} {fields}".rstrip()
    if r.error is not None and r.error.traceback:
        line += "\n" + r.error.traceback.rstrip()
    return mask(line)
