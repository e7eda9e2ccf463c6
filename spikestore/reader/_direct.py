"""Rows of raw (non-spike) segments, or one cell of them (a neuron's history), read
straight from the shard files of a local store: each wanted inner chunk read by one
``pread``, its CRC-32C (and, format 1.6, the one its shard header lists) checked, and
its bytes decoded into the output (Blosc chunks stored as they were are not decoded at
all). Uncompressed chunks that fill a block of the output are read into it directly,
a run of them lying back to back in the file by one ``preadv`` (a step of a large
record: its one-step chunks tile it), then checked. Segments whose codec chain is not
one of those handled here (:func:`raw_layout`) are read through Zarr.

Thread ownership: the caller; the chunks of a large read are shared with one thread
of the read pool (:mod:`spikestore.reader._pool`).
"""

from __future__ import annotations

import itertools
import math
import struct
import sys
import threading
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np

from .._shard import (
    check_chunk,
    footer_size,
    index_size,
    index_spans,
    is_sharding_codec,
    parse_shard_header,
)
from ._pool import _share

__all__ = ["RawLayout", "cell_selection", "confined_root", "raw_layout", "read_raw_rows"]

#: Blosc 1's chunk header: version, format version, flags, typesize, then the
#: decoded size, the block size and the encoded size (uint32 each).
_BLOSC = struct.Struct("<BBBBIII")
_BLOSC_MEMCPYED = 0x02


def confined_root(store: Any) -> Path | None:
    """The folder of ``store`` when it is spikestore's confined local store (its files
    reached without following links, see :mod:`spikestore.storage._localfs`), else
    None: such a store's files are read here directly, any other store through Zarr."""
    from ..storage._localfs import ConfinedLocalStore

    if isinstance(store, ConfinedLocalStore):
        return Path(str(store.root))
    return None


class RawLayout:
    """How a raw segment's shard files hold its chunks: inner chunk and shard shapes,
    dtype, and whether the chunks are Blosc-compressed."""

    def __init__(
        self,
        inner: tuple[int, ...],
        shard: tuple[int, ...],
        dtype: Any,
        blosc: bool,
        root: Path,
    ):
        self.inner, self.shard, self.dtype, self.blosc = inner, shard, np.dtype(dtype), blosc
        #: The folder of the array's confined local store (see :func:`confined_root`).
        self.root = root
        self.grid = tuple(s // c for s, c in zip(shard, inner, strict=True))
        self.chunk_bytes = math.prod(inner) * self.dtype.itemsize
        #: :func:`_places` by the array's shape past its first axis and the selected
        #: cell (a few kept: a neuron's history has its own).
        self.places: dict[tuple[Any, ...], Any] = {}
        #: :func:`_footer` of the shard files read last, by key: the file it was read
        #: from (:attr:`~spikestore.storage._localfs.ConfinedFile.ident`) and what it gave.
        self.footers: dict[str, tuple[Any, tuple[list[tuple[int, int]], list[int] | None]]] = {}


def raw_layout(arr: Any) -> RawLayout | None:
    """The :class:`RawLayout` of a sharded array of a local store whose inner codec chain
    is ``bytes`` (little-endian), optionally ``blosc``, then ``crc32c``, in shards laid
    out as :func:`~spikestore._shard.sharding_codec` makes them; None for any other
    array (read through Zarr)."""
    from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec
    from zarr.codecs.bytes import Endian

    root = confined_root(arr.store_path.store)
    if root is None or sys.byteorder != "little":
        return None
    codecs = tuple(getattr(arr.metadata, "codecs", ()))
    if len(codecs) != 1 or not is_sharding_codec(codecs[0]):
        return None
    try:
        dtype = np.dtype(arr.dtype)
    except TypeError:
        return None
    if dtype.kind not in "biufc" or dtype.hasobject:
        return None
    inner_codecs = tuple(codecs[0].codecs)
    if not 2 <= len(inner_codecs) <= 3:
        return None
    first, last = inner_codecs[0], inner_codecs[-1]
    if type(first) is not BytesCodec or type(last) is not Crc32cCodec:
        return None
    if first.endian not in (Endian.little, None) or (first.endian is None and dtype.itemsize > 1):
        return None
    if len(inner_codecs) == 3 and type(inner_codecs[1]) is not BloscCodec:
        return None
    inner = tuple(int(c) for c in codecs[0].chunk_shape)
    shard = tuple(int(s) for s in arr.shards)
    if (
        len(inner) != arr.ndim
        or min(inner, default=0) < 1
        or any(s % c for s, c in zip(shard, inner, strict=True))
    ):
        return None
    return RawLayout(inner, shard, dtype.newbyteorder("<"), len(inner_codecs) == 3, root)


#: Reads of at least this many output bytes share their chunks with a helper thread.
_PARALLEL_BYTES = 16 << 20

_SCRATCH = threading.local()


def _scratch(size: int) -> np.ndarray:
    """``size`` bytes of this thread's scratch buffer, which the next call reuses: a chunk
    read into it is decoded and copied out before the thread reads the next one, and
    memory already touched spares the page faults of a fresh buffer per chunk."""
    buf = getattr(_SCRATCH, "buf", None)
    if size > _SCRATCH_BYTES:
        return np.empty(size, np.uint8)  # kept only while it is used
    if buf is None or len(buf) < size:
        buf = _SCRATCH.buf = np.empty(_SCRATCH_BYTES, np.uint8)
    return buf[:size]


#: The scratch buffer each thread keeps (larger chunks get one of their own).
_SCRATCH_BYTES = 4 << 20


def _decode(body: np.ndarray, lay: RawLayout) -> np.ndarray:
    """An inner chunk's bytes (its CRC-32C checked and cut off) as an array of its shape;
    a view of ``body`` where no decoding is needed. ValueError if they are not one."""
    n = lay.chunk_bytes
    if lay.blosc:
        if len(body) < _BLOSC.size:
            raise ValueError(f"{len(body)} bytes cannot hold a Blosc header")
        version, _, flags, _, nbytes, _, cbytes = _BLOSC.unpack(body[: _BLOSC.size].tobytes())
        if nbytes != n or cbytes != len(body):
            raise ValueError(
                f"its Blosc header says {nbytes} bytes decoded from {cbytes}, not {n} from "
                f"{len(body)}"
            )
        if flags & _BLOSC_MEMCPYED and version == 2 and cbytes == _BLOSC.size + n:
            raw = body[_BLOSC.size :]  # stored as it was: no decoding
        else:
            from numcodecs.blosc import decompress

            raw = np.empty(n, np.uint8)
            try:
                decompress(body, raw)
            except Exception as exc:
                raise ValueError(f"is not a valid Blosc chunk: {exc}") from None
    else:
        if len(body) != n:
            raise ValueError(f"holds {len(body)} bytes, not {n}")
        raw = body
    return raw.view(lay.dtype).reshape(lay.inner)


def _footer(
    f: Any, key: str, coords: tuple[int, ...], lay: RawLayout, seg_id: str | None, rows: Any
) -> tuple[list[tuple[int, int]], list[int] | None]:
    """The spans (``(offset, nbytes)``, ``(-1, -1)`` absent) of shard file ``f``'s inner
    chunks in C order (:func:`~spikestore._shard.index_spans`), and the CRC-32C its
    shard header lists for each (None without an id), both checked (see
    :func:`read_raw_rows`); ``rows``: the rows the shard holds, for the error."""
    from ._shards import _DamagedRows, _ForeignShard, _MissingShard

    ndim, nchunks = len(lay.shard), math.prod(lay.grid)
    nbytes_index = index_size(nchunks)
    nbytes_end = footer_size(ndim, nchunks, header=seg_id is not None)

    def damaged(msg: str) -> _DamagedRows:
        return _DamagedRows(f"shard {key}: {msg}", *rows)

    if f is None:
        raise _MissingShard(f"shard {key}: missing from the store", *rows)
    if f.size < nbytes_end:
        raise damaged(f"{f.size} bytes cannot hold its {nbytes_end}-byte index")
    foot = np.empty(nbytes_end, np.uint8)
    if f.read_into(f.size - nbytes_end, foot) != nbytes_end:
        raise damaged("truncated while it was read")
    try:
        spans = index_spans(foot, lay.grid, f.size - nbytes_end)
    except ValueError as exc:
        raise damaged(str(exc)) from None
    if seg_id is None:
        return spans, None
    head = foot[: nbytes_end - nbytes_index].tobytes()
    try:
        got_id, got, table = parse_shard_header(head, ndim, nchunks)
    except ValueError as exc:
        raise damaged(f"{exc}; its segment's files have shard headers") from None
    if got_id != seg_id:
        raise _ForeignShard(
            f"shard {key}: its shard header names segment {got_id}, not this segment "
            f"({seg_id}): a file of another array",
            *rows,
        )
    if got != coords:
        raise damaged(
            f"the file holds shard {got} of its array, not {coords}: shard files were moved "
            "or swapped"
        )
    return spans, np.frombuffer(table, "<u4").tolist()


#: Shard files whose :func:`_footer` a :class:`RawLayout` keeps, the first read
#: dropped first: each a few KB (a span and a CRC-32C an inner chunk), and a float
#: layer of 2,000 steps of 1.6 MB has 500 shard files (64 were kept, and cleared all
#: at once when full: random steps of a 300-step layer parsed 191 footers in 400 reads).
_FOOTERS = 1024


def _footer_of(
    f: Any, key: str, coords: tuple[int, ...], lay: RawLayout, seg_id: str | None, r0: int
) -> tuple[list[tuple[int, int]], list[int] | None]:
    """:func:`_footer` of shard file ``f`` (holding rows from ``r0``): as checked when
    this very file was read before (same device, inode, size, modification and change
    times: a writer replaces a shard file by renaming a new one over it, and any change
    to a file in place moves its change time), else read and checked now."""
    held = lay.footers.get(key)
    if f is not None and held is not None and held[0] == f.ident:
        return held[1]
    got = _footer(f, key, coords, lay, seg_id, (r0, r0 + lay.shard[0]))
    if len(lay.footers) >= _FOOTERS:
        try:
            del lay.footers[next(iter(lay.footers))]
        except (KeyError, RuntimeError, StopIteration):  # another thread dropped one
            pass
    lay.footers[key] = (f.ident, got)
    return got


def cell_selection(rest: tuple[Any, ...], shape: tuple[int, ...]) -> bool:
    """Whether ``rest`` (a selection of the axes after the first, of lengths ``shape``)
    is one that :func:`read_raw_rows` takes: an int from 0 to the axis' length or
    ``slice(None)`` per axis, at most one per axis (anything else, negative indices
    too, is read through Zarr)."""
    return len(rest) <= len(shape) and all(
        (isinstance(r, int | np.integer) and not isinstance(r, bool) and 0 <= r < n)
        or (isinstance(r, slice) and r == slice(None))
        for r, n in zip(rest, shape, strict=False)
    )


def _places(
    shape: tuple[int, ...], lay: RawLayout, cells: list[int | None], ranges: list[range]
) -> list[tuple[tuple[int, ...], list[Any], list[int] | None]]:
    """Where each inner chunk of a chunk row lies, for every shard of a row of shards:
    (its position in the chunk row, the output's and the chunk's selections, and
    whether the chunk is all taken), clipped at the array's edge (chunks wholly past
    it, or not holding the selected cell, are skipped; a selected axis is dropped from
    the output)."""
    inner, shard, grid = lay.inner, lay.shard, lay.grid
    tails: list[tuple[tuple[int, ...], list[Any], list[int] | None]] = []
    for tail in itertools.product(*ranges):
        places = []
        for pos, cc in enumerate(itertools.product(*(range(g) for g in grid[1:]))):
            starts = [
                t * sh + c * ci for t, sh, c, ci in zip(tail, shard[1:], cc, inner[1:], strict=True)
            ]
            widths = [
                min(ci, d - st) for ci, d, st in zip(inner[1:], shape[1:], starts, strict=True)
            ]
            if min(widths, default=1) <= 0:
                continue
            if any(
                c is not None and not st <= c < st + w
                for c, st, w in zip(cells, starts, widths, strict=True)
            ):
                continue
            dst = tuple(
                slice(st, st + w)
                for st, w, c in zip(starts, widths, cells, strict=True)
                if c is None
            )
            src = tuple(
                slice(0, w) if c is None else c - st
                for st, w, c in zip(starts, widths, cells, strict=True)
            )
            whole = widths == list(inner[1:]) and all(c is None for c in cells)
            places.append((pos, cc, dst, src, whole))
        tails.append((tail, places, _tiled(shape, lay, places)))
    return tails


def _tiled(shape: tuple[int, ...], lay: RawLayout, places: list[Any]) -> list[int] | None:
    """The positions of ``places`` in the order their chunks tile a whole row of the
    output, one after the other in memory, where chunks of one row do (a chunk of one
    step whose later axes are whole: large records); else None."""
    if lay.inner[0] != 1 or not places or not all(p[4] for p in places):
        return None
    per = math.prod(lay.inner[1:])
    if per * len(places) != math.prod(shape[1:]):
        return None
    firsts = [
        int(np.ravel_multi_index(tuple(d.start for d in p[2]), shape[1:])) if p[2] else 0
        for p in places
    ]
    order = np.argsort(firsts)
    if any(firsts[int(o)] != k * per for k, o in enumerate(order)):
        return None
    return [int(places[int(o)][0]) for o in order]


#: Inner chunks read by one ``preadv`` at most (two buffers each: Linux's ``IOV_MAX``
#: is 1024).
_IN_PLACE_CHUNKS = 512


def _read_run(
    f: Any, start: int, bodies: list[np.ndarray], size: int, wants: list[int] | None
) -> bool:
    """Read ``len(bodies)`` raw chunks of ``size`` bytes (a body and its CRC-32C) lying
    back to back in ``f`` from ``start``: each body into its (uint8) view of the output,
    the CRC-32Cs into a buffer beside, by ``preadv`` calls within :data:`_IN_PLACE_CHUNKS`
    chunks and the longest read the file allows (``max_read``). True if every chunk was
    read whole and its body matches its CRC-32C and, with ``wants``, the one the shard
    header lists for it; False trusts none of them."""
    n = len(bodies)
    per = max(1, min(_IN_PLACE_CHUNKS, f.max_read // size))
    crcs = np.empty((n, 4), np.uint8)
    read = 0
    for k0 in range(0, n, per):
        bufs: list[Any] = []
        for k in range(k0, min(n, k0 + per)):
            bufs += [bodies[k], crcs[k]]
        read += f.readv_into(start + k0 * size, bufs)
    if read != n * size:
        return False
    got = crcs.view("<u4").reshape(-1).tolist()
    return all(
        google_crc32c.value(body) == g and (wants is None or g == wants[k])
        for k, (body, g) in enumerate(zip(bodies, got, strict=True))
    )


def _read_in_place(
    f: Any,
    jobs: list[Any],
    spans: list[Any],
    trailers: list[int] | None,
    lay: RawLayout,
    row_chunks: int,
    out: np.ndarray,
) -> list[Any]:
    """Read what it can of ``jobs`` (of :func:`read_raw_rows`) straight into ``out``;
    returns the others. A job is read in place where its chunk is raw (``bytes``,
    ``crc32c``), present, wholly taken (all its rows, not clipped at the array's
    edge) and its place in ``out`` is one contiguous block: runs of such chunks that
    lie back to back in the file are each read by :func:`_read_run`. A run that fails
    a check is returned whole, with nothing of it trusted: the caller reads it chunk by
    chunk and names what is wrong."""
    if lay.blosc:
        return jobs
    c0 = lay.inner[0]
    size = lay.chunk_bytes + 4
    rest, regions = [], []
    for job in jobs:
        (cr, a, b, _take), (pos, _cc, dst, _src, whole) = job
        at = cr * row_chunks + pos
        off = spans[at][0]
        if whole and b - a == c0 and spans[at][1] == size and off >= 0:
            region = out[(slice(a, b), *dst)]
            if region.flags.c_contiguous:
                regions.append((off, at, region.reshape(-1).view(np.uint8), job))
                continue
        rest.append(job)
    regions.sort(key=lambda r: r[0])
    i = 0
    while i < len(regions):
        j = i + 1
        while j < len(regions) and regions[j][0] == regions[j - 1][0] + size:
            j += 1
        run = regions[i:j]
        wants = None if trailers is None else [trailers[r[1]] for r in run]
        if not _read_run(f, run[0][0], [r[2] for r in run], size, wants):
            rest += [r[3] for r in run]
        i = j
    return rest


def _read_rows_in_place(
    f: Any,
    jobs: list[Any],
    spans: list[tuple[int, int]],
    trailers: list[int] | None,
    lay: RawLayout,
    tiled: list[int],
    row_chunks: int,
    out: np.ndarray,
    crows: list[Any],
) -> list[Any]:
    """:func:`_read_in_place` for rows whose chunks tile them (see :func:`_tiled`),
    without its per-chunk bookkeeping: each row whose chunks lie back to back in the
    file, in the order they tile it, is read by :func:`_read_run` into its place in
    ``out``; returns the jobs of the other rows."""
    if lay.blosc:
        return jobs
    size = lay.chunk_bytes + 4
    n = len(tiled)
    done = set()
    for cr, a, _b, _take in crows:
        ats = [cr * row_chunks + t for t in tiled]
        offs = [spans[at] for at in ats]
        first = offs[0][0]
        if first < 0 or any(o != (first + k * size, size) for k, o in enumerate(offs)):
            continue
        row = out[a].reshape(-1).view(np.uint8)
        bodies = [row[k * lay.chunk_bytes : (k + 1) * lay.chunk_bytes] for k in range(n)]
        wants = None if trailers is None else [trailers[at] for at in ats]
        if _read_run(f, first, bodies, size, wants):
            done.add(cr)
    return [job for job in jobs if job[0][0] not in done] if done else jobs


def _runs(keys: np.ndarray) -> list[tuple[int, int, int]]:
    """``(key, lo, hi)`` of each run ``keys[lo:hi]`` of equal values of ``keys`` (sorted,
    not empty)."""
    if keys.size == 1:
        return [(int(keys[0]), 0, 1)]
    bounds = [0, *(np.flatnonzero(np.diff(keys)) + 1).tolist(), int(keys.size)]
    firsts = keys[bounds[:-1]].tolist()
    return list(zip(firsts, bounds[:-1], bounds[1:], strict=True))


def read_raw_rows(
    arr: Any,
    lay: RawLayout,
    rows: np.ndarray,
    out: np.ndarray,
    seg_id: str | None,
    rest: tuple[Any, ...] = (),
) -> None:
    """Rows ``rows`` (sorted, unique) of the sharded array ``arr`` (of :func:`raw_layout`
    ``lay``) into ``out`` (``(len(rows), *arr.shape[1:])``); with ``rest`` (see
    :func:`cell_selection`: a neuron's history), ``arr[rows, *rest]``, reading only the
    inner chunks that hold it (``out`` then has the shape of that selection).

    Each shard file is opened once: its index (and, for a segment with an id, format
    1.6, its shard header) read from its end and checked, then each wanted inner chunk
    read by one ``pread``, checked against its CRC-32C and the one the shard header
    lists, decoded and copied into ``out``. A damaged, truncated, moved or swapped
    shard file, or an absent chunk of a wanted row, raises
    :class:`~spikestore.reader._shards._DamagedRows` naming the file and the chunk.
    """
    from ..storage._localfs import open_file
    from ._shards import _DamagedRows

    root = lay.root
    shape = tuple(int(d) for d in arr.shape)
    inner, shard, grid = lay.inner, lay.shard, lay.grid
    s0, c0 = shard[0], inner[0]
    row_chunks = math.prod(grid[1:])  # inner chunks in a chunk row of a shard
    cells = [int(r) if isinstance(r, int | np.integer) else None for r in rest]
    cells += [None] * (len(shape) - 1 - len(cells))
    # Shards along each axis after the first: those that hold the selected cell.
    ranges = [
        range(-(-d // s)) if c is None else range(c // s, c // s + 1)
        for d, s, c in zip(shape[1:], shard[1:], cells, strict=True)
    ]
    tails = lay.places.get((shape[1:], tuple(cells)))
    if tails is None:
        if len(lay.places) >= 16:
            lay.places.clear()
        tails = lay.places[(shape[1:], tuple(cells))] = _places(shape, lay, cells, ranges)
    for s, lo, hi in _runs(rows // s0):
        local = rows[lo:hi] - s * s0
        # (chunk row, output rows a:b, the chunk's rows)
        crows = []
        for cr, a, b in _runs(local // c0):
            sel = local[a:b] - cr * c0
            first, last = int(sel[0]), int(sel[-1])
            take = slice(first, last + 1) if last - first == b - a - 1 else sel
            crows.append((cr, lo + a, lo + b, take))
        for tail, places, tiled in tails:
            coords = (int(s), *tail)
            key = arr.metadata.encode_chunk_key(coords)
            key = f"{arr.path}/{key}" if arr.path else key
            with open_file(root, key) as f:
                spans, trailers = _footer_of(f, key, coords, lay, seg_id, s * s0)
                jobs = [(c, p) for c in crows for p in places]
                if tiled is not None:
                    jobs = _read_rows_in_place(
                        f, jobs, spans, trailers, lay, tiled, row_chunks, out, crows
                    )
                jobs = _read_in_place(f, jobs, spans, trailers, lay, row_chunks, out)

                def one(
                    job: Any,
                    f: Any = f,
                    spans: list[Any] = spans,
                    trailers: list[int] | None = trailers,
                    key: str = key,
                    r: int = s * s0,
                ) -> None:
                    (cr, a, b, take), (pos, cc, dst, src, _) = job
                    at = cr * row_chunks + pos
                    off, size = spans[at]
                    r0 = r + cr * c0
                    if off < 0:
                        # Every chunk of a committed row is written: a lost one must not
                        # read as the fill value.
                        raise _DamagedRows(
                            f"shard {key}: inner chunk {(cr, *cc)} is absent, though rows it "
                            "holds are committed",
                            r0,
                            r0 + c0,
                        )
                    chunk = _scratch(size)
                    try:
                        if f.read_into(off, chunk) != size:
                            raise ValueError("is truncated")
                        body, crc = check_chunk(chunk)
                        if trailers is not None and crc != trailers[at]:
                            raise ValueError(
                                "is not the chunk its shard header lists (the file was "
                                "replaced while it was read, or pieced together from others)"
                            )
                        dec = _decode(body, lay)
                    except ValueError as exc:
                        raise _DamagedRows(
                            f"shard {key}: inner chunk {(cr, *cc)} {exc}", r0, r0 + c0
                        ) from None
                    out[(slice(a, b), *dst)] = dec[(take, *src)]

                # Bytes read: whole chunks, however little of them a cell selection takes.
                if len(jobs) * lay.chunk_bytes < _PARALLEL_BYTES:
                    for job in jobs:  # memory-bound copies: a helper thread only waits
                        one(job)
                else:
                    _share(one, jobs)
