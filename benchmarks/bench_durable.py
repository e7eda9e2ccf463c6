"""What ``durable=True`` (fsync of every file, then its directory, before the commit) costs.

Two measurements, each for ``durable=False`` and ``durable=True`` interleaved in one
run, medians over repeats:

- commit latency: one record appended to each of 4 layers, then ``flush()`` (one
  commit per field), timed per flush;
- throughput with the default flush policy: 300 steps of 4 layers of ``[64, 4096]``
  spikes at p = 0.05, then ``close()``.

Usage: python benchmarks/bench_durable.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

import spikestore

LAYERS = [f"l{i}" for i in range(4)]


def commit_latency(root: Path, durable: bool, flushes: int) -> float:
    rec = (torch.rand(64, 1024) < 0.05).float()
    times = []
    with spikestore.StoreWriter(root / f"lat{durable}", durable=durable) as w:
        for _ in range(flushes):
            for name in LAYERS:
                w.append("output", name, rec)
            t0 = time.perf_counter()
            w.flush()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def throughput(root: Path, durable: bool, steps: int) -> float:
    g = torch.Generator().manual_seed(0)
    recs = [(torch.rand(64, 4096, generator=g) < 0.05).float() for _ in range(16)]
    t0 = time.perf_counter()
    with spikestore.StoreWriter(root / f"thr{durable}", durable=durable) as w:
        for i in range(steps):
            for name in LAYERS:
                w.append("output", name, recs[i % len(recs)])
    dt = time.perf_counter() - t0
    return steps * len(LAYERS) * 64 * 4096 * 4 / dt / 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--flushes", type=int, default=30)
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    torch.set_num_threads(1)
    lat: dict[bool, list[float]] = {False: [], True: []}
    thr: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeats):
        for durable in (False, True):
            with tempfile.TemporaryDirectory() as d:
                lat[durable].append(commit_latency(Path(d), durable, args.flushes))
                thr[durable].append(throughput(Path(d), durable, args.steps))
    print("command: python benchmarks/bench_durable.py " f"--repeats {args.repeats}")
    print("| durable | commit of 4 fields (median ms) | throughput, f32-equivalent GB/s |")
    print("|---|---|---|")
    for durable in (False, True):
        print(
            f"| {durable} | {1e3 * statistics.median(lat[durable]):.2f} | "
            f"{statistics.median(thr[durable]):.2f} |"
        )
    ratio = statistics.median(lat[True]) / statistics.median(lat[False])
    print(f"commit latency durable / default: {ratio:.1f}x")
    tr = statistics.median(thr[True]) / statistics.median(thr[False])
    print(f"throughput durable / default: {tr:.2f}")


if __name__ == "__main__":
    main()
