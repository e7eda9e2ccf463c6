"""Sparse layers in the store: where the bytes of a recording go, against the entropy limit.

    python benchmarks/bench_sparse.py            # 256 steps of [16, 64, 1024], 5 rates
    python benchmarks/bench_sparse.py --quick    # 32 steps (smoke run)

A multi-step monitor's record ``[T=16, B=64, N=1024]`` of i.i.d. Bernoulli(p) spikes goes
through ``StoreWriter.append(..., time_axis=0)`` (what ``OutputMonitor`` does for a
multi-step layer) for 256 steps; the closed store is then measured file by file:

- ``chunks``: the segment's encoded chunks (each with its 4-byte CRC-32C),
- ``shard index``: Zarr's sharding index at the end of each shard file (16 bytes for
  every inner chunk the shard *can* hold, used or not, plus a CRC),
- ``zarr.json``, ``index``, ``summary``, ``summary_axis0``: the fixed per-layer bytes.

The entropy limit is ``n * H(p_hat) / 8`` bytes. ``codec, one chunk`` is the codec on the
whole recording as one chunk (``encode_chunk`` of the packed bits, 2^28 elements);
``codec, store chunks`` is the codec on the store's own chunk shape, without any store
bytes. ``GAPS prototype`` projects the store's ratio if each chunk were coded as the
smaller of TREE and Rice-coded gaps between spikes (see ``gaps_size``), a codec mode this
benchmark only sizes (it is not part of the format).
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import spikestore
from spikestore.codecs.spikes import encode_chunk

PS = (0.001, 0.003, 0.01, 0.05, 0.2, 0.5)
SHAPE = (16, 64, 1024)


def entropy(p: float) -> float:
    return 0.0 if p <= 0 or p >= 1 else -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def gaps_size(chunk: np.ndarray) -> int:
    """Bytes of a chunk coded as Golomb-Rice gaps: a 20-byte header, then ``m`` k-bit
    remainders and ``m`` unary quotients (``q`` zeros and a one) of the gaps between the
    chunk's ``m`` set bits, the best ``k`` chosen per chunk."""
    pos = np.flatnonzero(np.unpackbits(chunk.reshape(-1)))
    if not pos.size:
        return 12
    gaps = np.diff(pos, prepend=-1) - 1
    k0 = max(0, int(math.log2(max(1.0, float(gaps.mean()) * math.log(2)))))
    best = min(
        pos.size * k + int((gaps >> k).sum()) + pos.size for k in range(max(0, k0 - 2), k0 + 3)
    )
    return 20 + -(-best // 8)


def category(rel: tuple[str, ...]) -> str:
    if rel[-1] == "zarr.json":
        return "zarr.json"
    for name in ("index", "summary", "summary_axis0"):
        if name in rel:
            return name
    if any(p.startswith("s") and p[1:].isdigit() for p in rel) and "c" in rel:
        return "segment"
    return "other"


def run(p: float, steps: int, tmp: Path) -> dict:
    import zarr

    g = torch.Generator().manual_seed(0)
    path = tmp / f"p{p}"
    recs = []
    with spikestore.StoreWriter(path) as w:
        for _ in range(steps):
            r = (torch.rand(SHAPE, generator=g) < p).float()
            recs.append(r)
            w.append("m", "l", r, time_axis=0)
    n = steps * math.prod(SHAPE)
    p_hat = float(sum(float(r.sum()) for r in recs)) / n
    limit = n * entropy(p_hat) / 8
    sizes: Counter[str] = Counter()
    for f in path.rglob("*"):
        if f.is_file() and f.name != ".spikestore.lock":
            sizes[category(f.relative_to(path).parts)] += f.stat().st_size
    arr = zarr.open_array(path / "m" / "l" / "f0" / "s0", mode="r")
    rows = np.asarray(arr[:])
    cs, cc = arr.chunks
    shard_rows, shard_cols = arr.shards
    n_shards = -(-rows.shape[0] // shard_rows) * -(-rows.shape[1] // shard_cols)
    index_bytes = n_shards * ((shard_rows // cs) * (shard_cols // cc) * 16 + 4)
    tree = gaps = 0
    n_chunks = 0
    for i in range(0, rows.shape[0], cs):
        for j in range(0, rows.shape[1], cc):
            c = np.zeros((cs, cc), np.uint8)
            blk = rows[i : i + cs, j : j + cc]
            c[: blk.shape[0], : blk.shape[1]] = blk
            t = len(encode_chunk(c))
            tree += t
            gaps += min(t, gaps_size(c))
            n_chunks += 1
    one = len(encode_chunk(rows.reshape(-1)))
    total = sum(sizes.values())
    fixed = total - sizes["segment"]
    chunk_bytes = sizes["segment"] - index_bytes
    shutil.rmtree(path)
    return dict(
        p=p,
        limit=limit,
        total=total,
        sizes=sizes,
        index=index_bytes,
        chunks=chunk_bytes,
        n_chunks=n_chunks,
        fixed=fixed,
        one=one,
        tree=tree,
        gaps_total=total - tree + gaps,
        chunk_shape=(cs, cc),
        shard=(shard_rows, shard_cols),
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    steps = 32 if args.quick else 256
    tmp = Path(tempfile.mkdtemp(prefix="bench_sparse_"))
    try:
        res = [run(p, steps, tmp) for p in PS]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    cmd = "python benchmarks/bench_sparse.py" + (" --quick" if args.quick else "")
    r0 = res[0]
    print(
        f"# {cmd}: {steps} steps of {list(SHAPE)}, time_axis=0; store chunks "
        f"{r0['chunk_shape']}, shards {r0['shard']}\n"
    )
    print(
        "| p | entropy limit bytes | store bytes | store / limit | codec, one chunk | "
        "codec, store chunks | chunks (+CRC) | shard index | zarr.json | index | summary | "
        "summary_axis0 | GAPS prototype |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in res:
        s = r["sizes"]
        lim = r["limit"]
        print(
            f"| {r['p']} | {lim:,.0f} | {r['total']:,} | {lim / r['total']:.3f} | "
            f"{lim / r['one']:.3f} | {lim / r['tree']:.3f} | {r['chunks']:,} | {r['index']:,} | "
            f"{s['zarr.json']:,} | {s['index']:,} | {s['summary']:,} | {s['summary_axis0']:,} | "
            f"{lim / r['gaps_total']:.3f} |"
        )


if __name__ == "__main__":
    main()
