"""``benchmarks/bench_large.py`` at its smoke size: it runs, checks every read back, and
prints its table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "bench_large.py"


def test_smoke_run_verifies_its_reads_and_prints_the_table(tmp_path: Path) -> None:
    env = {**os.environ}
    env.pop("PYTEST_ADDOPTS", None)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "| read one step, ms |" in out and "| one neuron over all steps, ms |" in out
    assert "verified" in out
    assert not list(tmp_path.iterdir())  # its files are removed
