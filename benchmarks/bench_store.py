"""Store benchmark: compression against the entropy limit, throughput, and read latency.

    python benchmarks/bench_store.py            # full run (about 10 minutes on 2 cores)
    python benchmarks/bench_store.py --quick    # smoke run

Part 1 writes i.i.d. Bernoulli(p) spike records and a membrane-potential-like float32
record through StoreWriter with each compressor, and the pack-then-``zlib.compress``
recipe in the same run. Sizes are bytes on disk over float32 bytes; the entropy limit
for spikes is 32 / H(p). Sizes count the segments' chunk files; the store's JSON
metadata, index and summary arrays (a constant per layer) are listed apart. Throughput
counts float32 input bytes, through the whole store (writer thread, Zarr, files);
medians over repeats.

Part 2 is the layout workload: [64, 16384] spike records (p = 0.05) for many steps;
write rate, files per 1,000 steps, one-step read latency and one neuron's history.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import torch

import spikestore

PS = [0.001, 0.01, 0.05, 0.2, 0.5]
COMPRESSORS = [None, "zstd", "zlib", "blosc-lz4", "blosc-zstd"]


def entropy(p: float) -> float:
    return 0.0 if p in (0, 1) else -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def dir_bytes(path: Path, chunks_only: bool = False) -> int:
    """Bytes of the store's files; with ``chunks_only``, only the segments' chunk files."""
    total = 0
    for f in path.rglob("*"):
        if not f.is_file() or f.name == ".spikestore.lock":
            continue
        parts = f.relative_to(path).parts
        in_segment = any(
            re.fullmatch(r"s\d+(t[01])?", p) and parts[i + 1 : i + 2] == ("c",)
            for i, p in enumerate(parts)
        )
        if chunks_only and not in_segment:
            continue
        total += f.stat().st_size
    return total


def membrane(n_steps: int, shape: tuple[int, ...], seed: int = 0) -> list[torch.Tensor]:
    """LIF membrane potential under noisy input (tau=2, threshold 1, hard reset to 0)."""
    g = torch.Generator().manual_seed(seed)
    v = torch.zeros(shape)
    out = []
    for _ in range(n_steps):
        v = v + (torch.randn(shape, generator=g) * 0.6 + 0.1 - v) / 2.0
        spike = v >= 1.0
        v = torch.where(spike, torch.zeros_like(v), v)
        out.append(v.clone())
    return out


def time_store(records, compressor, repeats, tmp: Path):
    enc, dec, size = [], [], 0
    for rep in range(repeats):
        path = tmp / f"s{rep}"
        t0 = time.perf_counter()
        with spikestore.StoreWriter(path, compressor=compressor) as w:
            for r in records:
                w.append("m", "l", r)
        enc.append(time.perf_counter() - t0)
        size = dir_bytes(path, chunks_only=True)
        meta = dir_bytes(path) - size
        layer = spikestore.open(path)["m"]["l"]
        t0 = time.perf_counter()
        got = layer[:]
        dec.append(time.perf_counter() - t0)
        assert torch.equal(got[-1], records[-1])
        shutil.rmtree(path)
    return size, statistics.median(enc), statistics.median(dec), meta


def time_recipe(records, repeats):
    enc, dec, size = [], [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        blobs = [zlib.compress(np.packbits(r.numpy() != 0)) for r in records]
        enc.append(time.perf_counter() - t0)
        size = sum(len(b) for b in blobs)
        n = records[0].numel()
        t0 = time.perf_counter()
        for b in blobs:
            bits = np.unpackbits(np.frombuffer(zlib.decompress(b), np.uint8), count=n)
            torch.from_numpy(bits).float()
        dec.append(time.perf_counter() - t0)
    return size, statistics.median(enc), statistics.median(dec), 0


def part1(n_steps: int, shape: tuple[int, ...], repeats: int, tmp: Path) -> list[str]:
    numel = int(np.prod(shape))
    f32 = 4 * numel * n_steps
    rows = ["| data | encoding | x smaller than f32 | of entropy limit | encode GB/s | "
            "decode GB/s | metadata bytes |",
            "|---|---|---|---|---|---|---|"]
    g = torch.Generator().manual_seed(0)
    for p in PS:
        recs = [(torch.rand(shape, generator=g) < p).float() for _ in range(n_steps)]
        p_hat = float(torch.stack(recs).mean())
        bound = 32 / entropy(p_hat)
        size, e, d, meta = time_recipe(recs, repeats)
        rows.append(f"| spikes p={p} | pack + zlib.compress (recipe) | {f32 / size:.1f} | "
                    f"{f32 / size / bound:.2f} | {f32 / e / 1e9:.2f} | {f32 / d / 1e9:.2f} | - |")
        for c in COMPRESSORS:
            size, e, d, meta = time_store(recs, c, repeats, tmp)
            name = c or "default (spikestore.spikes)"
            rows.append(f"| spikes p={p} | store {name} | {f32 / size:.1f} | "
                        f"{f32 / size / bound:.2f} | {f32 / e / 1e9:.2f} | {f32 / d / 1e9:.2f} | "
                        f"{meta:,} |")
    recs = membrane(n_steps, shape)
    for c in COMPRESSORS:
        size, e, d, meta = time_store(recs, c, repeats, tmp)
        name = c or "default (LZ4 + bit shuffle if it saves 20 %, else LZ4 1)"
        rows.append(f"| membrane f32 | store {name} | {f32 / size:.2f} | - | "
                    f"{f32 / e / 1e9:.2f} | {f32 / d / 1e9:.2f} | {meta:,} |")
    return rows


def part2(n_steps: int, shape: tuple[int, ...], tmp: Path, repeats: int) -> list[str]:
    g = torch.Generator().manual_seed(1)
    pool = [(torch.rand(shape, generator=g) < 0.05).float() for _ in range(97)]
    path = tmp / "layout"
    t0 = time.perf_counter()
    with spikestore.StoreWriter(path) as w:
        for i in range(n_steps):
            w.append("output", "sn", pool[i % 97])
    write_s = time.perf_counter() - t0
    layer_dir = next(path.glob("output/sn/f0"))
    files = sum(1 for f in layer_dir.rglob("*") if f.is_file())
    size = dir_bytes(path)
    layer = spikestore.open(path)["output"]["sn"]
    rng = np.random.default_rng(0)
    step_t, neuron_t = [], []
    for _ in range(max(5, repeats * 3)):
        i = int(rng.integers(n_steps))
        t0 = time.perf_counter()
        x = layer[i]
        step_t.append(time.perf_counter() - t0)
        assert torch.equal(x, pool[i % 97])
    for _ in range(repeats):
        idx = (int(rng.integers(shape[0])), int(rng.integers(shape[1])))
        t0 = time.perf_counter()
        h = layer.neuron(idx)
        neuron_t.append(time.perf_counter() - t0)
        assert h.shape == (n_steps,)
    f32 = 4 * int(np.prod(shape)) * n_steps
    return [
        f"| steps | {n_steps} of {list(shape)} spikes, p=0.05 |",
        "|---|---|",
        f"| write rate | {n_steps / write_s:.0f} steps/s ({f32 / write_s / 1e9:.2f} GB/s f32) |",
        f"| size | {size / 1e6:.1f} MB, {f32 / size:.1f}x smaller than float32 |",
        f"| files in the layer | {files} ({files / n_steps * 1000:.2f} per 1,000 steps) |",
        f"| read one step (median) | {statistics.median(step_t) * 1e3:.1f} ms |",
        f"| read one neuron over all steps (median) | {statistics.median(neuron_t):.3f} s |",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--layout-steps", type=int, default=10_000)
    args = ap.parse_args()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench_store_"))
    try:
        if args.quick:
            rows1 = part1(8, (64, 1024), 1, tmp)
            rows2 = part2(300, (64, 16384), tmp, 1)
        else:
            rows1 = part1(64, (64, 4096), 5, tmp)  # 2^24 elements per run
            rows2 = part2(args.layout_steps, (64, 16384), tmp, 5)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"# bench_store ({'quick' if args.quick else 'full'}; torch threads 1; "
          f"{os.cpu_count()} cores)\n")
    print("\n".join(rows1))
    print()
    print("\n".join(rows2))


if __name__ == "__main__":
    main()
