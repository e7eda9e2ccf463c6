"""Scaling out: ranks under torchrun, object storage, dask.distributed analysis.

    python benchmarks/bench_distributed.py                 # everything (about 3-5 min)
    python benchmarks/bench_distributed.py --no-s3 --no-dask

1. **Recording**: each rank records ``--steps`` steps of a spike layer
   (``[32, 4096]``, p = 0.05) and a float layer (``[32, 512]``) through a
   ``StoreWriter``; steps/s per rank with ``--ranks`` gloo ranks under
   ``torchrun --standalone`` against one process alone, run in turns (one process,
   ranks, one process, ...) ``--repeats`` times, medians. Locally and on a moto S3
   server on 127.0.0.1.
2. **Commits**: requests and latency of one commit (``flush()`` after one step of
   both layers: 2 fields), counted by a wrapper around the store, locally and on S3.
3. **dask**: per-neuron firing rates over all ranks of the ranked store: a loop over
   the decoded records in one process, ``to_dask`` on dask's threads, and on a
   ``distributed.LocalCluster`` of 2 processes; time ratios against the loop.

The machine has 2 cores: 4 ranks share them, so steps/s per rank is expected to
drop; the figure shows what recording costs each rank, not the cores' speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SHAPE_SPIKES = (32, 4096)
SHAPE_FLOAT = (32, 512)


# ---------------------------------------------------------------- one rank's work
def worker(root: str, steps: int, out: str, options: str | None) -> None:
    """Record ``steps`` steps; write ``{"seconds": ...}`` to ``out`` (``out.<rank>``)."""
    import torch
    import torch.distributed as dist

    import spikestore

    torch.set_num_threads(1)  # as torchrun sets OMP_NUM_THREADS=1 for every rank
    if "RANK" in os.environ:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    g = torch.Generator().manual_seed(rank)
    spikes = [(torch.rand(SHAPE_SPIKES, generator=g) < 0.05).float() for _ in range(16)]
    values = [torch.randn(SHAPE_FLOAT, generator=g) for _ in range(16)]
    so = json.loads(options) if options else None
    if dist.is_initialized():
        dist.barrier()
    t0 = time.perf_counter()
    with spikestore.StoreWriter(root, storage_options=so) as w:
        for i in range(steps):
            w.append("output", "sn", spikes[i % 16])
            w.append("v", "lif", values[i % 16])
    seconds = time.perf_counter() - t0
    Path(f"{out}.{rank}").write_text(json.dumps({"seconds": seconds}))
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def run_recording(
    root: str, steps: int, ranks: int, options: dict[str, Any] | None, tmp: Path
) -> list[float]:
    """Steps/s of each rank (one process when ``ranks`` is 0)."""
    out = tmp / f"res-{time.monotonic_ns()}"
    args = [__file__, "--worker", root, "--steps", str(steps), "--out", str(out)]
    if options:
        args += ["--options", json.dumps(options)]
    if ranks:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", str(ranks), *args]  # fmt: skip
    else:
        cmd = [sys.executable, *args]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return [
        steps / json.loads(Path(f"{out}.{r}").read_text())["seconds"] for r in range(max(1, ranks))
    ]


# -------------------------------------------------------------------- commits
def commit_costs(make_store: Any, n: int = 20) -> tuple[dict[str, float], float]:
    """Requests per commit (2 fields) by kind, and the median commit latency in ms."""
    import torch

    import spikestore
    from spikestore.testing import RequestCountingStore

    store = RequestCountingStore(make_store())
    g = torch.Generator().manual_seed(0)
    s = (torch.rand(SHAPE_SPIKES, generator=g) < 0.05).float()
    v = torch.randn(SHAPE_FLOAT, generator=g)
    lat = []
    with spikestore.StoreWriter(store=store, flush_interval=3600) as w:
        for i in range(n + 3):
            w.append("output", "sn", s)
            w.append("v", "lif", v)
            if i == 3:
                store.reset()
            t0 = time.perf_counter()
            w.flush()
            if i >= 3:
                lat.append(time.perf_counter() - t0)
        counts = {k: c / n for k, c in store.counts.items()}
    return counts, statistics.median(lat) * 1e3


# ----------------------------------------------------------------------- dask
def dask_rates(root: str) -> dict[str, float]:
    import numpy as np

    import spikestore
    from spikestore import analysis

    layer = spikestore.open(root)["output"]["sn"]
    times: dict[str, list[float]] = {"loop": [], "threads": [], "cluster": []}
    ref = None
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:  # fmt: skip
        for _ in range(3):
            t0 = time.perf_counter()
            acc = None
            for i in range(len(layer)):
                x = layer[i].numpy().astype(np.float64)  # [ranks, 32, 4096]
                acc = x if acc is None else acc + x
            assert acc is not None
            loop = acc.reshape(acc.shape[0], -1) / len(layer)
            times["loop"].append(time.perf_counter() - t0)
            arr = analysis.to_dask(layer)
            rates = arr.astype("float64").sum(axis=1) / arr.shape[1]
            t0 = time.perf_counter()
            thr = rates.compute(scheduler="threads")
            times["threads"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            clu = client.compute(rates).result()
            times["cluster"].append(time.perf_counter() - t0)
            ref = loop
            assert np.array_equal(thr.reshape(ref.shape), ref)
            assert np.array_equal(clu.reshape(ref.shape), ref)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--worker", metavar="ROOT")
    ap.add_argument("--out")
    ap.add_argument("--options")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--ranks", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-s3", action="store_true")
    ap.add_argument("--no-dask", action="store_true")
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.steps, args.out, args.options)
        return

    from spikestore.testing import s3_server

    tmp = Path(tempfile.mkdtemp(prefix="bench-dist-"))
    mb = (
        args.steps * 4 * (SHAPE_SPIKES[0] * SHAPE_SPIKES[1] + SHAPE_FLOAT[0] * SHAPE_FLOAT[1]) / 1e6
    )
    print(f"# {args.steps} steps per rank, {mb:.0f} MB float32-equivalent per rank, "
          f"{os.cpu_count()} cores")  # fmt: skip
    print(f"# command: python benchmarks/bench_distributed.py --steps {args.steps} "
          f"--ranks {args.ranks} --repeats {args.repeats}")  # fmt: skip

    def recording(where: str, root: Any, options: dict[str, Any] | None) -> None:
        one: list[float] = []
        many: list[float] = []
        for k in range(args.repeats):
            one.append(run_recording(root(f"one{k}"), args.steps, 0, options, tmp)[0])
            many.extend(run_recording(root(f"ranks{k}"), args.steps, args.ranks, options, tmp))
        a, b = statistics.median(one), statistics.median(many)
        print(f"| {where} | one process | {a:.0f} steps/s | 1.00 |")
        print(f"| {where} | {args.ranks} ranks (torchrun) | {b:.0f} steps/s per rank, "
              f"{b * args.ranks:.0f} in all | {b / a:.2f} of one process per rank, "
              f"{b * args.ranks / a:.2f} in all |")  # fmt: skip

    print("\n| store | run | steps/s | ratio |\n|---|---|---|---|")
    recording("local", lambda name: str(tmp / name), None)
    s3 = None
    if not args.no_s3:
        s3_cm = s3_server()
        s3 = s3_cm.__enter__()
        recording("S3 (moto)", lambda name: s3.url(name), s3.storage_options)

    print("\n| store | requests per commit of 2 fields | commit latency (median) |\n|---|---|---|")
    from zarr.storage import LocalStore

    counts, ms = commit_costs(lambda: LocalStore(tmp / f"commits-{time.monotonic_ns()}"))
    print(f"| local | {_fmt(counts)} | {ms:.1f} ms |")
    if s3 is not None:
        from spikestore.storage import url_store

        counts, ms = commit_costs(
            lambda: url_store(
                s3.url(f"commits-{time.monotonic_ns()}"), storage_options=s3.storage_options
            )
        )
        print(f"| S3 (moto) | {_fmt(counts)} | {ms:.1f} ms |")
        s3_cm.__exit__(None, None, None)

    if not args.no_dask:
        t = dask_rates(str(tmp / "ranks0"))
        print("\n| per-neuron rates over all ranks | seconds | vs loop |\n|---|---|---|")
        for k in ("loop", "threads", "cluster"):
            print(f"| {k} | {t[k]:.2f} | {t['loop'] / t[k]:.2f}x |")


def _fmt(counts: dict[str, float]) -> str:
    return ", ".join(f"{v:.1f} {k}" for k, v in sorted(counts.items()) if v)


if __name__ == "__main__":
    main()
