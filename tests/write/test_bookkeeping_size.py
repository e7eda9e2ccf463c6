"""The per-step bookkeeping of a long run (step index, summaries) stays small beside
the spikes themselves: issue 22's long sparse run must stay within 1.2x the entropy
limit, and the spike chunks alone take about 1.03x of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import spikestore


def _bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and f.name != "zarr.json")


def test_index_and_summaries_cost_little_per_step(tmp_path: Path) -> None:
    n, width, p = 20_000, 1024, 0.01
    g = torch.Generator().manual_seed(3)
    data = (torch.rand((n, 1, width), generator=g) < p).float()
    path = tmp_path / "run.spikes"
    with spikestore.StoreWriter(path) as w:
        for i in range(n):
            w.append("output", "sn", data[i])
    field = path / "output" / "sn" / "f0"
    entropy = n * width * -(p * np.log2(p) + (1 - p) * np.log2(1 - p)) / 8
    # Rows go up by one a step: a shuffled index is next to nothing (zstd alone: 1.4 B/step).
    assert _bytes(field / "index") < 0.1 * n
    # Spike counts of ~5 +- 2 per step, in float64 columns: ~0.8 B/step (zstd alone: 1.5).
    assert _bytes(field / "summary") < 1.0 * n
    assert _bytes(path) < 1.2 * entropy
    r = spikestore.open(path)["output"]["sn"]
    assert torch.equal(r[n - 1], data[n - 1])
    assert np.array_equal(spikestore.analysis.summary(r)[:, 1], data.sum(dim=(1, 2)).numpy())
