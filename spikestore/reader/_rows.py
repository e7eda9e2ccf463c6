"""A few rows of a ``spikestore.spikes`` chunk, decoded without building the others.

:func:`~spikestore.codecs.spikes.decode_chunk` builds a whole chunk (16 or more steps);
a read of one step wants one of its rows. For a TREE chunk (the codec's usual mode)
:func:`chunk_rows` decodes every stream and checks everything ``decode_chunk`` checks,
but places only the bytes of the wanted rows: their level-0 values are found by
counting the set bits of level 1 before them. Other modes are decoded whole.

Thread ownership: any (pure functions).
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

__all__ = ["chunk_rows"]


def _popcount(b: np.ndarray) -> int:
    """Set bits of the ``uint8`` array ``b``."""
    if not b.size:
        return 0
    if hasattr(np, "bitwise_count"):  # numpy 2
        return int(np.bitwise_count(b).sum(dtype=np.int64))
    return int(np.count_nonzero(np.unpackbits(b)))


def chunk_rows(data: Any, shape: tuple[int, int], r0: int, r1: int) -> np.ndarray:
    """Rows ``r0:r1`` of ``decode_chunk(data, shape)`` (a new ``uint8`` array of
    ``(r1 - r0, shape[1])``), with the same checks: ValueError for bytes that
    ``decode_chunk`` refuses."""
    from ..codecs import spikes as sp

    rows, cols = (int(s) for s in shape)
    raw: Any = data.reshape(-1) if isinstance(data, np.ndarray) else data
    buf = memoryview(raw).cast("B")
    if len(buf) < sp._HEADER.size + sp._TREE_HEADER.size:
        return sp.decode_chunk(data, shape)[r0:r1]
    magic, version, mode, hrows, hcols = sp._HEADER.unpack_from(buf)
    rest = buf[sp._HEADER.size :]
    (depth,) = sp._TREE_HEADER.unpack_from(rest)
    if (
        magic != sp._MAGIC
        or not 1 <= version <= sp.FORMAT_VERSION
        or mode != sp.MODE_TREE
        or (hrows, hcols) != (rows, cols)
        or not 1 <= depth <= sp._MAX_DEPTH
        or rows * cols > sp.MAX_CHUNK_BYTES
    ):
        # another mode, or bytes decode_chunk refuses (it says why)
        return sp.decode_chunk(data, shape)[r0:r1]
    n0 = rows * cols
    nstreams = depth + 1
    table_end = sp._TREE_HEADER.size + 4 * nstreams
    if len(rest) < table_end:
        raise ValueError("spike chunk: truncated stream-size table")
    sizes = struct.unpack_from(f"<{nstreams}I", rest, sp._TREE_HEADER.size)
    if table_end + sum(sizes) != len(rest):
        raise ValueError(
            f"spike chunk: streams need {table_end + sum(sizes)} payload bytes, got {len(rest)}"
        )
    level = sp._level_sizes(n0, depth)
    frames, pos = [], table_end
    for size in sizes:
        frames.append(rest[pos : pos + size])
        pos += size
    top = sp._decode_stream(frames[0], level[depth], f"level-{depth} bitmap")
    # Level 1 as (positions of its non-zero bytes or None: all of it, their values),
    # built as decode_chunk builds it.
    idx: np.ndarray | None = None
    vals = top
    if depth >= 2:
        idx = np.flatnonzero(np.unpackbits(top, count=level[depth - 1]).view(np.bool_))
        vals = sp._decode_stream(frames[1], idx.size, f"level-{depth - 1} values")
        for i in range(depth - 2, 0, -1):
            if np.any(vals == 0):
                raise ValueError(f"spike chunk: level-{i + 1} values contain a zero byte")
            bits = np.flatnonzero(np.unpackbits(vals).view(np.bool_))
            idx = idx[bits >> 3] * 8 + (bits & 7)
            if idx.size and idx[-1] >= level[i]:
                raise ValueError(f"spike chunk: level-{i + 1} marks a byte beyond level {i}")
            vals = sp._decode_stream(frames[depth - i], idx.size, f"level-{i} values")
        if np.any(vals == 0):
            raise ValueError("spike chunk: level-1 values contain a zero byte")
        last = int(vals[-1]) if vals.size else 0
        if idx.size and int(idx[-1]) * 8 + 7 - ((last & -last).bit_length() - 1) >= n0:
            raise ValueError("spike chunk: level-1 marks a byte beyond level 0")
        total = _popcount(vals)
    else:
        # one level above the chunk: its pad bits (past n0) are ignored, as
        # np.unpackbits(top, count=n0) ignores them
        pad = 8 * len(top) - n0
        total = _popcount(top) - (_popcount(top[-1:] & ((1 << pad) - 1)) if pad else 0)
    values = sp._decode_stream(frames[depth], total, "level-0 values")
    # The wanted bytes [a, b) of level 0 are marked by level-1 bytes [a // 8, -(-b // 8)).
    a, b = r0 * cols, r1 * cols
    if idx is None:
        k0, k1 = a // 8, -(-b // 8)
        base = np.arange(k0, k1, dtype=np.int64)
    else:
        k0, k1 = (int(v) for v in np.searchsorted(idx, [a // 8, -(-b // 8)]))
        base = idx[k0:k1]
    before = _popcount(vals[:k0])
    sub = vals[k0:k1]
    bits = np.flatnonzero(np.unpackbits(sub).view(np.bool_))
    at = base[bits >> 3] * 8 + (bits & 7)
    at = at[at < n0]  # a depth-1 bitmap's pad bits (past n0, at its end) mark no value
    got = values[before : before + at.size]
    keep = (at >= a) & (at < b)
    out = np.zeros(b - a, np.uint8)
    out[at[keep] - a] = got[keep]
    return out.reshape(r1 - r0, cols)
