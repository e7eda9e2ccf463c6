"""Shard checks and direct shard reads: arrays refused before their data is read,
shard files checked against their header and index, and rows of default spike
segments read straight from their shard files (:func:`_read_spike_rows`).

Thread ownership: the caller; the decoding of a large read is shared with one thread
of the read pool (:mod:`spikestore.reader._pool`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .._shard import (
    ABSENT,
    check_chunk,
    chunk_spans,
    footer_size,
    index_size,
    is_sharding_codec,
    parse_index,
    parse_shard_header,
)
from .._zarr import buffer_prototype
from ..errors import ReadError
from ..format import MAX_CHUNK_BYTES, MAX_CHUNKS_PER_SHARD
from ._direct import confined_root
from ._pool import _empty_cpu, _share
from ._rows import chunk_rows

__all__ = [
    "Place",
]


def _check_array(arr: Any, where: str, name: str) -> None:
    """Refuse, before reading any of its data, an array whose chunks are larger than a
    writer ever makes them (:data:`~spikestore.format.MAX_CHUNK_BYTES` decoded,
    :data:`~spikestore.format.MAX_CHUNKS_PER_SHARD` to a shard): ReadError naming its
    ``zarr.json``. A crafted 78 KB store could otherwise make one read decode a 2 GiB
    chunk."""
    inner = arr.chunks
    outer = arr.shards or inner
    itemsize = np.dtype(arr.dtype).itemsize if arr.dtype.kind != "O" else 8
    nbytes = int(np.prod(inner, dtype=object)) * itemsize
    count = int(np.prod([-(-o // i) for o, i in zip(outer, inner, strict=True)], dtype=object))
    file = f"{arr.path}/zarr.json" if arr.path else "zarr.json"
    if len(inner) != arr.ndim or nbytes > MAX_CHUNK_BYTES or count > MAX_CHUNKS_PER_SHARD:
        raise ReadError(
            f"{where}: {file} declares chunks of {list(inner)} {arr.dtype} ({nbytes} bytes "
            f"decoded) in shards of {list(outer)} ({count} chunks), more than a writer "
            f"makes ({MAX_CHUNK_BYTES} bytes a chunk, {MAX_CHUNKS_PER_SHARD} chunks a "
            f"shard): array {name} is refused unread"
        )


def _shard_keys(arr: Any, r0: int, r1: int) -> list[tuple[int, str, tuple[int, ...]]]:
    """(first row, store key, coordinates) of every shard (or chunk) holding rows
    [r0, r1)."""
    outer = arr.shards or arr.chunks
    rest = [range(-(-d // o)) for d, o in zip(arr.shape[1:], outer[1:], strict=True)]
    out = []
    for s0 in range(r0 // outer[0], (r1 - 1) // outer[0] + 1):
        for tail in itertools.product(*rest):
            key = arr.metadata.encode_chunk_key((s0, *tail))
            out.append((s0 * outer[0], f"{arr.path}/{key}" if arr.path else key, (s0, *tail)))
    return out


def _shard_problem(
    arr: Any, key: str, coords: tuple[int, ...], rows: int, seg_id: str
) -> str | None:
    """What is wrong with shard file ``key`` (at ``coords``) of a segment with an id
    (format 1.6), read through Zarr, or None when its shard header names the segment
    and the shard and its index lists every chunk of the segment's first ``rows`` rows
    (Zarr would read an absent chunk as zeros)."""
    from zarr.abc.store import SuffixByteRequest

    from .._zarr import sync

    inner, outer = arr.chunks, arr.shards
    grid = tuple(o // i for o, i in zip(outer, inner, strict=True))
    n = math.prod(grid)
    nbytes_index = index_size(n)
    nbytes_end = footer_size(arr.ndim, n, header=True)
    buf = sync(
        arr.store_path.store.get(key, buffer_prototype(), SuffixByteRequest(nbytes_end))
    )
    if buf is None:
        return f"shard {key} is missing from the store"
    data = buf.to_bytes()
    if len(data) < nbytes_end:
        return f"shard {key}: {len(data)} bytes cannot hold its shard header and index"
    try:
        index = parse_index(data, grid)
    except ValueError as exc:
        return f"shard {key}: {exc}"
    try:
        got_id, got, _ = parse_shard_header(data[: len(data) - nbytes_index], arr.ndim, n)
    except ValueError as exc:
        return f"shard {key}: {exc}; its segment's files have shard headers"
    if got_id != seg_id:
        return f"shard {key} names segment {got_id}, not {seg_id}: a file of another array"
    if got != coords:
        return (
            f"shard {key} holds shard {got} of its array, not {coords}: shard files were "
            "moved or swapped"
        )
    wanted = -(-(min(rows, (coords[0] + 1) * outer[0]) - coords[0] * outer[0]) // inner[0])
    absent = (index[:wanted, ..., 0] == ABSENT) & (index[:wanted, ..., 1] == ABSENT)
    if absent.any():
        at = tuple(int(v) for v in np.argwhere(absent)[0])
        return f"shard {key}: inner chunk {at} of committed rows is absent"
    return None


def _spike_shards(arr: Any) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """``(inner chunk, shard)`` shapes of a segment array whose codec chain is exactly
    the one spikestore writes for default spike segments (:func:`~spikestore.format.\
sharding_codec` around ``spikestore.spikes`` and ``crc32c``), else None.

    Such arrays are read by :func:`_read_spike_rows` instead of Zarr; anything else
    (another codec or index layout, another dtype or rank) goes through Zarr.
    """
    from zarr.codecs import Crc32cCodec

    from ..codecs.spikes import SpikeCodec

    codecs = tuple(getattr(arr.metadata, "codecs", ()))
    if arr.ndim != 2 or arr.dtype != np.uint8 or len(codecs) != 1:
        return None
    sc = codecs[0]
    if (
        not is_sharding_codec(sc)
        or len(sc.codecs) != 2
        or type(sc.codecs[0]) is not SpikeCodec
        or type(sc.codecs[1]) is not Crc32cCodec
        or arr.metadata.fill_value != 0
    ):
        return None
    inner = tuple(int(c) for c in sc.chunk_shape)
    shard = tuple(int(s) for s in arr.shards)
    if len(inner) != 2 or min(inner) < 1 or any(s % c for s, c in zip(shard, inner, strict=True)):
        return None
    return (inner[0], inner[1]), (shard[0], shard[1])


class _DamagedRows(ValueError):
    """Rows ``[lo, hi)`` of a segment cannot be read: their shard or chunk is damaged."""

    def __init__(self, message: str, lo: int, hi: int) -> None:
        super().__init__(message)
        self.lo, self.hi = lo, hi


def _read_failure(exc: BaseException, rows: np.ndarray, steps: np.ndarray, name: str) -> str:
    """``"steps a..b (name): why"`` for a failed read of ``steps`` (stored in ``rows``):
    for a :class:`_DamagedRows`, only the steps it names."""
    hit = np.asarray(steps)
    why = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, _DamagedRows):
        why = str(exc)
        inside = hit[(rows >= exc.lo) & (rows < exc.hi)]
        hit = inside if inside.size else hit
    return f"steps {int(hit.min())}..{int(hit.max())} ({name}): {why}"


#: A shard is read whole when at least this share of its inner chunk rows is wanted,
#: else its index and then each wanted chunk row by byte ranges.
_WHOLE_SHARD_SHARE = 0.5


#: ``place(a, b, block, col0, width)``: rows ``a:b`` of the result, packed columns
#: ``col0:col0 + width``, are ``block[:, :width]`` (None: all zero).
Place = Callable[[int, int, "np.ndarray | None", int, int], None]


def _read_spike_rows(
    arr: Any,
    shapes: tuple[tuple[int, int], tuple[int, int]],
    rows: np.ndarray,
    place: Place | None = None,
    seg_id: str | None = None,
    cols: tuple[int, int] | None = None,
) -> np.ndarray | None:
    """Rows ``rows`` (sorted, unique) of a sharded spike segment (see
    :func:`_spike_shards`), read through its store and decoded with
    :func:`spikestore.codecs.spikes.decode_chunk`, as Zarr would decode them.

    Returns the packed rows, or, given ``place``, hands each decoded chunk's part to
    it instead (on the reader's threads, when there is much to decode) and returns
    None: the caller can unpack each chunk while it is in cache.

    Each shard file is read whole (one ``get``) when most of it is wanted, else its
    index (a suffix range) and the wanted chunk rows (one byte range each). The
    index's and every chunk's CRC-32C are checked; a damaged or truncated shard, or an
    absent chunk of a wanted row (every committed row's chunk is written), raises
    :class:`_DamagedRows` naming the shard and chunk. ``cols`` (a byte column range,
    with ``place``): only the chunks holding those columns are read and decoded (one
    neuron's history). For a segment with an id
    (``seg_id``, format 1.6) the shard header read with the index must name that
    segment and the shard's coordinates, and each chunk must end with the CRC-32C it
    lists: a shard file moved or swapped, or one read while a replaced store's writer
    put another file in its place, is an error, never other rows.
    """
    from zarr.abc.store import RangeByteRequest, SuffixByteRequest

    from .._zarr import sync
    from ..codecs.spikes import decode_chunk

    (c0, c1), (s0, s1) = shapes
    g0, g1 = s0 // c0, s1 // c1
    nbytes_index = index_size(g0 * g1)
    nbytes_end = footer_size(2, g0 * g1, header=seg_id is not None)
    ncols = int(arr.shape[1])
    out = None
    if place is None:
        out = packed = np.empty((rows.size, ncols), np.uint8)

        def place(a: int, b: int, block: np.ndarray | None, col0: int, width: int) -> None:
            if block is None:
                packed[a:b, col0 : col0 + width] = 0
            else:
                packed[a:b, col0 : col0 + width] = block[:, :width]

    if not rows.size or not ncols:
        return out
    store = arr.store_path.store
    proto = buffer_prototype()
    lo_col, hi_col = (0, ncols) if cols is None else (max(0, cols[0]), min(ncols, cols[1]))
    col_shards = range(lo_col // s1, -(-hi_col // s1)) if hi_col > lo_col else range(0)
    # (shard key, shard row, shard column, wanted chunk rows of the shard)
    plan = []
    for s in np.unique(rows // s0):
        crows = np.unique((rows[(rows >= s * s0) & (rows < (s + 1) * s0)] - s * s0) // c0)
        for j in col_shards:
            key = arr.metadata.encode_chunk_key((int(s), j))
            key = f"{arr.path}/{key}" if arr.path else key
            plan.append((key, int(s), j, crows))

    def whole(crows: np.ndarray) -> bool:
        return crows.size >= _WHOLE_SHARD_SHARE * g0

    async def first() -> list[Any]:
        import asyncio

        return await asyncio.gather(
            *(
                store.get(key, proto, None if whole(cr) else SuffixByteRequest(nbytes_end))
                for key, _, _, cr in plan
            )
        )

    def index_of(
        key: str, s: int, j: int, tail: Any, end: int
    ) -> tuple[np.ndarray, np.ndarray | None]:
        def damaged(message: str) -> _DamagedRows:
            return _DamagedRows(f"shard {key}: {message}", s * s0, (s + 1) * s0)

        if tail is None:
            raise _MissingShard(f"shard {key}: missing from the store", s * s0, (s + 1) * s0)
        if len(tail) < nbytes_end:
            raise damaged(f"{len(tail)} bytes cannot hold its {nbytes_end}-byte index")
        try:
            index = parse_index(tail, (g0, g1))
        except ValueError as exc:
            raise damaged(str(exc)) from None
        trailers = None
        if seg_id is not None:
            head = tail[len(tail) - nbytes_end : len(tail) - nbytes_index].tobytes()
            try:
                got_id, coords, table = parse_shard_header(head, 2, g0 * g1)
            except ValueError as exc:
                raise damaged(f"{exc}; its segment's files have shard headers") from None
            if got_id != seg_id:
                raise _ForeignShard(
                    f"shard {key}: its shard header names segment {got_id}, not this "
                    f"segment ({seg_id}): a file of another array",
                    s * s0,
                    (s + 1) * s0,
                )
            if coords != (s, j):
                raise damaged(
                    f"the file holds shard {coords} of its array, not ({s}, {j}): shard "
                    "files were moved or swapped"
                )
            trailers = np.frombuffer(table, "<u4").reshape(g0, g1)
        try:
            return chunk_spans(index, end), trailers
        except ValueError as exc:
            raise damaged(str(exc)) from None

    root = confined_root(store)
    if root is None:
        heads = sync(first())
    else:
        # spikestore's local store: read here, without a round trip through Zarr's loop
        heads = [
            _local_get(root, key, None if whole(cr) else SuffixByteRequest(nbytes_end))
            for key, _, _, cr in plan
        ]
    # (chunk bytes or None, shard key, first row, first column, chunk column, trailer)
    jobs: list[tuple[Any, str, int, int, int, int | None]] = []
    ranged: list[tuple[int, str, int, int]] = []  # (plan entry, key, start, stop)
    indexes = []
    for n, ((key, s, j, crows), head) in enumerate(zip(plan, heads, strict=True)):
        if head is not None:
            head = head.as_numpy_array()
        if whole(crows):
            end = 0 if head is None else len(head) - nbytes_end
            idx, trailers = index_of(key, s, j, head, end)
            indexes.append((idx, trailers, head, 0))
            continue
        # The chunk rows must lie before the index; without the file size this is what
        # the byte range returned (checked below) that bounds them.
        idx, trailers = index_of(key, s, j, head, 2**62)
        sub = idx[crows]
        present = sub[..., 0] >= 0
        if present.any():
            lo = int(sub[..., 0][present].min())
            hi = int((sub[..., 0] + sub[..., 1])[present].max())
            ranged.append((n, key, lo, hi))
        indexes.append((idx, trailers, None, 0))

    if ranged:

        async def second() -> list[Any]:
            import asyncio

            return await asyncio.gather(
                *(store.get(key, proto, RangeByteRequest(lo, hi)) for _, key, lo, hi in ranged)
            )

        if root is None:
            bufs = sync(second())
        else:
            bufs = [_local_get(root, key, RangeByteRequest(lo, hi)) for _, key, lo, hi in ranged]
        for (n, key, lo, hi), buf in zip(ranged, bufs, strict=True):
            data = None if buf is None else buf.as_numpy_array()
            if data is None or len(data) != hi - lo:
                got = 0 if data is None else len(data)
                s = plan[n][1]
                raise _DamagedRows(
                    f"shard {key}: bytes {lo}..{hi} of its chunks are truncated ({got} read)",
                    s * s0,
                    (s + 1) * s0,
                )
            indexes[n] = (indexes[n][0], indexes[n][1], data, lo)

    for (key, s, j, crows), (idx, trailers, data, base) in zip(plan, indexes, strict=True):
        for cr in crows:
            for cc in range(g1):
                if not lo_col - c1 < j * s1 + cc * c1 < hi_col:
                    continue  # no wanted column
                off, size = (int(v) for v in idx[cr, cc])
                chunk = None if off < 0 else data[off - base : off - base + size]
                want = None if trailers is None else int(trailers[cr, cc])
                jobs.append((chunk, key, s * s0 + int(cr) * c0, j * s1 + cc * c1, cc, want))

    def decode(job: tuple[Any, str, int, int, int, int | None]) -> None:
        chunk, key, r0, col0, cc, want = job
        a, b = np.searchsorted(rows, [r0, r0 + c0])
        if a == b or col0 >= ncols:
            return
        width = min(c1, ncols - col0)
        where = f"shard {key}: inner chunk ({(r0 % s0) // c0}, {cc})"
        if chunk is None:
            # Every chunk of a committed row is written, zeros too: a lost one must not
            # read as zeros (the fill value).
            raise _DamagedRows(
                f"{where} is absent, though rows it holds are committed", r0, r0 + c0
            )
        try:
            body, crc = check_chunk(chunk)
        except ValueError as exc:
            raise _DamagedRows(f"{where} {exc}", r0, r0 + c0) from None
        if want is not None and crc != want:
            raise _DamagedRows(
                f"{where} is not the chunk its shard header lists (the file was replaced "
                "while it was read, or pieced together from others)",
                r0,
                r0 + c0,
            )
        sel = rows[a:b] - r0
        first, stop = int(sel[0]), int(sel[-1]) + 1
        try:
            if 2 * (stop - first) <= c0:
                # a few rows of the chunk: decode only those (same checks)
                dec = chunk_rows(body, (c0, c1), first, stop)
                sel = sel - first
            else:
                dec = decode_chunk(body, (c0, c1))
        except ValueError as exc:
            raise _DamagedRows(f"{where}: {exc}", r0, r0 + c0) from exc
        if sel[-1] - sel[0] == b - a - 1:
            place(int(a), int(b), dec[int(sel[0]) : int(sel[-1]) + 1], col0, width)
        else:
            place(int(a), int(b), dec[sel], col0, width)

    _share(decode, jobs, rows.size * ncols * 8)
    return out


def _local_get(root: Any, key: str, byte_range: Any) -> Any:
    """``store.get(key, byte_range)`` of spikestore's local store at ``root``, read in
    this thread: an object with ``as_numpy_array()``, or None for a missing file."""
    from ..storage._localfs import read_file

    data = read_file(root, key, byte_range)
    return None if data is None else _Bytes(data)


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def as_numpy_array(self) -> np.ndarray:
        return np.frombuffer(self.data, np.uint8)


class _MissingShard(_DamagedRows):
    """A shard file is not in the store (reading again would not find it either)."""


class _ForeignShard(_DamagedRows):
    """A shard file's header names another segment: a file of another array, or of the
    store that replaced the one a reader opened."""


def _unpacker(
    seg: dict[str, Any], n: int, shapes: tuple[tuple[int, int], tuple[int, int]], ncols: int
) -> tuple[torch.Tensor, Place] | None:
    """An output tensor for ``n`` records of spike segment ``seg`` (in shards of
    ``shapes``, rows of ``ncols`` bytes), and the ``place`` for :func:`_read_spike_rows`
    that unpacks each decoded chunk into it while the chunk is in cache; None for
    records without elements, or time-last records in chunks narrower than a row (those
    are unpacked whole)."""
    from ..codecs import torch_dtype

    shape = tuple(int(d) for d in seg["shape"])
    numel = int(np.prod(shape, dtype=np.int64))
    perm = seg.get("permute")
    if not numel or (perm is not None and shapes[0][1] < ncols):
        return None
    out = _empty_cpu((n, *shape), torch_dtype(seg["dtype"]))
    dst = out.permute(0, *[int(p) + 1 for p in perm]) if perm is not None else out.view(n, -1)

    def place(a: int, b: int, block: np.ndarray | None, col0: int, width: int) -> None:
        bit0 = col0 * 8
        count = min(width * 8, numel - bit0)
        if block is None:
            (dst[a:b] if perm is not None else dst[a:b, bit0 : bit0 + count]).zero_()
            return
        # a few rows at a time, so the unpacked bits are still in cache for the cast
        step = max(1, (1 << 20) // count)
        for i in range(0, b - a, step):
            bits = torch.from_numpy(np.unpackbits(block[i : i + step, :width], axis=1, count=count))
            j = a + i
            if perm is not None:
                dst[j : j + len(bits)].copy_(bits.view(len(bits), *dst.shape[1:]))
            else:
                dst[j : j + len(bits), bit0 : bit0 + count].copy_(bits)

    return out, place
