"""A supervisor stand-in for test_pool: run with `python -m tests.plugin.pool_owner`.

Makes a pool, leases runtimes for two bundle versions, prints {"pids": [...], "socket_dirs":
[...]} as one JSON line, then blocks on stdin until the test kills it with SIGKILL.
"""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack

from supervisor.pool import RuntimePool
from tests.plugin.runtimes import sample_spec


def main() -> None:
    pool = RuntimePool()
    with ExitStack() as stack:
        leased = [
            stack.enter_context(pool.lease(sample_spec(label)))
            for label in ("sample-bundle==1.0.0", "sample-bundle==2.0.0")
        ]
        report = {
            "pids": [r.pid for r in leased],
            "socket_dirs": [str(r.socket_dir) for r in leased],
        }
        print(json.dumps(report), flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
