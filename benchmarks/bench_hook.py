"""Caller-thread cost of one CPU record: what ``StoreWriter.append`` does in the hook.

For each record, in the caller's thread (one torch thread), taking turns repeat by
repeat so that load from other processes falls on all alike:

- ``stage``: spikestore's spike test and packing as the writer runs them
  (``spikestore._staging.stage``: the test by bit pattern, then ``np.packbits``,
  time-last for multi-step records), or the copy of a record that is not spikes;
- the torch path it replaced (``codecs.spike_bits`` + ``pack_bits``, still the GPU's);
- the limit: ``np.packbits(x.numpy().astype(bool))`` (no spike test, no time-last
  order, and ``astype(bool)`` takes -0.0 for 0 and NaN for 1), and, time-last, the
  same after a transposed copy (``np.ascontiguousarray(x.permute(...))``).

Figures are ms per MB (10^6 bytes) of the record as recorded (float32 unless said),
medians over repeats, with the spread (min-max of the per-repeat medians). ``stage``
is measured twice: first as the process starts, then with a ``StoreWriter`` open
(its writer thread running): what the hook sees while recording.

Run::

    python benchmarks/bench_hook.py            # about 30 s
    python benchmarks/bench_hook.py --quick
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import spikestore
from spikestore._staging import stage
from spikestore.codecs import pack_bits, spike_bits, time_last


def records() -> list[tuple[str, torch.Tensor, tuple[int, ...] | None]]:
    g = torch.Generator().manual_seed(0)

    def spikes(shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return (torch.rand(shape, generator=g) < 0.05).to(dtype)

    out: list[tuple[str, torch.Tensor, tuple[int, ...] | None]] = [
        ("spikes [64, 4096] f32", spikes((64, 4096)), None),
        ("spikes [64, 4096] bf16", spikes((64, 4096), torch.bfloat16), None),
    ]
    for t in (4, 8, 16):
        shape = (t, 16, 16, 28, 28)
        out.append((f"spikes [{t}, 16, 16, 28, 28] f32, time-last", spikes(shape), time_last(0, 5)))
    out.append(
        ("spikes [6, 16, 16, 28, 28] f32, time-last", spikes((6, 16, 16, 28, 28)), (1, 2, 3, 4, 0))
    )
    out.append(
        ("membrane [64, 4096] f32 (not spikes: copied)", torch.randn(64, 4096, generator=g), None)
    )
    return out


def limit(x: torch.Tensor, perm: tuple[int, ...] | None) -> Callable[[], object]:
    if x.dtype == torch.bfloat16:  # numpy has no bfloat16: its bits are nonzero alike
        x = x.view(torch.int16)
    if perm is None:
        return lambda: np.packbits(x.numpy().astype(bool))
    return lambda: np.packbits(np.ascontiguousarray(x.permute(perm).numpy()).astype(bool))


def measure(repeats: int, inner: int) -> list[dict]:
    out = []
    for label, x, perm in records():
        mb = x.numel() * x.element_size() / 1e6
        fns = {
            "stage": lambda x=x, perm=perm: stage(x, False, perm),
            "torch": lambda x=x, perm=perm: pack_bits(spike_bits(x, perm)[1]),
            "limit": limit(x, perm),
        }
        per: dict[str, list[float]] = {k: [] for k in fns}
        for fn in fns.values():
            fn()
        for _ in range(repeats):
            for k, fn in fns.items():
                ts = []
                for _ in range(inner):
                    t0 = time.perf_counter()
                    fn()
                    ts.append(time.perf_counter() - t0)
                per[k].append(statistics.median(ts) * 1e3 / mb)
        out.append({"label": label, "mb": mb, "per": per})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    repeats, inner = (3, 5) if args.quick else (15, 20)
    plain = measure(repeats, inner)
    # Again with a writer open: what the hook sees while recording.
    with tempfile.TemporaryDirectory() as tmp, spikestore.StoreWriter(Path(tmp) / "s"):
        opened = measure(repeats, inner)
    rows = []
    for p, t in zip(plain, opened, strict=True):
        med = {k: statistics.median(v) for k, v in p["per"].items()}
        tmed = {k: statistics.median(v) for k, v in t["per"].items()}
        sp = p["per"]["stage"]
        tp = t["per"]["stage"]
        rows.append(
            f"| {p['label']} | {p['mb']:.2f} | {med['stage']:.3f} ({min(sp):.3f}-{max(sp):.3f}) | "
            f"{tmed['stage']:.3f} ({min(tp):.3f}-{max(tp):.3f}) | "
            f"{med['torch']:.3f} | {med['limit']:.3f} | {med['torch'] / med['stage']:.1f}x | "
            f"{med['stage'] / med['limit']:.2f} |"
        )
    cmd = "python benchmarks/bench_hook.py" + (" --quick" if args.quick else "")
    print(
        f"\n`{cmd}`  (torch {torch.__version__}, 1 torch thread, {os.cpu_count()} CPUs, load "
        f"average {os.getloadavg()[0]:.1f}; ms per MB, median of {repeats} interleaved repeats "
        f"of {inner} calls, (min-max) over repeats)\n"
    )
    print(
        "| record | MB | stage ms/MB | stage ms/MB, writer open | "
        "torch spike_bits+pack_bits ms/MB | limit: np.packbits(astype(bool)) ms/MB | "
        "stage vs torch | stage / limit |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
