"""Deterministic records for the committed fixture stores (shared by writer and tests).

``python tests/fixture_data.py DIR VERSION`` writes the records of fixture ``VERSION``
with this version of spikestore; ``tests/fixtures/store_v<VERSION>`` were written that
way (by the spikestore of that format version) and must keep reading.

- 1.0: spikes packed and compressed with zstd, no summaries.
- 1.1: the ``spikestore.spikes`` codec, a multi-step layer packed time-last
  (``time_axis=0``), summaries and CRC-32C checksums.
"""

from __future__ import annotations

import sys

import torch

#: Layers recorded with ``time_axis=0`` (multi-step ``[T, B, ...]`` records).
TIME_AXIS = {("output", "ms.sn")}


def records(version: str = "1.1") -> dict[tuple[str, str], list]:
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
    return out


def write(path: str, version: str = "1.1") -> None:
    import spikestore

    with spikestore.StoreWriter(path) as w:
        for (mon, layer), recs in records(version).items():
            axis = 0 if (mon, layer) in TIME_AXIS else None
            for r in recs:
                w.append(mon, layer, r, time_axis=axis)


if __name__ == "__main__":
    write(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "1.1")
