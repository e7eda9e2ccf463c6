"""Chunk and shard shapes of a segment, and the axis order spikes are packed in.

Pure functions of a record's shape: nothing here touches a store or a thread.
"""

from __future__ import annotations

import math

from ..format import MAX_CHUNK_BYTES, MAX_CHUNKS_PER_SHARD
from .spikes import MOTION_MAX_T

__all__ = ["MAX_SHARD_BYTES", "MAX_FRAME_BITS", "layout", "spike_frame", "time_last"]

#: Rows of the open shard go to a tail array and each shard file is written once
#: (see ``spikestore._segments``), so shard size costs neither memory nor rewrites;
#: the cap only keeps single files of huge records reasonable.
MAX_SHARD_BYTES = 1 << 30
#: Larger planes would make chunks of whole planes too big; they get TREE coding only.
MAX_FRAME_BITS = 1 << 20


def _pow2_floor(x: int) -> int:
    return 1 << max(0, int(x).bit_length() - 1)


def layout(
    row_shape: tuple[int, ...],
    itemsize: int,
    shard_steps: int,
    chunk_bytes: int,
    max_shard_bytes: int = MAX_SHARD_BYTES,
    frame: tuple[int, int, int] | None = None,
    max_chunk_row_bytes: int | None = None,
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Inner chunk and shard shapes for a segment of rows of ``row_shape``.

    Inner chunks hold at least 16 steps and about ``chunk_bytes`` bytes, split
    over the record's trailing axes, so one step and one neuron's history both
    decode little; a shard holds ``shard_steps`` steps (more for tiny records,
    fewer for records so large that a shard would pass ``max_shard_bytes``).
    For 1-D packed spike rows with a MOTION ``frame`` (see :func:`spike_frame`), the
    chunk width is a whole number of ``H * W * T``-bit planes, even if that pads the
    last chunk. ``max_chunk_row_bytes`` (raw rows: the writer's buffer bound) caps a
    row of chunks: records so large that 16 steps would pass it get fewer steps per
    chunk (a power of two, at least one), so that the writer buffers whole rows of
    chunks within its bound and writes each shard once.

    The decoded chunk stays within :data:`~spikestore.format.MAX_CHUNK_BYTES` and a shard
    holds at most :data:`~spikestore.format.MAX_CHUNKS_PER_SHARD` chunks, the bounds a
    reader checks: ``chunk_bytes`` is taken as at most an eighth of the first (a chunk
    of whole MOTION planes may hold eight times ``chunk_bytes``), and raised where
    chunks that small would pass the second.
    """
    chunk_bytes = min(max(1, int(chunk_bytes)), MAX_CHUNK_BYTES // 8)
    while True:
        chunks, shards = _layout(
            row_shape,
            itemsize,
            shard_steps,
            chunk_bytes,
            max_shard_bytes,
            frame,
            max_chunk_row_bytes,
        )
        count = math.prod(-(-s // c) for s, c in zip(shards, chunks, strict=True))
        if count <= MAX_CHUNKS_PER_SHARD or chunk_bytes >= MAX_CHUNK_BYTES // 8:
            break
        chunk_bytes = min(chunk_bytes * 2, MAX_CHUNK_BYTES // 8)
    if math.prod(chunks) * itemsize > MAX_CHUNK_BYTES or count > MAX_CHUNKS_PER_SHARD:
        raise ValueError(
            f"records of shape {list(row_shape)} cannot be chunked within the format's "
            f"bounds ({MAX_CHUNK_BYTES} bytes a chunk, {MAX_CHUNKS_PER_SHARD} chunks a shard)"
        )
    return chunks, shards


def _layout(
    row_shape: tuple[int, ...],
    itemsize: int,
    shard_steps: int,
    chunk_bytes: int,
    max_shard_bytes: int,
    frame: tuple[int, int, int] | None,
    max_chunk_row_bytes: int | None,
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    row_bytes = max(1, math.prod(row_shape) * itemsize)
    steps = min(max(16, _pow2_floor(chunk_bytes // row_bytes)), 4096)
    one_step = max_chunk_row_bytes is not None and steps * row_bytes > max_chunk_row_bytes
    if one_step:
        # Records too large for 16 steps a chunk row: chunks of one step (a step reads
        # its own bytes only), cut where they tile the record (a step's chunks then
        # lie in the file in the order of its bytes, read by one ``preadv``).
        steps = 1
    shard = max(shard_steps, min(65536, _pow2_floor(max(1, (1 << 20) // row_bytes))), steps)
    shard = min(shard, max(steps, _pow2_floor(max(1, max_shard_bytes // row_bytes))))
    shard -= shard % steps
    budget = row_budget = max(1, chunk_bytes // (steps * itemsize))
    chunk = [1] * len(row_shape)
    for ax in range(len(row_shape) - 1, -1, -1):
        d = max(1, row_shape[ax])
        if budget >= d:
            chunk[ax] = d
            budget //= d
        else:
            chunk[ax] = max(1, budget)
            if one_step:
                # The largest width that divides the axis, if not under half the budget
                # (a prime length keeps its clipped last chunk).
                fits = [k for k in range(chunk[ax] // 2 + 1, chunk[ax] + 1) if d % k == 0]
                chunk[ax] = max(fits, default=chunk[ax])
            break
    unit = math.lcm(8, math.prod(frame)) // 8 if frame else 1
    if unit > 1 and len(row_shape) == 1:
        whole = math.ceil(max(1, row_shape[0]) / unit) * unit
        chunk[0] = min(whole, max(unit, row_budget // unit * unit))
    shard_rest = [math.ceil(max(1, d) / c) * c for d, c in zip(row_shape, chunk, strict=True)]
    return (steps, *chunk), (shard, *shard_rest)


def spike_frame(
    shape: tuple[int, ...], permute: tuple[int, ...] | None
) -> tuple[int, int, int] | None:
    """``(H, W, T)`` planes of a time-last spike record of 4 or more axes (a conv
    layer's ``[T, (B,) C, H, W]``), for the MOTION coding; None for other records."""
    if permute is None or len(shape) < 4:
        return None
    h, w, t = (shape[p] for p in permute[-3:])
    if not 2 <= t <= MOTION_MAX_T or h * w < 2 or h * w * t > MAX_FRAME_BITS:
        return None
    return h, w, t


def time_last(time_axis: int | None, ndim: int) -> tuple[int, ...] | None:
    """Axis order that moves ``time_axis`` last (None when there is nothing to move)."""
    if time_axis is None or ndim < 2 or not -ndim <= time_axis < ndim:
        return None
    t = time_axis % ndim
    if t == ndim - 1:
        return None
    return (*[i for i in range(ndim) if i != t], t)
