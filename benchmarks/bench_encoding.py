"""Benchmark of the default spike encoding (``spikestore.spikes``) against simple recipes.

Run::

    python benchmarks/bench_encoding.py            # full run, about 1-2 minutes on 2 cores
    python benchmarks/bench_encoding.py --quick    # small sizes, a few seconds (smoke test)

Part 1 encodes i.i.d. Bernoulli(p) spikes (2**24 elements) with:

- ``zlib recipe``: ``zlib.compress(np.packbits(x != 0))`` at the default level,
- ``packbits+zstd1``: numcodecs ``Zstd(1)`` on the packed bytes,
- ``spikestore`` (default) and variants: :func:`spikestore.codecs.spikes.encode_chunk` on
  ``(64, 8192)``-byte chunks of the ``(steps, nbytes)`` packed array.

Ratios count float32 input bytes (4 per element). Encode GB/s is float32 bytes over the
time to compress the packed bytes; the float -> bool -> packbits step is timed once on
its own (one torch thread) and reported, and "enc+pack" adds it. Decode covers
decompression and ``np.unpackbits`` (the float32 cast is common to all and left out).
Times are medians over ``--repeats`` runs after one warm-up.

Part 2 records the LIF outputs [T, B, ...] of a small multi-step conv SNN (plain torch,
Conv-BN-LIF x2 + Linear-LIF, T=16) over a few dozen steps, with a static input (the
same image at every time step) and a moving input (a shifting pattern as ON/OFF events
plus noise), and compares the encodings on the record as recorded and time-last
(each neuron's T series contiguous, ``x.permute(1, ..., 0)``). Chunks have the shapes
the store's writer gives them (``spikestore.writer._layout``: whole ``[H, W, T]``
planes for time-last conv records) and the default codec gets the writer's ``frame``,
so it may code chunks in its MOTION mode (the "MOTION chunks" column). Encode and
decode GB/s of the default on the time-last layout, and of the zlib recipe on the
whole record, are medians of ``--repeats``.
"""

from __future__ import annotations

import argparse
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from numcodecs import Zstd
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spikestore.codecs.layout import layout as _layout
from spikestore.codecs.layout import spike_frame as _spike_frame
from spikestore.codecs.spikes import decode_chunk, encode_chunk

PS = (0.001, 0.01, 0.05, 0.2, 0.5)


def entropy(p: float) -> float:
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return float(-(p * np.log2(p) + (1 - p) * np.log2(1 - p)))


def timeit(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    out = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def chunked(rows: np.ndarray, s: int, cb: int) -> list[np.ndarray]:
    """Split a (steps, nbytes) array into zarr-style (s, cb) chunks, zero-padding edges."""
    steps, nbytes = rows.shape
    out = []
    for i in range(0, steps, s):
        for j in range(0, nbytes, cb):
            blk = rows[i : i + s, j : j + cb]
            if blk.shape != (s, cb):
                pad = np.zeros((s, cb), np.uint8)
                pad[: blk.shape[0], : blk.shape[1]] = blk
                blk = pad
            out.append(np.ascontiguousarray(blk))
    return out


class Encoding:
    """One encoding: compress a list of chunks, decompress back to bools."""

    def __init__(self, name: str, enc: Callable, dec: Callable) -> None:
        self.name, self.enc, self.dec = name, enc, dec


def zlib_recipe() -> Encoding:
    def enc(chunks: list[np.ndarray]) -> list[bytes]:
        return [zlib.compress(c) for c in chunks]

    def dec(blobs: list[bytes], chunks: list[np.ndarray]) -> list[np.ndarray]:
        return [np.unpackbits(np.frombuffer(zlib.decompress(b), np.uint8)) for b in blobs]

    return Encoding("zlib recipe", enc, dec)


def zstd_packbits(level: int) -> Encoding:
    z = Zstd(level)

    def enc(chunks: list[np.ndarray]) -> list[bytes]:
        return [z.encode(c) for c in chunks]

    def dec(blobs: list[bytes], chunks: list[np.ndarray]) -> list[np.ndarray]:
        return [np.unpackbits(np.frombuffer(z.decode(b), np.uint8)) for b in blobs]

    return Encoding(f"packbits+zstd{level}", enc, dec)


def spikestore_codec(level: int, name: str) -> Encoding:
    def enc(chunks: list[np.ndarray], frame: tuple[int, int, int] | None = None) -> list[bytes]:
        return [encode_chunk(c, level, frame) for c in chunks]

    def dec(blobs: list[bytes], chunks: list[np.ndarray]) -> list[np.ndarray]:
        return [np.unpackbits(decode_chunk(b, c.shape)) for b, c in zip(blobs, chunks, strict=True)]

    return Encoding(name, enc, dec)


ENCODINGS = [
    zlib_recipe(),
    zstd_packbits(1),
    spikestore_codec(1, "spikestore (default, level 1)"),
    spikestore_codec(3, "spikestore level 3"),
]


# ---------------------------------------------------------------- part 1: i.i.d.


def bench_iid(n: int, repeats: int, seed: int = 0) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    row_elems = min(n, 1 << 16)
    results = []
    for p in PS:
        x = (torch.rand(n, generator=gen) < p).to(torch.float32)
        t_pack, packed = timeit(lambda x=x: np.packbits(x.to(torch.bool).numpy()), repeats)
        p_hat = float(x.mean())
        bound = 32.0 / entropy(p_hat)
        rows = packed.reshape(n // row_elems, row_elems // 8)
        chunks = chunked(rows, min(64, rows.shape[0]), rows.shape[1])
        # the zlib recipe is one zlib stream over the whole packed tensor
        for e in ENCODINGS:
            ch = [packed] if e.name == "zlib recipe" else chunks
            t_enc, blobs = timeit(lambda e=e, ch=ch: e.enc(ch), repeats)
            t_dec, back = timeit(lambda e=e, ch=ch, blobs=blobs: e.dec(blobs, ch), repeats)
            assert np.array_equal(np.concatenate([b.reshape(-1) for b in back])[:n], x.numpy() != 0)
            size = sum(len(b) for b in blobs)
            ratio = 4.0 * n / size
            gb = 4.0 * n / 1e9
            results.append(
                dict(
                    p=p,
                    name=e.name,
                    ratio=ratio,
                    frac=ratio / bound,
                    bound=bound,
                    enc=gb / t_enc,
                    enc_pack=gb / (t_enc + t_pack),
                    dec=gb / t_dec,
                    pack=gb / t_pack,
                    pack_ms=t_pack * 1e3,
                )
            )
    return results


# ---------------------------------------------------------------- part 2: real network


class LIF(nn.Module):
    """Multi-step LIF, tau=2, v_th=1, hard reset to 0 (SpikingJelly's defaults)."""

    def __init__(self, tau: float = 2.0, v_th: float = 1.0) -> None:
        super().__init__()
        self.tau, self.v_th = tau, v_th

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = torch.zeros_like(x[0])
        out = []
        for t in range(x.shape[0]):
            v = v + (x[t] - v) / self.tau
            s = (v >= self.v_th).to(x.dtype)  # heaviside
            v = v * (1.0 - s)
            out.append(s)
        return torch.stack(out)


class SNN(nn.Module):
    def __init__(self, cin: int, hw: int, c1: int = 16, c2: int = 32, nfc: int = 256) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(cin, c1, 3, padding=1, bias=False), nn.BatchNorm2d(c1))
        self.lif1 = LIF()
        self.conv2 = nn.Sequential(
            nn.MaxPool2d(2), nn.Conv2d(c1, c2, 3, padding=1, bias=False), nn.BatchNorm2d(c2)
        )
        self.lif2 = LIF()
        self.fc = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(c2 * (hw // 4) ** 2, nfc))
        self.lif3 = LIF()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        t, b = x.shape[:2]

        def seq(m: nn.Module, y: torch.Tensor) -> torch.Tensor:
            z = m(y.flatten(0, 1))
            return z.reshape(t, b, *z.shape[1:])

        s1 = self.lif1(seq(self.conv1, x))
        s2 = self.lif2(seq(self.conv2, s1))
        s3 = self.lif3(seq(self.fc, s2) * 3.0)
        return s1, s2, s3


def stroke_images(gen: torch.Generator, b: int, hw: int) -> torch.Tensor:
    """Digit-like images in [0, 1]: three blurred random strokes each."""
    yy, xx = torch.meshgrid(torch.arange(hw), torch.arange(hw), indexing="ij")
    img = torch.zeros(b, 1, hw, hw)
    for _ in range(3):
        p0 = torch.rand(b, 2, generator=gen) * hw
        p1 = torch.rand(b, 2, generator=gen) * hw
        for a in torch.linspace(0, 1, 8):
            c = p0 + a * (p1 - p0)
            d2 = (yy - c[:, 0, None, None]) ** 2 + (xx - c[:, 1, None, None]) ** 2
            img += torch.exp(-d2[:, None] / 4.0)
    return (img / img.amax(dim=(1, 2, 3), keepdim=True)).clamp(0, 1)


def static_input(gen: torch.Generator, t: int, b: int, hw: int = 28) -> torch.Tensor:
    return 2.0 * stroke_images(gen, b, hw).unsqueeze(0).expand(t, -1, -1, -1, -1).contiguous()


def moving_input(gen: torch.Generator, t: int, b: int, hw: int = 34) -> torch.Tensor:
    """DVS-like events: a pattern shifting one pixel per time step, ON/OFF + 1% noise."""
    base = stroke_images(gen, b, hw)[:, 0]
    d = torch.randint(0, 4, (b,), generator=gen)
    dy, dx = torch.tensor([0, 1, 0, -1])[d], torch.tensor([1, 0, -1, 0])[d]
    frames = torch.stack(
        [
            torch.stack(
                [torch.roll(base[i], (k * int(dy[i]), k * int(dx[i])), (0, 1)) for i in range(b)]
            )
            for k in range(t + 1)
        ]
    )
    diff = frames[1:] - frames[:-1]
    ev = torch.stack([(diff > 0.1), (diff < -0.1)], 2).float()
    noise = (torch.rand(t, b, 2, hw, hw, generator=gen) < 0.01).float()
    return torch.clamp(ev + noise, 0, 1)


def record_network(kind: str, steps: int, t: int, b: int, seed: int = 0) -> list[np.ndarray]:
    """LIF outputs of each layer as bool arrays [steps, T, B, ...] (a new batch each step)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    cin, hw = (1, 28) if kind == "static" else (2, 34)
    net = SNN(cin, hw)  # train mode: BatchNorm uses batch statistics
    recs: list[list[np.ndarray]] = [[], [], []]
    with torch.no_grad():
        for _ in range(steps):
            x = static_input(gen, t, b, hw) if kind == "static" else moving_input(gen, t, b, hw)
            for i, s in enumerate(net(x)):
                recs[i].append(s.to(torch.bool).numpy())
    return [np.stack(r) for r in recs]


def store_chunks(x: np.ndarray, time_last: bool) -> tuple[list[np.ndarray], tuple | None]:
    """Chunks of the [steps, T, B, ...] bool record ``x`` as the store writes them (same
    chunk shape, same plane alignment), and the codec's ``frame`` (time-last only)."""
    steps = x.shape[0]
    shape = x.shape[1:]
    perm = (*range(1, len(shape)), 0) if time_last else None
    y = np.moveaxis(x, 1, -1) if time_last else x
    rows = np.packbits(y.reshape(steps, -1), axis=1)
    frame = _spike_frame(shape, perm)
    chunks, _ = _layout((rows.shape[1],), 1, 2048, 1 << 18, frame=frame)
    return chunked(rows, chunks[0], chunks[1]), frame


def bench_network(steps: int, t: int, b: int, repeats: int) -> list[dict]:
    results = []
    codec_encs = [e for e in ENCODINGS if e.name != "zlib recipe"]
    dflt = next(e for e in ENCODINGS if e.name.startswith("spikestore (default"))
    for kind in ("static", "moving"):
        layers = record_network(kind, steps, t, b)
        for li, rec in enumerate(layers):
            n = rec.size
            gb = 4.0 * n / 1e9
            p_hat = float(rec.mean())
            packed = np.packbits(rec)
            t_zl, blob = timeit(lambda packed=packed: zlib.compress(packed), repeats)
            t_zd, _ = timeit(
                lambda blob=blob: np.unpackbits(np.frombuffer(zlib.decompress(blob), np.uint8)),
                repeats,
            )
            zl = 4.0 * n / len(blob)
            row = dict(
                kind=kind,
                layer=f"L{li} {'conv' if li < 2 else 'fc'}",
                shape=list(rec.shape[1:]),
                p=p_hat,
                iid=32 / entropy(p_hat),
                zlib_rec=zl,
                zlib_enc=gb / t_zl,
                zlib_dec=gb / t_zd,
            )
            for layout in ("recorded", "time-last"):
                # rec is [steps, T, B, ...]; time-last moves T behind the neuron axes
                chunks, frame = store_chunks(rec, layout == "time-last")
                x = rec if layout == "recorded" else np.moveaxis(rec, 1, -1)
                row[f"zlib {layout}"] = 4.0 * n / len(zlib.compress(np.packbits(x)))
                for e in codec_encs:
                    fr = frame if e.name.startswith("spikestore") else None
                    blobs = e.enc(chunks, fr) if fr is not None else e.enc(chunks)
                    row[f"{e.name} {layout}"] = 4.0 * n / sum(len(bl) for bl in blobs)
                if layout == "time-last":
                    t_enc, blobs = timeit(lambda c=chunks, f=frame: dflt.enc(c, f), repeats)
                    t_dec, back = timeit(lambda bl=blobs, c=chunks: dflt.dec(bl, c), repeats)
                    assert all(
                        np.array_equal(np.packbits(b), c.reshape(-1))
                        for b, c in zip(back, chunks, strict=True)
                    )
                    row["enc"], row["dec"] = gb / t_enc, gb / t_dec
                    row["motion"] = sum(bl[3] == 3 for bl in blobs) / len(blobs)
            results.append(row)
    return results


# ---------------------------------------------------------------- report


def report(iid: list[dict], net: list[dict], cmd: str) -> tuple[str, list[str]]:
    lines = [f"Command: `{cmd}`", ""]
    lines.append(
        "float32 -> torch bool -> np.packbits (1 torch thread): "
        + ", ".join(
            f"p={r['p']}: {r['pack_ms']:.1f} ms ({r['pack']:.1f} GB/s)"
            for r in iid
            if r["name"] == "zlib recipe"
        )
    )
    lines += [
        "",
        "i.i.d. Bernoulli(p): ratio vs float32 (fraction of 32/H) | enc GB/s (enc+pack) | dec GB/s",
        "",
    ]
    lines.append("| encoding | " + " | ".join(f"p={p}" for p in PS) + " |")
    lines.append("|---|" + "---|" * len(PS))
    bound = {r["p"]: r["bound"] for r in iid}
    lines.append("| entropy limit 32/H | " + " | ".join(f"{bound[p]:.1f}" for p in PS) + " |")
    for e in ENCODINGS:
        cells = []
        for p in PS:
            r = next(r for r in iid if r["p"] == p and r["name"] == e.name)
            cells.append(
                f"{r['ratio']:.1f} ({r['frac']:.3f}) / {r['enc']:.2f} ({r['enc_pack']:.2f})"
                f" / {r['dec']:.2f}"
            )
        lines.append(f"| {e.name} | " + " | ".join(cells) + " |")

    checks = []
    dflt = "spikestore (default, level 1)"

    def ok(cond: bool) -> str:
        return "PASS" if cond else "FAIL"

    for p in PS:
        r = next(r for r in iid if r["p"] == p and r["name"] == dflt)
        z = next(r for r in iid if r["p"] == p and r["name"] == "zlib recipe")
        checks.append(f"{ok(r['frac'] >= 0.9)} p={p}: {r['frac']:.3f} of entropy limit (>= 0.90)")
        checks.append(
            f"{ok(r['ratio'] >= z['ratio'])} p={p}: ratio {r['ratio']:.1f} >= zlib {z['ratio']:.1f}"
        )
        checks.append(
            f"{'PASS' if r['enc'] >= 1.0 else 'FAIL'} p={p}: encode {r['enc']:.2f} GB/s >= 1 "
            f"(with float->packbits: {r['enc_pack']:.2f})"
        )
        if p in (0.05, 0.2):
            checks.append(
                f"{'PASS' if r['enc'] >= 5 * z['enc'] else 'FAIL'} p={p}: encode "
                f"{r['enc'] / z['enc']:.1f}x zlib recipe (>= 5x)"
            )
        checks.append(
            f"{'PASS' if r['dec'] >= z['dec'] else 'FAIL'} p={p}: decode {r['dec']:.2f} GB/s "
            f">= zlib {z['dec']:.2f}"
        )

    lines += ["", "Real network (plain-torch conv SNN, T=16): ratio vs float32", ""]
    names = ["zlib", "packbits+zstd1", dflt, "spikestore level 3"]
    hdr = (
        ["input", "layer", "shape [T,B,...]", "p", "iid 32/H"]
        + [f"{nm} {lay}" for lay in ("recorded", "time-last") for nm in names]
        + ["MOTION chunks", "enc / dec GB/s (zlib recipe)", "default time-last / zlib recipe"]
    )
    lines.append("| " + " | ".join(hdr) + " |")
    lines.append("|" + "---|" * len(hdr))
    for r in net:
        gain = r[f"{dflt} time-last"] / r["zlib_rec"]
        vals = [f"{r[f'{nm} {lay}']:.1f}" for lay in ("recorded", "time-last") for nm in names]
        lines.append(
            f"| {r['kind']} | {r['layer']} | {r['shape']} | {r['p']:.4f} | {r['iid']:.1f} | "
            + " | ".join(vals)
            + f" | {r['motion']:.0%} | {r['enc']:.2f} / {r['dec']:.2f} "
            f"({r['zlib_enc']:.2f} / {r['zlib_dec']:.2f}) | {gain:.2f}x |"
        )
        g_rec = r[f"{dflt} recorded"] / r["zlib_rec"]
        need = 2.0 if "conv" in r["layer"] else 1.0
        checks.append(
            f"{'PASS' if gain >= need else 'FAIL'} {r['kind']} {r['layer']}: default time-last "
            f"{gain:.2f}x zlib recipe (as recorded {g_rec:.2f}x; need >= {need:.0f}x)"
        )
    return "\n".join(lines), checks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats (default 5, quick 2)")
    ap.add_argument("--out", type=Path, default=None, help="also write the markdown report here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    repeats = args.repeats or (2 if args.quick else 5)
    n = 1 << 18 if args.quick else 1 << 24
    steps, t, b = (3, 4, 2) if args.quick else (24, 16, 16)
    t0 = time.perf_counter()
    iid = bench_iid(n, repeats)
    net = bench_network(steps, t, b, repeats)
    cmd = "python benchmarks/bench_encoding.py" + (" --quick" if args.quick else "")
    text, checks = report(iid, net, cmd)
    text += "\n\nTargets:\n\n" + "\n".join(f"- {c}" for c in checks)
    text += f"\n\nTotal {time.perf_counter() - t0:.0f} s\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
