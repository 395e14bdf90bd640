"""One bundle runtime process, split as go-plugin splits its client.

launch.py (spawn), handshake.py (stdout line), client.py (gRPC), process.py (stop, reap, RSS),
messages.py (plain values). `Runtime` in runtime.py ties them together; the pool owns Runtimes.
"""
