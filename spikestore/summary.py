"""Per-step summaries written beside the records, so rates and ranges need no decoding.

The writer computes one summary row per step on its own thread, from the row it
is about to store (packed spike bytes or raw values), and writes the summary in
the same block write as the data, before the commit point (the field's
``committed_steps`` attribute). Raw records are summarised as they are taken;
packed spikes a block of steps at a time when the block is written (popcounts of
the packed bytes, exact integers: the same values as step by step, at a few numpy
calls per commit). Readers may trust the first ``committed_steps``
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
    precision; the order of the additions is not part of the format: a large float
    record's sums may differ in their last bits between writers with numba loaded and
    without). A record holding only NaN, or no element, has NaN ``min``,
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

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .codecs import Encoded, compressor_codecs, torch_dtype
from .codecs.rows import compile_later, start_jit
from .format import FORMAT_NAME, SPIKE_ENCODING

__all__ = [
    "SUMMARY",
    "SUMMARY_AXIS0",
    "COLUMNS",
    "MAX_AXIS0",
    "SUMMARY_CHUNK",
    "summarize",
    "summarize_spikes",
    "SpikeBlock",
    "FieldSummary",
]

SUMMARY = "summary"
SUMMARY_AXIS0 = "summary_axis0"
#: Columns of the ``summary`` array, in order.
COLUMNS = ("numel", "sum", "min", "max", "mean")
#: Longest first axis that gets per-index sums; longer ones get none.
MAX_AXIS0 = 4096
SUMMARY_CHUNK = 65536

# Set bits in each byte value: a popcount of packed spikes without unpacking them
# (numpy < 2.0 has no ``bitwise_count``).
_POPCOUNT = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(1).astype(np.int64)
_BITWISE_COUNT = getattr(np, "bitwise_count", None)
#: Bytes of bits unpacked at a time where a block's per-first-axis sums need unpacking.
_UNPACK_BYTES = 1 << 22


def _popcount(a: np.ndarray) -> np.ndarray:
    """Set bits along the last axis of a C-contiguous ``uint8`` array, as int64."""
    if _BITWISE_COUNT is None:
        return _POPCOUNT[a].sum(axis=-1)
    if a.shape[-1] % 8 == 0 and a.flags.c_contiguous:
        # Eight bytes at a time: one eighth of the elements to count and to sum.
        a = a.view(np.uint64)
    return _BITWISE_COUNT(a).sum(axis=-1, dtype=np.int64)


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


#: Raw records of at least this many float32 or float64 elements have their
#: per-first-axis sums computed by :func:`_k_row_sums` where it is compiled.
_SUMS_MIN = 1 << 16
#: [:func:`_k_row_sums` compiled, or None]: filled once by the ``spikestore-jit``
#: thread of :mod:`spikestore.codecs.rows` (started once numba is loaded).
_SUMS: list[Any] = []


def _k_row_sums(v: np.ndarray, out: np.ndarray) -> None:
    # out[r] = the float64 sum of row r of a 2-d array. ``reassoc`` lets the inner loop
    # vectorise (NumPy's widening sum converts blocks to float64 in a buffer, then
    # sums them: 2.5x slower); blocks of 1,024 summed apart keep the rounding error
    # near that of NumPy's pairwise sum (an adversarial float64 row: 7e-15 relative).
    for r in range(v.shape[0]):
        row = v[r]
        s = 0.0
        for b in range(0, row.shape[0], 1024):
            block = row[b : b + 1024]
            part = 0.0
            for i in range(block.shape[0]):
                part += np.float64(block[i])
            s += part
        out[r] = s


def _build_row_sums(numba: Any) -> Any:
    kernel = numba.njit(nogil=True, cache=True, fastmath={"reassoc", "nsz", "contract"})(
        _k_row_sums
    )
    out = np.zeros(1)
    for dtype in (np.float32, np.float64):  # both versions, before first use
        kernel(np.zeros((1, 1), dtype), out)
    return kernel


compile_later(_SUMS, _build_row_sums)


def _row_sums(vals: np.ndarray, rows: int) -> np.ndarray:
    """The float64 sums of ``vals`` (a flat float array) in ``rows`` equal rows."""
    if vals.size >= _SUMS_MIN and (vals.dtype == np.float32 or vals.dtype == np.float64):
        if not _SUMS:
            start_jit()
        elif _SUMS[0] is not None and vals.flags.c_contiguous:
            out = np.empty(rows, np.float64)
            _SUMS[0](vals.reshape(rows, -1), out)
            # inf, NaN, or an overflow that another order of additions may not have:
            # NumPy's sum, as without the kernel.
            if np.isfinite(out).all():
                return out
    return vals.reshape(rows, -1).sum(axis=1, dtype=np.float64)


def _has_axis0(shape: tuple[int, ...]) -> bool:
    return len(shape) >= 2 and 0 < shape[0] <= MAX_AXIS0


def summarize(enc: Encoded) -> tuple[np.ndarray, np.ndarray | None]:
    """One record's summary row (see :data:`COLUMNS`) and its per-first-axis sums.

    The second value is ``None`` for records of rank < 2.

    >>> from spikestore.codecs import encode
    >>> import torch
    >>> row, per_t = summarize(encode(torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])))
    >>> row.tolist(), per_t.tolist()
    ([6.0, 3.0, 0.0, 1.0, 0.5], [2.0, 1.0])
    """
    if enc.encoding == SPIKE_ENCODING:
        rows, axis0 = summarize_spikes(enc.shape, enc.permute, enc.row[None])
        return rows[0], (None if axis0 is None else axis0[0])
    # inf - inf, all-NaN rows and the like are data, not errors: no warnings on the writer thread.
    with np.errstate(all="ignore"):
        return _summarize_raw(enc)


def summarize_spikes(
    shape: tuple[int, ...], permute: tuple[int, ...] | None, block: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """The summary rows of a block of packed spike rows (``uint8``, one row per step).

    Returns ``(rows, axis0)``: ``rows`` of shape ``(m, 5)`` (see :data:`COLUMNS`), and
    the per-first-axis spike counts ``(m, shape[0])`` or None for records of rank < 2.
    Counts are exact integers, so a block gives the values :func:`summarize` gives for
    each of its rows; computing them a block at a time costs a few numpy calls per
    commit instead of per step.
    """
    block = np.ascontiguousarray(block)
    m = block.shape[0]
    numel = int(np.prod(shape, dtype=np.int64))
    count = _popcount(block).astype(np.float64)
    rows = np.empty((m, len(COLUMNS)), np.float64)
    rows[:, 0] = numel
    rows[:, 1] = count
    rows[:, 2] = count == numel
    rows[:, 3] = count > 0
    with np.errstate(all="ignore"):
        rows[:, 4] = count / numel
    axis0 = _spike_axis0(shape, permute, block, numel) if _has_axis0(shape) else None
    return rows, axis0


def _spike_axis0(
    shape: tuple[int, ...], permute: tuple[int, ...] | None, block: np.ndarray, numel: int
) -> np.ndarray:
    m, t = block.shape[0], shape[0]
    per = numel // t
    if (permute is None or permute[0] == 0) and per % 8 == 0:
        # Each index of the first axis owns whole bytes: popcount them.
        return _popcount(block[:, : numel // 8].reshape(m, t, per // 8)).astype(np.float64)
    if permute is not None and permute[-1] == 0 and t <= _TIME_LAST_MAX:
        return _time_last_axis0(block, t, numel)
    out = np.empty((m, t), np.float64)
    step = max(1, _UNPACK_BYTES // max(1, numel))
    for i in range(0, m, step):
        part = block[i : i + step]
        bits = np.unpackbits(part, axis=1, count=numel)
        k = len(part)
        if permute is None:
            per_t = bits.reshape(k, t, -1).sum(axis=2, dtype=np.int64)
        else:
            permuted = bits.reshape([k] + [shape[p] for p in permute])
            moved = np.moveaxis(permuted, 1 + list(permute).index(0), 1)
            per_t = moved.reshape(k, t, -1).sum(axis=2, dtype=np.int64)
        out[i : i + k] = per_t
    return out


#: The longest time axis :func:`_time_last_axis0` counts with byte tables (a table per
#: byte position of the repeating pattern: ``lcm(t, 8) / 8`` tables of ``256 x t``).
_TIME_LAST_MAX = 64


@functools.lru_cache(maxsize=64)
def _time_tables(t: int) -> np.ndarray:
    """``tables[k, v, i]``: how many set bits of byte value ``v``, at byte ``k`` of the
    repeating group of ``lcm(t, 8) / 8`` bytes, fall on time index ``i`` (bits are
    ``np.packbits``'s order, most significant first; the time index of bit ``b`` of
    the record is ``b % t``)."""
    group = math.lcm(t, 8) // 8
    bits = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1)  # (256, 8)
    tables = np.zeros((group, 256, t), np.int64)
    for k in range(group):
        for j in range(8):
            tables[k, :, (8 * k + j) % t] += bits[:, j]
    return tables


@functools.lru_cache(maxsize=8)
def _time_masks(t: int) -> np.ndarray:
    """``masks[i]``: the bits of a little-endian uint64 word of packed bytes (bit order
    big) whose time index is ``i``, for ``t`` with ``lcm(t, 8)`` dividing 64 (the
    pattern then repeats every word)."""
    masks = np.zeros(t, np.uint64)
    for b in range(64):  # bit b of 8 bytes: byte b // 8, bit 7 - b % 8 of it
        masks[b % t] |= np.uint64(1) << np.uint64(8 * (b // 8) + 7 - b % 8)
    return masks


def _time_last_axis0(block: np.ndarray, t: int, numel: int) -> np.ndarray:
    """Per-time spike counts of time-last packed rows (time the innermost axis, so bit
    ``b`` of a row belongs to time ``b % t``), without unpacking.

    Where the bits of one time index repeat every 8 bytes (``t`` in 1, 2, 4, ..., 64),
    a popcount of each 64-bit word under that index's mask; otherwise a histogram of
    the byte values at each position of the repeating byte group, times a table
    (about 10x slower: an int64 index a byte)."""
    m = block.shape[0]
    words = numel // 64
    if words and _BITWISE_COUNT is not None and 64 % math.lcm(t, 8) == 0:
        out = np.zeros((m, t), np.int64)
        w = np.ascontiguousarray(block[:, : 8 * words]).view("<u8")
        tmp = np.empty_like(w)
        for i, mask in enumerate(_time_masks(t)):
            np.bitwise_and(w, mask, out=tmp)
            out[:, i] = np.bitwise_count(tmp).sum(axis=1, dtype=np.int64)
        rest = numel - 64 * words  # 64 * words is a multiple of t
        if rest:
            bits = np.unpackbits(block[:, 8 * words :], axis=1, count=rest)
            idx = np.arange(rest) % t
            for i in range(t):
                out[:, i] += bits[:, idx == i].sum(axis=1, dtype=np.int64)
        return out.astype(np.float64)
    tables = _time_tables(t)
    group = tables.shape[0]
    full = (numel // (8 * group)) * group  # bytes in whole groups
    out = np.zeros((m, t), np.int64)
    offsets = (np.arange(m, dtype=np.int64) * 256)[:, None]
    for k in range(group):
        cols = block[:, k:full:group]
        if cols.size:
            hist = np.bincount((cols + offsets).ravel(), minlength=256 * m).reshape(m, 256)
            out += hist @ tables[k]
    rest = numel - 8 * full  # bits after the whole groups: unpacked (fewer than 8 * group)
    if rest:
        bits = np.unpackbits(block[:, full:], axis=1, count=rest).astype(np.int64)
        idx = np.arange(rest) % t  # 8 * full is a multiple of t
        for i in range(t):
            out[:, i] += bits[:, idx == i].sum(axis=1)
    return out.astype(np.float64)


def _summarize_raw(enc: Encoded) -> tuple[np.ndarray, np.ndarray | None]:
    shape = enc.shape
    numel = int(np.prod(shape, dtype=np.int64))
    axis0 = None
    if numel == 0:
        row = np.array([0, 0, np.nan, np.nan, np.nan], np.float64)
        return row, (np.zeros(shape[0]) if _has_axis0(shape) else None)
    vals = _as_float(enc).reshape(-1)
    by_axis0 = _has_axis0(shape)
    # One pass gives both: the per-first-axis sums and, from them, the total.
    sums = _row_sums(vals, shape[0] if by_axis0 else 1)
    total = sums.sum()
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
        if by_axis0:
            sums = np.asarray(np.nansum(vals.reshape(shape[0], -1), axis=1, dtype=np.float64))
    else:
        mean = total / numel
    row = np.array([numel, total, lo, hi, mean], np.float64)
    if by_axis0:
        axis0 = np.asarray(sums)
    return row, axis0


#: A pending step whose record is packed spikes: summarised at :meth:`FieldSummary.write`.
_SPIKES: Any = object()


@dataclass(frozen=True)
class SpikeBlock:
    """Packed spike rows of one segment among the steps a write commits."""

    positions: np.ndarray  # the steps of the rows, counted from the write's first step
    shape: tuple[int, ...]
    permute: tuple[int, ...] | None
    block: np.ndarray  # uint8, one packed row per position


@dataclass
class FieldSummary:
    """The writer's per-field summary state (writer thread only).

    ``pending`` holds one entry per step not yet committed: None (the field was
    None), the summary of a raw record, or a marker for packed spikes, which
    :meth:`absorb` summarises a block of rows at a time from the rows being written.
    """

    enabled: bool = True
    pending: list[Any] = field(default_factory=list)
    #: ``(steps, rows, axis0)`` of packed spike rows written and not yet committed.
    summed: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = field(default_factory=list)
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
        """Note one step; a raw record is summarised now, packed spikes at :meth:`write`
        (a block of rows at a time)."""
        if self.enabled:
            if enc is None:
                self.pending.append(None)
            elif enc.encoding == SPIKE_ENCODING:
                self.pending.append(_SPIKES)
            else:
                self.pending.append(summarize(enc))

    def absorb(self, start: int, spikes: Iterable[SpikeBlock]) -> None:
        """Summarise the packed rows of steps being written now, the write's first step
        being ``start``: :meth:`write` commits them later, and the rows themselves are
        not kept until then."""
        if not self.enabled:
            return
        for blk in spikes:
            r, a0 = summarize_spikes(blk.shape, blk.permute, blk.block)
            self.summed.append((blk.positions + start, r, a0))

    def forget(self, stop: int) -> None:
        """Forget the spike summaries given to :meth:`absorb` for steps from ``stop`` on
        (steps taken back: not written after all)."""
        kept = []
        for positions, r, a0 in self.summed:
            m = positions < stop
            if m.any():
                kept.append((positions[m], r[m], None if a0 is None else a0[m]))
        self.summed = kept

    def write(self, group: Any, start: int, stop: int) -> None:
        """Write the first pending rows as steps ``[start, stop)``; call before the commit.

        The steps whose records were spikes must have been given to :meth:`absorb`.
        """
        n = stop - start
        pending, self.pending = self.pending[:n], self.pending[n:]
        summed, self.summed = self.summed, []
        if not self.enabled or not pending:
            return
        if len(pending) != n:
            raise RuntimeError(f"summary rows out of step: {len(pending)} for {n} steps")
        rows = np.full((n, len(COLUMNS)), np.nan)
        #: (positions, per-first-axis sums), by position of the first step.
        parts: list[tuple[np.ndarray, np.ndarray]] = []
        n_spikes = 0
        for i, p in enumerate(pending):
            if p is None:
                continue
            if p is _SPIKES:
                n_spikes += 1
                continue
            rows[i] = p[0]
            if p[1] is not None:
                parts.append((np.array([i]), p[1][None]))
        for positions, r, a0 in summed:
            pos = positions - start
            rows[pos] = r
            n_spikes -= len(pos)
            if a0 is not None and len(pos):
                parts.append((pos, a0))
        if n_spikes:
            raise RuntimeError(f"summary rows out of step: {n_spikes} spike rows not given")
        if self.array is None:
            self.array = _create(group, SUMMARY, len(COLUMNS), ["step", "stat"], list(COLUMNS))
        _grow(self.array, stop)
        self.array[start:stop] = rows
        if not parts and self.axis0_len is None:
            return
        if self.axis0_len is None:
            first = min(parts, key=lambda part: int(part[0][0]))
            self.axis0_len = int(first[1].shape[1])
            self.axis0 = _create(
                group,
                SUMMARY_AXIS0,
                max(1, self.axis0_len),
                ["step", "axis0"],
                [f"sum[{t}]" for t in range(self.axis0_len)],
                axis0_length=self.axis0_len,
            )
        t = self.axis0_len
        block = np.full((n, max(1, t)), np.nan)
        for pos, a0 in parts:
            if a0.shape[1] == t:
                block[pos, :t] = a0
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
    return group.create_array(
        name,
        shape=(0, k),
        dtype="float64",
        # Inner chunks of at most 512 KiB inside shards of SUMMARY_CHUNK steps: a
        # flush re-encodes only the inner chunk it touches, and a layer still gets
        # one summary file per SUMMARY_CHUNK steps.
        chunks=(min(SUMMARY_CHUNK, max(256, 1 << ((1 << 19) // (8 * k)).bit_length() - 1)), k),
        shards=(SUMMARY_CHUNK, k),
        # Byte shuffle: per-step counts vary in a few low bytes (0.6x zstd's size).
        compressors=compressor_codecs("blosc-zstd", 5, itemsize=8, shuffle=True),
        config={"write_empty_chunks": True},
        fill_value=np.nan,
        dimension_names=dims,
        overwrite=True,
        attributes={FORMAT_NAME: {"node": "summary", "columns": columns, **extra}},
    )
