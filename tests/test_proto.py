"""The committed generated code matches proto/ (regenerated with the pinned tools)."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "bundle_runtime" / "_proto"


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    fresh = sorted(p.name for p in tmp_path.iterdir())
    committed = sorted(p.name for p in COMMITTED.iterdir() if p.suffix in {".py", ".pyi"})
    assert fresh == committed
    _, mismatch, errors = filecmp.cmpfiles(tmp_path, COMMITTED, fresh, shallow=False)
    assert (mismatch, errors) == ([], []), (
        f"bundle_runtime/_proto is stale ({mismatch + errors}): run python scripts/gen_proto.py"
    )


def test_generated_code_speaks_the_oldest_supported_protobuf() -> None:
    text = (COMMITTED / "runtime_pb2.py").read_text()
    assert "Protobuf Python Version: 5.27.2" in text
