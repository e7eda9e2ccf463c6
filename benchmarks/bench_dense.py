"""Dense floats through the store against a plain file write of the same bytes.

Membrane potentials (float32, not spikes) go through ``StoreWriter.append`` and
``close()`` with each codec chain, and, in the same run and taking turns with them
repeat by repeat, through a plain ``open().write()`` of each record's bytes into one
new file (the limit). Two sources: a synthetic LIF membrane ``[64, 4096]`` (tau 2,
threshold 1, hard reset; bench_store's) and the ``v_seq`` of the three LIF layers of
bench_monitor's conv SNN (``[8, 16, ...]``, one torch thread, real training-free
forward passes). Each cell: the median over repeats of (store GB/s) / (plain write
GB/s) of the same repeat, its spread (min-max over repeats) and the store's GB/s;
sizes are bytes on disk of the segment files against float32. The "codec chain"
column isolates what the compressor choice costs: the same chain (numcodecs) on
every 256 KiB chunk plus the CRC-32C, written to one file, against the plain write
of the same repeat; the store column adds everything else the store does (its
writer thread, Zarr, summaries, shard files).

Run::

    python benchmarks/bench_dense.py            # about 2 minutes on 2 cores
    python benchmarks/bench_dense.py --quick    # smoke test
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import spikestore
from spikestore.codecs import rows

CONFIGS = {
    "old default: blosc-zstd 1, byte shuffle": {"compressor": "blosc-zstd", "level": 1},
    "blosc-lz4 5, bit shuffle (always)": {"force": 0.0},
    "no compression (level=0)": {"level": 0},
    "new default: lz4 5 + bit shuffle if it saves >= 20 %, else lz4 1 no shuffle": {},
    "precision=7 (lossy)": {"precision": 7},
    "precision=5 (lossy)": {"precision": 5},
}


def lif_membrane(n: int, shape: tuple[int, ...], seed: int = 0) -> list[torch.Tensor]:
    from bench_store import membrane

    return membrane(n, shape, seed)


def conv_v_seq(n_batches: int) -> list[torch.Tensor]:
    from bench_monitor import Net, inputs

    from spikestore.demo import LIF

    torch.manual_seed(0)
    net = Net()
    out: list[torch.Tensor] = []
    for m in (net.sn1, net.sn2):  # the conv layers (the last LIF layer has 10 neurons)
        assert isinstance(m, LIF)
        m.register_forward_hook(lambda mod, i, o: out.append(mod.v_seq.detach().clone()))
    with torch.no_grad():
        for x in inputs(n_batches):
            net(x)
    return out


def segment_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            if f != "zarr.json" and "/index" not in root and "/summary" not in root:
                total += os.path.getsize(os.path.join(root, f))
    return total


def run_store(recs: list[torch.Tensor], cfg: dict, path: Path) -> tuple[float, int, float]:
    """Seconds from the first append to close(), segment bytes, max relative error."""
    cfg = dict(cfg)
    force = cfg.pop("force", None)
    saved = rows.DENSE_MIN_SAVING
    if force is not None:
        rows.DENSE_MIN_SAVING = force
    try:
        t0 = time.perf_counter()
        with spikestore.StoreWriter(path, **cfg) as w:
            for r in recs:
                w.append("v", str(tuple(r.shape)), r)
        dt = time.perf_counter() - t0
    finally:
        rows.DENSE_MIN_SAVING = saved
    store = spikestore.open(path)["v"]
    by_layer: dict[str, list[torch.Tensor]] = {}
    for r in recs:
        by_layer.setdefault(str(tuple(r.shape)), []).append(r)
    err = 0.0
    for name, steps in by_layer.items():
        got, want = store[name][len(steps) - 1], steps[-1]
        nz = want != 0
        if nz.any():
            err = max(err, float(((got - want).abs()[nz] / want.abs()[nz]).max()))
        else:
            err = max(err, float((got - want).abs().max()))
    return dt, segment_bytes(path), err


def chain(recs: list[torch.Tensor], cfg: dict) -> list:
    """numcodecs equivalents of the codec chain the store writes for ``cfg``."""
    from numcodecs import BitRound, Blosc

    first = recs[0].numpy()
    cs: list = []
    if cfg.get("precision") is not None:
        cs.append(BitRound(cfg["precision"]))
    if cfg.get("compressor") == "blosc-zstd":
        cs.append(Blosc("zstd", cfg.get("level", 1), Blosc.SHUFFLE))
    elif cfg.get("precision") is not None:
        cs.append(Blosc("lz4", 5, Blosc.BITSHUFFLE))
    elif cfg.get("level") != 0:
        force = cfg.get("force")
        saving = rows._saving(first, 5) if force is None else 1.0 - force
        if saving >= (rows.DENSE_MIN_SAVING if force is None else 1.0 - force):
            cs.append(Blosc("lz4", 5, Blosc.BITSHUFFLE))
        else:
            cs.append(Blosc("lz4", 1, Blosc.NOSHUFFLE))
    return cs


def run_codec(recs: list[torch.Tensor], cs: list, path: Path) -> float:
    """Seconds to encode every 256 KiB chunk of the records with ``cs``, add the CRC-32C
    every chunk gets, and write the encoded bytes to one file: what the codec chain
    costs on top of a plain write, without the rest of the store."""
    import google_crc32c

    t0 = time.perf_counter()
    with open(path, "wb") as f:
        for r in recs:
            a = r.numpy().reshape(-1)
            for i in range(0, a.size, 65536):
                b = a[i : i + 65536]
                for c in cs:
                    b = c.encode(b)
                data = bytes(memoryview(b).cast("B")) if not isinstance(b, bytes) else b
                f.write(data)
                f.write(google_crc32c.value(data).to_bytes(4, "little"))
    return time.perf_counter() - t0


def run_plain(recs: list[torch.Tensor], path: Path) -> float:
    """The limit: each record's bytes written straight from the tensor (no copy)."""
    t0 = time.perf_counter()
    with open(path, "wb") as f:
        for r in recs:
            f.write(memoryview(r.numpy()).cast("B"))
    return time.perf_counter() - t0


def bench(label: str, recs: list[torch.Tensor], repeats: int, tmp: Path) -> list[str]:
    nbytes = sum(r.numel() * r.element_size() for r in recs)
    ratios: dict[str, list[float]] = {k: [] for k in CONFIGS}
    codec_ratios: dict[str, list[float]] = {k: [] for k in CONFIGS}
    chains = {k: chain(recs, cfg) for k, cfg in CONFIGS.items()}
    speeds: dict[str, list[float]] = {k: [] for k in CONFIGS}
    plain: list[float] = []
    sizes: dict[str, int] = {}
    errs: dict[str, float] = {}
    for rep in range(repeats):
        for name, cfg in CONFIGS.items():
            # The plain write right before each configuration: the same disk, the same load.
            p = run_plain(recs, tmp / f"plain{rep}")
            (tmp / f"plain{rep}").unlink()
            c = run_codec(recs, chains[name], tmp / f"codec{rep}")
            (tmp / f"codec{rep}").unlink()
            dt, size, err = run_store(recs, cfg, tmp / f"s{rep}")
            shutil.rmtree(tmp / f"s{rep}")
            codec_ratios[name].append(p / c)
            plain.append(nbytes / p / 1e9)
            speeds[name].append(nbytes / dt / 1e9)
            ratios[name].append(p / dt)
            sizes[name], errs[name] = size, max(err, errs.get(name, 0.0))
    out = [
        f"| {label} | plain file write | {statistics.median(plain):.2f} GB/s "
        f"({min(plain):.2f}-{max(plain):.2f}) | 1.00 | 1.00 | 1.00 | exact |"
    ]
    for name in CONFIGS:
        r, cr = ratios[name], codec_ratios[name]
        out.append(
            f"| {label} | {name} | {statistics.median(speeds[name]):.2f} GB/s | "
            f"{statistics.median(r):.2f} ({min(r):.2f}-{max(r):.2f}) | "
            f"{statistics.median(cr):.2f} ({min(cr):.2f}-{max(cr):.2f}) | "
            f"{nbytes / sizes[name]:.2f}x | "
            + ("exact" if errs[name] == 0 else f"{errs[name]:.2e}")
            + " |"
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    # Zarr warns that numcodecs' BitRound is not in the Zarr v3 spec (Zarr-Python reads it).
    warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr")
    repeats = args.repeats or (2 if args.quick else 5)
    n = 16 if args.quick else 192
    sources = [
        ("LIF membrane [64, 4096] f32", lif_membrane(n, (64, 4096))),
        ("conv SNN v_seq (2 conv LIF layers)", conv_v_seq(3 if args.quick else 64)),
    ]
    tmp = Path(tempfile.mkdtemp())
    lines = []
    try:
        for label, recs in sources:
            lines += bench(label, recs, repeats, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    cmd = "python benchmarks/bench_dense.py" + (" --quick" if args.quick else "")
    print(
        f"\n`{cmd}`  (torch {torch.__version__}, 1 torch thread, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}; median of {repeats} interleaved repeats, "
        "(min-max) over repeats)\n"
    )
    print(
        "| records | codec chain | store GB/s (f32) | store, of plain write | "
        "codec chain + CRC + write, of plain write | x smaller than f32 | "
        "max relative error |"
    )
    print("|---|---|---|---|---|---|---|")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
