"""`supervisor serve` as a real subprocess for the e2e suite.

It gets the stack's AIRFLOW__* environment (broker, result backend, Execution API, log folder),
a home with both example-etl versions installed, and a TOML file with the routing the e2e DAGs
need (bundles/dags/): queues etl-v1/etl-v2/etl-v9 pinned to 1.0.0, 2.0.0 and a missing 9.9.9.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from tests.polling import wait_until

REPO = Path(__file__).resolve().parents[2]
#: Every queue the e2e DAGs send bundle tasks to.
QUEUES = ("bundles", "etl-v1", "etl-v2", "etl-v9")
CONFIG = """\
[supervisor]
queues = {queues}
heartbeat_interval_s = 2

[supervisor.queue_to_bundle]
"etl-v1" = "example-etl==1.0.0"
"etl-v2" = "example-etl==2.0.0"
"etl-v9" = "example-etl==9.9.9"

[supervisor.bundle_name_map]
"dags-folder" = "example-etl"

[celery]
worker_concurrency = {concurrency}
"""


class ServeProcess:
    """One `supervisor serve`; its output goes to `log_path`."""

    def __init__(
        self,
        *,
        home: Path,
        workdir: Path,
        stack_env: dict[str, str],
        queues: tuple[str, ...] = QUEUES,
        serve_logs: bool = False,
        concurrency: int = 4,
    ) -> None:
        self.home = home
        self.config = workdir / "supervisor.toml"
        self.config.write_text(
            CONFIG.format(queues=json.dumps(list(queues)), concurrency=concurrency)
        )
        self.log_path = workdir / "serve.log"
        #: Prometheus /metrics of this serve, on a free port of 127.0.0.1.
        self.metrics_port = _free_port()
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self.env = {
            **os.environ,
            **stack_env,
            "SUPERVISOR_HOME": str(home),
            "SUPERVISOR__METRICS_PORT": str(self.metrics_port),
            "SUPERVISOR__METRICS_HOST": "127.0.0.1",
        }
        #: Task logs of this serve. With serve_logs, a folder of its own that the api-server does
        #: not see, served on the stack's worker_log_server_port (one serve per stack can):
        #: Airflow shows these logs only through the log server or remote logging.
        self.log_folder = Path(stack_env["AIRFLOW__LOGGING__BASE_LOG_FOLDER"])
        if serve_logs:
            self.log_folder = workdir / "logs"
            self.env.update(
                {
                    "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.log_folder),
                    "SUPERVISOR__HOSTNAME": "127.0.0.1",
                    "SUPERVISOR__LOG_SERVER_HOST": "127.0.0.1",
                }
            )
        else:
            self.env["SUPERVISOR__SKIP_SERVE_LOGS"] = "true"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, ready_timeout: float = 60) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "supervisor", "serve", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=REPO,
                start_new_session=True,
            )
        wait_until(self._ready, timeout=ready_timeout, what="supervisor serve ready")

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"supervisor serve exited {self.process.returncode}:\n{self.log()}")
        return " ready." in self.log()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 60) -> int:
        """Warm shutdown (SIGTERM), as an operator would; SIGKILL to the group if it hangs."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
