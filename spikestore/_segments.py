"""Segments: a field's rows of one kind, in a sharded array plus tails, and their shard files.

A *segment* holds a field's records of one ``(encoding, dtype, shape)`` as rows
of a sharded Zarr array ``s<k>``. Zarr rewrites a whole shard file each time part
of it is written, so a writer that commits every second would rewrite (and hold
in memory) the open shard again and again. Instead, rows of the open shard go to
an unsharded *tail* array with the same inner chunk shape and codecs; when the
shard is complete (or the writer closes) its chunks are copied, as encoded bytes,
into one shard file, written once. Nothing is decoded or encoded again, and only
one chunk is in memory at a time.

The shard file follows Zarr's ``sharding_indexed`` layout as
:func:`spikestore.format.sharding_codec` builds it: the chunks back to back, then
``(offset, nbytes)`` as little-endian uint64 for every inner chunk in C order
(``2**64 - 1`` twice for an absent chunk), then the CRC-32C of that index as a
little-endian uint32.

Thread ownership: the writer thread only.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import google_crc32c
import numpy as np

from .codecs import (
    DEFAULT_DENSE,
    DEFAULT_SPIKES,
    SpikeCodec,
    checksum,
    compressor_codecs,
    spike_frame,
)
from .codecs import layout as chunk_layout
from .format import FORMAT_NAME, SPIKE_ENCODING, sharding_codec, tail_name
from .storage import write_parts

__all__ = ["Segment", "SegmentOptions", "create_segment", "copy_to_shard", "copy_from_shard"]

_EMPTY = np.uint64(2**64 - 1)


def _key(arr: Any, coords: tuple[int, ...]) -> str:
    key = arr.metadata.encode_chunk_key(coords)
    return f"{arr.path}/{key}" if arr.path else key


def _grid(main: Any) -> tuple[int, ...]:
    return tuple(s // c for s, c in zip(main.shards, main.chunks, strict=True))


def _sync(coro: Any) -> Any:
    from zarr.core.sync import sync

    return sync(coro)


def copy_to_shard(tail: Any, main: Any, shard: int, chunk_rows: int) -> None:
    """Write shard ``shard`` of ``main`` from the encoded chunks of ``tail``.

    Only the first ``chunk_rows`` rows of inner chunks are taken (the rest of the
    shard is left absent): a partial shard when a writer closes.
    """
    from zarr.core.buffer import default_buffer_prototype

    store = main.store_path.store
    grid = _grid(main)
    proto = default_buffer_prototype()

    def parts() -> Iterator[bytes]:
        index = np.full((*grid, 2), _EMPTY, dtype="<u8")
        offset = 0
        for coords in itertools.product(*(range(g) for g in grid)):
            if coords[0] >= chunk_rows:
                continue
            buf = _sync(store.get(_key(tail, coords), proto))
            if buf is None:
                continue
            data = buf.as_numpy_array().tobytes()
            index[coords] = (offset, len(data))
            offset += len(data)
            yield data
        raw = index.tobytes()
        yield raw + np.uint32(google_crc32c.value(raw)).astype("<u4").tobytes()

    write_parts(store, _key(main, (shard,) + (0,) * (main.ndim - 1)), parts())


def copy_from_shard(main: Any, shard: int, tail: Any) -> int:
    """Copy the encoded chunks of shard ``shard`` of ``main`` into ``tail``.

    The inverse of :func:`copy_to_shard`, used when a writer reopens a store whose
    last shard was closed partial. Returns the number of chunks copied.
    """
    from zarr.core.buffer import default_buffer_prototype

    store = main.store_path.store
    grid = _grid(main)
    proto = default_buffer_prototype()
    blob = _sync(store.get(_key(main, (shard,) + (0,) * (main.ndim - 1)), proto))
    if blob is None:
        return 0
    data = blob.as_numpy_array()
    n = int(np.prod(grid)) * 16
    raw = data[-4 - n : -4].tobytes()
    if np.frombuffer(data[-4:].tobytes(), "<u4")[0] != google_crc32c.value(raw):
        raise ValueError(f"shard {shard} of {main.path}: index checksum mismatch")
    index = np.frombuffer(raw, "<u8").reshape(*grid, 2)
    copied = 0
    for coords in itertools.product(*(range(g) for g in grid)):
        off, size = (int(x) for x in index[coords])
        if off == int(_EMPTY):
            continue
        chunk = data[off : off + size].tobytes()
        _sync(store.set(_key(tail, coords), proto.buffer.from_bytes(chunk)))
        copied += 1
    return copied


class SegmentOptions:
    """How new segments are chunked and compressed (a writer's settings)."""

    def __init__(
        self, compressor: str | None, level: int | None, shard_steps: int, chunk_bytes: int
    ) -> None:
        self.compressor = compressor
        self.level = level
        self.shard_steps = shard_steps
        self.chunk_bytes = chunk_bytes


def create_segment(grp: Any, desc: dict[str, Any], row: np.ndarray, opts: SegmentOptions) -> Any:
    """Create segment ``desc["array"]`` in field group ``grp`` for rows like ``row``.

    An array of that name is replaced: it has no committed rows (left by a run
    killed before its first commit).
    """
    spikes = desc["encoding"] == SPIKE_ENCODING
    itemsize = row.dtype.itemsize
    frame = None
    if spikes and opts.compressor is None:
        perm = desc.get("permute")
        frame = spike_frame(tuple(desc["shape"]), tuple(perm) if perm else None)
    chunks, shards = chunk_layout(
        row.shape, itemsize, opts.shard_steps, opts.chunk_bytes, frame=frame
    )
    inner: list[Any]
    if spikes and opts.compressor is None:
        # The default spike encoding: a registered codec that compresses packed bits
        # close to their entropy (see spikestore.codecs.spikes).
        level = opts.level if opts.level is not None else 1
        inner = [SpikeCodec(level=level, frame=frame), checksum()]
    else:
        from zarr.codecs import BytesCodec

        default = DEFAULT_SPIKES if spikes else DEFAULT_DENSE
        inner = [
            BytesCodec(),
            *compressor_codecs(
                opts.compressor or default, opts.level, itemsize=itemsize, shuffle=not spikes
            ),
        ]
    dims = ["step", "packed_bits"] if spikes else ["step", *[f"dim_{i}" for i in range(row.ndim)]]
    return grp.create_array(
        desc["array"],
        shape=(0, *row.shape),
        dtype=row.dtype,
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
        self, grp: Any, desc: dict[str, Any], main: Any, commit: Callable[[], None]
    ) -> None:
        self.grp = grp
        self.desc = desc
        self.main = main
        self._commit = commit
        desc.setdefault("sealed", desc["rows"])
        #: ``sealed`` as last committed (what a live reader may hold).
        self.disk_sealed = desc["sealed"]
        self.shard = int(main.shards[0])
        self._tails: dict[int, Any] = {}
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
        if t is None or t.shape != shape or t.chunks != self.main.chunks:
            inner = list(self.main.metadata.codecs[0].codecs)
            dims = self.main.metadata.dimension_names
            t = self.grp.create_array(
                name,
                shape=shape,
                dtype=self.main.dtype,
                chunks=self.main.chunks,
                serializer=inner[0],
                compressors=inner[1:],
                fill_value=0,
                # Its rows are not steps: another name keeps xarray from aligning them.
                dimension_names=["tail_row", *dims[1:]] if dims else None,
                attributes={FORMAT_NAME: {"node": "tail", "of": self.desc["array"]}},
                config={"write_empty_chunks": True},
                overwrite=True,
            )
        self._tails[p] = t
        return t

    def _grow(self, rows: int) -> None:
        if self.main.shape[0] < rows:
            self.main.resize((rows, *self.main.shape[1:]))

    def write(self, block: np.ndarray) -> None:
        """Append rows; full shards are written once, the open shard to its tail."""
        start = self.desc["rows"]
        stop = start + len(block)
        pos = start
        while pos < stop:
            j = pos // self.shard
            s0, s1 = j * self.shard, (j + 1) * self.shard
            end = min(stop, s1)
            part = block[pos - start : end - start]
            if pos == s0 and end == s1:
                self._grow(s1)
                self.main[s0:s1] = part  # a whole shard: Zarr writes it without reading
            else:
                if pos == s0 and self.disk_sealed < s0 - self.shard:
                    # This tail last held shard j - 2; a reader that still thinks so
                    # must see that shard j - 1 is sealed before the tail changes.
                    self._commit()
                tail = self.tail(j % 2)
                tail[pos - s0 : end - s0] = part
                if end == s1:
                    self._grow(s1)
                    copy_to_shard(tail, self.main, j, self.shard // self.chunk_rows)
            if end == s1:
                self.desc["sealed"] = s1
            self.desc["rows"] = end
            pos = end

    def seal_partial(self) -> bool:
        """Copy the open shard's rows into a (partial) shard file; True if any."""
        rows, sealed = self.desc["rows"], self.desc["sealed"]
        if rows <= sealed:
            return False
        j = sealed // self.shard
        self._grow(rows)
        copy_to_shard(self.tail(j % 2), self.main, j, -(-(rows - sealed) // self.chunk_rows))
        self.desc["sealed"] = rows
        return True

    def drop_tails(self) -> None:
        """Delete the tail arrays (once everything is sealed and committed)."""
        for p in (0, 1):
            name = tail_name(self.desc["array"], p)
            if name in self.grp:
                del self.grp[name]
        self._tails.clear()

    def _reopen(self) -> None:
        """A closed store's last shard is partial: move it back to the tail to go on."""
        j = self.desc["sealed"] // self.shard
        copy_from_shard(self.main, j, self.tail(j % 2))
        self.desc["sealed"] = j * self.shard
