"""A recorder process for the durability tests (run as a script, not collected by pytest).

It appends, forever or for ``--steps`` steps, records whose values are a pure
function of (layer, step), so a test that kills it can check every record that
survived. Every ``--flush-every`` steps it calls ``flush()`` and prints one JSON
line ``{"flushed": {"monitor/layer": steps, ...}}``: those steps were committed
before the line was printed.

Usage: python tests/_recorder.py STORE [--mode a] [--steps N] [--flush-every K]
       [--flush-interval S] [--sleep S] [--shard-steps N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

#: (monitor, layer) of every recorded layer, in append order.
LAYERS = [
    ("output", "sn1"),  # spikes [4, 33] (odd size: leftover bits)
    ("output", "sn2"),  # spikes [8, 16], a smaller last batch every 37 steps
    ("v", "lif"),  # float32 membrane potential [4, 20]
    ("output", "pair"),  # tuple (spikes [2, 8], float, int or None)
]


def _gen(key: str, step: int) -> torch.Generator:
    seed = (step * 1_000_003 + sum(map(ord, key)) * 7919) % (2**62)
    return torch.Generator().manual_seed(seed)


def value(monitor: str, layer: str, step: int) -> Any:
    """The record of ``monitor``/``layer`` at ``step`` (deterministic)."""
    g = _gen(f"{monitor}/{layer}", step)
    if layer == "sn1":
        return (torch.rand(4, 33, generator=g) < 0.2).float()
    if layer == "sn2":
        batch = 5 if step % 37 == 36 else 8
        return (torch.rand(batch, 16, generator=g) < 0.1).float()
    if layer == "lif":
        return torch.randn(4, 20, generator=g)
    if layer == "pair":
        spikes = (torch.rand(2, 8, generator=g) < 0.3).to(torch.uint8)
        return (spikes, step / 7.0, None if step % 5 == 4 else step)
    raise KeyError(layer)


def existing_steps(path: Path) -> dict[tuple[str, str], int]:
    """Committed steps of each layer already in the store (0 if none)."""
    import spikestore

    out = {key: 0 for key in LAYERS}
    if not (path / "zarr.json").exists():
        return out
    store = spikestore.open(path)
    for mon, lay in LAYERS:
        if mon in store and lay in store[mon]:
            out[(mon, lay)] = len(store[mon][lay])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("path", type=Path)
    p.add_argument("--mode", default="a")
    p.add_argument("--steps", type=int, default=0, help="0: run until killed")
    p.add_argument("--flush-every", type=int, default=50)
    p.add_argument("--flush-interval", type=float, default=0.2)
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--shard-steps", type=int, default=64)
    args = p.parse_args(argv)

    import spikestore

    start = existing_steps(args.path) if args.mode == "a" else {k: 0 for k in LAYERS}
    w = spikestore.StoreWriter(
        args.path,
        mode=args.mode,
        flush_interval=args.flush_interval,
        shard_steps=args.shard_steps,
        chunk_bytes=1 << 12,
    )
    print(json.dumps({"ready": {f"{m}/{n}": s for (m, n), s in start.items()}}), flush=True)
    i = 0
    while args.steps == 0 or i < args.steps:
        for mon, lay in LAYERS:
            step = start[(mon, lay)] + i
            got = w.append(mon, lay, value(mon, lay, step))
            if got != step:
                print(f"step mismatch for {mon}/{lay}: expected {step}, got {got}", file=sys.stderr)
                return 2
        i += 1
        if i % args.flush_every == 0:
            w.flush()
            counts = {f"{m}/{n}": w.steps(m, n) for m, n in LAYERS}
            print(json.dumps({"flushed": counts}), flush=True)
        if args.sleep:
            time.sleep(args.sleep)
    w.close()
    print(json.dumps({"done": {f"{m}/{n}": w.steps(m, n) for m, n in LAYERS}}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
