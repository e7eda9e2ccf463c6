"""Large dense records in memory-backed files: spikestore against ``np.save`` per step.

A conv layer's membrane potential, ``[4, 8, 16, 28, 28]`` float32 (1.6 MB a step, random
normal), written ``--steps`` times through ``StoreWriter.append(..., time_axis=0)`` and
``close()``, and, taking turns with it in each repeat, by ``np.save`` of each step to a
file of its own. Then, with the store open, random single steps read back
(``layer[i]``) against ``np.load`` of a step file, and one neuron's history over every
step (``layer.neuron``, the store opened each time so that no cache helps). Every read is
compared with what was written.

The files go to ``--dir`` (default ``/dev/shm`` where it exists): bench_peers.py writes
to /tmp, where the disk's writeback of gigabytes of dirty pages, not either contender,
decides the time of a float run (its ``np.save`` figure moved 2x between runs). Medians
over ``--repeats``, min-max in brackets, ratios of the same repeat.

Run::

    python benchmarks/bench_large.py               # 1,000 steps, 3 repeats (about 1 minute)
    python benchmarks/bench_large.py --smoke       # 20 steps, 1 repeat
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import spikestore

SHAPE = (4, 8, 16, 28, 28)
pc = time.perf_counter


def _spread(xs: list[float], scale: float = 1.0, fmt: str = "{:.2f}") -> str:
    med = statistics.median(xs) * scale
    return f"{fmt.format(med)} ({fmt.format(min(xs) * scale)}-{fmt.format(max(xs) * scale)})"


def one_repeat(base: Path, pool: list[torch.Tensor], n: int, reads: int, seed: int) -> dict:
    store, files = base / "run.spikes", base / "npy"
    shutil.rmtree(store, ignore_errors=True)
    shutil.rmtree(files, ignore_errors=True)
    files.mkdir(parents=True)
    k = len(pool)
    t0 = pc()
    with spikestore.StoreWriter(store) as w:
        for i in range(n):
            w.append("output", "v", pool[i % k], time_axis=0)
    write_s = pc() - t0
    t0 = pc()
    for i in range(n):
        np.save(files / f"{i}.npy", pool[i % k].numpy())
    npsave_s = pc() - t0

    rng = np.random.default_rng(seed)
    layer = spikestore.open(store)["output"]["v"]
    layer[0]  # warm
    steps = [int(i) for i in rng.integers(0, n, reads)]
    step_s, load_s = [], []
    for i in steps:
        t0 = pc()
        got = layer[i]
        step_s.append(pc() - t0)
        t0 = pc()
        ref = np.load(files / f"{i}.npy")
        load_s.append(pc() - t0)
        if not (torch.equal(got, pool[i % k]) and np.array_equal(ref, pool[i % k].numpy())):
            raise SystemExit(f"step {i} read back differs from what was written")
    cell = tuple(int(c) for c in rng.integers(0, SHAPE[1:]))
    spikestore.open(store)["output"]["v"].neuron(cell)  # warm
    t0 = pc()
    hist = spikestore.open(store)["output"]["v"].neuron(cell)
    neuron_s = pc() - t0
    want = torch.stack([pool[i % k][(slice(None), *cell)] for i in range(n)])
    if not torch.equal(hist.reshape(n, SHAPE[0]), want):
        raise SystemExit(f"neuron {cell}'s history read back differs from what was written")
    shutil.rmtree(store)
    shutil.rmtree(files)
    return {
        "write_s": write_s,
        "npsave_s": npsave_s,
        "step_ms": statistics.median(step_s) * 1e3,
        "npload_ms": statistics.median(load_s) * 1e3,
        "neuron_ms": neuron_s * 1e3,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--reads", type=int, default=30, help="random steps read a repeat")
    ap.add_argument("--dir", type=Path, default=None, help="where files go (default /dev/shm)")
    ap.add_argument("--smoke", action="store_true", help="20 steps, 1 repeat, 5 reads")
    args = ap.parse_args(argv)
    if args.smoke:
        args.steps, args.repeats, args.reads = 20, 1, 5
    torch.set_num_threads(1)
    where = args.dir or (Path("/dev/shm") if Path("/dev/shm").is_dir() else None)
    base = Path(tempfile.mkdtemp(prefix="bench-large-", dir=where))
    g = torch.Generator().manual_seed(0)
    pool = [torch.randn(SHAPE, generator=g) for _ in range(16)]
    try:
        runs = [
            one_repeat(base, pool, args.steps, args.reads, 100 + r) for r in range(args.repeats)
        ]
    finally:
        shutil.rmtree(base, ignore_errors=True)
    col = {key: [r[key] for r in runs] for key in runs[0]}
    wr = [r["write_s"] / r["npsave_s"] for r in runs]
    rr = [r["step_ms"] / r["npload_ms"] for r in runs]
    print(
        f"`python benchmarks/bench_large.py --steps {args.steps} --repeats {args.repeats}` "
        f"in {base.parent} (load average {os.getloadavg()[0]:.1f} at the end; "
        f"spikestore {spikestore.__version__}, torch {torch.__version__})\n"
    )
    print("| measure | spikestore | np.save / np.load per step | ratio (per repeat) |")
    print("|---|---:|---:|---:|")
    print(
        f"| {args.steps} steps of {list(SHAPE)} float32 to closed, s | "
        f"{_spread(col['write_s'])} | {_spread(col['npsave_s'])} | "
        f"{statistics.median(wr):.2f}x ({', '.join(f'{x:.2f}' for x in wr)}) |"
    )
    print(
        f"| read one step, ms | {_spread(col['step_ms'], fmt='{:.3f}')} | "
        f"{_spread(col['npload_ms'], fmt='{:.3f}')} | "
        f"{statistics.median(rr):.2f}x ({', '.join(f'{x:.2f}' for x in rr)}) |"
    )
    print(f"| one neuron over all steps, ms | {_spread(col['neuron_ms'], fmt='{:.1f}')} | - | - |")
    print("\nEvery step and neuron read back was compared with what was written: verified.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
