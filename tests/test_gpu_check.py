"""The GPU check's dry run: ``benchmarks/gpu_check.sh`` on the CPU at its quick size.

The check is meant to run right the first time a GPU is lent, so its logic, output files
and comparisons run here on every CI run: every part must report, the comparison with
SpikingJelly's monitors must pass on the CPU, and the overhead figures must be numbers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("spikingjelly.activation_based.monitor")

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("pytest", "devices", "compare", "sync", "memcpy", "overhead")


def test_gpu_check_dry_run(tmp_path):
    out = tmp_path / "out"
    env = {
        **os.environ,
        "OUT": str(out),
        "GPU_CHECK_DEVICE": "cpu",
        "GPU_CHECK_QUICK": "1",
        "GPU_CHECK_PYTHON": sys.executable,
        "GPU_CHECK_BUDGET": "240",
    }
    env.pop("PYTEST_ADDOPTS", None)
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh")],
        cwd=tmp_path,  # the script finds the repository itself
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = (out / "gpu_check.log").read_text() if (out / "gpu_check.log").exists() else ""
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + log[-3000:]

    summary = (out / "summary.md").read_text()
    results = json.loads((out / "results.json").read_text())
    statuses = results["statuses"]
    assert set(statuses) == set(PARTS)
    for part in PARTS:
        assert f"| {part} | {statuses[part]} |" in summary
        assert statuses[part] in ("PASS", "SKIPPED"), (part, results["parts"][part])
    assert "CPU (dry run)" in summary
    # The comparison with SpikingJelly's own monitors ran and passed, bit for bit.
    compare = results["parts"]["compare"]
    assert statuses["compare"] == "PASS", compare
    kinds = ("OutputMonitor", "InputMonitor", "AttributeMonitor", "GradOutputMonitor")
    for kind in kinds:
        assert compare["figures"][kind]["records"] > 0
        assert compare["figures"][kind]["mismatches"] == []
    assert compare["figures"]["reopened_records_checked"] > 0
    # What needs a GPU says so; what runs on the CPU ran.
    assert statuses["devices"] == "PASS"
    for part in ("sync", "memcpy"):
        assert statuses[part] == "SKIPPED"
        assert results["parts"][part]["reason"].startswith("SKIPPED-on-CPU")
    assert results["parts"]["sync"]["figures"]["hook_windows"]["opened"] > 0
    assert results["parts"]["memcpy"]["figures"]["spikes"]["method"] == "torch.profiler"
    assert "3 skipped" in (out / "pytest_cuda.txt").read_text()
    # The overhead JSON has numbers for every configuration, forward and forward + backward.
    overhead = json.loads((out / "overhead.json").read_text())
    assert len(overhead["blocks"]) == 12
    for block in overhead["blocks"].values():
        assert block["median_ms"] > 0 and block["sustained_ms"] > 0
        assert block["steps_measured"] >= 3 and block["vmhwm_mib"] > 0
    for mode in ("forward", "forward+backward"):
        ratios = overhead["ratio_to_none"][mode]
        assert all(isinstance(ratios[k], float) and ratios[k] > 0 for k in ratios)
    assert overhead["peak_host_rss_mib"] > 0
    # Everything came back as at most 8 files, as the device machine returns them.
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8, files
