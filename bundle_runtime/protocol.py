"""Names and formats shared by the supervisor and the runtime: the handshake contract.

Everything that crosses the process boundary before gRPC is up lives here (go-plugin keeps the same
in `constants.go`): environment variable names, the magic cookie, protocol versions and the one
stdout line a runtime prints. Both sides import this module; it imports only the standard library.

The handshake, in order:
1. The supervisor starts `<venv>/bin/bundle-runtime` with MAGIC_COOKIE_KEY=MAGIC_COOKIE_VALUE,
   PROTOCOL_VERSIONS_ENV (the app versions it speaks, e.g. "1"), SOCKET_DIR_ENV (a private 0700
   directory) and BUNDLE_ENV (the distribution name to load); stdin is a pipe whose EOF means
   "supervisor gone".
2. The runtime checks the cookie, picks the highest common version, binds
   `<socket dir>/runtime.sock`, imports the bundle, starts serving, and prints exactly one line:
   `CORE|APP|unix|<socket path>|grpc|` (see `format_handshake`). Nothing may precede it on stdout.
3. The supervisor parses the line (`parse_handshake`), connects, and waits for health SERVING of
   HEALTH_SERVICE.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Environment variable carrying the magic cookie. Not a security measure (go-plugin calls it "a UX
#: feature"): it tells a person who runs the binary by hand that it is a plugin.
MAGIC_COOKIE_KEY = "BUNDLE_RUNTIME_MAGIC_COOKIE"
MAGIC_COOKIE_VALUE = "7c1f1e3a0c2d4b4fa9a1d3b6e4f2c8d0-airflow-bundle-runtime"
#: Comma-separated application protocol versions the supervisor speaks, e.g. "1".
PROTOCOL_VERSIONS_ENV = "BUNDLE_RUNTIME_PROTOCOL_VERSIONS"
#: Directory (mode 0700, made by the supervisor) where the runtime binds its socket.
SOCKET_DIR_ENV = "BUNDLE_RUNTIME_SOCKET_DIR"
#: Distribution name of the bundle the runtime must load from its venv.
BUNDLE_ENV = "BUNDLE_RUNTIME_BUNDLE"
#: The socket file name inside SOCKET_DIR_ENV.
SOCKET_NAME = "runtime.sock"

#: Version of the handshake itself (the CORE field), as in go-plugin.
CORE_PROTOCOL_VERSION = 1
#: Application protocol versions this package implements (bundle.v1 is version 1).
APP_PROTOCOL_VERSIONS: tuple[int, ...] = (1,)
#: Service name whose health the supervisor waits for.
HEALTH_SERVICE = "bundle.v1.BundleRuntime"
#: Entry-point group through which a bundle wheel registers its `Bundle` object.
ENTRY_POINT_GROUP = "bundle_runtime.bundles"

#: Largest gRPC message either side accepts: XCom values and log lines can be large, and gRPC's
#: 4 MiB default would break the stream on a big XCom pull. Both sides must use the same limit.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: Longest Unix socket path Linux accepts (sun_path is 108 bytes including the NUL).
MAX_SOCKET_PATH_BYTES = 107


@dataclass(frozen=True)
class Handshake:
    """The parsed handshake line: which versions were chosen and where to connect."""

    core_version: int
    app_version: int
    network: str
    address: str
    protocol: str


class HandshakeFormatError(ValueError):
    """A line that is not a handshake line; the message quotes it."""


def format_handshake(app_version: int, socket_path: str) -> str:
    """The line a runtime prints once serving, without the trailing newline."""
    return f"{CORE_PROTOCOL_VERSION}|{app_version}|unix|{socket_path}|grpc|"


def parse_handshake(line: str) -> Handshake:
    """Parse `CORE|APP|NET|ADDR|PROTO|[CERT]`; raise HandshakeFormatError on anything else."""
    parts = line.rstrip("\r\n").split("|")
    if len(parts) < 5 or not parts[0].isdigit() or not parts[1].isdigit():
        raise HandshakeFormatError(f"not a handshake line: {line.rstrip()!r}")
    return Handshake(
        core_version=int(parts[0]),
        app_version=int(parts[1]),
        network=parts[2],
        address=parts[3],
        protocol=parts[4],
    )


def parse_versions(value: str) -> tuple[int, ...]:
    """Parse PROTOCOL_VERSIONS_ENV ("1,2"); ignores blanks, raises ValueError on junk."""
    return tuple(int(v) for v in value.split(",") if v.strip())


def choose_version(offered: tuple[int, ...]) -> int | None:
    """Highest version both sides speak, or None when there is none."""
    common = set(offered) & set(APP_PROTOCOL_VERSIONS)
    return max(common) if common else None
