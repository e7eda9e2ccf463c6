"""``benchmarks/bench_training.py`` at its smoke size: every configuration runs, both
ratio rows are printed, and (c)'s records read back equal to SpikingJelly's (b)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("spikingjelly")

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "bench_training.py"


def test_smoke_run_prints_every_configuration_and_verifies_records(tmp_path: Path) -> None:
    out = tmp_path / "training.json"
    env = {**os.environ}
    env.pop("PYTEST_ADDOPTS", None)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout
    assert text.startswith("`python benchmarks/bench_training.py --smoke")
    for label in ("(a) no monitor", "(b) SpikingJelly", "(c) spikestore", "(d) spikestore",
                  "(a') no monitor"):
        assert f"| {label}" in text, label
    assert "| c/b: " in text and "| d/a: " in text

    doc = json.loads(out.read_text())
    assert set(doc["results"]) == {"a", "b", "c", "d", "a2"}
    for kind, r in doc["results"].items():
        assert len(r["ms"]) == 1 and r["ms"][0] > 0, kind
    # 2 iterations: 4 outputs, 1 v_seq and 4 grad outputs each, equal to SpikingJelly's.
    assert doc["verified_records"] == 2 * (4 + 1 + 4)
    ratios = {r["ratio"][:3]: r for r in doc["ratios"]}
    assert ratios["c/b"]["target"] == 1.15 and ratios["d/a"]["target"] == 1.10
    assert doc["stored_bytes"] > 0


def test_a_record_that_differs_fails_loudly() -> None:
    import importlib.util
    from types import SimpleNamespace

    import torch

    spec = importlib.util.spec_from_file_location("bench_training", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    def run(*records):
        return SimpleNamespace(monitors=[SimpleNamespace(records=list(records),
                                                          monitored_layers=["2"])])

    x = torch.zeros(4, 2, 3)
    assert mod.verify(run(x, None), run(x.clone(), None)) == 2
    flipped = x.clone()
    flipped[0, 0, 0] = 1.0
    with pytest.raises(mod.Mismatch, match="record 1 differs"):
        mod.verify(run(x, x), run(x, flipped))
    with pytest.raises(mod.Mismatch, match="1 records, SpikingJelly 2"):
        mod.verify(run(x, x), run(x))
