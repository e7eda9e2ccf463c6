"""``benchmarks/bench_float_floor.py`` at its smoke size: it runs, prints its table and
removes its folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "bench_float_floor.py"


def test_smoke_run_prints_every_item_and_cleans_up(tmp_path: Path) -> None:
    env = {**os.environ}
    env.pop("PYTEST_ADDOPTS", None)
    out_dir = tmp_path / "floor"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--dir", str(out_dir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    for item in ("np.save, a file a step", "float64 summary", "CRC-32C", "all four in one"):
        assert f"| {item}" in proc.stdout
    assert "1.00x" in proc.stdout  # np.save against itself
    assert not out_dir.exists()
