"""Moving encoded chunks between a segment's tail array and a shard of its main array.

Zarr rewrites a whole shard file each time part of it is written, so a writer that
commits every second would rewrite (and hold in memory) the open shard again and
again. Instead, rows of the open shard go to an unsharded *tail* array with the same
inner chunk shape and codecs; when the shard is complete (or the writer closes) its
chunks are copied, as encoded bytes, into one shard file, written once. Nothing is
decoded or encoded again, and only one chunk is in memory at a time.

The shard file follows Zarr's ``sharding_indexed`` layout with the index at the end:
the chunks back to back, then ``(offset, nbytes)`` as little-endian uint64 for every
inner chunk in C order (``2**64 - 1`` twice for an absent chunk), then the CRC-32C
of that index as a little-endian uint32.
"""

from __future__ import annotations

import itertools
import os
import uuid
from typing import Any

import google_crc32c
import numpy as np

__all__ = ["copy_to_shard", "copy_from_shard"]

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
    from zarr.storage import LocalStore

    store = main.store_path.store
    grid = _grid(main)
    proto = default_buffer_prototype()
    index = np.full((*grid, 2), _EMPTY, dtype="<u8")
    target = _key(main, (shard,) + (0,) * (main.ndim - 1))
    local = isinstance(store, LocalStore)
    if local:
        path = os.path.join(str(store.root), target)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{uuid.uuid4().hex}.partial"
        out: Any = open(tmp, "wb")
    else:
        out = []
    offset = 0
    try:
        for coords in itertools.product(*(range(g) for g in grid)):
            if coords[0] >= chunk_rows:
                continue
            buf = _sync(store.get(_key(tail, coords), proto))
            if buf is None:
                continue
            data = buf.as_numpy_array().tobytes()
            if local:
                out.write(data)
            else:
                out.append(data)
            index[coords] = (offset, len(data))
            offset += len(data)
        raw = index.tobytes()
        crc = np.uint32(google_crc32c.value(raw)).astype("<u4").tobytes()
        if local:
            out.write(raw + crc)
            out.close()
            os.replace(tmp, path)
        else:
            out.append(raw + crc)
            _sync(store.set(target, proto.buffer.from_bytes(b"".join(out))))
    except BaseException:
        if local:
            out.close()
            if os.path.exists(tmp):
                os.unlink(tmp)
        raise


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
