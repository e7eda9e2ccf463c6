"""Reading: the values of chosen record elements at chosen steps, decoding only the
chunks that hold them, and whole records a block of steps at a time.

Runs in the caller's thread (a lazy array's reads: the thread, or dask worker, that
computes it) and keeps no state.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..codecs import bit_positions, decode_rows
from ..format import SPIKE_ENCODING
from ..reader import FieldReader
from ._select import _batch_axis, _field, _np_dtype, _where
from ._shapes import _field_dtype, _plan

__all__: list[str] = []


def _as_slice(sel: Any) -> Any:
    """A sorted unique index array that is a contiguous range becomes a slice (faster in Zarr)."""
    if isinstance(sel, np.ndarray) and sel.size and int(sel[-1]) - int(sel[0]) + 1 == sel.size:
        return slice(int(sel[0]), int(sel[-1]) + 1)
    return sel


def _read_segment(
    fld: FieldReader, k: int, rows: np.ndarray, flat: np.ndarray, shape: tuple[int, ...]
) -> np.ndarray:
    """Elements ``flat`` (C-order, into records of ``shape``, the segment's own shape)
    of rows ``rows`` of segment ``k``: an array ``(len(rows), len(flat))``. Only the
    chunks holding them are read."""
    seg = fld.segments[k]
    if seg["encoding"] == SPIKE_ENCODING:
        bitpos = bit_positions(flat, shape, seg.get("permute"))
        ucols, cpos = np.unique(bitpos // 8, return_inverse=True)
        data = fld.take(k, rows, (_as_slice(ucols),))
        shift = (7 - bitpos % 8).astype(np.uint8)
        out: np.ndarray = (data[:, cpos] >> shift) & 1
        return out
    if shape:
        uniq = [np.unique(a, return_inverse=True) for a in np.unravel_index(flat, shape)]
        data = fld.take(k, rows, tuple(_as_slice(u) for u, _ in uniq))
        inverse: list[Any] = [inv for _, inv in uniq]
        picked = data[(slice(None), *inverse)]
    else:
        data = fld.take(k, rows, ())
        picked = np.repeat(data.reshape(len(rows), 1), len(flat), axis=1)
    vals = decode_rows(np.ascontiguousarray(picked).reshape(-1), {**seg, "shape": []})
    if vals.dtype in (torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2):
        vals = vals.float()
    return vals.numpy().reshape(len(rows), len(flat))


def _columns(
    layer: Any,
    steps: np.ndarray,
    flat: np.ndarray,
    *,
    dtype: Any = np.float64,
    field: int | str = 0,
    shape: tuple[int, ...] | None = None,
) -> np.ndarray:
    """Values of the record elements ``flat`` (C-order flat indices) at ``steps``.

    ``shape`` is the shape the records are read at (default: the selection's, by
    :func:`_plan` with padding; a lazy array passes the shape it was built with,
    which steps a writer adds later cannot change). Returns an array
    ``(len(steps), len(flat))``. Only the chunks holding those elements are read:
    the bytes that pack them for spike segments, the elements themselves for raw
    ones. Steps that recorded a Python number give that number for every element;
    steps that recorded ``None`` give NaN, and so do elements beyond a step's batch
    when its batch is smaller than ``shape``'s (an error for integer ``dtype``).
    """
    fld = _field(layer, field)
    if shape is None:
        shape = _plan(layer, fld, steps, pad=True)[0]
    numel = math.prod(shape)
    flat = np.asarray(flat, dtype=np.int64).reshape(-1)
    if flat.size and (flat.min() < 0 or flat.max() >= max(numel, 1)):
        raise IndexError(
            f"{_where(layer)}: element index out of range 0..{numel - 1} for records "
            f"of shape {shape}"
        )
    out = np.zeros((len(steps), len(flat)), dtype=dtype)
    if not len(steps):
        return out
    floating = np.issubdtype(out.dtype, np.floating)
    lo, hi = int(steps.min()), int(steps.max()) + 1
    idx = fld.index(lo, hi)[steps - lo]
    for k in np.unique(idx[:, 0]):
        sel = np.nonzero(idx[:, 0] == k)[0]
        if k < 0:
            if not floating:
                raise ValueError(f"{_where(layer)} recorded None at some of these steps")
            out[sel] = np.nan
            continue
        seg = fld.segments[int(k)]
        rows = idx[sel, 1]
        if rows.max() >= seg["rows"]:
            raise ValueError(f"{_where(layer)}: index points past segment {seg['array']}")
        sshape = tuple(seg["shape"])
        if sshape == shape:
            out[sel] = _read_segment(fld, int(k), rows, flat, sshape)
            continue
        if seg.get("python_scalar", False) or not sshape:
            # A number (e.g. ``v`` before the first step) stands for every element.
            one = _read_segment(fld, int(k), rows, np.zeros(1, dtype=np.int64), sshape)
            out[sel] = one.astype(np.float64)
            continue
        b = _batch_axis(layer, len(shape))
        if (
            b is None
            or len(sshape) != len(shape)
            or sshape[:b] + sshape[b + 1 :] != shape[:b] + shape[b + 1 :]
            or sshape[b] > shape[b]
        ):
            raise ValueError(
                f"{_where(layer)}: steps {steps[sel[0]]}.. have shape {sshape}, not {shape}; "
                "pass steps= within one shape (spikestore.analysis.shapes(layer))"
            )
        # A smaller batch: the elements it has, NaN for the rest.
        nd = np.unravel_index(flat, shape)
        have = nd[b] < sshape[b]
        if not have.all() and not floating:
            raise ValueError(f"{_where(layer)}: steps of a smaller batch at these steps")
        own = np.ravel_multi_index(tuple(a[have] for a in nd), sshape)
        block = np.full((len(sel), len(flat)), np.nan if floating else 0, dtype=out.dtype)
        block[:, have] = _read_segment(fld, int(k), rows, own, sshape)
        out[sel] = block
    return out

def _blocks(layer: Any, sel: np.ndarray, field: int | str, shape: tuple[int, ...]) -> Any:
    """Yield ``(steps, array)`` blocks of decoded records read at ``shape``, a chunk
    of steps at a time."""
    fld = _field(layer, field)
    block = 256
    if fld.segments:
        try:
            block = max(32, int(fld.array(0).chunks[0]))
        except Exception:  # a best-effort block size only
            block = 256
    flat = np.arange(math.prod(shape), dtype=np.int64)
    dt = _np_dtype(_field_dtype(fld))
    if not np.issubdtype(dt, np.floating) and any(
        s.get("python_scalar", False) for s in fld.segments
    ):
        dt = np.dtype("float64")
    for a in range(0, len(sel), block):
        part = sel[a : a + block]
        try:
            vals = _columns(layer, part, flat, dtype=dt, field=field, shape=shape)
        except ValueError:
            vals = _columns(layer, part, flat, dtype=np.float64, field=field, shape=shape)
        yield part, vals.reshape(len(part), *shape)
