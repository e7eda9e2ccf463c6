"""The cost of recording: spikestore side by side with what users write instead.

Each contender is written as a user would write it, and every one of them, with the
limits, runs in turn inside each repeat (the order rotates from repeat to repeat), each
in a fresh temporary folder under /tmp (``--dir``) that is removed right after. Figures are medians
over repeats, with the spread (min-max over repeats), and ratios to spikestore measured
in the same run.

Contenders:

- spikestore: ``StoreWriter(path).append("output", "sn", x, time_axis=...)`` per step,
  then ``close()``; read back with ``spikestore.open(path)["output"]["sn"][i]``;
- the h5py + hdf5plugin packbits recipe: a resizable ``uint8`` dataset of
  ``np.packbits(x != 0)`` rows (``resize`` + a row write per step), chunked (about
  512 KiB a chunk) and compressed with ``hdf5plugin.Blosc2(cname="zstd", clevel=1)``;
  for floats the same with float32 rows;
- ``np.save`` per step and ``torch.save`` per step (one file a step);
- SpikingJelly's ``OutputMonitor`` on a module, then ``torch.save(monitor.records)``
  (records are kept in RAM until then; the module's output is cloned outside the timers,
  as each step of a network makes a new tensor);
- plain zarr (v3, its default zstd): one array, ``arr[i] = x`` with a chunk per step, and
  with chunks of 64 steps written from a 64-step buffer.

Also measured, as a variant (neither a contender nor the baseline): spikestore given no
``time_axis`` for the multi-step spikes, so they are packed as recorded, not time-last.

Limits (not contenders): ``memcpy`` of each step into a 64-step ring, one sequential
write (each step's bytes appended to one open file), and ``np.packbits`` + zstd level 1
(numcodecs), in memory, per block of rows (the recipe's chunk).

Workloads:

1. ``[4, 8, 16, 28, 28]`` float32 spikes (p = 0.05, multi-step: time axis 0), written
   until closed: total time, and the caller's time per step (median and mean;
   backpressure included);
2. membrane floats of the same shape (random normal float32): the same;
3. one step read back after closing (spikes / floats): median over random steps, with
   the reader already open (its open time apart); ``np.load`` of a step file is the
   contender to beat;
4. a long sparse run, ``[1, 1024]`` spikes (p = 0.01): write time; one neuron over all
   steps (the file or store opened for each neuron, so no chunk cache helps); the same
   records through ``spikestore.monitor.OutputMonitor`` on a ``torch.nn.Identity`` fed
   the spikes against the writer alone, and, to tell the module call from the monitor,
   the writer called from a plain forward hook on that module; stored size against the
   entropy limit (n_bits * H(p) / 8) and the recipe's file.

Every contender's round trip is checked (every step it reads back is compared with what
was written, and the long run's neuron too): a mismatch stops the script with an error.
A contender whose package is missing (hdf5plugin, spikingjelly) is listed as skipped.

    python benchmarks/bench_peers.py                   # 2,000 / 100,000 steps, 3 repeats
    python benchmarks/bench_peers.py --quick           # 200 / 10,000 steps
    python benchmarks/bench_peers.py --smoke --repeats 1 --json /tmp/peers.json
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

import spikestore

pc = time.perf_counter
SHAPE = (4, 8, 16, 28, 28)
SPARSE = (1, 1024)
POOL = 97  # distinct steps, cycled: more than any contender puts in one compressed block
CHUNK_BYTES = 512 << 10  # the recipe's chunk (fits HDF5's default 1 MiB chunk cache)


class Mismatch(AssertionError):
    """A contender read back something other than what was written."""


def optional(name: str) -> tuple[Any, str | None]:
    try:
        return importlib.import_module(name), None
    except Exception as exc:  # ImportError, or a package that fails on import
        return None, f"{name} not importable ({type(exc).__name__}: {exc})"


h5py, NO_H5PY = optional("h5py")
hdf5plugin, NO_PLUGIN = optional("hdf5plugin") if h5py is not None else (None, NO_H5PY)
sj_monitor, NO_SJ = optional("spikingjelly.activation_based.monitor")
zarr, NO_ZARR = optional("zarr")
numcodecs, _ = optional("numcodecs")


def entropy(p: float) -> float:
    return 0.0 if p <= 0 or p >= 1 else float(-(p * np.log2(p) + (1 - p) * np.log2(1 - p)))


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# --------------------------------------------------------------------------- data
@dataclass
class Work:
    """What one workload records: ``n`` steps of ``shape``, step ``i`` is ``step(i)``."""

    name: str
    n: int
    shape: tuple[int, ...]
    step: Callable[[int], torch.Tensor]
    spikes: bool
    time_axis: int | None
    reads: int = 20  # random steps read back per repeat (workload 3)

    @property
    def row_bytes(self) -> int:  # one packed spike row
        return (int(np.prod(self.shape)) + 7) // 8

    @property
    def chunk_rows(self) -> int:
        per_row = self.row_bytes if self.spikes else 4 * int(np.prod(self.shape))
        return max(1, CHUNK_BYTES // per_row)


def pool_work(name: str, n: int, spikes: bool, seed: int, reads: int) -> Work:
    g = torch.Generator().manual_seed(seed)
    k = min(POOL, n)
    if spikes:
        pool = [(torch.rand(SHAPE, generator=g) < 0.05).float() for _ in range(k)]
    else:
        pool = [torch.randn(SHAPE, generator=g) for _ in range(k)]
    return Work(name, n, SHAPE, lambda i: pool[i % k], spikes, 0, reads)


def sparse_work(n: int, seed: int) -> tuple[Work, torch.Tensor]:
    """Distinct steps throughout (a cycled pool would repeat inside the recipe's chunks)."""
    g = torch.Generator().manual_seed(seed)
    big = torch.empty((n, *SPARSE))
    for lo in range(0, n, 8192):
        hi = min(n, lo + 8192)
        big[lo:hi] = (torch.rand((hi - lo, *SPARSE), generator=g) < 0.01).float()
    return Work("sparse", n, SPARSE, lambda i: big[i], True, None, 5), big


def check(who: str, i: Any, got: Any, want: torch.Tensor) -> None:
    if not (
        isinstance(got, torch.Tensor) and got.shape == want.shape and got.dtype == want.dtype
        and torch.equal(got, want)
    ):
        desc = (f"{tuple(got.shape)} {got.dtype}" if isinstance(got, torch.Tensor)
                else type(got).__name__)
        raise Mismatch(
            f"round trip mismatch: {who} read back step/neuron {i} as {desc}, "
            f"wrote {tuple(want.shape)} {want.dtype} (or the values differ)"
        )


# ---------------------------------------------------------------------- contenders
def loop(work: Work, call: Callable[[int, torch.Tensor], Any]) -> np.ndarray:
    """Run ``call(i, step(i))`` for every step; the caller's time of each call."""
    times = np.empty(work.n)
    step = work.step
    for i in range(work.n):
        x = step(i)
        t0 = pc()
        call(i, x)
        times[i] = pc() - t0
    return times


Reader = Callable[[int], torch.Tensor]


@dataclass
class Contender:
    name: str
    kind: str  # "spikestore", "contender" or "limit"
    write: Callable[[Path, Work], tuple[float, np.ndarray, int]]  # total s, calls, bytes
    open: Callable[[Path, Work], Reader] | None = None
    skipped: str | None = None


def spikestore_write(d: Path, w: Work, time_axis: bool = True) -> tuple[float, np.ndarray, int]:
    path = d / "run.spikes"
    t0 = pc()
    writer = spikestore.StoreWriter(path)
    ta = w.time_axis if time_axis else None
    times = loop(w, lambda i, x: writer.append("output", "sn", x, time_axis=ta))
    writer.close()
    return pc() - t0, times, folder_bytes(path)


def spikestore_flat_write(d: Path, w: Work) -> tuple[float, np.ndarray, int]:
    """The same records without ``time_axis``: packed as recorded, not time-last."""
    return spikestore_write(d, w, time_axis=False)


def spikestore_open(d: Path, w: Work) -> Reader:
    layer = spikestore.open(d / "run.spikes")["output"]["sn"]
    return layer.__getitem__


def monitor_write(d: Path, w: Work) -> tuple[float, np.ndarray, int]:
    """spikestore's OutputMonitor on a trivial module fed the spikes."""
    from spikestore.monitor import OutputMonitor

    path = d / "run.spikes"
    net = torch.nn.Sequential(torch.nn.Identity())
    t0 = pc()
    mon = OutputMonitor(net, torch.nn.Identity, store=path)
    times = loop(w, lambda i, x: net(x))
    mon.close()
    return pc() - t0, times, folder_bytes(path)


def hook_write(d: Path, w: Work) -> tuple[float, np.ndarray, int]:
    """The same module fed the spikes, with a plain forward hook calling the writer: what
    running a module and its hooks costs with no monitor (the monitor's baseline)."""
    path = d / "run.spikes"
    net = torch.nn.Sequential(torch.nn.Identity())
    t0 = pc()
    writer = spikestore.StoreWriter(path)
    net[0].register_forward_hook(lambda mod, inp, out: writer.append("output", "0", out))
    times = loop(w, lambda i, x: net(x))
    writer.close()
    return pc() - t0, times, folder_bytes(path)


def monitor_open(d: Path, w: Work) -> Reader:
    layer = spikestore.open(d / "run.spikes")["output"]["0"]
    return layer.__getitem__


def h5_write(d: Path, w: Work) -> tuple[float, np.ndarray, int]:
    path = d / "run.h5"
    comp = hdf5plugin.Blosc2(cname="zstd", clevel=1)
    t0 = pc()
    f = h5py.File(path, "w")
    if w.spikes:
        nb = w.row_bytes
        ds = f.create_dataset("spikes", shape=(0, nb), maxshape=(None, nb), dtype="u1",
                              chunks=(w.chunk_rows, nb), **comp)

        def call(i: int, x: torch.Tensor) -> None:
            row = np.packbits(x.numpy() != 0)
            ds.resize(i + 1, axis=0)
            ds[i] = row
    else:
        ds = f.create_dataset("v", shape=(0, *w.shape), maxshape=(None, *w.shape),
                              dtype="f4", chunks=(w.chunk_rows, *w.shape), **comp)

        def call(i: int, x: torch.Tensor) -> None:
            ds.resize(i + 1, axis=0)
            ds[i] = x.numpy()
    ds.attrs["shape"] = list(w.shape)
    times = loop(w, call)
    f.close()
    return pc() - t0, times, path.stat().st_size


def h5_open(d: Path, w: Work) -> Reader:
    f = h5py.File(d / "run.h5", "r")
    if not w.spikes:
        ds = f["v"]
        return lambda i: torch.from_numpy(ds[i])
    ds = f["spikes"]
    n = int(np.prod(w.shape))
    return lambda i: torch.from_numpy(
        np.unpackbits(ds[i], count=n).reshape(w.shape)).to(torch.float32)


def npsave_write(d: Path, w: Work) -> tuple[float, np.ndarray, int]:
    t0 = pc()
    times = loop(w, lambda i, x: np.save(d / f"{i:06d}.npy", x.numpy()))
    return pc() - t0, times, folder_bytes(d)


def npsave_open(d: Path, w: Work) -> Reader:
    return lambda i: torch.from_numpy(np.load(d / f"{i:06d}.npy"))


def torchsave_write(d: Path, w: Work) -> tuple[float, np.ndarray, int]:
    t0 = pc()
    times = loop(w, lambda i, x: torch.save(x, d / f"{i:06d}.pt"))
    return pc() - t0, times, folder_bytes(d)


def torchsave_open(d: Path, w: Work) -> Reader:
    return lambda i: torch.load(d / f"{i:06d}.pt")


def sj_write(d: Path, w: Work) -> tuple[float, np.ndarray, int]:
    net = torch.nn.Sequential(torch.nn.Identity())
    times = np.empty(w.n)
    cloning = 0.0
    t_start = pc()
    mon = sj_monitor.OutputMonitor(net, torch.nn.Identity)
    for i in range(w.n):
        c0 = pc()
        x = w.step(i).clone()  # a network makes a new tensor each step
        t0 = pc()
        cloning += t0 - c0
        net(x)
        times[i] = pc() - t0
    torch.save(mon.records, d / "records.pt")
    mon.close()
    total = pc() - t_start - cloning
    del mon
    return total, times, folder_bytes(d)


def sj_open(d: Path, w: Work) -> Reader:
    records = torch.load(d / "records.pt", mmap=True)
    return lambda i: records[i].clone()


def zarr_write(per: int) -> Callable[[Path, Work], tuple[float, np.ndarray, int]]:
    def write(d: Path, w: Work) -> tuple[float, np.ndarray, int]:
        path = d / "run.zarr"
        t0 = pc()
        arr = zarr.create_array(str(path), shape=(w.n, *w.shape), chunks=(per, *w.shape),
                                dtype="float32")
        if per == 1:
            def call(i: int, x: torch.Tensor) -> None:
                arr[i] = x.numpy()
        else:
            buf = np.empty((per, *w.shape), np.float32)

            def call(i: int, x: torch.Tensor) -> None:
                buf[i % per] = x.numpy()
                if i % per == per - 1 or i == w.n - 1:
                    lo = i - i % per
                    arr[lo : i + 1] = buf[: i + 1 - lo]
        times = loop(w, call)
        return pc() - t0, times, folder_bytes(path)

    return write


def zarr_open(d: Path, w: Work) -> Reader:
    arr = zarr.open_array(str(d / "run.zarr"), mode="r")
    return lambda i: torch.from_numpy(arr[i])


def memcpy_write(d: Path, w: Work) -> tuple[float, np.ndarray, int]:
    ring = np.zeros((64, *w.shape), np.float32)  # pages touched before timing
    t0 = pc()
    times = loop(w, lambda i, x: np.copyto(ring[i % 64], x.numpy()))
    total = pc() - t0
    if not np.array_equal(ring[(w.n - 1) % 64], w.step(w.n - 1).numpy()):
        raise Mismatch("round trip mismatch: limit memcpy")
    return total, times, 0


def seqwrite_write(d: Path, w: Work) -> tuple[float, np.ndarray, int]:
    path = d / "all.bin"
    t0 = pc()
    f = open(path, "wb", buffering=0)  # closed below, inside the timing
    times = loop(w, lambda i, x: f.write(x.numpy()))
    f.close()
    total = pc() - t0
    size = path.stat().st_size
    if size != 4 * w.n * int(np.prod(w.shape)):
        raise Mismatch(f"round trip mismatch: limit one sequential write wrote {size} bytes")
    return total, times, size


def packzstd_write(d: Path, w: Work) -> tuple[float, np.ndarray, int]:
    codec = numcodecs.Zstd(level=1)
    rows, nb = w.chunk_rows, w.row_bytes
    buf = np.zeros((rows, nb), np.uint8)
    out: list[bytes] = []

    def call(i: int, x: torch.Tensor) -> None:
        buf[i % rows] = np.packbits(x.numpy() != 0)
        if i % rows == rows - 1 or i == w.n - 1:
            out.append(codec.encode(buf[: i % rows + 1]))

    t0 = pc()
    times = loop(w, call)
    total = pc() - t0
    last = np.frombuffer(codec.decode(out[-1]), np.uint8).reshape(-1, nb)[-1]
    got = np.unpackbits(last, count=int(np.prod(w.shape))).reshape(w.shape)
    check("limit packbits + zstd-1", w.n - 1, torch.from_numpy(got).float(), w.step(w.n - 1))
    return total, times, sum(len(b) for b in out)


def contenders(spikes: bool) -> list[Contender]:
    recipe = ("h5py + hdf5plugin packbits recipe (Blosc2 zstd 1)" if spikes
              else "h5py + hdf5plugin, float rows (Blosc2 zstd 1)")
    out = [
        Contender("spikestore", "spikestore", spikestore_write, spikestore_open),
        Contender("spikestore without time_axis" + (" (packed as recorded)" if spikes else ""),
                  "variant", spikestore_flat_write, spikestore_open),
        Contender(recipe, "contender", h5_write, h5_open, skipped=NO_PLUGIN),
        Contender("np.save per step", "contender", npsave_write, npsave_open),
        Contender("torch.save per step", "contender", torchsave_write, torchsave_open),
        Contender("SpikingJelly OutputMonitor + torch.save", "contender", sj_write, sj_open,
                  skipped=NO_SJ),
        Contender("zarr, a chunk per step", "contender", zarr_write(1), zarr_open,
                  skipped=NO_ZARR),
        Contender("zarr, 64-step chunks", "contender", zarr_write(64), zarr_open,
                  skipped=NO_ZARR),
        Contender("limit: memcpy", "limit", memcpy_write),
        Contender("limit: one sequential write", "limit", seqwrite_write),
    ]
    if spikes:
        out.append(Contender("limit: packbits + zstd-1", "limit", packzstd_write))
    return out


# --------------------------------------------------------------------- measuring
#: Where each contender's fresh folder is made (``--dir``).
BASE = Path("/tmp")


def run_fresh(fn: Callable[[Path], Any]) -> Any:
    d = Path(tempfile.mkdtemp(prefix="bench_peers_", dir=BASE))
    try:
        return fn(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)
        gc.collect()


T0 = pc()


def progress(msg: str) -> None:
    print(f"[{pc() - T0:7.1f} s] {msg}", file=sys.stderr, flush=True)


def warm_up(active: list[Contender], work: Work) -> None:
    """A short untimed run of each contender first: imports and first-use costs."""
    small = replace(work, n=min(work.n, 8))
    for c in active:
        progress(f"  {work.name} warm-up: {c.name}")

        def one(d: Path, c: Contender = c) -> None:
            c.write(d, small)
            if c.open is not None:
                c.open(d, small)(0)

        run_fresh(one)


def write_workload(work: Work, repeats: int) -> dict[str, dict[str, Any]]:
    """Workloads 1 and 2, with workload 3 (reads) on what each wrote."""
    cons = contenders(work.spikes)
    res: dict[str, dict[str, Any]] = {
        c.name: {"kind": c.kind, "skipped": c.skipped, "verified": False, "total_s": [],
                 "call_median_s": [], "call_mean_s": [], "bytes": [], "open_s": [],
                 "read_s": []}
        for c in cons
    }
    active = [c for c in cons if c.skipped is None]
    warm_up(active, work)
    for rep in range(repeats):
        rng = np.random.default_rng(1000 + rep)
        idx = [int(i) for i in rng.integers(0, work.n, work.reads)]
        k = rep % len(active)
        for c in active[k:] + active[:k]:
            progress(f"  {work.name} repeat {rep + 1}/{repeats}: {c.name}")

            def one(d: Path, c: Contender = c, idx: list[int] = idx) -> None:
                total, calls, size = c.write(d, work)
                r = res[c.name]
                r["total_s"].append(total)
                r["call_median_s"].append(float(np.median(calls)))
                r["call_mean_s"].append(float(np.mean(calls)))
                r["bytes"].append(size)
                if c.open is None:
                    r["verified"] = c.kind == "limit"  # checked inside write
                    return
                t0 = pc()
                read = c.open(d, work)
                r["open_s"].append(pc() - t0)
                check(c.name, 0, read(0), work.step(0))  # warm-up, checked
                ts = []
                for i in idx:
                    t0 = pc()
                    got = read(i)
                    ts.append(pc() - t0)
                    check(c.name, i, got, work.step(i))
                r["read_s"].append(statistics.median(ts))
                r["verified"] = True
                del read

            run_fresh(one)
    return res


#: The monitor's baseline in workload 4: the module with a plain hook calling the writer.
HOOK = "spikestore StoreWriter from a plain forward hook (nn.Identity)"


def sparse_workload(work: Work, big: torch.Tensor, repeats: int) -> dict[str, dict[str, Any]]:
    n_neurons = int(np.prod(work.shape))
    cons = [
        Contender("spikestore StoreWriter", "spikestore", spikestore_write, spikestore_open),
        Contender("spikestore OutputMonitor (nn.Identity)", "spikestore", monitor_write,
                  monitor_open),
        Contender(HOOK, "spikestore", hook_write, monitor_open),
        Contender("h5py + hdf5plugin packbits recipe (Blosc2 zstd 1)", "contender", h5_write,
                  h5_open, skipped=NO_PLUGIN),
        Contender("limit: memcpy", "limit", memcpy_write),
        Contender("limit: packbits + zstd-1", "limit", packzstd_write),
    ]
    res: dict[str, dict[str, Any]] = {
        c.name: {"kind": c.kind, "skipped": c.skipped, "verified": False, "total_s": [],
                 "call_median_s": [], "call_mean_s": [], "bytes": [], "neuron_s": []}
        for c in cons
    }

    def neuron_reader(c: Contender, d: Path) -> Callable[[int], torch.Tensor]:
        """Opens the file or store each time, so that no chunk cache carries over."""
        if c.write is h5_write:
            def neuron(j: int) -> torch.Tensor:
                with h5py.File(d / "run.h5", "r") as f:
                    col = f["spikes"][:, j // 8]
                return torch.from_numpy((col >> (7 - j % 8)) & 1).to(torch.float32)

            return neuron
        name = "0" if c.write in (monitor_write, hook_write) else "sn"
        return lambda j: spikestore.open(d / "run.spikes")["output"][name].neuron((0, j))

    active = [c for c in cons if c.skipped is None]
    warm_up(active, work)
    for rep in range(repeats):
        rng = np.random.default_rng(2000 + rep)
        neurons = [int(j) for j in rng.integers(0, n_neurons, 3)]
        steps = [int(i) for i in rng.integers(0, work.n, 3)]
        k = rep % len(active)
        for c in active[k:] + active[:k]:
            progress(f"  sparse repeat {rep + 1}/{repeats}: {c.name}")

            def one(d: Path, c: Contender = c, steps: list[int] = steps,
                    neurons: list[int] = neurons) -> None:
                total, calls, size = c.write(d, work)
                r = res[c.name]
                r["total_s"].append(total)
                r["call_median_s"].append(float(np.median(calls)))
                r["call_mean_s"].append(float(np.mean(calls)))
                r["bytes"].append(size)
                if c.open is None:
                    r["verified"] = True
                    return
                read = c.open(d, work)
                for i in steps:
                    check(c.name, i, read(i), work.step(i))
                neuron = neuron_reader(c, d)
                neuron(neurons[0])  # warm-up
                ts = []
                for j in neurons:
                    t0 = pc()
                    got = neuron(j)
                    ts.append(pc() - t0)
                    check(c.name, f"neuron {j}", got, big[:, 0, j])
                r["neuron_s"].append(statistics.median(ts))
                r["verified"] = True

            run_fresh(one)
    return res


# ---------------------------------------------------------------------- printing
def med(r: dict[str, Any], key: str) -> float | None:
    v = r.get(key) or []
    return statistics.median(v) if v else None


def spread(r: dict[str, Any], key: str, scale: float, fmt: str) -> str:
    v = r.get(key) or []
    if not v:
        return "-"
    return f"{statistics.median(v) * scale:{fmt}} ({min(v) * scale:{fmt}}-{max(v) * scale:{fmt}})"


def ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def best(res: dict[str, dict[str, Any]], key: str) -> tuple[str | None, float | None]:
    cands = [(med(r, key), name) for name, r in res.items()
             if r["kind"] == "contender" and med(r, key) is not None]
    if not cands:
        return None, None
    v, name = min(cands)
    return name, v


def skipped_rows(res: dict[str, dict[str, Any]], ncols: int) -> list[str]:
    return [f"| {name} | skipped: {r['skipped']} |" + " |" * (ncols - 2)
            for name, r in res.items() if r["skipped"]]


def write_table(title: str, work: Work, res: dict[str, dict[str, Any]]) -> list[str]:
    ss = res["spikestore"]
    s_tot, s_mean = med(ss, "total_s"), med(ss, "call_mean_s")
    f32 = 4 * work.n * int(np.prod(work.shape))
    lines = [
        f"### {title}",
        "",
        "| contender | to closed, s (min-max) | / spikestore | caller ms/step median | "
        "caller ms/step mean (min-max) | mean / spikestore | MB (x smaller than f32) | "
        "round trip |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in res.items():
        if r["skipped"]:
            continue
        size = med(r, "bytes")
        sz = "-" if not size else f"{size / 1e6:.1f} ({f32 / size:.1f}x)"
        if r["kind"] == "limit" and name != "limit: one sequential write":
            sz = "-" if not size else f"({size / 1e6:.1f} in memory)"
        lines.append(
            f"| {name} | {spread(r, 'total_s', 1, '.3f')} | {ratio(med(r, 'total_s'), s_tot)} | "
            f"{med(r, 'call_median_s') * 1e3:.3f} | {spread(r, 'call_mean_s', 1e3, '.3f')} | "
            f"{ratio(med(r, 'call_mean_s'), s_mean)} | {sz} | "
            f"{'verified' if r['verified'] else '-'} |"
        )
    lines += skipped_rows(res, 8)
    lines.append("")
    for key, what in (("total_s", "to closed"), ("call_mean_s", "caller mean per step")):
        name, v = best(res, key)
        if name is not None:
            lines.append(f"- spikestore / best contender, {what}: "
                         f"{ratio(med(ss, key), v)} (best: {name})")
    lines.append("")
    return lines


def read_table(parts: list[tuple[str, dict[str, dict[str, Any]]]]) -> list[str]:
    lines = [
        "### 3. One step read back after closing",
        "",
        "| data | contender | open, ms | read one step, ms (min-max) | / spikestore |",
        "|---|---|---:|---:|---:|",
    ]
    summary = []
    for data, res in parts:
        s_read = med(res["spikestore"], "read_s")
        for name, r in res.items():
            if r["skipped"] or not r["read_s"]:
                continue
            lines.append(
                f"| {data} | {name} | {med(r, 'open_s') * 1e3:.2f} | "
                f"{spread(r, 'read_s', 1e3, '.3f')} | {ratio(med(r, 'read_s'), s_read)} |"
            )
        for name, r in res.items():
            if r["skipped"]:
                lines.append(f"| {data} | {name} | skipped: {r['skipped']} | | |")
        name, v = best(res, "read_s")
        if name is not None:
            summary.append(f"- {data}: spikestore / best contender: {ratio(s_read, v)} "
                           f"(best: {name})")
    return [*lines, "", *summary, ""]


def sparse_table(work: Work, res: dict[str, dict[str, Any]], ent_bytes: float,
                 p_hat: float) -> list[str]:
    w = res["spikestore StoreWriter"]
    s_tot, s_neu, s_b = med(w, "total_s"), med(w, "neuron_s"), med(w, "bytes")
    lines = [
        f"### 4. Long sparse run: {work.n:,} steps of {list(work.shape)} spikes "
        f"(p = {p_hat:.4f})",
        "",
        f"Entropy limit: {work.n * int(np.prod(work.shape)):,} bits x H(p) = {ent_bytes:,.0f} "
        "bytes.",
        "",
        "| contender | write to closed, s (min-max) | / writer | caller us/step mean | "
        "one neuron, ms (min-max) | / writer | bytes on disk | x entropy limit | / writer | "
        "round trip |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in res.items():
        if r["skipped"]:
            continue
        b = med(r, "bytes")
        disk = r["kind"] != "limit"
        lines.append(
            f"| {name} | {spread(r, 'total_s', 1, '.3f')} | {ratio(med(r, 'total_s'), s_tot)} | "
            f"{med(r, 'call_mean_s') * 1e6:.1f} | {spread(r, 'neuron_s', 1e3, '.2f')} | "
            f"{ratio(med(r, 'neuron_s'), s_neu)} | "
            f"{(f'{b:,.0f}' if disk else f'({b:,.0f} in memory)') if b else '-'} | "
            f"{ratio(b, ent_bytes) if b else '-'} | {ratio(b, s_b) if b else '-'} | "
            f"{'verified' if r['verified'] else '-'} |"
        )
    lines += skipped_rows(res, 10)
    mon, hook = res["spikestore OutputMonitor (nn.Identity)"], res[HOOK]
    if not mon["skipped"] and not hook["skipped"]:
        lines += [
            "",
            f"- the monitor against the writer alone, {ratio(med(mon, 'total_s'), s_tot)}, is "
            f"the module call with a plain hook ({ratio(med(hook, 'total_s'), s_tot)} the "
            f"writer) times the monitor's own cost "
            f"({ratio(med(mon, 'total_s'), med(hook, 'total_s'))} the plain hook)",
        ]
    return [*lines, ""]


def target_rows(w1: dict, w2: dict, w4: dict) -> list[dict[str, Any]]:
    recipe = "h5py + hdf5plugin packbits recipe (Blosc2 zstd 1)"

    def paired(a: dict, ka: str, b: dict, kb: str) -> tuple[float | None, list[float]]:
        va, vb = a.get(ka) or [], b.get(kb) or []
        if not va or not vb:
            return None, []
        per = [x / y for x, y in zip(va, vb, strict=True)]
        return statistics.median(va) / statistics.median(vb), per

    specs = [
        ("spikes to closed <= 1.0x the h5py recipe", w1["spikestore"], "total_s",
         w1[recipe], "total_s", 1.0),
        ("caller mean per step <= the recipe's", w1["spikestore"], "call_mean_s",
         w1[recipe], "call_mean_s", 1.0),
        ("floats to closed <= 1.5x np.save per step", w2["spikestore"], "total_s",
         w2["np.save per step"], "total_s", 1.5),
        ("read one float step <= 2x np.load", w2["spikestore"], "read_s",
         w2["np.save per step"], "read_s", 2.0),
        ("long sparse write <= 0.8x the recipe", w4["spikestore StoreWriter"], "total_s",
         w4[recipe], "total_s", 0.8),
        ("one neuron <= 2x the recipe", w4["spikestore StoreWriter"], "neuron_s",
         w4[recipe], "neuron_s", 2.0),
        ("OutputMonitor <= 1.2x the writer alone",
         w4["spikestore OutputMonitor (nn.Identity)"], "total_s",
         w4["spikestore StoreWriter"], "total_s", 1.2),
        ("size <= 1.2x entropy", w4["spikestore StoreWriter"], "bytes",
         {"entropy": [w4["_entropy_bytes"]] * len(w4["spikestore StoreWriter"]["bytes"])},
         "entropy", 1.2),
    ]
    out = []
    for label, a, ka, b, kb, limit in specs:
        r, per = paired(a, ka, b, kb)
        why = b.get("skipped") or a.get("skipped")
        out.append({"target": label, "ratio": r, "per_repeat": per, "limit": limit,
                    "reached": None if r is None else r <= limit,
                    "skipped": why if r is None else None})
    return out


def targets_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["### Targets", "", "| target | measured (per repeat) | |", "|---|---:|---|"]
    for t in rows:
        if t["ratio"] is None:
            lines.append(f"| {t['target']} | - | n/a ({t['skipped'] or 'not measured'}) |")
            continue
        per = ", ".join(f"{x:.2f}" for x in t["per_repeat"])
        lines.append(f"| {t['target']} | {t['ratio']:.2f}x ({per}) | "
                     f"{'reached' if t['reached'] else '**not reached**'} |")
    return [*lines, ""]


# ------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    global BASE
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true",
                    help="sizes divided by 10: 200 steps, 10,000 long-run steps")
    ap.add_argument("--smoke", action="store_true",
                    help="smallest sizes (20 steps, 1,000 long-run steps), for the tests")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=None, help="steps of workloads 1-3")
    ap.add_argument("--long-steps", type=int, default=None, help="steps of workload 4")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--dir", type=Path, default=Path("/tmp"),
                    help="where the contenders write (default /tmp; /dev/shm keeps the "
                    "disk's writeback of gigabytes of floats out of the figures)")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    if not args.dir.is_dir():
        ap.error(f"--dir {args.dir}: no such folder")
    BASE = args.dir
    if args.smoke:
        n, n_long, reads = 20, 1_000, 3
    elif args.quick:
        n, n_long, reads = 200, 10_000, 10
    else:
        n, n_long, reads = 2_000, 100_000, 20
    n = args.steps or n
    n_long = args.long_steps or n_long
    torch.set_num_threads(1)
    cmd = "python benchmarks/bench_peers.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    versions = {"torch": torch.__version__, "spikestore": spikestore.__version__,
                "numpy": np.__version__}
    for mod, key in ((zarr, "zarr"), (h5py, "h5py"), (hdf5plugin, "hdf5plugin"),
                     (sj_monitor, "spikingjelly")):
        if mod is not None:
            try:
                versions[key] = metadata.version(key)
            except metadata.PackageNotFoundError:
                versions[key] = "?"
    load0 = os.getloadavg()[0]
    t_run = pc()
    # What the imports made never becomes garbage: leave it out of every collection (the
    # one after each contender, and any that would fall into a timed loop).
    gc.collect()
    gc.freeze()

    progress(f"{cmd.strip()}: workload 1 (spikes)")
    w1 = pool_work("spikes", n, True, 0, reads)
    r1 = write_workload(w1, args.repeats)
    progress("workload 2 (floats)")
    w2 = pool_work("floats", n, False, 1, reads)
    r2 = write_workload(w2, args.repeats)
    progress("workload 4 (long sparse run)")
    w4, big = sparse_work(n_long, 2)
    p_hat = float(big.mean())
    ent_bytes = big.numel() * entropy(p_hat) / 8
    r4 = sparse_workload(w4, big, args.repeats)
    del big
    r4_all = {**r4, "_entropy_bytes": ent_bytes}
    targets = target_rows(r1, r2, r4_all)

    out = [
        f"`{cmd.strip()}`",
        "",
        f"({', '.join(f'{k} {v}' for k, v in versions.items())}; {os.cpu_count()} CPUs, "
        f"files in {BASE}, "
        f"load average {load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; "
        f"1 torch thread; medians of {args.repeats} repeats, contenders interleaved, "
        f"(min-max) over repeats; {pc() - t_run:.0f} s in all)",
        "",
        *write_table(f"1. Spikes: {n:,} steps of {list(SHAPE)} float32, p = 0.05, time axis 0",
                     w1, r1),
        *write_table(f"2. Membrane floats: {n:,} steps of {list(SHAPE)} float32 (random normal)",
                     w2, r2),
        *read_table([("spikes", r1), ("floats", r2)]),
        *sparse_table(w4, r4, ent_bytes, p_hat),
        *targets_table(targets),
    ]
    print("\n".join(out))
    if args.json is not None:
        doc = {
            "command": cmd.strip(), "versions": versions, "cpus": os.cpu_count(),
            "repeats": args.repeats, "steps": n, "long_steps": n_long,
            "entropy_bytes": ent_bytes, "p_long": p_hat,
            "workloads": {"1_spikes": r1, "2_floats": r2, "4_sparse": r4},
            "targets": targets,
        }
        args.json.write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
