"""Encoding a segment's inner chunks without Zarr's per-call machinery.

:class:`_ChunkWriter` encodes whole inner chunks byte for byte as Zarr would (the
array's codec chain, each codec's synchronous encoder), for ``spikestore._segments``:
the chunks of a tail, each written as its own file (or, off local disk, in one round
trip), and the inner chunks of a shard, handed to ``write_shard`` as they are asked
for. Rows stored as they are (``bytes`` then ``crc32c``) are written from their own
memory, with their CRC-32C (computed with the GIL released: ``spikestore._crc``),
instead of being copied, and so are the rows of a write given as a list of rows.

Thread ownership: the writer thread; an ``Encoder``'s threads run the jobs it hands
them (encode a chunk, write its file) while it waits.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from ._crc import crc32c
from ._zarr import can_encode_sync, chunk_spec, encode_chain, inner_chunk_spec
from .storage import file_writer, set_many

if TYPE_CHECKING:
    from ._segments import Encoder

__all__ = ["ENCODE_BATCH", "Rows", "chunk_key"]

#: Rows of an array: one block, or (inner chunks of one row) a list of the rows as
#: they came, never copied into one block.
Rows = np.ndarray | list[np.ndarray]

#: Bytes of rows (before encoding) a shard written from memory encodes at a time.
ENCODE_BATCH = 4 << 20


def _parts(block: np.ndarray) -> list[np.ndarray]:
    """A chunk's rows as C-contiguous arrays: itself, its rows, or (neither contiguous)
    a copy."""
    if block.flags.c_contiguous:
        return [block]
    if block[0].flags.c_contiguous:
        return list(block)
    return [np.ascontiguousarray(block)]


def chunk_key(arr: Any, coords: tuple[int, ...]) -> str:
    """The store key of chunk (or shard) ``coords`` of array ``arr``."""
    key = arr.metadata.encode_chunk_key(coords)
    return f"{arr.path}/{key}" if arr.path else key


_key = chunk_key


class _ChunkWriter:
    """Encodes whole inner chunks without Zarr's per-call machinery, byte for byte as
    Zarr would: the codec chain (each codec's synchronous encoder, in order) on each
    chunk, fill value past the rows given. :meth:`for_tail` writes each chunk of an
    unsharded array (a tail) under its own key; :meth:`for_shards` encodes the inner
    chunks of a sharded array in memory, for :func:`write_shard`. Writer thread only
    (the encoder's threads run :meth:`_one`)."""

    def __init__(
        self,
        arr: Any,
        filters: list[Any],
        codecs: list[Any],
        spec: Any,
        chunks: tuple[int, ...],
        shape: tuple[int, ...],
    ) -> None:
        self.arr = arr
        self.filters = filters
        self.codecs = codecs
        self.spec = spec
        self.chunks = chunks
        self.shape = shape
        self.dtype = np.dtype(arr.dtype)
        self.fill = arr.metadata.fill_value
        self.store = arr.store_path.store
        self.put = file_writer(self.store)
        from zarr.codecs import BytesCodec, Crc32cCodec

        #: The checksum, when last, is computed by :meth:`_one` itself.
        self.crc = isinstance(codecs[-1], Crc32cCodec)
        self.body = codecs[:-1] if self.crc else codecs
        #: ``bytes`` then ``crc32c`` on rows whose bytes are the stored ones: a chunk is
        #: its rows' own memory and a CRC-32C (:meth:`_plain`).
        endian = getattr(self.body[0], "endian", None)
        little = sys.byteorder == "little" and getattr(endian, "value", endian) == "little"
        self.plain = self.crc and not filters and len(self.body) == 1
        self.plain &= isinstance(self.body[0], BytesCodec)
        self.plain &= self.dtype.itemsize == 1 or (little and self.dtype.byteorder in "=<")

    @staticmethod
    def _sync_chain(codecs: list[Any]) -> tuple[list[Any], list[Any]] | None:
        """``(filters, codecs)``: array-to-array codecs that are numcodecs' (a precision's
        BitRound, encoded by numcodecs itself), then a serializer and bytes-to-bytes
        codecs with synchronous encoders; None for any other chain."""
        from zarr.abc.codec import ArrayArrayCodec, ArrayBytesCodec, BytesBytesCodec

        k = 0
        while k < len(codecs) and isinstance(codecs[k], ArrayArrayCodec):
            if not hasattr(codecs[k], "_codec"):
                return None
            k += 1
        rest = codecs[k:]
        if not rest or not isinstance(rest[0], ArrayBytesCodec):
            return None
        if type(rest[0]).__name__ == "ShardingCodec":
            return None
        if not all(isinstance(c, BytesBytesCodec) for c in rest[1:]):
            return None
        if not all(can_encode_sync(c) for c in rest):
            return None
        return codecs[:k], rest

    @classmethod
    def for_tail(cls, arr: Any) -> _ChunkWriter | None:
        """A writer for unsharded ``arr``, or None if its codecs cannot encode synchronously."""
        meta = arr.metadata
        chain = cls._sync_chain(list(meta.codecs))
        if chain is None:
            return None
        spec = chunk_spec(arr)
        chunks = tuple(int(c) for c in arr.chunks)
        return cls(arr, *chain, spec, chunks, tuple(int(n) for n in arr.shape))

    @classmethod
    def for_shards(cls, main: Any) -> _ChunkWriter | None:
        """An encoder of the inner chunks of sharded ``main``, or None if its inner codecs
        cannot encode synchronously."""
        chain = cls._sync_chain(list(main.metadata.codecs[0].codecs))
        if chain is None:
            return None
        chunks = tuple(int(c) for c in main.chunks)
        spec = inner_chunk_spec(main, chunks)
        shard_shape = (int(main.shards[0]), *(int(n) for n in main.shards[1:]))
        return cls(main, *chain, spec, chunks, shard_shape)

    def _jobs(self, row0: int, data: Rows) -> list[tuple[tuple[int, ...], np.ndarray]]:
        cr = self.chunks[0]
        if not isinstance(data, np.ndarray) and cr != 1:
            raise ValueError(f"a list of rows for chunks of {cr} rows")
        jobs = []
        grids = [range(-(-n // c)) for n, c in zip(self.shape[1:], self.chunks[1:], strict=True)]
        for i in range(0, len(data), cr):
            rows = data[i : i + cr] if isinstance(data, np.ndarray) else data[i][None]
            for cc in itertools.product(*grids):
                coords = (row0 // cr + i // cr, *cc)
                cols = [slice(k * c, (k + 1) * c) for k, c in zip(cc, self.chunks[1:], strict=True)]
                jobs.append((coords, rows[(slice(None), *cols)]))
        return jobs

    def write(self, encoder: Encoder, row0: int, data: Rows) -> None:
        """Rows ``[row0, row0 + len(data))`` of the array, ``row0`` a chunk boundary:
        every chunk they touch, encoded and written (all done when this returns)."""
        jobs = self._jobs(row0, data)
        put = self.put
        if put is not None and self.plain:
            for coords, block in jobs:
                put(_key(self.arr, coords), self._plain(block))
            return
        if put is not None:
            encoder.run(lambda job: put(_key(self.arr, job[0]), self._one(job[1])), jobs)
            return
        encoded = encoder.run(lambda job: b"".join(self._one(job[1])), jobs)
        keys = [_key(self.arr, job[0]) for job in jobs]
        set_many(self.store, list(zip(keys, encoded, strict=True)))

    def encode(
        self, encoder: Encoder, row0: int, data: Rows
    ) -> Iterator[tuple[tuple[int, ...], tuple[Any, ...]]]:
        """The encoded chunks of rows ``[row0, row0 + len(data))`` of a shard with their
        coordinates within the shard, in C order (``row0`` a chunk boundary). Encoded
        :data:`ENCODE_BATCH` bytes of rows at a time, as the caller asks for them, so
        that the encoded bytes in memory stay bounded whatever the shard's size."""
        jobs = self._jobs(row0, data)
        if self.plain:  # encoded as the file is written, parts of ``data`` itself
            yield from ((coords, self._plain(block)) for coords, block in jobs)
            return
        per = max(1, ENCODE_BATCH // max(1, jobs[0][1].nbytes)) if jobs else 1
        for i in range(0, len(jobs), per):
            batch = jobs[i : i + per]
            encoded = encoder.run(lambda job: self._one(job[1]), batch)
            yield from zip((job[0] for job in batch), encoded, strict=True)

    def _plain(self, block: np.ndarray) -> tuple[Any, ...]:
        """A chunk of a plain chain (see ``plain``) as parts: its rows, not copied where
        each is contiguous, then their CRC-32C (fill past the rows given: :meth:`_one`)."""
        if block.shape != self.chunks:
            return self._one(block)
        parts = _parts(block)
        return (*parts, np.uint32(crc32c(parts)).astype("<u4").tobytes())

    def _one(self, block: np.ndarray) -> tuple[Any, ...]:
        """One chunk, encoded: its bytes as parts to write one after the other (the
        checksum, computed here when it is the chain's last codec, is not appended
        to a copy of the compressed bytes)."""
        if block.shape != self.chunks:
            full = np.full(self.chunks, self.fill, dtype=self.dtype)
            full[tuple(slice(0, n) for n in block.shape)] = block
            block = full
        block = np.ascontiguousarray(block)
        for f in self.filters:
            block = np.asarray(f._codec.encode(block)).reshape(self.chunks)
        data = encode_chain(self.body, block, self.spec)
        if not self.crc:
            return (data,)
        return data, np.uint32(crc32c((data,))).astype("<u4").tobytes()
