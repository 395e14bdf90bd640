#!/usr/bin/env python3
"""How long from a runtime fault to the TI's final state reaching the Execution API.

Usage: .venv/bin/python scripts/bench_faults.py [--runs N]

Runs each fault task of tests/plugin/sample_bundle.py through the real TaskRunner on real runtime
processes (tests/limits/harness.py; only the Execution API is the in-process fake) and prints, per
fault, the seconds from the fault to the final state: from the moment the task starts its fault
(it reads the variable "ready" just before), or for the timeout from the moment it fires. The
acceptance bound is 5 s; the timeout's share is `cancel_grace_s` (3 s) plus the 1 s between
SIGTERM and SIGKILL.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere, without installing the project
    sys.path.insert(0, str(ROOT))

from tests.limits.harness import FaultHarness, describe_sample  # noqa: E402

#: (task, settings flags, measured from the timeout firing rather than the "ready" read)
FAULTS = (
    ("segfault", {}, False),
    ("exit_now", {}, False),
    ("kill_self", {}, False),
    ("hog", {"supervisor.task_memory_limit_mb": 200}, False),
    ("child_hog", {"supervisor.task_memory_limit_mb": 200}, False),
    ("ignore_cancel", {}, True),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="TIs per fault (default 3)")
    args = parser.parse_args()
    description = describe_sample()
    print(f"{'fault':<14} {'final state':<13} {'min s':>7} {'median s':>9} {'max s':>7}")
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        for task_id, flags, from_limit in FAULTS:
            harness = FaultHarness(Path(tmp) / task_id, description, flags)
            try:
                runs = [harness.run(task_id, should_retry=True) for _ in range(args.runs)]
            finally:
                harness.close()
            seconds = [r.seconds(r.limit_at if from_limit else r.ready_at) for r in runs]
            states = ",".join(sorted({str(r.state) for r in runs}))
            print(
                f"{task_id:<14} {states:<13} {min(seconds):>7.3f} "
                f"{statistics.median(seconds):>9.3f} {max(seconds):>7.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
