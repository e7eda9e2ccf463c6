"""Per-step summaries written beside the records, so rates and ranges need no decoding.

The writer computes one summary row per step on its own thread, from the row it
is about to store (packed spike bytes or raw values), and writes the summary in
the same block write as the data, before the commit point (the field's
``committed_steps`` attribute). Readers may trust the first ``committed_steps``
rows of a summary like those of the index.

Layout
------
Each field group ``<monitor>/<layer>/f<i>/`` may hold two float64 arrays:

``summary`` : (steps, 5), ``dimension_names = ["step", "stat"]``
    Columns ``numel, sum, min, max, mean`` of each record. For a bit-packed
    spike record ``sum`` is the spike count (a popcount of the packed bytes) and
    ``min``, ``max``, ``mean`` follow from it. For a raw record they are
    NaN-aware (``nansum``, ``nanmin``, ``nanmax``, ``nanmean``) and computed in
    float64 (bfloat16 and float8 are widened first; integers above 2**53 lose
    precision). A record holding only NaN, or no element, has NaN ``min``,
    ``max`` and ``mean``. A step that recorded ``None`` is all NaN.
``summary_axis0`` : (steps, T), ``dimension_names = ["step", "axis0"]``
    Created when the field first records a tensor of rank >= 2; ``T`` is the
    length of that record's first axis (the time axis of a multi-step record
    ``[T, N, ...]``, the batch axis of a single-step ``[N, ...]`` one), from 1 to
    :data:`MAX_AXIS0`. Column ``t`` is the (NaN-aware) sum over all axes but the
    first of ``record[t]``: for spikes, the spike count at time step ``t``.
    Rows are NaN where the record is ``None``, has rank < 2, or a first axis of
    another length than ``T``, and for steps written before the array existed.

Both arrays are sharded along steps, :data:`SUMMARY_CHUNK` (65536) steps to a
shard file, whatever their width. Inside a shard the inner chunks hold the largest
power of two of steps whose chunk is at most 512 KiB (``8 * columns * steps <=
2**19``), but at least 256 steps: 8192 steps for ``summary``, ``2**16 / T`` rounded
down to a power of two for ``summary_axis0`` (256 steps, up to 8 MiB, when
``T > 256``). So a flush re-encodes only the inner chunk it touches (Zarr rewrites
the shard file with the other chunks' bytes as they were), and a layer makes one
summary file per 65536 steps. Chunks are Zstandard-compressed (level 3) with a
CRC-32C; the fill value is NaN.

Both arrays carry ``attrs["spikestore"] = {"node": "summary", "columns": [...]}``
(the ``summary_axis0`` entry also has ``"axis0_length": T``). A store written
without summaries (or a field appended to after being written without one) has
no ``summary`` array; readers then decode the records instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .codecs import Encoded, checksum, torch_dtype
from .format import FORMAT_NAME, SPIKE_ENCODING

__all__ = [
    "SUMMARY",
    "SUMMARY_AXIS0",
    "COLUMNS",
    "MAX_AXIS0",
    "SUMMARY_CHUNK",
    "summarize",
    "FieldSummary",
]

SUMMARY = "summary"
SUMMARY_AXIS0 = "summary_axis0"
#: Columns of the ``summary`` array, in order.
COLUMNS = ("numel", "sum", "min", "max", "mean")
#: Longest first axis that gets per-index sums; longer ones get none.
MAX_AXIS0 = 4096
SUMMARY_CHUNK = 65536

# Set bits in each byte value: a popcount of packed spikes without unpacking them.
_POPCOUNT = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(1).astype(np.int64)


def _as_float(enc: Encoded) -> np.ndarray:
    """A raw row's values as a float array (widening dtypes numpy lacks)."""
    row = enc.row
    if enc.dtype in ("bfloat16", "float8_e4m3fn", "float8_e5m2"):
        import torch

        wide = torch.from_numpy(np.ascontiguousarray(row)).view(torch_dtype(enc.dtype)).float()
        return wide.numpy()
    if row.dtype == np.float64 or row.dtype == np.float32 or row.dtype == np.float16:
        return row
    return row.astype(np.float64)


def summarize(enc: Encoded) -> tuple[np.ndarray, np.ndarray | None]:
    """One record's summary row (see :data:`COLUMNS`) and its per-first-axis sums.

    The second value is ``None`` for records of rank < 2.

    >>> from spikestore.codecs import encode
    >>> import torch
    >>> row, per_t = summarize(encode(torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])))
    >>> row.tolist(), per_t.tolist()
    ([6.0, 3.0, 0.0, 1.0, 0.5], [2.0, 1.0])
    """
    # inf - inf, all-NaN rows and the like are data, not errors: no warnings on the writer thread.
    with np.errstate(all="ignore"):
        return _summarize(enc)


def _summarize(enc: Encoded) -> tuple[np.ndarray, np.ndarray | None]:
    shape = enc.shape
    numel = int(np.prod(shape, dtype=np.int64))
    axis0 = None
    if enc.encoding == SPIKE_ENCODING:
        count = int(_POPCOUNT[enc.row].sum())
        row = np.array(
            [numel, count, float(count == numel), float(count > 0), count / numel], np.float64
        )
        if len(shape) >= 2 and 0 < shape[0] <= MAX_AXIS0:
            axis0 = _spike_axis0(enc, numel)
        return row, axis0
    if numel == 0:
        row = np.array([0, 0, np.nan, np.nan, np.nan], np.float64)
        return row, (np.zeros(shape[0]) if len(shape) >= 2 and 0 < shape[0] <= MAX_AXIS0 else None)
    vals = _as_float(enc).reshape(-1)
    total = vals.sum(dtype=np.float64)
    lo, hi = vals.min(), vals.max()
    if np.isnan(lo) or np.isnan(hi):
        nan = np.isnan(vals)
        n = numel - int(nan.sum())
        if n:
            good = vals[~nan]
            total = good.sum(dtype=np.float64)
            lo, hi, mean = good.min(), good.max(), total / n
        else:
            total, lo, hi, mean = 0.0, np.nan, np.nan, np.nan
    else:
        mean = total / numel
    row = np.array([numel, total, lo, hi, mean], np.float64)
    if len(shape) >= 2 and 0 < shape[0] <= MAX_AXIS0:
        axis0 = np.asarray(np.nansum(vals.reshape(shape[0], -1), axis=1, dtype=np.float64))
    return row, axis0


def _spike_axis0(enc: Encoded, numel: int) -> np.ndarray:
    t = enc.shape[0]
    per = numel // t if t else 0
    perm = enc.permute
    if (perm is None or perm[0] == 0) and per % 8 == 0:
        # Each index of the first axis owns whole bytes: popcount them.
        return _POPCOUNT[enc.row.reshape(t, -1)].sum(axis=1).astype(np.float64)
    bits = np.unpackbits(enc.row, count=numel)
    if perm is None:
        return bits.reshape(t, -1).sum(axis=1, dtype=np.int64).astype(np.float64)
    permuted = bits.reshape([enc.shape[p] for p in perm])
    moved = np.moveaxis(permuted, list(perm).index(0), 0)
    return moved.reshape(t, -1).sum(axis=1, dtype=np.int64).astype(np.float64)


@dataclass
class FieldSummary:
    """The writer's per-field summary state (writer thread only)."""

    enabled: bool = True
    pending: list[tuple[np.ndarray, np.ndarray | None] | None] = field(default_factory=list)
    array: Any = None
    axis0: Any = None
    axis0_len: int | None = None

    def load(self, group: Any, committed: int) -> None:
        """Pick up an existing field's summaries (append mode)."""
        if not committed:
            # Arrays left by a run killed before its first commit are replaced on write.
            return
        if SUMMARY in group:
            self.array = group[SUMMARY]
            if SUMMARY_AXIS0 in group:
                self.axis0 = group[SUMMARY_AXIS0]
                self.axis0_len = int(self.axis0.shape[1])
        elif committed:
            # Rows for the steps already there cannot be recovered without decoding.
            self.enabled = False

    def add(self, enc: Encoded | None) -> None:
        if self.enabled:
            self.pending.append(None if enc is None else summarize(enc))

    def write(self, group: Any, start: int, stop: int) -> None:
        """Write the first pending rows as steps ``[start, stop)``; call before the commit."""
        n = stop - start
        pending, self.pending = self.pending[:n], self.pending[n:]
        if not self.enabled or not pending:
            return
        if len(pending) != stop - start:
            raise RuntimeError(f"summary rows out of step: {len(pending)} for {stop - start} steps")
        if self.array is None:
            self.array = _create(group, SUMMARY, len(COLUMNS), ["step", "stat"], list(COLUMNS))
        block = np.full((len(pending), len(COLUMNS)), np.nan)
        for i, p in enumerate(pending):
            if p is not None:
                block[i] = p[0]
        _grow(self.array, stop)
        self.array[start:stop] = block
        if self.axis0_len is None:
            first = next((p[1] for p in pending if p is not None and p[1] is not None), None)
            if first is None:
                return
            self.axis0_len = len(first)
            self.axis0 = _create(
                group,
                SUMMARY_AXIS0,
                max(1, self.axis0_len),
                ["step", "axis0"],
                [f"sum[{t}]" for t in range(self.axis0_len)],
                axis0_length=self.axis0_len,
            )
        t = self.axis0_len
        block = np.full((len(pending), max(1, t)), np.nan)
        for i, p in enumerate(pending):
            if p is not None and p[1] is not None and len(p[1]) == t:
                block[i, :t] = p[1]
        _grow(self.axis0, stop)
        self.axis0[start:stop] = block

    def trim(self, committed: int) -> None:
        """Cut the arrays to ``committed`` rows (a closing writer; see :func:`_grow`)."""
        for arr in (self.array, self.axis0):
            if arr is not None and arr.shape[0] > committed:
                arr.resize((committed, *arr.shape[1:]))


def _grow(arr: Any, stop: int) -> None:
    """Make ``arr`` at least ``stop`` rows long, a shard at a time: its ``zarr.json`` is
    then rewritten once per shard, not at every commit (each write is a request on
    object storage). Rows past ``committed_steps`` are NaN, never read."""
    if arr.shape[0] < stop:
        arr.resize((-(-stop // SUMMARY_CHUNK) * SUMMARY_CHUNK, *arr.shape[1:]))


def _create(
    group: Any, name: str, k: int, dims: list[str], columns: list[str], **extra: Any
) -> Any:
    from zarr.codecs import ZstdCodec

    return group.create_array(
        name,
        shape=(0, k),
        dtype="float64",
        # Inner chunks of at most 512 KiB inside shards of SUMMARY_CHUNK steps: a
        # flush re-encodes only the inner chunk it touches, and a layer still gets
        # one summary file per SUMMARY_CHUNK steps.
        chunks=(min(SUMMARY_CHUNK, max(256, 1 << ((1 << 19) // (8 * k)).bit_length() - 1)), k),
        shards=(SUMMARY_CHUNK, k),
        compressors=[ZstdCodec(level=3), checksum()],
        config={"write_empty_chunks": True},
        fill_value=np.nan,
        dimension_names=dims,
        overwrite=True,
        attributes={FORMAT_NAME: {"node": "summary", "columns": columns, **extra}},
    )
