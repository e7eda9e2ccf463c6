"""Deterministic records for the committed fixture stores (shared by writer and tests).

``python tests/fixture_data.py DIR`` writes a store with this version of spikestore;
``tests/fixtures/store_v1.0`` was written that way and must keep reading.
"""

from __future__ import annotations

import sys

import torch


def records() -> dict[tuple[str, str], list]:
    g = torch.Generator().manual_seed(1234)
    spikes = [(torch.rand(4, 3, 10, generator=g) < 0.2).float() for _ in range(40)]
    spikes.append((torch.rand(2, 3, 10, generator=g) < 0.2).float())  # smaller last batch
    v = [torch.randn(4, 10, generator=g, dtype=torch.float64) for _ in range(5)]
    special = [float("nan"), float("inf"), -float("inf"), -0.0]
    v[0][0, :4] = torch.tensor(special, dtype=torch.float64)
    return {
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


def write(path: str) -> None:
    import spikestore

    with spikestore.StoreWriter(path) as w:
        for (mon, layer), recs in records().items():
            for r in recs:
                w.append(mon, layer, r)


if __name__ == "__main__":
    write(sys.argv[1])
