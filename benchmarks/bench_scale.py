"""Scale benchmark: a long recording through StoreWriter.

Records ``--steps`` steps (default 100,000) of a [64, 4096] spike layer (firing
probability 0.05) and a float32 membrane-potential layer of shape [64, 256],
and reports peak RSS growth (sampled every 50 ms on a thread), files per 1,000
steps per layer, write throughput and bytes on disk, as a markdown table.

Input tensors are drawn once (a pool of 64 steps, cycled) so that the benchmark
times the writer, not the random number generator.

    python benchmarks/bench_scale.py                 # 100,000 steps
    python benchmarks/bench_scale.py --quick         # 2,000 steps
    python benchmarks/bench_scale.py --steps 20000 --out /tmp/run.spikes
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import torch

import spikestore

SPIKES = (64, 4096)
MEMBRANE = (64, 256)
POOL = 64


def _rss_sampler(stop: threading.Event, peak: list[int], period: float = 0.05) -> None:
    proc = psutil.Process()
    while not stop.is_set():
        peak[0] = max(peak[0], proc.memory_info().rss)
        stop.wait(period)


def _files(root: Path) -> tuple[int, int]:
    n = size = 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            n += 1
            size += os.path.getsize(os.path.join(dirpath, name))
    return n, size


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--quick", action="store_true", help="2,000 steps")
    p.add_argument("--out", type=Path, default=None, help="store path (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the store afterwards")
    args = p.parse_args(argv)
    steps = 2_000 if args.quick else args.steps

    g = torch.Generator().manual_seed(0)
    spikes = [(torch.rand(SPIKES, generator=g) < 0.05).float() for _ in range(POOL)]
    v = [torch.randn(MEMBRANE, generator=g).mul_(0.3).sub_(0.2) for _ in range(POOL)]
    base = tempfile.mkdtemp(prefix="bench_scale_") if args.out is None else None
    path = args.out or Path(base) / "run.spikes"

    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    peak = [rss0]
    stop = threading.Event()
    sampler = threading.Thread(target=_rss_sampler, args=(stop, peak), daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    with spikestore.StoreWriter(path) as w:
        for i in range(steps):
            w.append("output", "sn", spikes[i % POOL])
            w.append("v", "lif", v[i % POOL])
    elapsed = time.perf_counter() - t0
    stop.set()
    sampler.join()

    store = spikestore.open(path)
    sn, lif = store["output"]["sn"], store["v"]["lif"]
    assert len(sn) == len(lif) == steps
    assert torch.equal(sn[steps - 1], spikes[(steps - 1) % POOL])
    assert torch.equal(lif[steps - 1], v[(steps - 1) % POOL])
    n_sn, b_sn = _files(path / "output" / "sn")
    n_lif, b_lif = _files(path / "v" / "lif")
    n_all, b_all = _files(path)
    in_bytes = steps * 4 * (SPIKES[0] * SPIKES[1] + MEMBRANE[0] * MEMBRANE[1])
    growth = (peak[0] - rss0) / 2**20

    mib = 2**20
    sn_bits = 8 * b_sn / (steps * SPIKES[0] * SPIKES[1])
    lif_bytes = b_lif / (steps * MEMBRANE[0] * MEMBRANE[1])
    rows = [
        ("steps", f"{steps:,}"),
        ("layers", f"spikes {list(SPIKES)} p=0.05 float32; membrane {list(MEMBRANE)} float32"),
        ("wall time", f"{elapsed:.1f} s"),
        ("throughput", f"{steps / elapsed:,.0f} steps/s"),
        ("input (float32)", f"{in_bytes / 2**30:.2f} GiB, {in_bytes / mib / elapsed:,.0f} MiB/s"),
        ("peak RSS growth", f"{growth:.1f} MiB (target < 100)"),
        ("files / 1,000 steps: spikes", f"{1000 * n_sn / steps:.2f} ({n_sn} files)"),
        ("files / 1,000 steps: membrane", f"{1000 * n_lif / steps:.2f} ({n_lif} files)"),
        ("bytes on disk: spikes", f"{b_sn / mib:,.1f} MiB ({sn_bits:.3f} bits/neuron-step)"),
        ("bytes on disk: membrane", f"{b_lif / mib:,.1f} MiB ({lif_bytes:.2f} bytes/value)"),
        ("bytes on disk: total", f"{b_all / mib:,.1f} MiB in {n_all} files"),
        ("compression vs float32", f"{in_bytes / max(1, b_all):.1f}x"),
    ]
    cmd = "python benchmarks/bench_scale.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"`{cmd.strip()}` (torch {torch.__version__}, {os.cpu_count()} CPUs)\n")
    print("| metric | value |\n|---|---|")
    for k, val in rows:
        print(f"| {k} | {val} |")
    if base is not None and not args.keep:
        shutil.rmtree(base)
    return 0 if growth < 100 else 1


if __name__ == "__main__":
    sys.exit(main())
