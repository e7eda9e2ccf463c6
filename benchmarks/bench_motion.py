"""MOTION chunks: encode and decode speed with the numba kernels and with the numpy code.

    python benchmarks/bench_motion.py            # about 2 minutes on 2 cores
    python benchmarks/bench_motion.py --quick    # smoke run

The moving-input conv layers of ``bench_encoding`` (a plain-torch conv SNN, T = 16,
batches of 16, DVS-like moving input), packed time-last and cut into the chunks the
store's writer makes. For each layer, in one run and interleaved, medians of
``--repeats``: ``encode_chunk`` (with the layer's MOTION frame) and ``decode_chunk`` of
every chunk, with ``motion.USE_NUMBA = True`` and ``False``; the zlib recipe
(``zlib.compress(np.packbits(x))``) on the same bits as the reference. GB/s count
float32 bytes (4 per spike element). Both paths must give identical bytes (checked).
The first numba call compiles the kernels (or loads them from numba's cache): the
warm-up round absorbs it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_encoding import record_network, store_chunks

from spikestore.codecs import motion
from spikestore.codecs.spikes import MODE_MOTION, decode_chunk, encode_chunk


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=16)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if not motion.accelerated():
        print("numba is not importable: pip install numba (or spikestore[fast])")
        return 1
    steps, repeats = (16, 1) if args.quick else (args.steps, args.repeats)
    layers = record_network("moving", steps, 16, 16)
    rows = [
        "| layer | shape [T,B,...] | MOTION chunks | encode numba | encode numpy | "
        "decode numba | decode numpy | numba / numpy (enc, dec) | zlib recipe enc / dec |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for li in (0, 1):
        rec = layers[li]
        chunks, frame = store_chunks(rec, True)
        gb = 4.0 * rec.size / 1e9
        packed = np.packbits(rec)
        blobs = {}
        times: dict[str, list[float]] = {}

        for rep in range(repeats + 1):
            for use in (True, False):
                motion.USE_NUMBA = use
                key = "numba" if use else "numpy"
                t0 = time.perf_counter()
                enc = [encode_chunk(c, 1, frame) for c in chunks]
                t1 = time.perf_counter()
                dec = [decode_chunk(b, c.shape) for b, c in zip(enc, chunks, strict=True)]
                t2 = time.perf_counter()
                if rep:  # the first round warms up (and compiles)
                    times.setdefault(f"enc {key}", []).append(t1 - t0)
                    times.setdefault(f"dec {key}", []).append(t2 - t1)
                blobs[key] = enc
                assert all(np.array_equal(d, c) for d, c in zip(dec, chunks, strict=True))
            assert blobs["numba"] == blobs["numpy"], "numba and numpy bytes differ"
            if rep:
                t0 = time.perf_counter()
                z = zlib.compress(packed)
                t1 = time.perf_counter()
                np.unpackbits(np.frombuffer(zlib.decompress(z), np.uint8))
                times.setdefault("zlib enc", []).append(t1 - t0)
                times.setdefault("zlib dec", []).append(time.perf_counter() - t1)
        motion.USE_NUMBA = None
        g = {k: gb / statistics.median(v) for k, v in times.items()}
        share = sum(b[3] == MODE_MOTION for b in blobs["numba"]) / len(chunks)
        rows.append(
            f"| L{li} conv | {list(rec.shape[1:])} | {share:.0%} | {g['enc numba']:.2f} | "
            f"{g['enc numpy']:.2f} | {g['dec numba']:.2f} | {g['dec numpy']:.2f} | "
            f"{g['enc numba'] / g['enc numpy']:.1f}x, {g['dec numba'] / g['dec numpy']:.1f}x | "
            f"{g['zlib enc']:.2f} / {g['zlib dec']:.2f} |"
        )
    cmd = "python benchmarks/bench_motion.py" + (" --quick" if args.quick else "")
    print(
        f"# {cmd} (torch threads 1; {os.cpu_count()} cores; load {os.getloadavg()[0]:.1f}; "
        f"{steps} steps a layer, medians of {repeats}, GB/s of float32)\n"
    )
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
