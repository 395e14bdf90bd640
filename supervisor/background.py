"""Socket servers run from a named daemon thread: the log server, /metrics and the control socket
start and stop the same way, so they share these two functions."""

from __future__ import annotations

import socketserver
import threading


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
