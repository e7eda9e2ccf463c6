"""The floor under recording dense floats, against ``np.save`` per step.

Run::

    python benchmarks/bench_float_floor.py --dir /dev/shm/floor   # tmpfs
    python benchmarks/bench_float_floor.py --dir /tmp/floor       # a disk's page cache
    python benchmarks/bench_float_floor.py --smoke --dir DIR      # a few steps

A recorder that returns before the data is on disk (so the caller may change its
tensor), checks what it stores and keeps a per-step summary cannot skip: a copy of
each record, the float64 summary spikestore stores (per-first-axis sums, min, max),
a CRC-32C of the bytes and their write. This times each of them alone and all four
in one thread, in milliseconds a step, over steps of ``[4, 8, 16, 28, 28]`` float32
(1.6 MB) drawn from 16 tensors (25 MB: not in cache, as in a training run), next to
``np.save`` of each step to a file of its own. Writes append to one file per 64 steps
(a shard's worth). Medians of ``--repeats``, each item timed in turn within a repeat.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import google_crc32c
import numpy as np
import torch

SHAPE = (4, 8, 16, 28, 28)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", type=Path, required=True, help="a folder to write in (removed)")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--smoke", action="store_true", help="20 steps, 1 repeat")
    args = ap.parse_args(argv)
    steps, repeats = (20, 1) if args.smoke else (args.steps, args.repeats)
    d: Path = args.dir
    g = torch.Generator().manual_seed(0)
    pool = [torch.randn(SHAPE, generator=g).numpy() for _ in range(16)]
    open_fd: list[int] = []

    def npsave(i: int, x: np.ndarray) -> None:
        np.save(d / f"{i:06d}.npy", x)

    def copy(i: int, x: np.ndarray) -> None:
        x.copy()

    def summary(i: int, x: np.ndarray) -> None:
        v = x.reshape(SHAPE[0], -1)
        v.sum(axis=1, dtype=np.float64).sum()
        v.min()
        v.max()

    def crc(i: int, x: np.ndarray) -> None:
        google_crc32c.value(x.reshape(-1).view(np.uint8))

    def append(i: int, x: np.ndarray) -> None:
        if i % 64 == 0:
            while open_fd:
                os.close(open_fd.pop())
            open_fd.append(os.open(d / f"{i:06d}.bin", os.O_WRONLY | os.O_CREAT, 0o644))
        os.writev(open_fd[0], [x.reshape(-1).view(np.uint8)])

    def all_four(i: int, x: np.ndarray) -> None:
        y = x.copy()
        summary(i, y)
        crc(i, y)
        append(i, y)

    items: dict[str, Callable[[int, np.ndarray], None]] = {
        "np.save, a file a step": npsave,
        "copy": copy,
        "float64 summary": summary,
        "CRC-32C": crc,
        "write, 64 steps a file": append,
        "all four in one thread": all_four,
    }
    times: dict[str, list[float]] = {k: [] for k in items}
    for _ in range(repeats):
        for name, fn in items.items():
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
            t0 = time.perf_counter()
            for i in range(steps):
                fn(i, pool[i % len(pool)])
            times[name].append((time.perf_counter() - t0) / steps * 1e3)
            while open_fd:
                os.close(open_fd.pop())
    shutil.rmtree(d, ignore_errors=True)
    base = statistics.median(times["np.save, a file a step"])
    print(f"`python benchmarks/bench_float_floor.py --dir {d}` ({steps} steps, {repeats} repeats)")
    print()
    print("| item | ms a step (per repeat) | / np.save |")
    print("|---|---:|---:|")
    for name, ts in times.items():
        med = statistics.median(ts)
        each = ", ".join(f"{t:.3f}" for t in ts)
        print(f"| {name} | {med:.3f} ({each}) | {med / base:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
