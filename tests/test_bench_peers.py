"""``benchmarks/bench_peers.py`` at its smoke size: every table, every round trip checked.

The benchmark compares each contender's read-back with what was written and stops with
an error on a mismatch; here it runs once (well under 40 s on two cores) and must print
all four workloads' tables with every contender it could run marked verified.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("h5py")

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "bench_peers.py"
TABLES = (
    "### 1. Spikes:",
    "### 2. Membrane floats:",
    "### 3. One step read back after closing",
    "### 4. Long sparse run:",
    "### Targets",
)


def test_smoke_run_prints_every_table_and_verifies_round_trips(tmp_path: Path) -> None:
    out = tmp_path / "peers.json"
    where = tmp_path / "files"  # --dir: every contender's folder made there, then removed
    where.mkdir()
    env = {**os.environ}
    env.pop("PYTEST_ADDOPTS", None)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--smoke", "--repeats", "1", "--json", str(out),
         "--dir", str(where)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout
    assert text.startswith("`python benchmarks/bench_peers.py --quick --smoke --repeats 1")
    assert f"files in {where}, " in text
    assert not list(where.iterdir())
    for title in TABLES:
        assert title in text, title
    assert "| spikestore | " in text
    assert "| spikestore StoreWriter | " in text
    assert "| spikestore OutputMonitor (nn.Identity) | " in text
    assert "| spikestore StoreWriter from a plain forward hook (nn.Identity) | " in text
    assert "- the monitor against the writer alone, " in text

    doc = json.loads(out.read_text())
    workloads = doc["workloads"]
    assert set(workloads) == {"1_spikes", "2_floats", "4_sparse"}
    for name, results in workloads.items():
        for contender, r in results.items():
            if r["skipped"]:
                assert f"| {contender} | skipped: " in text or "skipped: " in text
                continue
            # Every contender that ran read back what it wrote (limits check themselves).
            assert r["verified"], (name, contender)
            assert len(r["total_s"]) == 1 and r["total_s"][0] > 0, (name, contender)
    # spikestore's own read-back matched the records, step by step and neuron by neuron.
    assert workloads["1_spikes"]["spikestore"]["read_s"]
    assert workloads["2_floats"]["spikestore"]["read_s"]
    assert workloads["4_sparse"]["spikestore StoreWriter"]["neuron_s"]
    assert len(doc["targets"]) == 8


def _module():
    spec = importlib.util.spec_from_file_location("bench_peers", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_peers"] = mod  # dataclasses look their module up there
    try:
        spec.loader.exec_module(mod)
    finally:
        del sys.modules["bench_peers"]
    return mod


def test_targets_pair_every_repeat() -> None:
    """The targets table with three repeats (the smoke run above has one)."""
    mod = _module()
    recipe = "h5py + hdf5plugin packbits recipe (Blosc2 zstd 1)"

    def r(**values: list[float]) -> dict:
        return {"kind": "contender", "skipped": None, **values}

    three = {"total_s": [1.0, 2.0, 3.0], "call_mean_s": [1.0, 1.0, 1.0],
             "read_s": [1.0, 1.0, 1.0], "neuron_s": [1.0, 1.0, 1.0], "bytes": [10, 10, 10]}
    w1 = {"spikestore": r(**three), recipe: r(**three)}
    w2 = {"spikestore": r(**three), "np.save per step": r(**three)}
    w4 = {"spikestore StoreWriter": r(**three), "spikestore OutputMonitor (nn.Identity)":
          r(**three), recipe: {"kind": "contender", "skipped": "hdf5plugin not importable"},
          "_entropy_bytes": 5.0}
    rows = {t["target"]: t for t in mod.target_rows(w1, w2, w4)}
    assert len(rows) == 8
    assert rows["spikes to closed <= 1.0x the h5py recipe"]["per_repeat"] == [1.0, 1.0, 1.0]
    size = rows["size <= 1.2x entropy"]
    assert size["ratio"] == 2.0 and size["per_repeat"] == [2.0, 2.0, 2.0]
    assert not size["reached"]
    skipped = rows["long sparse write <= 0.8x the recipe"]
    assert skipped["ratio"] is None and "hdf5plugin" in skipped["skipped"]
    assert "n/a (hdf5plugin" in "\n".join(mod.targets_table(list(rows.values())))


def test_a_mismatch_fails_loudly() -> None:
    mod = _module()
    want = torch.zeros(4, 8)
    mod.check("same", 0, want.clone(), want)
    got = want.clone()
    got[1, 2] = 1.0
    with pytest.raises(mod.Mismatch, match="round trip mismatch: flipped"):
        mod.check("flipped", 3, got, want)
    with pytest.raises(mod.Mismatch):
        mod.check("shape", 3, want.reshape(8, 4), want)
