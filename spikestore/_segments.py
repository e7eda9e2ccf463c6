"""Segments: a field's rows of one kind, in a sharded array plus tails, and their shard files.

A *segment* holds a field's records of one ``(encoding, dtype, shape)`` as rows
of a sharded Zarr array ``s<k>``. Zarr rewrites a whole shard file each time part
of it is written, so a writer that commits every second would rewrite (and hold
in memory) the open shard again and again. Instead, rows of the open shard go to
an unsharded *tail* array with the same inner chunk shape and codecs; when the
shard is complete (or the writer closes) its chunks are copied, as encoded bytes,
into one shard file, written once. Nothing is decoded or encoded again, and (on
local disk) only one chunk is in memory at a time.

The shard file's layout (Zarr's ``sharding_indexed`` with the index at the end, and
for a segment with an id, format 1.6, a shard header between the chunks and the
index) is :mod:`spikestore._shard`'s, which builds and parses its index and header.

The writer thread encodes a tail's chunks itself rather than through Zarr's
``__setitem__`` (``spikestore._chunks``: the array's own codec chain, so the bytes
are Zarr's): every chunk a commit touches is encoded by the :class:`Encoder`, on
the writer thread while chunks encode fast and on its threads once they are slow
(rows stored as they are, ``bytes`` then ``crc32c``, are written from their
own memory instead) and written as its own file (or, off local disk, in one round
trip); the rows of a partly written chunk row stay in memory, so completing it
reads nothing back.

A complete shard made of rows the writer thread holds (none from a tail) is written
in the background by a :class:`ShardWriter`, whose threads write two shard files at
a time while the writer thread goes on taking and summarising records: a page-cache
write of large rows costs as much as the rest of the writer thread's work, and two
files written at once take less time than one after the other. The segment keeps
the write's future in :attr:`Segment.writing`; the field's commit waits for it (see
``spikestore._commit``).

Thread ownership: the writer thread only; an :class:`Encoder`'s threads run the
jobs the writer thread hands them (encode a chunk, write its file) while it waits,
and a :class:`ShardWriter`'s threads write the shard files handed to them, reading
only the rows handed over with them.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, wait
from typing import Any

import numpy as np

from ._chunks import Rows, _ChunkWriter
from ._chunks import chunk_key as _key
from ._exit import ExitSafePool, LazyPool, run_inline
from ._shard import ShardFooter, chunk_spans, parse_index, sharding_codec
from ._zarr import buffer_prototype, from_bytes
from ._zarr import sync as _sync
from .codecs import (
    DEFAULT_SPIKES,
    SpikeCodec,
    checksum,
    compressor_codecs,
    spike_frame,
)
from .codecs.layout import MAX_SHARD_BYTES
from .codecs.layout import layout as chunk_layout
from .codecs.rows import dense_codecs
from .format import (
    FORMAT_NAME,
    SEGMENT_ID_KEY,
    SPIKE_ENCODING,
    new_id,
    tail_name,
)
from .storage import delete_prefix, local_root, write_parts
from .storage._localfs import read_file

__all__ = [
    "ENCODE_THREADS",
    "Encoder",
    "MIN_DENSE_SHARD_BYTES",
    "Segment",
    "SHARD_WRITES",
    "SegmentOptions",
    "ShardWriter",
    "create_segment",
    "copy_to_shard",
    "copy_from_shard",
    "encode_threads",
    "segment_id",
    "shard_write",
    "write_shard",
]

#: Threads that encode (compress) a commit's chunks: None for the environment variable
#: ``SPIKESTORE_ENCODE_THREADS``, else ``min(4, os.cpu_count())``; 1 encodes on the
#: writer thread itself. Read when a writer starts.
ENCODE_THREADS: int | None = None


def encode_threads() -> int:
    """The number of encoder threads a writer starting now gets (see :data:`ENCODE_THREADS`)."""
    n: int | str | None = ENCODE_THREADS
    if n is None:
        n = os.environ.get("SPIKESTORE_ENCODE_THREADS") or min(4, os.cpu_count() or 1)
    try:
        threads = int(n)
    except ValueError:
        raise ValueError(f"SPIKESTORE_ENCODE_THREADS must be a whole number, got {n!r}") from None
    if threads < 1:
        raise ValueError(f"encoder threads must be at least 1, got {threads}")
    return threads


#: Seconds a call of :meth:`Encoder.run` may take on the calling thread before the
#: calls after it go to the encoder's threads.
INLINE_CALL_S = 0.002


class Encoder:
    """Runs a commit's chunk encodings (and local file writes) on the writer thread,
    or on a pool of threads once they prove slow (see :meth:`run`).

    Zstandard and Blosc release the GIL, so chunks compress in parallel. The writer
    thread owns the encoder: it hands over one commit's chunks with :meth:`run` and
    waits for all of them before it writes the index and the commit point, so the
    commit protocol's order holds and the work in flight is at most one commit's
    chunks. With one thread the writer thread does the work itself. The pool is made
    at the first :meth:`run` that needs it, and again in a forked child.
    """

    def __init__(self, threads: int | None = None) -> None:
        self.threads = encode_threads() if threads is None else int(threads)
        self._pool = LazyPool(self.threads, "spikestore-enc")

    def run(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """``[fn(x) for x in items]``, in parallel once the calls prove slow; every
        call has ended when this returns or raises (the first exception, in the order
        of ``items``).

        The calling thread runs the calls itself while each takes less than
        :data:`INLINE_CALL_S`, and hands the rest to the pool after the first that
        takes longer: fast jobs (TREE-coded spike chunks, about 0.6 ms) gain less from
        other threads than the hand-offs of the GIL cost beside a busy caller, slow
        ones (MOTION chunks, 10 ms or more) gain nearly the threads' number."""
        n = len(items)
        if self.threads <= 1 or n <= 1:
            return [fn(x) for x in items]
        out: list[Any] = []
        clock = time.perf_counter
        while len(out) < n:
            t0 = clock()
            out.append(fn(items[len(out)]))
            if clock() - t0 >= INLINE_CALL_S and n - len(out) > 1:
                break
        if len(out) < n:
            pool = self._pool.get()
            futures: list[Future[Any]] = [pool.submit(fn, x) for x in items[len(out) :]]
            wait(futures)
            out.extend(f.result() for f in futures)
        return out

    def close(self) -> None:
        """Stop the threads (a writer that ends); a later :meth:`run` starts new ones."""
        self._pool.close()


#: Shard files a :class:`ShardWriter` writes at once, at most (0: on the writer thread);
#: read when a writer starts.
SHARD_WRITES = 2


class ShardWriter:
    """Writes complete shard files on threads of its own (see the module docstring).

    Owned by the writer thread: :meth:`submit` hands over one shard file's write and
    returns its future. At most :attr:`threads` writes are in flight: a further one
    first waits for the oldest to end (without raising its error: the field that
    owns it meets the error when its commit waits for it). A write holds the rows
    handed over with it until it ends, so a writer's memory holds at most
    :attr:`threads` shards more than its buffer bound. With 0 threads :meth:`submit`
    writes on the calling thread. The pool is made at the first :meth:`submit`, and
    again in a forked child.
    """

    def __init__(self, threads: int | None = None) -> None:
        self.threads = SHARD_WRITES if threads is None else int(threads)
        self._pool = LazyPool(self.threads, "spikestore-shard")
        #: The writes not known to have ended, and the pool they went to (a forked
        #: child's new pool has none of its parent's).
        self._flight: list[Future[None]] = []
        self._flight_pool: ExitSafePool | None = None

    def submit(self, fn: Callable[[], None]) -> Future[None]:
        """Run ``fn()`` (a shard file's write) in the background; its future."""
        if self.threads <= 0:
            return run_inline(fn)
        pool = self._pool.get()
        if pool is not self._flight_pool:
            self._flight, self._flight_pool = [], pool
        flight = self._flight = [f for f in self._flight if not f.done()]
        if len(flight) >= self.threads:
            wait(flight[:1])
        future = pool.submit(fn)
        flight.append(future)
        return future

    def close(self) -> None:
        """Wait for every write and stop the threads; a later :meth:`submit` starts new ones."""
        self._flight, self._flight_pool = [], None
        self._pool.close()


#: The least ``SegmentOptions.dense_shard_bytes``, whatever the writer's buffer bound.
MIN_DENSE_SHARD_BYTES = 1 << 20
#: Shards a segment array grows by at most, ahead of its rows (see ``Segment._grow``).
GROW_SHARDS = 64


def _grid(main: Any) -> tuple[int, ...]:
    return tuple(s // c for s, c in zip(main.shards, main.chunks, strict=True))


def copy_to_shard(tail: Any, main: Any, shard: int, chunk_rows: int) -> None:
    """Write shard ``shard`` of ``main`` from the encoded chunks of ``tail``.

    Only the first ``chunk_rows`` rows of inner chunks are taken (the rest of the
    shard is left absent): a partial shard when a writer closes.
    """
    write_shard(main, shard, tail, chunk_rows, {})


def write_shard(
    main: Any,
    shard: int,
    tail: Any,
    tail_rows: int,
    fresh: Iterable[tuple[tuple[int, ...], tuple[Any, ...]]],
) -> None:
    """Write shard ``shard`` of ``main`` once: its first ``tail_rows`` rows of inner
    chunks are copied, as encoded bytes, from ``tail`` (None if 0), then come the
    chunks of ``fresh``: ``(coordinates, parts)`` in C order, each chunk's bytes as
    parts written one after the other (an iterator: encoded while the file is being
    written); any other chunk is left absent."""
    shard_write(main, shard, tail, tail_rows, fresh)()


def shard_write(
    main: Any,
    shard: int,
    tail: Any,
    tail_rows: int,
    fresh: Iterable[tuple[tuple[int, ...], tuple[Any, ...]]],
) -> Callable[[], None]:
    """:func:`write_shard`'s write as a function of no arguments, which any thread may
    call: what it needs of ``main`` is read now, on the calling thread."""
    store = main.store_path.store
    grid = _grid(main)
    proto = buffer_prototype()

    old = [c for c in itertools.product(*(range(g) for g in grid)) if c[0] < tail_rows]
    root = local_root(store)

    def chunks() -> Iterator[tuple[Any, ...] | None]:
        if not old:
            return
        if root is not None:
            # Local files are read one at a time: one chunk in memory at a time.
            for c in old:
                data = read_file(root, _key(tail, c))
                yield None if data is None else (data,)
            return

        # Elsewhere one round trip to Zarr's event loop reads all the chunks at once.
        async def get_all() -> list[Any]:
            return await asyncio.gather(*(store.get(_key(tail, c), proto) for c in old))

        for buf in _sync(get_all()):
            yield None if buf is None else (buf.to_bytes(),)

    coords0 = (shard,) + (0,) * (main.ndim - 1)
    seg_id = segment_id(main)

    def parts() -> Iterator[Any]:
        footer = ShardFooter(grid)
        placed = itertools.chain(zip(old, chunks(), strict=True), fresh)
        for coords, data in placed:
            if data is None:
                continue
            footer.place(coords, data)
            yield from data
        yield footer.end(seg_id, coords0)

    key = _key(main, coords0)
    return lambda: write_parts(store, key, parts())


def segment_id(arr: Any) -> str | None:
    """The id of segment array ``arr`` (format 1.6), None for an older segment, whose
    shard files then get no shard header."""
    own = dict(arr.attrs).get(FORMAT_NAME)
    value = own.get(SEGMENT_ID_KEY) if isinstance(own, dict) else None
    return value if isinstance(value, str) else None


def copy_from_shard(main: Any, shard: int, tail: Any) -> int:
    """Copy the encoded chunks of shard ``shard`` of ``main`` into ``tail``.

    The inverse of :func:`copy_to_shard`, used when a writer reopens a store whose
    last shard was closed partial. Returns the number of chunks copied.
    """
    store = main.store_path.store
    grid = _grid(main)
    proto = buffer_prototype()
    blob = _sync(store.get(_key(main, (shard,) + (0,) * (main.ndim - 1)), proto))
    if blob is None:
        return 0
    data = blob.as_numpy_array()
    try:
        spans = chunk_spans(parse_index(data, grid), len(data))
    except ValueError as exc:
        raise ValueError(f"shard {shard} of {main.path}: {exc}") from None
    copied = 0
    for coords in itertools.product(*(range(g) for g in grid)):
        off, size = (int(x) for x in spans[coords])
        if off < 0:
            continue
        chunk = data[off : off + size].tobytes()
        _sync(store.set(_key(tail, coords), from_bytes(chunk)))
        copied += 1
    return copied


class SegmentOptions:
    """How new segments are chunked and compressed (a writer's settings).

    ``precision``: mantissa bits kept in float rows of raw segments (lossy; see
    :func:`spikestore.codecs.rows.dense_codecs`), None to store them exactly.
    ``dense_shard_bytes``: the most bytes (before compression) a shard of raw rows
    holds, and a row of its inner chunks (fewer steps per chunk for huge records):
    the writer's buffer bound, at least :data:`MIN_DENSE_SHARD_BYTES`, so that a
    write forced by that bound completes whole shards, each file written once,
    instead of passing through the tail (see :class:`Segment`).
    """

    def __init__(
        self,
        compressor: str | None,
        level: int | None,
        shard_steps: int,
        chunk_bytes: int,
        precision: int | None = None,
        dense_shard_bytes: int = MAX_SHARD_BYTES,
    ) -> None:
        self.compressor = compressor
        # A floor: a tiny buffer bound must not make a file (and a chunk) per step.
        self.dense_shard_bytes = max(int(dense_shard_bytes), MIN_DENSE_SHARD_BYTES)
        self.level = level
        self.shard_steps = shard_steps
        self.chunk_bytes = chunk_bytes
        self.precision = precision


#: A private descriptor key (never committed: see ``FieldWriter.commit``): the codec chain
#: a raw segment created without a compressor takes instead if its first write does not
#: fill a row of inner chunks (see :func:`create_segment`).
SHORT_CHAIN = "_short_chain"


def _blosc_copy(inner: list[Any]) -> bool:
    """Whether ``inner`` is :func:`dense_codecs`' chain for rows it found incompressible
    (Blosc LZ4 at level 1 without shuffle: a copy)."""
    from zarr.codecs import BloscCodec

    b = next((c for c in inner if isinstance(c, BloscCodec)), None)
    return b is not None and (b.cname.value, b.clevel, b.shuffle.value) == ("lz4", 1, "noshuffle")


def create_segment(grp: Any, desc: dict[str, Any], row: np.ndarray, opts: SegmentOptions) -> Any:
    """Create segment ``desc["array"]`` in field group ``grp`` for rows like ``row``.

    An array of that name is replaced: it has no committed rows (left by a run
    killed before its first commit). ``desc`` gets the new array's ``id`` (format 1.6).

    Raw rows that the default compressor cannot shrink are stored as they are
    (``bytes``, ``crc32c``: nothing to compress, and chunks are written straight from
    the rows); but if the segment's first write holds less than two rows of inner
    chunks and less than a shard (a short run), :meth:`Segment.write` makes the array
    again with the Blosc copy of :func:`dense_codecs`, which squeezes the fill rows of
    a partly filled chunk row. Otherwise fill rows cost at most one chunk row a segment,
    less than a third of what it holds (or, where a shard is one chunk row, half).
    """
    spikes = desc["encoding"] == SPIKE_ENCODING
    itemsize = row.dtype.itemsize
    frame = None
    if spikes and opts.compressor is None:
        perm = desc.get("permute")
        frame = spike_frame(tuple(desc["shape"]), tuple(perm) if perm else None)
    chunks, shards = chunk_layout(
        row.shape,
        itemsize,
        opts.shard_steps,
        opts.chunk_bytes,
        max_shard_bytes=MAX_SHARD_BYTES if spikes else opts.dense_shard_bytes,
        frame=frame,
        max_chunk_row_bytes=None if spikes else opts.dense_shard_bytes,
    )
    inner: list[Any]
    short = None
    if spikes and opts.compressor is None:
        # The default spike encoding: a registered codec that compresses packed bits
        # close to their entropy (see spikestore.codecs.spikes).
        level = opts.level if opts.level is not None else 1
        inner = [SpikeCodec(level=level, frame=frame), checksum()]
    elif spikes:
        from zarr.codecs import BytesCodec

        inner = [
            BytesCodec(),
            *compressor_codecs(
                opts.compressor or DEFAULT_SPIKES, opts.level, itemsize=itemsize, shuffle=False
            ),
        ]
    else:
        # Raw rows: optional rounding, then a compressor only where it pays.
        inner = dense_codecs(row, opts.compressor, opts.level, opts.precision)
        if opts.compressor is None and _blosc_copy(inner):
            short, inner = inner, [inner[0], inner[-1]]  # bytes, crc32c
    dims = ["step", "packed_bits"] if spikes else ["step", *[f"dim_{i}" for i in range(row.ndim)]]
    arr = _create_array(grp, desc, row.dtype, row.shape, chunks, shards, inner, dims)
    if short is not None:
        desc[SHORT_CHAIN] = short  # see Segment._first_write
    return arr


def _create_array(
    grp: Any, desc: dict[str, Any], dtype: Any, shape: Any, chunks: Any, shards: Any,
    inner: list[Any], dims: list[str],
) -> Any:  # fmt: skip
    # A new array, a new id: in the descriptor (committed with the field's metadata)
    # and in the array's attributes, so a reader tells this array from any other that
    # takes its place, and its shard files from any other's.
    desc[SEGMENT_ID_KEY] = new_id()
    return grp.create_array(
        desc["array"],
        shape=(0, *shape),
        dtype=dtype,
        chunks=shards,
        serializer=sharding_codec(chunks, inner),
        compressors=None,
        fill_value=0,
        dimension_names=dims,
        attributes={FORMAT_NAME: {"node": "segment", **desc}},
        # Every committed shard exists on disk, even an all-zero one, so the reader
        # can tell a lost shard from silence.
        config={"write_empty_chunks": True},
        overwrite=True,
    )


class Segment:
    """A segment's sharded array plus the two tail arrays for its open shard.

    Rows ``[0, sealed)`` are in the sharded array ``s<k>``; rows ``[sealed, rows)``
    (the open shard ``j = sealed // shard``) in the unsharded tail ``s<k>t<j % 2>``,
    at row ``row - sealed``, with the same inner chunks and codecs. A full shard's
    chunks are copied into its shard file once. Tails alternate between two arrays
    so that a live reader holding the previous ``sealed`` still finds the rows it
    expects for a whole shard's time.

    ``desc`` is the segment's descriptor in the field's metadata (updated in place);
    ``commit`` writes that metadata (the field's commit point).
    """

    def __init__(
        self,
        grp: Any,
        desc: dict[str, Any],
        main: Any,
        commit: Callable[[], None],
        encoder: Encoder | None = None,
        writes: ShardWriter | None = None,
    ) -> None:
        self.grp = grp
        self.desc = desc
        self.main = main
        self._commit = commit
        self._encoder = encoder if encoder is not None else Encoder(1)
        self._writes = writes
        #: Shard files being written in the background (see :class:`ShardWriter`), as
        #: ``(shard, future)``: the field takes them after each :meth:`write` and its
        #: commit waits for them.
        self.writing: list[tuple[int, Future[None]]] = []
        desc.setdefault("sealed", desc["rows"])
        #: ``sealed`` as last committed (what a live reader may hold).
        self.disk_sealed = desc["sealed"]
        self.shard = int(main.shards[0])
        self._tails: dict[int, Any] = {}
        #: The rows of the tail's last, partly written chunk row, from its first row:
        #: ``(shard, first tail row, rows)``. The next write completes that chunk row
        #: from memory instead of reading and decoding its chunks back.
        self._open: tuple[int, int, np.ndarray] | None = None
        self._direct: dict[int, _ChunkWriter | None] = {}
        #: Encodes a complete shard's chunks in memory (None: Zarr writes whole shards).
        self._shards = _ChunkWriter.for_shards(main)
        if desc["sealed"] % self.shard:
            self._reopen()

    @property
    def chunk_rows(self) -> int:
        """Rows per inner chunk."""
        return int(self.main.chunks[0])

    def tail(self, p: int) -> Any:
        t = self._tails.get(p)
        if t is not None:
            return t
        name = tail_name(self.desc["array"], p)
        shape = (self.shard, *self.main.shape[1:])
        t = self.grp[name] if name in self.grp else None
        if (
            t is None
            or t.shape != shape
            or t.chunks != self.main.chunks
            # a tail left by an array that this one replaced (a run killed before its
            # first commit) holds no committed rows, and names the other array
            or dict(t.attrs).get(FORMAT_NAME, {}).get(SEGMENT_ID_KEY)
            not in (None, self.desc.get(SEGMENT_ID_KEY))
        ):
            from zarr.abc.codec import ArrayBytesCodec

            inner = list(self.main.metadata.codecs[0].codecs)
            # Array-to-array codecs (a precision's BitRound) come before the serializer.
            k = next(i for i, c in enumerate(inner) if isinstance(c, ArrayBytesCodec))
            dims = self.main.metadata.dimension_names
            t = self.grp.create_array(
                name,
                shape=shape,
                dtype=self.main.dtype,
                chunks=self.main.chunks,
                filters=inner[:k],
                serializer=inner[k],
                compressors=inner[k + 1 :],
                fill_value=0,
                # Its rows are not steps: another name keeps xarray from aligning them.
                dimension_names=["tail_row", *dims[1:]] if dims else None,
                attributes={FORMAT_NAME: self._tail_attrs()},
                config={"write_empty_chunks": True},
                overwrite=True,
            )
        self._tails[p] = t
        return t

    def _tail_attrs(self) -> dict[str, Any]:
        attrs = {"node": "tail", "of": self.desc["array"]}
        seg_id = self.desc.get(SEGMENT_ID_KEY)
        if seg_id is not None:
            attrs[SEGMENT_ID_KEY] = seg_id
        return attrs

    def _grow(self, rows: int) -> None:
        """Make the array at least ``rows`` long: twice as long, up to :data:`GROW_SHARDS`
        shards more, so that its ``zarr.json`` is not rewritten for every shard (rows
        past the descriptor's ``rows`` hold nothing; :meth:`seal_partial` cuts them)."""
        n = self.main.shape[0]
        if n < rows:
            ahead = max(rows, min(2 * n, n + GROW_SHARDS * self.shard))
            self._resize(-(-ahead // self.shard) * self.shard)

    def _resize(self, rows: int) -> None:  # nothing to delete past ``rows``
        _sync(self.main.async_array.resize((rows, *self.main.shape[1:]), False))

    def _first_write(self, rows: int) -> None:
        """Before the first write (``rows`` rows): a raw segment without a compressor
        whose first write fills neither two rows of inner chunks nor a shard (a short
        run, its chunks mostly fill) is made again with the chain kept for it."""
        short = self.desc.pop(SHORT_CHAIN, None)
        if short is None or self.desc["rows"] or rows >= min(2 * self.chunk_rows, self.shard):
            return
        old = self.main
        dims = list(old.metadata.dimension_names)
        self.main = _create_array(
            self.grp, self.desc, old.dtype, old.shape[1:], old.chunks, old.shards, short, dims
        )
        self._shards = _ChunkWriter.for_shards(self.main)

    @property
    def takes_rows(self) -> bool:
        """Whether :meth:`write` takes a list of rows as they are (no copy into one
        block): each inner chunk is part of one row, encoded without Zarr."""
        return self._shards is not None and self.chunk_rows == 1

    def write(self, block: np.ndarray | list[np.ndarray]) -> None:
        """Append rows (one array, or a list of rows where :attr:`takes_rows`); each
        shard file is written once, when the shard is complete (from the rows given
        and the tail's), the open shard's rows to its tail."""
        if SHORT_CHAIN in self.desc:
            self._first_write(len(block))
        if not isinstance(block, np.ndarray) and not self.takes_rows:
            block = np.stack(block)
        start = self.desc["rows"]
        stop = start + len(block)
        pos = start
        while pos < stop:
            j = pos // self.shard
            s0, s1 = j * self.shard, (j + 1) * self.shard
            end = min(stop, s1)
            part = block[pos - start : end - start]
            if end == s1 and self._shards is not None:
                self._write_shard(j, pos - s0, part)
            elif pos == s0 and end == s1:
                self._grow(s1)
                self.main[s0:s1] = part  # a whole shard: Zarr writes it without reading
            else:
                if pos == s0 and self.disk_sealed < s0 - self.shard:
                    # This tail last held shard j - 2; a reader that still thinks so
                    # must see that shard j - 1 is sealed before the tail changes.
                    self._commit()
                tail = self.tail(j % 2)
                self._write_tail(tail, j, pos - s0, end - s0, part)
                if end == s1:
                    self._grow(s1)
                    copy_to_shard(tail, self.main, j, self.shard // self.chunk_rows)
            if end == s1:
                self.desc["sealed"] = s1
            self.desc["rows"] = end
            pos = end

    def _pieces(
        self, j: int, r0: int, part: Rows, tail: Any
    ) -> tuple[int, list[tuple[int, Rows]]]:
        """Rows ``part`` from row ``r0`` of shard ``j``, as ``(first row, rows)`` pieces
        that start on inner-chunk boundaries: a partly written chunk row is completed
        from the rows held in memory (or, for a reopened store, decoded from ``tail``).
        Also returns the first row written, ``r0`` rounded down to a chunk boundary."""
        cr = self.chunk_rows
        c0 = r0 - r0 % cr
        pieces: list[tuple[int, Rows]] = []
        rest, start = part, r0
        if r0 > c0:
            held = self._open
            if held is not None and held[0] == j and held[1] == c0 and len(held[2]) == r0 - c0:
                before = held[2]
            else:
                before = tail[c0:r0]  # not in memory (a reopened store): decode it
            # Only the first chunk row is joined with what it held (a copy of the whole
            # block would double the writer's memory while it encodes).
            k = min(len(part), cr - (r0 - c0))
            pieces.append((c0, np.concatenate([before, part[:k]])))
            rest, start = part[k:], c0 + cr
        if len(rest):
            pieces.append((start, rest))
        return c0, pieces

    def _write_shard(self, j: int, r0: int, part: Rows) -> None:
        """Rows ``[r0, shard)`` of shard ``j`` are ``part``: the shard is complete. Its new
        chunks are encoded in memory and written with the tail's earlier ones as the
        shard file, once; the new rows never go to the tail."""
        assert self._shards is not None
        tail = self.tail(j % 2) if r0 else None
        c0, pieces = self._pieces(j, r0, part, tail)
        shards, encoder = self._shards, self._encoder
        fresh = (c for row, data in pieces for c in shards.encode(encoder, row, data))
        self._grow((j + 1) * self.shard)
        write = shard_write(self.main, j, tail, c0 // self.chunk_rows, fresh)
        if tail is None and self._writes is not None:
            # Rows only the write holds (a tail changes as later shards are written).
            self.writing.append((j, self._writes.submit(write)))
        else:
            write()
        self._open = None

    def _write_tail(self, tail: Any, j: int, r0: int, r1: int, part: Rows) -> None:
        """Tail rows ``[r0, r1)`` (of shard ``j``) become ``part``.

        Every inner chunk touched is encoded whole (rows past ``r1`` hold the fill
        value, as Zarr would write them) on the encoder's threads and written as its
        own file or object: one round trip for the lot, and no read of what earlier
        rows of a partly written chunk row held while they are in memory. Codec
        chains without synchronous encoders go through Zarr.
        """
        p = j % 2
        writer = self._direct.get(p)
        if p not in self._direct or (writer is not None and writer.arr is not tail):
            writer = self._direct[p] = _ChunkWriter.for_tail(tail)
        if writer is None:
            tail[r0:r1] = part
            self._open = None
            return
        cr = self.chunk_rows
        c0, pieces = self._pieces(j, r0, part, tail)
        for row, data in pieces:
            writer.write(self._encoder, row, data)
        last = (r1 - c0) % cr
        data = pieces[-1][1]
        self._open = (j, r1 - last, np.array(data[len(data) - last :])) if last else None

    def seal_partial(self) -> bool:
        """Copy the open shard's rows into a (partial) shard file; True if any."""
        rows, sealed = self.desc["rows"], self.desc["sealed"]
        if self.main.shape[0] != rows:
            self._resize(rows)  # exactly its rows, once closed (see _grow)
        if rows <= sealed:
            return False
        j = sealed // self.shard
        copy_to_shard(self.tail(j % 2), self.main, j, -(-(rows - sealed) // self.chunk_rows))
        self.desc["sealed"] = rows
        return True

    def drop_tails(self) -> None:
        """Delete the tail arrays (once everything is sealed and committed)."""
        for p in (0, 1):
            name = tail_name(self.desc["array"], p)
            if p in self._tails or name in self.grp:
                # One removal of the folder (Zarr would delete its files one by one).
                path = f"{self.grp.path}/{name}" if self.grp.path else name
                delete_prefix(self.grp.store_path.store, path)
        self._tails.clear()
        self._direct.clear()
        self._open = None

    def _reopen(self) -> None:
        """A closed store's last shard is partial: move it back to the tail to go on."""
        j = self.desc["sealed"] // self.shard
        copy_from_shard(self.main, j, self.tail(j % 2))
        self.desc["sealed"] = j * self.shard
        self._open = None
