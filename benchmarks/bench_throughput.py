"""Spikes through the store against the packbits + zstd limit, at 1 and 2 encoder threads.

Records ``--steps`` steps of ``[64, 4096]`` float32 spike records (i.i.d., p = 0.05;
a pool of 64 records cycled, drawn once) and reports, as float32-equivalent GB/s
(4 bytes per neuron-step), medians over ``--repeats`` interleaved repeats:

- **limit**: float -> bool -> ``np.packbits`` -> Zstandard level 1 (numcodecs) of each
  record, on this thread;
- **store**: ``StoreWriter.append`` of every record, from opening the writer to its
  ``close()`` (everything committed, shards sealed), with ``spikestore._segments.
  ENCODE_THREADS`` = 1 and 2;
- **writer thread**: the writer thread's share alone, fed rows already packed (the
  ``Sink`` that the writer thread runs, on this thread: summaries, segment encoding
  on the encoder threads, Zarr metadata, files), at 1 and 2 encoder threads.

Ratios are against the limit measured in the same run. The machine may be shared:
repeats are interleaved so that load from elsewhere falls on every row alike.

    python benchmarks/bench_throughput.py               # 2048 steps, 5 repeats
    python benchmarks/bench_throughput.py --quick       # 256 steps, 2 repeats
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
from numcodecs import Zstd

import spikestore
from spikestore import _segments
from spikestore._commit import Sink
from spikestore._segments import SegmentOptions
from spikestore._stored import fresh_root, open_root
from spikestore.codecs import encode
from spikestore.storage import storage_for

SHAPE = (64, 4096)
P = 0.05
POOL = 64


def limit(records: list[torch.Tensor], steps: int) -> float:
    z = Zstd(level=1)
    t0 = time.perf_counter()
    for i in range(steps):
        z.encode(np.packbits(records[i % POOL].numpy().astype(bool)))
    return time.perf_counter() - t0


def store(records: list[torch.Tensor], steps: int, threads: int, tmp: Path) -> float:
    _segments.ENCODE_THREADS = threads
    path = tmp / f"store{threads}"
    t0 = time.perf_counter()
    with spikestore.StoreWriter(path, mode="w") as w:
        for i in range(steps):
            w.append("m", "l", records[i % POOL])
    dt = time.perf_counter() - t0
    shutil.rmtree(path)
    return dt


def writer_thread(encoded: list, steps: int, threads: int, tmp: Path) -> float:
    """The Sink as the writer thread drives it (byte-bound writes of 8 MiB, aligned)."""
    _segments.ENCODE_THREADS = threads
    path = tmp / f"sink{threads}"
    st = storage_for(path, None, durable=False)
    zstore, zmode = st.open("w")
    bound = 8 << 20
    try:
        root = open_root(zstore, zmode, "bench", str(path))
        fresh_root(root, "bench")
        sink = Sink(root, SegmentOptions(None, None, 2048, 1 << 18), str(path))
        t0 = time.perf_counter()
        for i in range(steps):
            sink.take("m", "l", "tensor", None, i, [encoded[i % POOL]], time.monotonic())
            if sink.buffered_bytes >= bound:
                sink.write_all(aligned=True)
        sink.write_all()
        sink.seal_all()
        dt = time.perf_counter() - t0
        sink.close()
    finally:
        st.release()
    shutil.rmtree(path)
    return dt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="256 steps, 2 repeats")
    args = p.parse_args(argv)
    steps, repeats = (256, 2) if args.quick else (args.steps, args.repeats)
    torch.set_num_threads(1)

    g = torch.Generator().manual_seed(0)
    records = [(torch.rand(SHAPE, generator=g) < P).float() for _ in range(POOL)]
    encoded = [encode(r) for r in records]
    f32 = steps * 4 * SHAPE[0] * SHAPE[1]
    rows: dict[str, list[float]] = {}
    tmp = Path(tempfile.mkdtemp(prefix="bench_throughput_"))
    saved = _segments.ENCODE_THREADS
    try:
        for _ in range(repeats):
            rows.setdefault("limit: float -> bool -> packbits -> zstd 1", []).append(
                limit(records, steps)
            )
            for n in (1, 2):
                rows.setdefault(f"store: StoreWriter.append, {n} encoder thread(s)", []).append(
                    store(records, steps, n, tmp)
                )
                rows.setdefault(f"writer thread alone (Sink), {n} encoder thread(s)", []).append(
                    writer_thread(encoded, steps, n, tmp)
                )
    finally:
        _segments.ENCODE_THREADS = saved
        shutil.rmtree(tmp, ignore_errors=True)

    given = sys.argv[1:] if argv is None else argv
    cmd = "python benchmarks/bench_throughput.py " + " ".join(given)
    print(
        f"`{cmd.strip()}` ({steps} steps of {list(SHAPE)} float32, p = {P}; torch "
        f"{torch.__version__}, {os.cpu_count()} CPUs; medians of {repeats} interleaved "
        f"repeats, min-max in brackets)\n"
    )
    lim = statistics.median(rows["limit: float -> bool -> packbits -> zstd 1"])
    print("| path | GB/s (f32-equivalent) | of the limit |\n|---|---|---|")
    for name, times in rows.items():
        med = statistics.median(times)
        lo, hi = f32 / max(times) / 1e9, f32 / min(times) / 1e9
        print(f"| {name} | {f32 / med / 1e9:.2f} [{lo:.2f}-{hi:.2f}] | {lim / med:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
