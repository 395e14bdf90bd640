"""Socket servers run from a named daemon thread: the log server, /metrics and the control socket
start and stop the same way, so they share these functions; and the probe that tells whether a
Unix socket left on disk still has a server behind it."""

from __future__ import annotations

import socket
import socketserver
import threading
from pathlib import Path


def serve_in_thread(
    server: socketserver.BaseServer, name: str, *, poll_interval_s: float = 0.5
) -> threading.Thread:
    """Start `server.serve_forever` in a daemon thread called `name`; returns the thread."""
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": poll_interval_s},
        name=name,
        daemon=True,
    )
    thread.start()
    return thread


def stop_server(server: socketserver.BaseServer, thread: threading.Thread | None) -> None:
    """Stop serving, close the listening socket and wait for the thread to end."""
    server.shutdown()
    server.server_close()
    if thread is not None:
        thread.join()


def unix_socket_answers(path: Path, *, timeout_s: float) -> bool:
    """True when something accepts connections on the Unix socket `path` (a live owner), False
    for a missing file or one left behind by a process that is gone."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(timeout_s)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True
