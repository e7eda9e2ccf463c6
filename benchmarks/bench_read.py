"""Reading spike layers back: a full-layer read against the codec alone, and the targets.

    python benchmarks/bench_read.py            # about 3 minutes on 2 cores
    python benchmarks/bench_read.py --quick    # smoke run

Part 1: 64 records of ``[64, 4096]`` i.i.d. spikes (2^24 elements, 64 MB as float32)
written with the default spike codec, then ``layer[:]`` read back as float32. In the same
run, interleaved, medians of ``--repeats``:

- ``layer[:]``: the reader (index, the shard files read whole through the store, the
  codec on each inner chunk and unpacking into the output tensor, chunk by chunk, with
  the reader's second thread when a core is free for it);
- ``1 thread``: the same with ``SPIKESTORE_READ_THREADS=1`` (``reader.READ_THREADS``);
- ``via Zarr``: the reader of 062b5b9: Zarr's sharded read of the rows, then unpacking
  into one output;
- ``previous path``: what the reader did before it decoded into one output: the same
  rows through ``codecs.decode_rows`` (unpack, cast) and then ``torch.stack`` of the
  per-step tensors;
- ``codec alone``: ``decode_chunk`` of every stored chunk (bytes already in memory),
  no unpacking;
- ``codec + unpack``: the same plus ``np.unpackbits`` of the decoded chunks (uint8 bits,
  no float32 output).

GB/s count float32 bytes (4 per element). Part 2 runs ``bench_store.part2`` (the layout
targets: one step at most 10 ms, one neuron over 10,000 steps at most 1 s).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import spikestore
from spikestore import reader
from spikestore.codecs import decode_rows
from spikestore.codecs.spikes import decode_chunk
from spikestore.reader import _decode_segment_rows

PS = (0.001, 0.05, 0.5)
SHAPE = (64, 4096)


def shard_chunks(arr) -> list[tuple[bytes, tuple[int, int]]]:
    """The encoded inner chunks of a closed sharded spike segment, read from its files."""
    out = []
    inner = arr.chunks
    shard = arr.shards
    root = Path(arr.store.root) / arr.path
    n_inner = [s // c for s, c in zip(shard, inner, strict=True)]
    for f in sorted((root / "c").rglob("*")):
        if not f.is_file():
            continue
        data = f.read_bytes()
        count = n_inner[0] * n_inner[1]
        index = np.frombuffer(data, "<u8", 2 * count, len(data) - 16 * count - 4).reshape(-1, 2)
        for off, size in index:
            if off != 2**64 - 1:
                out.append((data[int(off) : int(off + size) - 4], inner))  # less the CRC
    return out


def previous_path(layer) -> torch.Tensor:
    fld = layer.field(0)
    seg = fld.segments[0]
    rows = np.arange(len(layer))
    dec = decode_rows(fld.take(0, rows), seg, None)
    return torch.stack([dec[j] for j in range(len(rows))])


def via_zarr(layer) -> torch.Tensor:
    fld = layer.field(0)
    arr = fld.array(0)
    return _decode_segment_rows(np.asarray(arr[0 : len(layer)]), fld.segments[0], None)


def one_thread(path: Path) -> torch.Tensor:
    reader.READ_THREADS = 1
    try:
        return spikestore.open(path)["m"]["l"][:]
    finally:
        reader.READ_THREADS = None


def part1(repeats: int, tmp: Path) -> list[str]:
    rows = [
        "| p | layer[:] GB/s | 1 thread GB/s | via Zarr (062b5b9) GB/s | previous path GB/s | "
        "codec alone GB/s | codec + unpack GB/s | layer[:] / codec + unpack | "
        "layer[:] / via Zarr |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    g = torch.Generator().manual_seed(0)
    n = 64
    f32 = 4 * n * int(np.prod(SHAPE))
    for p in PS:
        recs = [(torch.rand(SHAPE, generator=g) < p).float() for _ in range(n)]
        path = tmp / f"p{p}"
        with spikestore.StoreWriter(path) as w:
            for r in recs:
                w.append("m", "l", r)
        want = torch.stack(recs)
        layer = spikestore.open(path)["m"]["l"]
        blobs = shard_chunks(layer.field(0).array(0))
        keys = ("new", "one", "zarr", "old", "codec", "unpack")
        times: dict[str, list[float]] = {k: [] for k in keys}

        def codec(blobs=blobs) -> None:
            for b, shape in blobs:
                decode_chunk(b, shape)

        def unpack(blobs=blobs) -> None:
            for b, shape in blobs:
                np.unpackbits(decode_chunk(b, shape), axis=1)

        for rep in range(repeats + 1):
            for name, fn in (
                ("new", lambda path=path: spikestore.open(path)["m"]["l"][:]),
                ("one", lambda path=path: one_thread(path)),
                ("zarr", lambda path=path: via_zarr(spikestore.open(path)["m"]["l"])),
                ("old", lambda path=path: previous_path(spikestore.open(path)["m"]["l"])),
                ("codec", codec),
                ("unpack", unpack),
            ):
                t0 = time.perf_counter()
                got = fn()
                dt = time.perf_counter() - t0
                if rep:  # the first round warms up
                    times[name].append(dt)
                if name in ("new", "one", "zarr", "old"):
                    assert torch.equal(got, want)
        med = {k: statistics.median(v) for k, v in times.items()}
        gbs = {k: f32 / v / 1e9 for k, v in med.items()}
        rows.append(
            f"| {p} | {gbs['new']:.2f} | {gbs['one']:.2f} | {gbs['zarr']:.2f} | "
            f"{gbs['old']:.2f} | {gbs['codec']:.2f} | {gbs['unpack']:.2f} | "
            f"{med['unpack'] / med['new']:.2f} | {med['zarr'] / med['new']:.2f}x |"
        )
        shutil.rmtree(path)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--layout-steps", type=int, default=10_000)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from bench_store import part2

    tmp = Path(tempfile.mkdtemp(prefix="bench_read_"))
    try:
        if args.quick:
            rows1 = part1(2, tmp)
            rows2 = part2(300, (64, 16384), tmp, 1)
        else:
            rows1 = part1(args.repeats, tmp)
            rows2 = part2(args.layout_steps, (64, 16384), tmp, 5)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    cmd = "python benchmarks/bench_read.py" + (" --quick" if args.quick else "")
    print(f"# {cmd} (torch threads 1; {os.cpu_count()} cores; load {os.getloadavg()[0]:.1f})\n")
    print(
        f"Part 1: 64 records of {list(SHAPE)} spikes read back whole, medians of "
        f"{args.repeats if not args.quick else 2}, interleaved\n"
    )
    print("\n".join(rows1))
    print()
    print("\n".join(rows2))


if __name__ == "__main__":
    main()
