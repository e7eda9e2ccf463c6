"""The shard file: how a segment's inner chunks, its shard header and its index lie in
one file, written by ``spikestore._segments`` and read by ``spikestore.reader``.

A shard file follows Zarr's ``sharding_indexed`` layout as :func:`sharding_codec`
builds it, and adds a shard header (format 1.6) where no index entry points::

    chunk, chunk, ...        the inner chunks' encoded bytes, back to back; each ends
                             with its CRC-32C (every segment's codec chain ends with
                             ``crc32c``)
    shard header             format 1.6 only: :func:`shard_header`, naming the segment,
                             the shard and each chunk's CRC-32C
    index                    per inner chunk in C order, ``(offset, nbytes)`` as
                             little-endian uint64; ``2**64 - 1`` twice for an absent chunk
    CRC-32C                  of the index, little-endian uint32

Zarr (and any reader of the sharding layout) skips the shard header: it reads the
index from the end and the chunks it points to. :class:`ShardFooter` builds the end
of a file as it is written; :func:`parse_index`, :func:`chunk_spans`,
:func:`parse_shard_header` and :func:`check_chunk` read it back.

Thread ownership: any (pure functions; a :class:`ShardFooter` belongs to the thread
writing its file).
"""

from __future__ import annotations

import math
import struct
import zlib
from typing import Any

import google_crc32c
import numpy as np

__all__ = [
    "ABSENT",
    "SHARD_HEADER_MAGIC",
    "SHARD_HEADER_VERSION",
    "ShardFooter",
    "check_chunk",
    "chunk_spans",
    "chunk_trailer",
    "footer_size",
    "index_size",
    "index_spans",
    "is_sharding_codec",
    "parse_index",
    "parse_shard_header",
    "shard_header",
    "shard_header_size",
    "sharding_codec",
]

#: An absent inner chunk's offset and size in a shard index.
ABSENT = 2**64 - 1
SHARD_HEADER_MAGIC = b"SKSH"
SHARD_HEADER_VERSION = 1
#: The fixed start of a shard header: magic, version, ndim, reserved, segment id.
_SHARD_HEAD = "<4sBBH16s"
_SHARD_HEAD_SIZE = 24


def sharding_codec(chunks: tuple[int, ...], codecs: list[Any]) -> Any:
    """Zarr's ``sharding_indexed`` codec as every segment uses it: the index at the end,
    little-endian, followed by its CRC-32C. Built explicitly so that no change of Zarr's
    defaults can silently break the layout the writer and the reader rely on."""
    from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec

    return ShardingCodec(
        chunk_shape=chunks,
        codecs=codecs,
        index_codecs=[BytesCodec(endian="little"), Crc32cCodec()],
        index_location="end",
    )


def is_sharding_codec(codec: Any) -> bool:
    """Whether ``codec`` lays out shard files as :func:`sharding_codec` does (whatever
    its inner chunks and codecs)."""
    from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec
    from zarr.codecs.sharding import ShardingCodecIndexLocation

    return (
        type(codec) is ShardingCodec
        and codec.index_location == ShardingCodecIndexLocation.end
        and tuple(codec.index_codecs) == (BytesCodec(endian="little"), Crc32cCodec())
    )


def index_size(chunks: int) -> int:
    """Bytes of the index (with its CRC-32C) of a shard of ``chunks`` inner chunks."""
    return 16 * chunks + 4


def shard_header_size(ndim: int, chunks: int) -> int:
    """Bytes of the shard header of an ``ndim``-dimensional array whose shards hold
    ``chunks`` inner chunks."""
    return _SHARD_HEAD_SIZE + 8 * ndim + 4 * chunks + 4


def footer_size(ndim: int, chunks: int, header: bool) -> int:
    """Bytes at the end of a shard file after its chunks: the index, and the shard
    header before it if ``header``."""
    return index_size(chunks) + (shard_header_size(ndim, chunks) if header else 0)


def shard_header(segment_id: str, coords: tuple[int, ...], trailers: bytes) -> bytes:
    """The shard header of shard ``coords`` (its chunk key's coordinates) of the
    segment ``segment_id``. ``trailers`` holds, for each inner chunk in C order, the
    last 4 bytes of its encoded bytes (its CRC-32C), 4 zero bytes for an absent chunk.

    Layout (little-endian)::

        0        4       magic b"SKSH"
        4        1       version 1
        5        1       ndim, the number of coordinates
        6        2       reserved, 0
        8        16      the segment's id (its 32 hex digits as 16 bytes)
        24       8*ndim  the shard's coordinates, uint64
        ...      4*n     the inner chunks' trailers, in C order
        ...      4       CRC-32 (zlib) of all the bytes before it
    """
    head = struct.pack(
        _SHARD_HEAD,
        SHARD_HEADER_MAGIC,
        SHARD_HEADER_VERSION,
        len(coords),
        0,
        bytes.fromhex(segment_id),
    )
    body = head + struct.pack(f"<{len(coords)}Q", *coords) + bytes(trailers)
    return body + struct.pack("<I", zlib.crc32(body))


def parse_shard_header(data: bytes, ndim: int, chunks: int) -> tuple[str, tuple[int, ...], bytes]:
    """``(segment id, coordinates, trailers)`` of a shard header (see
    :func:`shard_header`) of ``shard_header_size(ndim, chunks)`` bytes; ValueError
    naming what is wrong when the bytes are not one."""
    size = shard_header_size(ndim, chunks)
    if len(data) != size:
        raise ValueError(f"a shard header of {size} bytes was expected, not {len(data)}")
    magic, version, n, _, raw_id = struct.unpack_from(_SHARD_HEAD, data)
    if magic != SHARD_HEADER_MAGIC:
        raise ValueError("no shard header (the file was not written with it)")
    if struct.unpack_from("<I", data, size - 4)[0] != zlib.crc32(data[: size - 4]):
        raise ValueError("the shard header's checksum does not match (damaged)")
    if version != SHARD_HEADER_VERSION or n != ndim:
        raise ValueError(f"unsupported shard header (version {version}, {n} coordinates)")
    pos = _SHARD_HEAD_SIZE
    coords = struct.unpack_from(f"<{ndim}Q", data, pos)
    pos += 8 * ndim
    return raw_id.hex(), tuple(coords), bytes(data[pos : pos + 4 * chunks])


def chunk_trailer(parts: tuple[Any, ...]) -> int:
    """The last 4 bytes of a chunk given as parts, as a little-endian uint32 (the
    chunk's CRC-32C: every segment's codec chain ends with it)."""
    tail = b""
    for p in reversed(parts):
        tail = bytes(memoryview(p).cast("B")[-(4 - len(tail)) :]) + tail
        if len(tail) >= 4:
            break
    return int.from_bytes(tail.rjust(4, b"\0")[-4:], "little")


class ShardFooter:
    """The index (and shard header) of a shard file being written: :meth:`place` each
    chunk in the order its bytes are written, then write :meth:`end` after them."""

    def __init__(self, grid: tuple[int, ...]) -> None:
        self.index = np.full((*grid, 2), ABSENT, dtype="<u8")
        self.trailers = np.zeros(grid, dtype="<u4")
        self.offset = 0

    def place(self, coords: tuple[int, ...], parts: tuple[Any, ...]) -> None:
        """Inner chunk ``coords`` is ``parts``, written right after the chunks before."""
        size = sum(memoryview(p).nbytes for p in parts)
        self.index[coords] = (self.offset, size)
        self.trailers[coords] = chunk_trailer(parts)
        self.offset += size

    def end(self, segment_id: str | None, coords: tuple[int, ...]) -> bytes:
        """What follows the chunks of shard ``coords``: its shard header (for a segment
        with an id, format 1.6), then the index and the index's CRC-32C."""
        raw = self.index.tobytes()
        head = b""
        if segment_id is not None:
            head = shard_header(segment_id, coords, self.trailers.tobytes())
        return head + raw + google_crc32c.value(raw).to_bytes(4, "little")


def parse_index(data: Any, grid: tuple[int, ...]) -> np.ndarray:
    """The index at the end of ``data`` (a shard file, or a suffix of one at least
    :func:`index_size` long) as uint64 ``(*grid, 2)``; ValueError if its CRC-32C does
    not match."""
    buf = np.frombuffer(data, np.uint8)
    n = index_size(int(np.prod(grid, dtype=np.int64)))
    if len(buf) < n:
        raise ValueError(f"{len(buf)} bytes cannot hold its {n}-byte index")
    raw = buf[len(buf) - n : len(buf) - 4]
    if google_crc32c.value(raw) != int.from_bytes(buf[len(buf) - 4 :].tobytes(), "little"):
        raise ValueError("the index's CRC-32C does not match (damaged)")
    return raw.view("<u8").reshape(*grid, 2)


def chunk_spans(index: np.ndarray, end: int) -> np.ndarray:
    """``(offset, nbytes)`` of each inner chunk of ``index`` (see :func:`parse_index`)
    as int64, ``-1`` for an absent chunk; ValueError naming the first entry that points
    outside the file's first ``end`` bytes or is too short to hold a CRC-32C."""
    off, size = index[..., 0], index[..., 1]
    absent = (off == ABSENT) & (size == ABSENT)
    lim = np.uint64(end)
    # off + size <= end, written so that it cannot overflow
    bad = ~absent & ((size < 4) | (off > lim) | (size > lim - np.minimum(off, lim)))
    if bad.any():
        at = tuple(int(v) for v in np.argwhere(bad)[0])
        raise ValueError(
            f"index entry of inner chunk {at} points outside the shard's {end} data "
            f"bytes (offset {int(off[at])}, size {int(size[at])})"
        )
    return np.where(absent[..., None], -1, index.astype(np.int64))


def index_spans(data: Any, grid: tuple[int, ...], end: int) -> list[tuple[int, int]]:
    """:func:`chunk_spans` of :func:`parse_index` as a list of ``(offset, nbytes)`` in C
    order (``(-1, -1)`` absent), in plain Python: for a reader that wants a few chunks
    of a shard, about a third of their time (no NumPy array to make and reduce). An
    index they refuse is refused by them, with their error."""
    buf = memoryview(data).cast("B")
    n = math.prod(grid)
    size = index_size(n)
    index = bytes(buf[len(buf) - size :]) if len(buf) >= size else b""
    if not index or google_crc32c.value(index[:-4]) != int.from_bytes(index[-4:], "little"):
        parse_index(data, grid)  # raises: too short, or damaged
        raise AssertionError("parse_index accepted an index index_spans refuses")
    vals = struct.unpack_from(f"<{2 * n}Q", index)
    spans = []
    for i in range(n):
        off, nbytes = vals[2 * i], vals[2 * i + 1]
        if off == ABSENT and nbytes == ABSENT:
            spans.append((-1, -1))
        elif nbytes < 4 or off > end or nbytes > end - min(off, end):
            chunk_spans(parse_index(data, grid), end)  # raises, naming the entry
            raise AssertionError("chunk_spans accepted an entry index_spans refuses")
        else:
            spans.append((off, nbytes))
    return spans


def check_chunk(chunk: np.ndarray) -> tuple[np.ndarray, int]:
    """``(body, crc)`` of an encoded inner chunk (its bytes less its CRC-32C, and that
    CRC-32C); ValueError if the CRC-32C does not match."""
    body = chunk[:-4]
    crc = int.from_bytes(chunk[-4:].tobytes(), "little")
    if google_crc32c.value(body) != crc:
        raise ValueError("fails its CRC-32C (damaged)")
    return body, crc
