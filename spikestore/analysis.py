"""Analysis of recorded layers: rates, counts, rasters, traces, and NumPy/Dask/xarray views.

Every function takes a :class:`~spikestore.reader.LayerReader` (``store[monitor][layer]``)
and reads only what it needs:

* :func:`summary`, :func:`firing_rate` read the per-step summaries the writer
  stored beside the records (see :mod:`spikestore.summary`); no record is
  decoded. Stores without summaries fall back to decoding.
* :func:`raster` and :func:`traces` with a neuron subset read only the chunks
  holding those neurons' columns (bytes of packed spikes, or raw elements).
* :func:`spike_counts` and :func:`spike_trains` decode the step window block by
  block (a bounded number of elements at a time).
* :func:`to_dask` and :func:`to_xarray` are lazy: each block reads its own chunks
  when computed.
* :func:`step_selection`, :func:`record_shape` and :func:`neuron_ids` turn the
  ``steps``, ``field`` and ``neurons`` arguments these functions take into indices,
  for plots and code of your own.

Ranked stores
-------------
A layer of a store written by the ranks of a ``torch.distributed`` job
(:class:`~spikestore.reader.RankedLayerReader`) is read by one rule everywhere:
without ``rank=``, a function reads every rank over the steps that every rank has
(``len(layer)``; ``steps`` index those) and returns what it returns for one rank
with a new leading rank axis, ranks in ``layer.ranks`` order: ``summary`` gives
``(ranks, steps, 5)``, ``firing_rate`` ``(ranks, steps)``, ``spike_counts``
``(ranks, *counts)``, ``traces`` ``(ranks, steps, neurons)``, ``to_numpy`` and
``to_dask`` ``(ranks, steps, *record shape)``, ``to_xarray`` a ``rank`` dimension
whose coordinate is the rank numbers, ``mean_rate`` one rate per rank. Events
are ragged, so :func:`raster` gives a list of ``(times, neurons)`` pairs, one per
rank. With ``rank=r``, a function reads rank ``r`` alone, all its steps, exactly
as it reads ``layer.layer(r)``. ``rank=`` on a layer of an ordinary store is a
ValueError.

Dask and dask.distributed
-------------------------
:func:`to_dask` builds a graph that describes the store (its path or URL, the
layer, the step count) rather than holding it open: it pickles to a few
kilobytes, each worker process opens the store once and keeps it for every graph
it runs, and the array is the prefix committed when ``to_dask`` was called, so a
writer appending to the store meanwhile never changes a result.

Reading the store without spikestore
------------------------------------
Each field group (``<store>/<monitor key>/<layer key>/f0``) is a plain Zarr v3 group
whose arrays carry ``dimension_names``, so ``xarray.open_zarr`` and
``dask.array.from_zarr`` open them directly:

* raw segments ``s<k>`` (e.g. float membrane potentials) are arrays of shape
  ``(rows, *record shape)`` with dimensions ``["step", "dim_0", ...]`` and the
  record's storage dtype. ``dask.array.from_zarr(store_path, component="v/sn1/f0/s0")``
  or ``xarray.open_zarr(store_path, group="v/sn1/f0", consolidated=False)["s0"]``
  give them lazily. Row ``r`` is a step only when the field has a single segment
  and never recorded ``None``; otherwise map steps to rows with the ``index``
  array (and open the arrays one by one: the rows of different segments share
  the dimension name ``step`` but not its length, which ``xarray.open_zarr``
  refuses for the whole group; pass ``drop_variables``).
* spike segments hold packed bytes, dimensions ``["step", "packed_bits"]``:
  ``numpy.unpackbits(row, count=numel)`` (MSB first) gives the flat record.
  :func:`to_dask` and :func:`to_xarray` decode them for you.
* ``summary`` (``["step", "stat"]``) and ``summary_axis0`` (``["step", "axis0"]``) are
  aligned with steps (see :mod:`spikestore.summary`).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .codecs import bit_positions, decode_rows
from .format import SPIKE_ENCODING
from .reader import FieldReader, step_indices
from .summary import COLUMNS, SUMMARY, SUMMARY_AXIS0

__all__ = [
    "step_selection",
    "record_shape",
    "neuron_ids",
    "summary",
    "firing_rate",
    "mean_rate",
    "spike_counts",
    "raster",
    "spike_trains",
    "traces",
    "to_numpy",
    "to_dask",
    "to_xarray",
    "LayerArray",
]

_STAT = {name: i for i, name in enumerate(COLUMNS)}
#: Values :func:`spike_trains` decodes at a time (steps x chosen elements).
_TRAIN_BLOCK = 1 << 21


# --------------------------------------------------------------------- helpers
def step_selection(layer: Any, steps: Any = None) -> np.ndarray:
    """The steps of ``layer`` that ``steps`` selects, as an int64 array.

    ``steps`` is None (every committed step) or any key of
    :func:`spikestore.reader.step_indices`; a tuple of ints is taken as a list.
    Every function of this module takes its ``steps`` argument through here.

    Examples
    --------
    >>> step_selection(layer, slice(-3, None))  # doctest: +SKIP
    array([297, 298, 299])
    """
    if steps is None:
        steps = slice(None)
    elif isinstance(steps, tuple):
        steps = list(steps)
    where = f"monitor {layer.monitor!r}, layer {layer.name!r}"
    return step_indices(steps, len(layer), where=where)[0]


def _ranks(layer: Any) -> list[int] | None:
    """The ranks of a layer of a ranked store
    (:class:`~spikestore.reader.RankedLayerReader`); None for any other layer."""
    ranks = getattr(layer, "ranks", None)
    if ranks is None or not callable(getattr(layer, "layer", None)):
        return None
    return list(ranks)


def _over_ranks(layer: Any, steps: Any, rank: int | None, read: Any, *, stack: bool = True) -> Any:
    """``read(layer, steps)`` for a ranked layer, by the module's rule for ranks.

    ``rank=r``: rank ``r``'s own layer, its own steps. ``rank=None``: every rank over
    the steps that every rank has, stacked on a new leading axis (a list when
    ``stack`` is False).
    """
    if rank is not None:
        return read(_pick_rank(layer, rank), steps)
    ranks = _ranks(layer)
    assert ranks is not None
    sel = step_selection(layer, steps)
    out = [read(layer.layer(r), sel) for r in ranks]
    return np.stack(out) if stack else out


def _pick_rank(layer: Any, rank: int | None) -> Any:
    """``layer``, or with ``rank`` given that rank's layer of a ranked layer."""
    if rank is None:
        return layer
    if _ranks(layer) is None:
        raise ValueError(f"rank={rank!r}: layer {layer.name!r} is not a layer of a ranked store")
    return layer.layer(rank)


def _field(layer: Any, field: int) -> FieldReader:
    fld: FieldReader = layer.field(field)
    return fld


def _np_dtype(name: str) -> np.dtype:
    """The NumPy dtype decoded values take: the record's own, except that the dtypes
    NumPy lacks (bfloat16, float8) widen to float32; float16 stays float16."""
    if name in ("bfloat16", "float8_e4m3fn", "float8_e5m2"):
        return np.dtype("float32")
    return np.dtype(name)


def record_shape(layer: Any, field: int = 0, *, rank: int | None = None) -> tuple[int, ...]:
    """The one tensor shape of a layer's records (of field ``field``).

    Steps that recorded a Python number broadcast to it; a layer whose records
    have several tensor shapes raises ValueError, and so does a ranked layer
    whose ranks recorded different shapes (pick one with ``rank=``). The shape
    never includes the rank axis.
    """
    if rank is not None or _ranks(layer) is not None:
        shapes = _over_ranks(
            layer, None, rank, lambda lay, _: record_shape(lay, field), stack=False
        )
        if rank is not None:
            return shapes  # type: ignore[no-any-return]
        if len(set(shapes)) != 1:
            raise ValueError(
                f"layer {layer.name!r}: ranks {layer.ranks} recorded shapes {shapes}; "
                "choose a rank with rank="
            )
        return shapes[0]  # type: ignore[no-any-return]
    return _record_shape(_field(layer, field), layer)


def _record_shape(fld: FieldReader, layer: Any) -> tuple[int, ...]:
    """The one tensor shape of a field; Python-number steps broadcast to it."""
    shapes = {tuple(s["shape"]) for s in fld.segments if not s.get("python_scalar", False)}
    if not shapes:
        shapes = {()} if fld.segments else set()
    if len(shapes) != 1:
        raise ValueError(
            f"layer {layer.name!r} records tensors of several shapes {sorted(shapes)}; "
            "read steps of one shape with layer[a:b]"
        )
    return shapes.pop()


def _field_dtype(fld: FieldReader) -> str:
    tensors = [s for s in fld.segments if not s.get("python_scalar", False)]
    segs = tensors or fld.segments
    if not segs:
        return "float32"
    return segs[0]["dtype"]


def _read_rows(
    fld: FieldReader, k: int, rows: np.ndarray, rest: tuple[Any, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Read ``segment_k[rows, *rest]`` touching only the chunks involved.

    Returns the data, one entry per requested row, and each row's position in it.
    """
    data = fld.take(k, rows, tuple(_as_slice(r) for r in rest))
    return data, np.arange(len(rows))


def _as_slice(sel: Any) -> Any:
    """A sorted unique index array that is a contiguous range becomes a slice (faster in Zarr)."""
    if isinstance(sel, np.ndarray) and sel.size and int(sel[-1]) - int(sel[0]) + 1 == sel.size:
        return slice(int(sel[0]), int(sel[-1]) + 1)
    return sel


def _columns(
    layer: Any,
    steps: np.ndarray,
    flat: np.ndarray,
    *,
    dtype: Any = np.float64,
    field: int = 0,
    shape: tuple[int, ...] | None = None,
) -> np.ndarray:
    """Values of the record elements ``flat`` (C-order flat indices) at ``steps``.

    ``shape`` is the record shape (default: the field's one shape now; a lazy array
    passes the shape it was built with, which steps a writer adds later cannot
    change). Returns an array ``(len(steps), len(flat))``. Only the chunks holding those
    elements are read: the bytes that pack them for spike segments, the elements
    themselves for raw ones. Steps that recorded a Python number give that number
    for every element; steps that recorded ``None`` give NaN (an error for
    integer ``dtype``).
    """
    fld = _field(layer, field)
    if shape is None:
        shape = _record_shape(fld, layer)
    numel = math.prod(shape)
    flat = np.asarray(flat, dtype=np.int64).reshape(-1)
    if flat.size and (flat.min() < 0 or flat.max() >= max(numel, 1)):
        raise IndexError(f"neuron index out of range for records of shape {shape}")
    out = np.zeros((len(steps), len(flat)), dtype=dtype)
    if not len(steps):
        return out
    lo, hi = int(steps.min()), int(steps.max()) + 1
    idx = fld.index(lo, hi)[steps - lo]
    for k in np.unique(idx[:, 0]):
        sel = np.nonzero(idx[:, 0] == k)[0]
        if k < 0:
            if not np.issubdtype(out.dtype, np.floating):
                raise ValueError(f"layer {layer.name!r} recorded None at some of these steps")
            out[sel] = np.nan
            continue
        seg = fld.segments[int(k)]
        rows = idx[sel, 1]
        if rows.max() >= seg["rows"]:
            raise ValueError(f"layer {layer.name!r}: index points past segment {seg['array']}")
        sshape = tuple(seg["shape"])
        if sshape != shape:
            if math.prod(sshape) != 1:
                raise ValueError(f"layer {layer.name!r}: a step has shape {sshape}, not {shape}")
            # A Python number (e.g. ``v`` before the first step) stands for every element.
            data, pos = _read_rows(fld, int(k), rows, (slice(None),) * len(sshape))
            vals = decode_rows(data.reshape(len(data), -1), {**seg, "shape": [1]})
            out[sel] = vals.reshape(-1).to(torch.float64).numpy()[pos, None]
            continue
        if seg["encoding"] == SPIKE_ENCODING:
            bitpos = bit_positions(flat, shape, seg.get("permute"))
            bytecol = bitpos // 8
            ucols, cpos = np.unique(bytecol, return_inverse=True)
            data, pos = _read_rows(fld, int(k), rows, (ucols,))
            shift = (7 - bitpos % 8).astype(np.uint8)
            bits = (data[:, cpos] >> shift) & 1
            out[sel] = bits[pos]
        else:
            nd = np.unravel_index(flat, shape) if shape else ()
            uniq = [np.unique(a, return_inverse=True) for a in nd]
            data, pos = _read_rows(fld, int(k), rows, tuple(u for u, _ in uniq))
            if shape:
                picked = data[(pos[:, None], *[inv[None, :] for _, inv in uniq])]
            else:
                picked = data[pos, None]
            flat_vals = decode_rows(np.ascontiguousarray(picked).reshape(-1), {**seg, "shape": []})
            if flat_vals.dtype in (torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2):
                flat_vals = flat_vals.float()
            out[sel] = flat_vals.numpy().reshape(len(rows), len(flat))
    return out


def neuron_ids(neurons: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Flat (C-order) indices into records of ``shape`` from a neuron selection.

    ``neurons`` is None (all), an int, or a sequence of flat ints or of index
    tuples, as the ``neurons`` argument of :func:`raster` and :func:`traces`.

    Examples
    --------
    >>> neuron_ids([(0, 1), 5], (2, 3)).tolist()
    [1, 5]
    """
    numel = math.prod(shape)
    if neurons is None:
        return np.arange(numel, dtype=np.int64)
    if isinstance(neurons, (int, np.integer)):
        return np.array([int(neurons)], dtype=np.int64)
    if isinstance(neurons, (np.ndarray, torch.Tensor)):
        neurons = neurons.tolist()
    flat = np.array(
        [
            np.ravel_multi_index(tuple(int(i) for i in item), shape)
            if isinstance(item, (tuple, list))
            else int(item)
            for item in neurons
        ],
        dtype=np.int64,
    )
    if flat.size and (flat.min() < 0 or flat.max() >= numel):
        raise IndexError(f"neuron index out of range for {numel} neurons")
    return flat


def _time_columns(
    shape: tuple[int, ...], layer: Any, neurons: Any
) -> tuple[int, np.ndarray, np.ndarray]:
    """For ``[T, ...]`` records: T, the chosen neurons' flat ids within one time step,
    and their flat ids at every time step (``t * per_step + id``, t-major)."""
    t_len, rest = _time_split(shape, layer)
    ids = neuron_ids(neurons, rest)
    flat = (np.arange(t_len)[:, None] * math.prod(rest) + ids[None, :]).reshape(-1)
    return t_len, ids, flat


def _time_split(shape: tuple[int, ...], layer: Any) -> tuple[int, tuple[int, ...]]:
    if len(shape) < 1:
        raise ValueError(f"layer {layer.name!r} records scalars; there is no time axis")
    return shape[0], shape[1:]


# ------------------------------------------------------------------- summaries
def summary(
    layer: Any,
    steps: Any = None,
    *,
    field: int = 0,
    axis0: bool = False,
    rank: int | None = None,
) -> np.ndarray:
    """Per-step summary rows, read from the store without decoding any record.

    Parameters
    ----------
    layer : LayerReader
    steps : slice, int sequence or None
        Steps to read (default: all committed steps).
    field : int
        Field of a tuple/list record.
    axis0 : bool
        If False, return ``(len(steps), 5)`` with columns ``numel, sum, min, max,
        mean`` (:data:`spikestore.summary.COLUMNS`; for spikes ``sum`` is the
        spike count). If True, return ``(len(steps), T)``: each record's sum over
        all axes but the first (the spike count per time step of a multi-step
        record).

    Rows of steps that recorded ``None`` are NaN. A store written without
    summaries is decoded instead (slower, same result). A summary that is there
    but cannot be read raises :class:`~spikestore.ReadError` (damaged or missing
    chunks) or :class:`~spikestore.FormatError` (malformed metadata).

    Examples
    --------
    >>> s = spikestore.open("run.spikes")              # doctest: +SKIP
    >>> counts = summary(s["output"]["sn1"])[:, 1]     # doctest: +SKIP
    """
    if rank is not None or _ranks(layer) is not None:
        return _over_ranks(  # type: ignore[no-any-return]
            layer, steps, rank, lambda lay, st: summary(lay, st, field=field, axis0=axis0)
        )
    sel = step_selection(layer, steps)
    fld = _field(layer, field)
    if sel.size == 0:
        width = len(COLUMNS) if not axis0 else _axis0_len(layer, fld)
        return np.zeros((0, width))
    stored = fld.summary(SUMMARY_AXIS0 if axis0 else SUMMARY, sel)
    if stored is not None:
        return stored
    if axis0 and fld.has_summary(SUMMARY):
        # The field never recorded a tensor of rank >= 2.
        raise ValueError(f"layer {layer.name!r} has no records of rank >= 2 (no time axis)")
    return _summary_decoded(layer, sel, field, axis0)


def _axis0_len(layer: Any, fld: FieldReader) -> int:
    shape = _record_shape(fld, layer)
    if len(shape) < 2:
        raise ValueError(f"layer {layer.name!r} has no records of rank >= 2 (no time axis)")
    return shape[0]


def _summary_decoded(layer: Any, sel: np.ndarray, field: int, axis0: bool) -> np.ndarray:
    from .codecs import Encoded, encode
    from .summary import summarize

    rows: list[tuple[np.ndarray, np.ndarray | None] | None] = []
    for rec in layer.records(sel):
        val = rec if layer.structure in ("tensor", "number", "none") else rec[field]
        if val is None:
            rows.append(None)
            continue
        t = val if isinstance(val, torch.Tensor) else torch.tensor(val)
        enc: Encoded = encode(t, python_scalar=not isinstance(val, torch.Tensor))
        rows.append(summarize(enc))
    if axis0:
        width = next((len(r[1]) for r in rows if r is not None and r[1] is not None), None)
        if width is None:
            raise ValueError(f"layer {layer.name!r} has no records of rank >= 2 (no time axis)")
        out = np.full((len(rows), width), np.nan)
        for i, r in enumerate(rows):
            if r is not None and r[1] is not None and len(r[1]) == width:
                out[i] = r[1]
        return out
    out = np.full((len(rows), len(COLUMNS)), np.nan)
    for i, r in enumerate(rows):
        if r is not None:
            out[i] = r[0]
    return out


def mean_rate(layer: Any, field: int = 0, *, rank: int | None = None) -> Any:
    """Spikes per element over the whole layer, from its stored summary alone.

    None when the store has no summary for the field (format 1.0): nothing is
    decoded. A summary that cannot be read raises :class:`~spikestore.ReadError`
    (or :class:`~spikestore.FormatError` for malformed metadata) naming the
    monitor and layer. For a ranked layer, a float64 array with one rate per
    rank over the steps every rank has (NaN for None), or with ``rank=`` that
    rank's float over all its steps.
    """
    if rank is not None or _ranks(layer) is not None:
        rates = _over_ranks(
            layer, None, rank, lambda lay, st: _mean_rate(lay, st, field), stack=False
        )
        if rank is not None:
            return rates
        return np.array([np.nan if r is None else r for r in rates], dtype=np.float64)
    return _mean_rate(layer, None, field)


def _mean_rate(layer: Any, steps: Any, field: int) -> float | None:
    fld = _field(layer, field)
    sel = step_selection(layer, steps)
    s = fld.summary(SUMMARY, sel) if sel.size else None
    if s is None:
        return None
    total = float(np.nansum(s[:, _STAT["numel"]]))
    return float(np.nansum(s[:, _STAT["sum"]])) / total if total else None


def firing_rate(
    layer: Any,
    steps: Any = None,
    *,
    over: str = "step",
    field: int = 0,
    rank: int | None = None,
) -> np.ndarray:
    """Mean firing rate (spikes per neuron per record element) from the stored summaries.

    Parameters
    ----------
    over : {"step", "time"}
        ``"step"``: one rate per step, ``count / numel``, shape ``(len(steps),)``.
        ``"time"``: one rate per time step inside multi-step records ``[T, ...]``,
        ``count[t] / (numel / T)``, shape ``(len(steps), T)``; ``.reshape(-1)``
        gives the rate over the whole simulated time.

    NaN marks steps that recorded ``None``. No record is decoded.

    Examples
    --------
    >>> rate = firing_rate(spikestore.open("run.spikes")["output"]["sn1"])  # doctest: +SKIP
    """
    if rank is not None or _ranks(layer) is not None:
        return _over_ranks(  # type: ignore[no-any-return]
            layer, steps, rank, lambda lay, st: firing_rate(lay, st, over=over, field=field)
        )
    if over == "step":
        s = summary(layer, steps, field=field)
        with np.errstate(invalid="ignore", divide="ignore"):
            return s[:, _STAT["sum"]] / s[:, _STAT["numel"]]
    if over == "time":
        per_t = summary(layer, steps, field=field, axis0=True)
        numel = summary(layer, steps, field=field)[:, _STAT["numel"]]
        with np.errstate(invalid="ignore", divide="ignore"):
            return per_t / (numel[:, None] / per_t.shape[1])
    raise ValueError(f"over must be 'step' or 'time', got {over!r}")


# ----------------------------------------------------------- decoding windows
def _blocks(layer: Any, sel: np.ndarray, field: int) -> Any:
    """Yield ``(steps, array)`` blocks of decoded records, a chunk of steps at a time."""
    fld = _field(layer, field)
    block = 256
    if fld.segments:
        try:
            block = max(32, int(fld.array(0).chunks[0]))
        except Exception:  # a best-effort block size only
            block = 256
    shape = _record_shape(fld, layer)
    flat = np.arange(math.prod(shape), dtype=np.int64)
    dt = _np_dtype(_field_dtype(fld))
    if not np.issubdtype(dt, np.floating) and any(
        s.get("python_scalar", False) for s in fld.segments
    ):
        dt = np.dtype("float64")
    for a in range(0, len(sel), block):
        part = sel[a : a + block]
        try:
            vals = _columns(layer, part, flat, dtype=dt, field=field)
        except ValueError:
            vals = _columns(layer, part, flat, dtype=np.float64, field=field)
        yield part, vals.reshape(len(part), *shape)


def spike_counts(
    layer: Any,
    steps: Any = None,
    *,
    axis: int | Sequence[int] | None = None,
    field: int = 0,
    rank: int | None = None,
) -> np.ndarray:
    """Per-neuron spike counts (sums of the records) over a window of steps.

    Parameters
    ----------
    steps : slice, int sequence or None
        The window (default: all steps). Only its chunks are read.
    axis : int or sequence of int, optional
        Record axes to sum over as well, e.g. ``axis=(0, 1)`` for the time and
        batch axes of ``[T, N, C]`` records, leaving one count per channel.

    Returns an int64 array (float64 if the records are not integral) of the
    record's shape without ``axis``. Steps that recorded ``None`` count as zero.

    Examples
    --------
    >>> counts = spike_counts(layer, slice(1000, 2000), axis=0)  # doctest: +SKIP
    """
    if rank is not None or _ranks(layer) is not None:
        return _over_ranks(  # type: ignore[no-any-return]
            layer, steps, rank, lambda lay, st: spike_counts(lay, st, axis=axis, field=field)
        )
    sel = step_selection(layer, steps)
    fld = _field(layer, field)
    shape = _record_shape(fld, layer)
    total = np.zeros(shape, dtype=np.float64)
    for _, vals in _blocks(layer, sel, field):
        total += np.nansum(vals, axis=0, dtype=np.float64)
    if axis is not None:
        total = total.sum(axis=axis)
    if np.all(np.isfinite(total)) and np.all(total == np.round(total)):
        return total.astype(np.int64)
    return total


def raster(
    layer: Any,
    steps: Any = None,
    neurons: Any = None,
    *,
    time_axis: bool = False,
    field: int = 0,
    rank: int | None = None,
) -> Any:
    """Spike events ``(times, neurons)`` in a window of steps, for a subset of neurons.

    Parameters
    ----------
    steps : slice, int sequence or None
        The step window (default: all).
    neurons : None, int, sequence of flat indices, or sequence of index tuples
        Which neurons (default: all). Flat indices are C-order into the record,
        or into the record without its first axis when ``time_axis`` is True.
        With a subset, only the chunks holding those neurons are read.
    time_axis : bool
        The record's first axis is time (multi-step records ``[T, ...]``): events
        are placed at ``step * T + t``.

    Returns
    -------
    times, neurons : int64 arrays of equal length
        Sorted by time, then by position in ``neurons``. An event is any nonzero
        element. For a ranked layer without ``rank=``, a list with one such pair
        per rank (events are ragged: the rank axis is a list).

    Examples
    --------
    >>> t, n = raster(layer, slice(0, 500), neurons=range(100))  # doctest: +SKIP
    """
    if rank is not None or _ranks(layer) is not None:
        return _over_ranks(
            layer,
            steps,
            rank,
            lambda lay, st: raster(lay, st, neurons, time_axis=time_axis, field=field),
            stack=False,
        )
    sel = step_selection(layer, steps)
    fld = _field(layer, field)
    shape = _record_shape(fld, layer)
    if time_axis:
        t_len, ids, flat = _time_columns(shape, layer, neurons)
        vals = _columns(layer, sel, flat, field=field).reshape(len(sel), t_len, len(ids))
        s, t, j = np.nonzero(np.nan_to_num(vals))
        return sel[s] * t_len + t, ids[j]
    ids = neuron_ids(neurons, shape)
    vals = _columns(layer, sel, ids, field=field)
    s, j = np.nonzero(np.nan_to_num(vals))
    return sel[s], ids[j]


def spike_trains(
    layer: Any,
    steps: Any = None,
    *,
    dt: float = 1.0,
    neurons: Any = None,
    field: int | None = None,
    time_axis: int | bool | None = None,
    rank: int | None = None,
) -> Any:
    """Spike times per neuron: one sorted float64 array of times for each neuron.

    Neurons and times
    -----------------
    * **Single-step records** (``layer.time_axis`` is None, e.g. ``[B, N]`` or
      ``[C, H, W]`` each step): a neuron is one element of the record, numbered by
      its flat C-order index into the record shape (``neuron_ids`` turns index
      tuples into these). Its spike at step ``s`` has time ``s * dt``.
    * **Multi-step records** (``layer.time_axis`` is ``a``, e.g. 0 for
      SpikingJelly's ``[T, B, ...]``): axis ``a`` is time, of length ``T``. A neuron
      is an element of the record *without* that axis, numbered by its flat C-order
      index into that shape (for ``[T, B, N]``: ``b * N + n``). Its spike at step
      ``s``, time index ``t`` has time ``(s * T + t) * dt``.

    ``s`` is the step number in the store (not the position in ``steps``), so a
    window's times are those of the whole recording. ``dt`` is the duration of one
    simulation time step (a whole step for single-step records, one ``t`` for
    multi-step ones); times are in ``dt``'s unit, or in steps with the default
    ``dt=1.0``. An event is any nonzero element (a value of 2 is one spike, not two);
    steps that recorded ``None`` have no spikes.

    Parameters
    ----------
    steps : slice, int sequence or None
        The step window (default: all committed steps).
    neurons : None, int, sequence of flat indices, or sequence of index tuples
        Which neurons, numbered as above (default: all). With a subset only the
        chunks holding them are read.
    field : int, optional
        The field of tuple records (default 0).
    time_axis : int, bool or None
        None (default): the layer's own ``time_axis``. False: treat each step as one
        time point even if the layer has a time axis. An int: that record axis is time.
    rank : int, optional
        For a ranked store: one rank's trains. Without it, a list with one list of
        trains per rank (``layer.ranks`` order).

    Returns
    -------
    list of ndarray
        ``trains[i]`` holds the times of neuron ``neuron_ids(neurons, shape)[i]``
        (all neurons in flat order by default), sorted ascending.

    The window is decoded a block of steps at a time (at most about 2**21 values),
    never all at once.

    Examples
    --------
    >>> trains = spike_trains(store["output"]["sn1"], dt=1e-3)  # doctest: +SKIP
    >>> rates = [len(t) for t in trains]                         # doctest: +SKIP
    """
    if rank is not None or _ranks(layer) is not None:
        return _over_ranks(
            layer,
            steps,
            rank,
            lambda lay, st: spike_trains(
                lay, st, dt=dt, neurons=neurons, field=field, time_axis=time_axis
            ),
            stack=False,
        )
    field = 0 if field is None else int(field)
    sel = step_selection(layer, steps)
    fld = _field(layer, field)
    shape = _record_shape(fld, layer)
    axis = layer.time_axis if time_axis is None else time_axis
    if axis is False or axis is None or not shape:
        t_len, rest, axis = 1, shape, None
    else:
        axis = int(axis) % len(shape)
        t_len = shape[axis]
        rest = shape[:axis] + shape[axis + 1 :]
    ids = neuron_ids(neurons, rest)
    if axis is None:
        flat = ids
    else:
        # The flat index into the whole record of (t, neuron): t-major columns.
        nd = np.unravel_index(ids, rest) if rest else ()
        t = np.arange(t_len)[:, None]
        full = [*nd[:axis], None, *nd[axis:]]
        parts = [t if a is None else np.broadcast_to(a[None, :], (t_len, len(ids))) for a in full]
        parts = [np.broadcast_to(p, (t_len, len(ids))) for p in parts]
        flat = np.ravel_multi_index(tuple(parts), shape).reshape(-1)
    ncols = max(1, len(flat))
    block = max(1, _TRAIN_BLOCK // ncols)
    js: list[np.ndarray] = []
    ticks: list[np.ndarray] = []
    for a in range(0, len(sel), block):
        part = sel[a : a + block]
        vals = _columns(layer, part, flat, dtype=np.float64, field=field)
        vals = np.nan_to_num(vals, nan=0.0).reshape(len(part), t_len, len(ids))
        s, t, j = np.nonzero(vals)
        js.append(j)
        ticks.append(part[s] * t_len + t)
    j = np.concatenate(js) if js else np.zeros(0, dtype=np.int64)
    tick = np.concatenate(ticks) if ticks else np.zeros(0, dtype=np.int64)
    order = np.lexsort((tick, j))
    times = tick[order].astype(np.float64) * float(dt)
    counts = np.bincount(j, minlength=len(ids))
    trains = np.split(times, np.cumsum(counts)[:-1]) if len(ids) else []
    return list(trains)


def traces(
    layer: Any,
    neurons: Any,
    steps: Any = None,
    *,
    time_axis: bool = False,
    field: int = 0,
    rank: int | None = None,
) -> np.ndarray:
    """Chosen neurons' values (e.g. membrane potential) over steps, reading only their chunks.

    Parameters
    ----------
    neurons : int, sequence of flat indices, or sequence of index tuples
        As in :func:`raster`.
    time_axis : bool
        The record's first axis is time: return one row per ``(step, t)``,
        ``step * T + t`` in order.

    Returns
    -------
    ndarray, float64, shape ``(len(steps), len(neurons))`` (``(len(steps) * T,
    len(neurons))`` with ``time_axis``). NaN where a step recorded ``None``.

    Examples
    --------
    >>> v = traces(store["v"]["sn1"], neurons=[0, 5, 9])  # doctest: +SKIP
    """
    if rank is not None or _ranks(layer) is not None:
        return _over_ranks(  # type: ignore[no-any-return]
            layer,
            steps,
            rank,
            lambda lay, st: traces(lay, neurons, st, time_axis=time_axis, field=field),
        )
    sel = step_selection(layer, steps)
    fld = _field(layer, field)
    shape = _record_shape(fld, layer)
    if time_axis:
        t_len, ids, flat = _time_columns(shape, layer, neurons)
        vals = _columns(layer, sel, flat, field=field)
        return vals.reshape(len(sel) * t_len, len(ids))
    ids = neuron_ids(neurons, shape)
    return _columns(layer, sel, ids, field=field)


# ------------------------------------------------------------------ interop
# Readers opened by unpickled lazy arrays, one per store and process: a dask worker
# opens each store once, however many tasks and graphs read it. Keyed by the process
# id too, so that a forked child opens its own.
_READERS: dict[tuple[int, str], Any] = {}
_READERS_LOCK = threading.Lock()
_OPENS = {"open": 0, "refresh": 0}


def _source_of(layer: Any) -> Any:
    """The picklable description of the store ``layer`` was read from, or None
    when the store was opened from a Zarr store object rather than a path or URL."""
    return layer.source


def _cached_layer(source: Any, monitor: str, name: str, steps: int) -> Any:
    """Layer ``monitor/name`` of this process's reader of ``source``, opening the
    store on first use and reading its metadata again only when the reader has
    fewer than ``steps`` committed steps (a graph built after the store was opened)."""
    key = (os.getpid(), repr(source))
    with _READERS_LOCK:
        store = _READERS.get(key)
        if store is None:
            store = source.open()
            _READERS[key] = store
            _OPENS["open"] += 1
        layer = store[monitor][name]
        if len(layer) < steps:
            store.refresh()
            _OPENS["refresh"] += 1
            layer = store[monitor][name]
    if len(layer) < steps:
        raise ValueError(
            f"{source.location}: monitor {monitor!r}, layer {name!r} has {len(layer)} "
            f"committed steps, fewer than the {steps} this array was built with "
            "(was the store replaced?)"
        )
    return layer


def _cached_readers() -> dict[str, int]:
    """How often this process opened a store for a lazy array (``"open"``, one per
    store) and re-read one's metadata (``"refresh"``), and how many are open
    (``"readers"``). Run it on dask workers with ``client.run``."""
    with _READERS_LOCK:
        mine = sum(1 for pid, _ in _READERS if pid == os.getpid())
        return {**_OPENS, "readers": mine}


class LayerArray:
    """A lazy NumPy-style array over one field of a layer: shape ``(steps, *record shape)``.

    Indexing with integers and slices (step first) reads only the chunks that
    hold the selection and returns a NumPy array. Python-number steps broadcast
    to the record shape; ``None`` steps read as NaN. This is what
    :func:`to_dask` and :func:`to_xarray` wrap.

    The array covers the steps committed when it was made (or the first
    ``length`` of them): a writer appending meanwhile changes neither its shape
    nor its values. It pickles as a
    description (the store's :attr:`~spikestore.StoreReader.source`, the monitor,
    layer and field names, the shape and dtype), a few hundred bytes; the
    unpickled copy opens the store on first read, once per process (see
    :func:`to_dask`). A layer of a store opened from a Zarr store object has no
    source, and its array pickles the reader itself.

    Examples
    --------
    >>> a = LayerArray(spikestore.open("run.spikes")["output"]["sn1"])  # doctest: +SKIP
    >>> a[100:200, 0].shape                                             # doctest: +SKIP
    """

    def __init__(self, layer: Any, field: int = 0, *, length: int | None = None) -> None:
        if _ranks(layer) is not None:
            raise TypeError(
                f"layer {layer.name!r} is a ranked layer: use RankedArray, or .layer(rank)"
            )
        self._layer = layer
        self.monitor: str = layer.monitor
        self.name: str = layer.name
        self.source = _source_of(layer)
        self.field = field
        fld = _field(layer, field)
        self.record_shape = _record_shape(fld, layer)
        steps = len(layer)
        if length is not None:
            if not 0 <= length <= steps:
                raise ValueError(f"length {length} is not in 0..{steps} (committed steps)")
            steps = length
        self.shape: tuple[int, ...] = (steps, *self.record_shape)
        dt = _np_dtype(_field_dtype(fld))
        has_gaps = bool(steps) and int(fld.index(0, steps)[:, 0].min()) < 0
        if has_gaps or any(s.get("python_scalar", False) for s in fld.segments):
            if not np.issubdtype(dt, np.floating):
                dt = np.dtype("float64")
        self.dtype = dt
        self.ndim = len(self.shape)

    @property
    def layer(self) -> Any:
        """The :class:`~spikestore.reader.LayerReader` read from (in an unpickled
        copy: this process's reader of the store, opened on first use)."""
        if self._layer is None:
            self._layer = _cached_layer(self.source, self.monitor, self.name, self.shape[0])
        return self._layer

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self.source is not None:
            state["_layer"] = None
        return state

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[...]
        return out.astype(dtype) if dtype is not None else out

    def __repr__(self) -> str:
        return f"<LayerArray {self.monitor!r}/{self.name!r} {self.shape} {self.dtype}>"

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            i = next(i for i, k in enumerate(key) if k is Ellipsis)
            fill = (slice(None),) * (self.ndim - len(key) + 1)
            key = key[:i] + fill + key[i + 1 :]
        if len(key) > self.ndim:
            raise IndexError(f"too many indices for an array of rank {self.ndim}")
        key = key + (slice(None),) * (self.ndim - len(key))
        ranges, drop = [], []
        for ax, (k, n) in enumerate(zip(key, self.shape, strict=True)):
            if isinstance(k, slice):
                ranges.append(np.arange(*k.indices(n), dtype=np.int64))
            elif isinstance(k, (int, np.integer)):
                i = int(k) + n if k < 0 else int(k)
                if not 0 <= i < n:
                    raise IndexError(f"index {k} out of range for axis {ax} of size {n}")
                ranges.append(np.array([i], dtype=np.int64))
                drop.append(ax)
            else:
                arr = np.asarray(k, dtype=np.int64).reshape(-1)
                arr = np.where(arr < 0, arr + n, arr)
                if arr.size and (arr.min() < 0 or arr.max() >= n):
                    raise IndexError(f"index out of range for axis {ax} of size {n}")
                ranges.append(arr)
        steps, rest = ranges[0], ranges[1:]
        box = tuple(len(r) for r in rest)
        if rest:
            grids = np.meshgrid(*rest, indexing="ij")
            flat = np.ravel_multi_index(tuple(g.reshape(-1) for g in grids), self.record_shape)
        else:
            flat = np.zeros(1, dtype=np.int64)
        vals = _columns(
            self.layer, steps, flat, dtype=self.dtype, field=self.field, shape=self.record_shape
        )
        out = vals.reshape(len(steps), *box)
        if drop:
            out = out.reshape([s for ax, s in enumerate(out.shape) if ax not in drop])
        return out


class RankedArray:
    """A lazy array over one field of a ranked layer: shape ``(ranks, steps, *record shape)``.

    One :class:`LayerArray` per rank (in :attr:`ranks` order), each over the
    steps every rank had committed when the array was made. Indexing works as on
    :class:`LayerArray`, the first key picking ranks by position. It pickles as
    the ranks' descriptions.

    Examples
    --------
    >>> a = RankedArray(spikestore.open("ddp.spikes")["output"]["sn1"])  # doctest: +SKIP
    >>> a[:, -1].shape                                                   # doctest: +SKIP
    (2, 16, 64)
    """

    def __init__(self, layer: Any, field: int = 0) -> None:
        ranks = _ranks(layer)
        if ranks is None:
            raise TypeError(f"layer {layer.name!r} is not a layer of a ranked store")
        self.ranks = ranks
        self.monitor: str = layer.monitor
        self.name: str = layer.name
        self.field = field
        n = len(layer)
        self.arrays = [LayerArray(layer.layer(r), field, length=n) for r in ranks]
        shapes = {a.record_shape for a in self.arrays}
        if len(shapes) != 1:
            raise ValueError(
                f"layer {layer.name!r}: ranks {ranks} recorded shapes {sorted(shapes)}; "
                "read one rank with .layer(rank)"
            )
        self.record_shape = shapes.pop()
        self.dtype = np.result_type(*[a.dtype for a in self.arrays])
        self.shape: tuple[int, ...] = (len(ranks), n, *self.record_shape)
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[...]
        return out.astype(dtype) if dtype is not None else out

    def __repr__(self) -> str:
        return (
            f"<RankedArray {self.monitor!r}/{self.name!r} ranks {self.ranks} "
            f"{self.shape} {self.dtype}>"
        )

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            i = next(i for i, k in enumerate(key) if k is Ellipsis)
            key = key[:i] + (slice(None),) * (self.ndim - len(key) + 1) + key[i + 1 :]
        if not key:
            key = (slice(None),)
        first, rest = key[0], key[1:]
        n = len(self.arrays)
        if isinstance(first, (int, np.integer)):
            i = int(first) + n if first < 0 else int(first)
            if not 0 <= i < n:
                raise IndexError(f"rank position {first} out of range for {n} ranks")
            return self.arrays[i][rest].astype(self.dtype, copy=False)
        if isinstance(first, slice):
            picked = list(range(*first.indices(n)))
        else:
            picked = [int(i) + n if i < 0 else int(i) for i in np.asarray(first).reshape(-1)]
            if any(not 0 <= i < n for i in picked):
                raise IndexError(f"rank position out of range for {n} ranks")
        parts = [self.arrays[i][rest].astype(self.dtype, copy=False) for i in picked]
        if not parts:
            shape = np.empty(self.shape[1:], dtype=np.bool_)[rest].shape
            return np.zeros((0, *shape), dtype=self.dtype)
        return np.stack(parts)


def to_numpy(
    layer: Any, steps: Any = None, *, field: int = 0, rank: int | None = None
) -> np.ndarray:
    """Decode a window of steps to a NumPy array ``(len(steps), *record shape)``.

    Values keep the record's dtype where NumPy has it (float16 included);
    bfloat16 and float8 records, which NumPy lacks, come back as float32.
    Python-number steps broadcast to the record shape; ``None`` steps are NaN
    (integer and bool records with such steps come back as float64). A ranked
    layer gives ``(ranks, len(steps), *record shape)``.
    """
    if rank is not None or _ranks(layer) is not None:
        return _over_ranks(  # type: ignore[no-any-return]
            layer, steps, rank, lambda lay, st: to_numpy(lay, st, field=field)
        )
    sel = step_selection(layer, steps)
    arr = LayerArray(layer, field)
    if sel.size == 0:
        return np.zeros((0, *arr.record_shape), dtype=arr.dtype)
    return np.concatenate([vals.astype(arr.dtype) for _, vals in _blocks(layer, sel, field)])


def _store_chunks(layer: Any, arr: Any) -> tuple[Any, ...]:
    fld = _field(layer, arr.field)
    segs = [(k, s) for k, s in enumerate(fld.segments) if tuple(s["shape"]) == arr.record_shape]
    step_chunk = 256
    rest: tuple[Any, ...] = tuple(-1 for _ in arr.record_shape)
    if segs:
        k, seg = segs[0]
        chunks = fld.array(k).chunks
        step_chunk = int(chunks[0])
        if seg["encoding"] != SPIKE_ENCODING:
            rest = tuple(int(c) for c in chunks[1:])
    return (step_chunk, *rest)


def to_dask(layer: Any, *, field: int = 0, chunks: Any = None, rank: int | None = None) -> Any:
    """A lazy ``dask.array.Array`` of the layer, ``(steps, *record shape)``.

    A ranked layer gives ``(ranks, steps, *record shape)`` over the steps every
    rank has, one block per rank along the first axis (``chunks``, when given,
    names that axis too); ``rank=r`` gives rank ``r``'s layer alone.

    Blocks follow the store's chunks (steps per chunk; for raw records also the
    chunks along the record's axes; spike records are chunked along steps only,
    since their chunks split packed bytes, not axes) unless ``chunks`` is given.
    Computing a block reads and decodes only the chunks under it.

    The array holds the steps committed when ``to_dask`` is called; a writer
    appending to a live store meanwhile never changes its shape or its values.
    The graph describes the store rather than holding it open: its tasks carry the
    store's :attr:`~spikestore.StoreReader.source` (path or URL), the monitor,
    layer and field names, the step count and the record's shape and dtype, so it
    pickles to a few kilobytes however long the run, and each process of a
    ``dask.distributed`` cluster opens the store once, on its first task, for
    every graph it runs. A store opened from a Zarr store object
    (``spikestore.open(store=...)``) has no source: its graph carries the reader
    itself, which suits the threaded scheduler.

    Requires ``dask[array]``.

    Examples
    --------
    >>> x = to_dask(store["v"]["sn1"])        # doctest: +SKIP
    >>> x[:, 0].mean().compute()              # doctest: +SKIP
    """
    try:
        import dask.array as da
        from dask.base import tokenize
    except ImportError as exc:
        raise ImportError(
            "spikestore.analysis.to_dask needs dask: pip install 'dask[array]'"
        ) from exc
    layer = _pick_rank(layer, rank)
    arr: LayerArray | RankedArray
    if _ranks(layer) is not None:
        arr = RankedArray(layer, field)
        if chunks is None:
            chunks = (1, *_store_chunks(layer.layer(arr.ranks[0]), arr.arrays[0]))
        parts: list[Any] = [(repr(a.source), a.shape) for a in arr.arrays]
        if any(a.source is None for a in arr.arrays):
            parts.append(f"{id(layer):x}")
        token = tokenize(parts, arr.monitor, arr.name, field, str(arr.dtype))
    else:
        arr = LayerArray(layer, field)
        if chunks is None:
            chunks = _store_chunks(layer, arr)
        if arr.source is not None:
            token = tokenize(
                repr(arr.source), arr.monitor, arr.name, field, arr.shape, str(arr.dtype)
            )
        else:
            token = f"{id(layer):x}"
    name = f"spikestore-{layer.monitor}-{layer.name}-{field}-{arr.shape[0]}-{token}"
    return da.from_array(
        arr,
        chunks=chunks,
        name=name,
        lock=False,
        fancy=False,
        asarray=False,
        inline_array=False,
        meta=np.empty((0,) * arr.ndim, dtype=arr.dtype),
    )


def _xarray_backend(arr: LayerArray | RankedArray) -> Any:
    from xarray.backends import BackendArray
    from xarray.core import indexing

    class _Backend(BackendArray):
        def __init__(self, inner: LayerArray | RankedArray) -> None:
            self.inner = inner
            self.shape = inner.shape
            self.dtype = inner.dtype

        def __getitem__(self, key: Any) -> Any:
            return indexing.explicit_indexing_adapter(
                key, self.shape, indexing.IndexingSupport.OUTER, self._raw
            )

        def _raw(self, key: tuple[Any, ...]) -> np.ndarray:
            return np.asarray(self.inner[key])

    return indexing.LazilyIndexedArray(_Backend(arr))


def to_xarray(
    layer: Any,
    dims: Sequence[str] | None = None,
    *,
    coords: dict[str, Any] | None = None,
    field: int = 0,
    chunks: Any = "store",
    rank: int | None = None,
) -> Any:
    """A lazy, labelled ``xarray.DataArray`` of the layer.

    Parameters
    ----------
    dims : sequence of str, optional
        Names of the record's axes (``("time", "batch", "neuron")``), with or
        without the leading ``"step"`` (and for a ranked layer ``"rank"`` before
        it). Default: ``step, dim_0, dim_1, ...``, as in the store's
        ``dimension_names``.
    coords : dict, optional
        Extra or replacement coordinates; every dimension gets an integer range
        by default, and the ``rank`` dimension the rank numbers.
    chunks : "store", None, or dask chunks
        ``"store"`` (default): a dask array chunked like the store when dask is
        installed, else xarray's own lazy indexing. ``None``: always xarray's
        lazy indexing (no dask). Anything else is passed to :func:`to_dask`.
    rank : int, optional
        For a ranked layer, that rank's layer alone (no ``rank`` dimension).

    A ranked layer gives a ``rank`` dimension first, over the steps every rank
    has. Nothing is read until values are used; selecting (``.isel``/``.sel``)
    then reads only the chunks under the selection. Requires ``xarray``.

    Examples
    --------
    >>> da = to_xarray(store["output"]["sn1"], dims=("time", "batch", "neuron"))  # doctest: +SKIP
    >>> da.isel(batch=0).sum("neuron").compute()                                  # doctest: +SKIP
    """
    try:
        import xarray as xr
    except ImportError as exc:
        raise ImportError("spikestore.analysis.to_xarray needs xarray: pip install xarray") from exc
    layer = _pick_rank(layer, rank)
    arr: LayerArray | RankedArray
    lead: tuple[str, ...]
    if _ranks(layer) is not None:
        arr, lead = RankedArray(layer, field), ("rank", "step")
        first = layer.layer(arr.ranks[0])
    else:
        arr, lead, first = LayerArray(layer, field), ("step",), layer
    n_rec = len(arr.record_shape)
    if dims is None:
        names = (*lead, *[f"dim_{i}" for i in range(n_rec)])
    else:
        names = tuple(dims)
        missing = arr.ndim - len(names)
        if 0 < missing <= len(lead):
            names = (*lead[:missing], *names)
        if len(names) != arr.ndim or (len(lead) > 1 and names[0] != lead[0]):
            raise ValueError(
                f"dims {tuple(dims)} do not match records of shape {arr.record_shape} "
                f"(give {n_rec} names, or {arr.ndim} starting with {', '.join(lead)})"
            )
    data: Any
    if chunks is None:
        data = _xarray_backend(arr)
    else:
        try:
            data = to_dask(layer, field=field, chunks=None if chunks == "store" else chunks)
        except ImportError:
            if chunks != "store":
                raise
            data = _xarray_backend(arr)
    all_coords: dict[str, Any] = {
        name: np.arange(n) for name, n in zip(names, arr.shape, strict=True)
    }
    if isinstance(arr, RankedArray):
        all_coords["rank"] = np.array(arr.ranks, dtype=np.int64)
    all_coords.update(coords or {})
    fld = _field(first, field)
    attrs = {
        "monitor": layer.monitor,
        "layer": layer.name,
        "dtype": _field_dtype(fld),
        "encodings": ",".join(sorted({s["encoding"] for s in fld.segments})),
    }
    return xr.DataArray(
        data, dims=names, coords=all_coords, name=f"{layer.monitor}/{layer.name}", attrs=attrs
    )
