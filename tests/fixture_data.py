"""Deterministic records for the committed fixture stores (shared by writer and tests).

``python tests/fixture_data.py DIR VERSION`` writes the records of fixture ``VERSION``
with this version of spikestore; ``tests/fixtures/store_v<VERSION>`` were written that
way (by the spikestore of that format version) and must keep reading.

- 1.0: spikes packed and compressed with zstd, no summaries.
- 1.1: the ``spikestore.spikes`` codec, a multi-step layer packed time-last
  (``time_axis=0``), summaries and CRC-32C checksums.
- 1.2: a multi-step conv-like layer ``[T, B, C, H, W]`` with moving input, whose
  chunks the ``spikestore.spikes`` codec stores in its MOTION mode.
"""

from __future__ import annotations

import itertools
import sys

import torch

#: Layers recorded with ``time_axis=0`` (multi-step ``[T, B, ...]`` records).
TIME_AXIS = {("output", "ms.sn"), ("output", "conv.sn")}


def moving_spikes(g: torch.Generator, steps: int, t: int = 8, hw: int = 12) -> list[torch.Tensor]:
    """``[T, 2, 3, hw, hw]`` spikes of edges moving one pixel per time step, plus 0.2 % noise."""
    out = []
    for _ in range(steps):
        base = (torch.rand(2, 3, hw, hw, generator=g) < 0.25).float()
        frames = [torch.roll(base, (0, k), (2, 3)) for k in range(t + 1)]
        ev = torch.stack([(b - a) > 0 for a, b in itertools.pairwise(frames)])
        noise = torch.rand(ev.shape, generator=g) < 0.002
        out.append((ev | noise).float())
    return out


def records(version: str = "1.2") -> dict[tuple[str, str], list]:
    g = torch.Generator().manual_seed(1234)
    spikes = [(torch.rand(4, 3, 10, generator=g) < 0.2).float() for _ in range(40)]
    spikes.append((torch.rand(2, 3, 10, generator=g) < 0.2).float())  # smaller last batch
    v = [torch.randn(4, 10, generator=g, dtype=torch.float64) for _ in range(5)]
    special = [float("nan"), float("inf"), -float("inf"), -0.0]
    v[0][0, :4] = torch.tensor(special, dtype=torch.float64)
    out = {
        ("output", "features.0.sn"): spikes,
        ("output", ""): [(torch.rand(17, generator=g) < 0.5) for _ in range(3)],
        ("v", "features.0.sn"): v,
        ("v", "bf16"): [torch.randn(6, generator=g).to(torch.bfloat16) for _ in range(3)],
        ("input", "../odd/name"): [torch.randint(-5, 5, (2, 2), generator=g) for _ in range(3)],
        ("grad_input", "sn"): [None, torch.tensor(0.5), torch.tensor(1.5)],
        ("snntorch", "lif1"): [
            ((torch.rand(3, generator=g) < 0.5).float(), torch.randn(3, generator=g))
            for _ in range(3)
        ],
        ("rate", "sn"): [0.125, 0.25, 0.5],
    }
    if version >= "1.1":
        out[("output", "ms.sn")] = [
            (torch.rand(4, 2, 3, 5, generator=g) < 0.1).float() for _ in range(6)
        ]
    if version >= "1.2":
        out[("output", "conv.sn")] = moving_spikes(g, 24)
    return out


def write(path: str, version: str = "1.2") -> None:
    import spikestore

    with spikestore.StoreWriter(path) as w:
        for (mon, layer), recs in records(version).items():
            axis = 0 if (mon, layer) in TIME_AXIS else None
            for r in recs:
                w.append(mon, layer, r, time_axis=axis)


if __name__ == "__main__":
    write(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "1.2")
