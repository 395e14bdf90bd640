"""Every error the supervisor raises on purpose, as one tree.

    SupervisorError
    ├── ConfigError              bad setting; start-up stops with one line
    ├── WorkloadError            a message or workload we cannot run (malformed, unknown type)
    ├── BundleError              the store
    │   ├── BundleNotFound       no such bundle, version or task (message names what is installed)
    │   ├── BundleIntegrityError wheel bytes differ from what was recorded or pinned
    │   └── BundleInstallError   building the venv or installing the wheel failed
    ├── RuntimeStartError        a runtime did not come up
    │   ├── HandshakeError       stray stdout, wrong cookie, bad line, crash before the line
    │   ├── ProtocolVersionError no protocol version in common
    │   └── StartTimeout         no handshake or no health SERVING in time
    ├── RuntimeLost              a runtime died or became unreachable mid-task
    │   └── RuntimeProtocolError a live runtime broke the Execute stream's or Describe's rules
    ├── NotServing               no `supervisor serve` answers on the home's control socket
    ├── XComStorageError         an XCom value could not be written to or read from object storage
    └── ExecutionApiError        Airflow's Execution API said no or could not be reached
        ├── ApiUnavailable       network errors or 5xx after the retries ran out
        └── TaskInstanceGone     404/409/410: Airflow moved the TI on; stop and report nothing
            └── AlreadyRunning   /run said 409 previous_state=running: a duplicate delivery

Context rides as attributes, so handlers never parse messages. A task's own exception is not here:
it is an outcome (`supervisor.plugin.messages.Failed`), not an error of the supervisor.
"""

from __future__ import annotations


class SupervisorError(Exception):
    """Base of every error raised on purpose by the supervisor."""


class ConfigError(SupervisorError):
    """A setting is missing or invalid."""


class WorkloadError(SupervisorError):
    """A message or workload that cannot be run as it is."""


class BundleError(SupervisorError):
    """Trouble with an installed or installable bundle."""

    def __init__(self, message: str, *, bundle: str | None = None) -> None:
        super().__init__(message)
        self.bundle = bundle


class BundleNotFound(BundleError):
    """No installed bundle, version or task matches."""


class BundleIntegrityError(BundleError):
    """A wheel's bytes do not match the recorded or pinned sha256."""


class BundleInstallError(BundleError):
    """Creating the venv or installing into it failed."""


class RuntimeStartError(SupervisorError):
    """A runtime process did not reach health SERVING."""

    def __init__(
        self, message: str, *, bundle: str, pid: int | None = None, stderr_tail: str = ""
    ) -> None:
        super().__init__(message)
        self.bundle = bundle
        self.pid = pid
        self.stderr_tail = stderr_tail

    def __str__(self) -> str:
        text = super().__str__()
        if self.stderr_tail:
            text += "\nlast lines of the runtime's stderr:\n" + self.stderr_tail
        return text


class HandshakeError(RuntimeStartError):
    """The runtime's stdout did not start with a valid handshake line."""


class ProtocolVersionError(RuntimeStartError):
    """Supervisor and runtime share no protocol version."""


class StartTimeout(RuntimeStartError):
    """No handshake line, or no health SERVING, within the start timeout."""


class RuntimeLost(SupervisorError):
    """A runtime exited or stopped answering while it ran a task."""

    def __init__(
        self,
        message: str,
        *,
        bundle: str,
        pid: int | None = None,
        exit_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.bundle = bundle
        self.pid = pid
        self.exit_code = exit_code


class RuntimeProtocolError(RuntimeLost):
    """A live runtime broke the protocol: no Result, a second one, a malformed Result, a junk
    Describe. Like any RuntimeLost it fails the task as retryable and retires the runtime; unlike
    a crash there is no exit status to wait for."""


class NotServing(SupervisorError):
    """No `supervisor serve` answers on the control socket of `home` (`supervisor status`)."""

    def __init__(self, message: str, *, home: str) -> None:
        super().__init__(message)
        self.home = home


class XComStorageError(SupervisorError):
    """Object storage refused or failed an XCom read, write or delete (`url` names the object)."""

    def __init__(self, message: str, *, url: str = "") -> None:
        super().__init__(message)
        self.url = url


class ExecutionApiError(SupervisorError):
    """The Execution API refused a call or could not be reached."""

    def __init__(
        self,
        message: str,
        *,
        method: str = "",
        path: str = "",
        status_code: int | None = None,
        detail: object = None,
    ) -> None:
        super().__init__(message)
        self.method = method
        self.path = path
        self.status_code = status_code
        self.detail = detail


class ApiUnavailable(ExecutionApiError):
    """Network errors or 5xx answers outlasted the retries."""


class TaskInstanceGone(ExecutionApiError):
    """404/409/410 on a TI route: Airflow no longer expects this worker to run the TI."""


class AlreadyRunning(TaskInstanceGone):
    """/run answered 409 with previous_state=running: another worker already started this TI.

    Usually a broker redelivery (late acks plus the visibility timeout). Airflow's own worker
    ignores the message: ack it, store no Celery result, do not run the task (reference §3.6).
    """
