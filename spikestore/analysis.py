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
* :func:`step_selection`, :func:`record_shape`, :func:`neuron_ids`, :func:`unravel`
  and :func:`shapes` turn the ``steps``, ``field`` and ``neurons`` arguments these
  functions take into indices, for plots and code of your own.

Fields
------
A layer whose records are tuples or lists (snnTorch's ``(spk, mem)``) stores one
field per element. Every function that reads values takes ``field=``: an int (the
element's position) or, in stores that name their fields, a field name as in
``layer.field_names``. Default 0.

Time axis
---------
A step is one record (one hook call). Multi-step records (SpikingJelly's
``[T, B, ...]``, recorded with ``time_axis=0``) hold ``T`` time steps each; the
store keeps that axis as ``layer.time_axis``. :func:`raster`, :func:`traces`,
:func:`spike_counts`, :func:`spike_trains` and :func:`unravel` take ``time_axis``:

* ``None`` (default): the layer's stored ``time_axis`` (none for single-step layers
  and for stores written before format 1.3).
* ``True`` (axis 0) or an int: that record axis is time, stored or not.
* ``False``: no time axis; every step is one time point.

With a time axis ``a`` of length ``T``, step ``s``, time index ``t`` is global time
``s * T + t``, and a neuron is an element of the record *without* axis ``a``: a
tuple of its indices (``(batch, neuron)`` for ``[T, B, N]``) or its flat C-order
index into that shape (``b * N + n``). :func:`raster` gives flat ids; ``unravel(layer,
ids)`` turns them into one row of indices per id (``(batch, neuron)`` pairs).
Without a time axis a neuron is an element of the whole record, numbered the same
way. ``firing_rate(over="time")`` reads per-time summaries, which exist for axis 0
only.

Mixed shapes
------------
A layer can record several shapes: a smaller last batch (a ``DataLoader`` with
``drop_last=False``), another batch size for evaluation. :func:`shapes` lists each
shape with its steps. Every function whose selected steps (``steps=``) all have one
shape works exactly as on a one-shape layer. When the selection mixes shapes:

* :func:`summary`, :func:`firing_rate` and :func:`mean_rate` are per step and
  never mind shapes (``firing_rate(over="time")`` needs one time length).
* Shapes that differ only in the **batch axis** (the axis named ``"batch"`` by
  ``layer.dims``; else axis 1 of a layer whose time axis is 0, else axis 0):
  neurons are numbered in the largest shape (the batch axis at its largest size,
  :func:`record_shape`), and a neuron ``(b, ...)`` exists only at steps whose batch
  is larger than ``b``. :func:`spike_counts` counts each neuron over the steps where
  it exists; :func:`raster` and :func:`spike_trains` have its events only there;
  :func:`traces` is NaN at the other steps. :func:`to_numpy`, :func:`to_dask`,
  :func:`to_xarray` and :class:`LayerArray` refuse such a selection with a
  ValueError listing the shapes and their steps, unless ``pad=True``: then the
  batch axis is padded to the largest size with NaN (integer and bool records come
  back as float64).
* Shapes that differ in any **other axis**: a ValueError listing each shape with
  its step count and first and last step; pass ``steps=`` within one shape.

Steps that recorded ``None`` are NaN rows (no events, zero counts), and steps that
recorded a Python number (SpikingJelly's ``v = 0.0`` before the first step)
broadcast to the shape around them. A layer that recorded only ``None`` at the
selected steps (an attribute that was never set, e.g. ``v_seq`` without
``store_v_seq=True``) is a ValueError that says so.

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
import operator
import os
import threading
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from .codecs import bit_positions, decode_rows
from .format import SPIKE_ENCODING
from .reader import FieldReader, step_indices
from .summary import COLUMNS, SUMMARY, SUMMARY_AXIS0

__all__ = [
    "step_selection",
    "record_shape",
    "shapes",
    "neuron_ids",
    "unravel",
    "summary",
    "firing_rate",
    "mean_rate",
    "spike_counts",
    "raster",
    "spike_trains",
    "store_dt",
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
def _where(layer: Any) -> str:
    return f"monitor {layer.monitor!r}, layer {layer.name!r}"


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
    return step_indices(steps, len(layer), where=_where(layer))[0]


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


def _field_index(layer: Any, field: int | str) -> int:
    """The position of field ``field`` (an int, or a name where the store names fields)."""
    resolve = getattr(layer, "field_index", None)
    if callable(resolve):
        return int(resolve(field))
    if isinstance(field, (int, np.integer)) and not isinstance(field, (bool, np.bool_)):
        return int(field)
    raise TypeError(
        f"{_where(layer)}: field must be an int (this store does not name its fields), "
        f"got {field!r}"
    )


def _field(layer: Any, field: int | str) -> FieldReader:
    fld: FieldReader = layer.field(_field_index(layer, field))
    return fld


def _np_dtype(name: str) -> np.dtype:
    """The NumPy dtype decoded values take: the record's own, except that the dtypes
    NumPy lacks (bfloat16, float8) widen to float32; float16 stays float16."""
    if name in ("bfloat16", "float8_e4m3fn", "float8_e5m2"):
        return np.dtype("float32")
    return np.dtype(name)


def _dims(layer: Any, ndim: int, field: int | None = None) -> tuple[str, ...] | None:
    """The names of the record's axes when the store knows them for records of ``ndim``
    (the names of field ``field``'s own axes first, where given)."""
    field_dims = getattr(layer, "field_dims", None)
    if field is not None and callable(field_dims):
        names = field_dims(field)
        if names is not None and len(names) == ndim:
            return tuple(str(d) for d in names)
    dims_of = getattr(layer, "dims_of", None)
    dims = dims_of(ndim) if callable(dims_of) else getattr(layer, "dims", None)
    if dims is None or len(dims) != ndim:
        return None
    return tuple(str(d) for d in dims)


def _stored_time_axis(layer: Any, ndim: int) -> int | None:
    """The layer's stored time axis, as an axis of records of rank ``ndim``: the axis
    belongs to records of the first field's rank (Norse's ``(z, state)``: ``z`` is
    ``[T, B, N]``, its state ``[B, N]`` has no time axis)."""
    t = getattr(layer, "time_axis", None)
    if t is None or isinstance(t, bool) or not -ndim <= int(t) < ndim:
        return None
    dims = _dims(layer, ndim)
    if dims is not None and "time" in dims and dims.index("time") != int(t) % ndim:
        return None
    fields = getattr(layer, "fields", None)
    if fields:
        ranks = {len(s["shape"]) for s in fields[0].segments if not s.get("python_scalar")}
        if ranks and ndim not in ranks:
            return None
    return int(t) % ndim


def _time(layer: Any, time_axis: Any, shape: tuple[int, ...]) -> int | None:
    """The record axis a ``time_axis`` argument names for records of ``shape``, or None."""
    if time_axis is None:
        return _stored_time_axis(layer, len(shape))
    if isinstance(time_axis, (bool, np.bool_)):
        if not time_axis:
            return None
        axis = 0
    else:
        axis = operator.index(time_axis)
    if not -len(shape) <= axis < len(shape):
        raise ValueError(
            f"{_where(layer)}: time_axis={time_axis!r} is not an axis of its records "
            f"(shape {shape})"
        )
    return axis % len(shape)


def _batch_axis(layer: Any, ndim: int) -> int | None:
    """The record axis that is the batch: the one ``layer.dims`` names ``"batch"``,
    else 1 for a layer whose time axis is 0, else 0 (None for scalars)."""
    if ndim == 0:
        return None
    dims = _dims(layer, ndim)
    if dims is not None and "batch" in dims:
        return dims.index("batch")
    return 1 if _stored_time_axis(layer, ndim) == 0 and ndim > 1 else 0


def _tensor_shapes(fld: FieldReader) -> list[tuple[int, ...]]:
    """The tensor shapes among a field's segments (Python numbers left out), in order."""
    out: list[tuple[int, ...]] = []
    for s in fld.segments:
        shape = tuple(s["shape"])
        if not s.get("python_scalar", False) and shape not in out:
            out.append(shape)
    return out


def _groups(fld: FieldReader, sel: np.ndarray) -> list[tuple[tuple[int, ...], np.ndarray]]:
    """``(shape, steps)`` for each tensor shape of the selected steps, in order of first
    appearance. A step that recorded ``None`` or a Python number joins the group of the
    nearest tensor step before it (after it, for steps before the first); with no
    tensor step at all, Python numbers are shape ``()`` and ``None`` alone gives []."""
    if not sel.size:
        return []
    segs = fld.segments
    lo, hi = int(sel.min()), int(sel.max()) + 1
    seg_of = fld.index(lo, hi)[sel - lo, 0]
    known = _tensor_shapes(fld)
    # Group id per segment; the extra last entry is the one index -1 (None) picks.
    lut = np.array(
        [
            -1 if s.get("python_scalar", False) else known.index(tuple(s["shape"]))
            for s in segs
        ]
        + [-1],
        dtype=np.int64,
    )
    gid = lut[seg_of]
    valid = gid >= 0
    if not valid.any():
        return [((), sel)] if bool((seg_of >= 0).any()) else []
    pos = np.maximum.accumulate(np.where(valid, np.arange(len(gid)), 0))
    first = int(np.argmax(valid))
    pos[:first] = first
    filled = gid[pos]
    order = sorted(set(filled.tolist()), key=lambda g: int(np.argmax(filled == g)))
    return [(known[g], sel[filled == g]) for g in order]


def _only_none(layer: Any, sel: np.ndarray) -> ValueError:
    if not sel.size and not len(layer):
        return ValueError(f"{_where(layer)} has no committed steps: nothing to read")
    return ValueError(
        f"{_where(layer)} recorded only None at the selected steps ({len(sel)} of "
        f"{len(layer)} steps): there is no value to read. A monitored attribute that "
        "was never set records None (SpikingJelly's v_seq, for one, needs "
        "store_v_seq=True on the neuron)"
    )


def _listing(groups: list[tuple[tuple[int, ...], np.ndarray]]) -> str:
    return "; ".join(
        f"{shape}: {len(st)} step{'s' if len(st) != 1 else ''}, "
        f"first {int(st[0])}, last {int(st[-1])}"
        for shape, st in groups
    )


def _plan(
    layer: Any, fld: FieldReader, sel: np.ndarray, *, pad: bool, what: str = ""
) -> tuple[tuple[int, ...], bool]:
    """The shape the selected steps are read at, and whether some are smaller in it.

    One shape: that shape. Shapes that differ only in the batch axis: with ``pad``,
    the largest; without, a ValueError (``what`` names the caller for the message).
    Any other mix: a ValueError listing the shapes and their steps.
    """
    known = _tensor_shapes(fld)
    if len(known) == 1:
        return known[0], False
    if not known:
        if fld.segments:
            return (), False
        raise _only_none(layer, sel)
    groups = _groups(fld, sel)
    if not groups:
        if sel.size:
            raise _only_none(layer, sel)
        groups = _groups(fld, np.arange(len(layer), dtype=np.int64))
        if not groups:
            raise _only_none(layer, sel)
        pad = True
    if len(groups) == 1:
        return groups[0][0], False
    shapes_ = [g[0] for g in groups]
    ndim = len(shapes_[0])
    b = _batch_axis(layer, ndim) if all(len(s) == ndim for s in shapes_) else None
    if b is not None and all(s[:b] + s[b + 1 :] == shapes_[0][:b] + shapes_[0][b + 1 :]
                             for s in shapes_):
        widest = max(s[b] for s in shapes_)
        union = (*shapes_[0][:b], widest, *shapes_[0][b + 1 :])
        if pad:
            return union, True
        dims = _dims(layer, ndim)
        axis = f"axis {b}" + (f" ({dims[b]!r})" if dims else "")
        raise ValueError(
            f"{_where(layer)}: the selected steps have several batch sizes ({_listing(groups)}); "
            f"{what or 'this'} needs one shape: pass steps= within one shape "
            f"(spikestore.analysis.shapes(layer) lists them), or pad=True to pad the batch "
            f"axis ({axis}) to {widest} with NaN"
        )
    dims = _dims(layer, ndim)
    named = f" (dims {dims})" if dims else ""
    raise ValueError(
        f"{_where(layer)}: the selected steps recorded tensors of several shapes{named} "
        f"that differ in more than the batch axis ({_listing(groups)}); pass steps= "
        "within one shape (spikestore.analysis.shapes(layer) lists each shape's steps)"
    )


def shapes(
    layer: Any, field: int | str = 0, *, steps: Any = None
) -> list[tuple[tuple[int, ...], np.ndarray]]:
    """The record shapes of a layer, each with the steps that recorded it.

    Returns a list of ``(shape, steps)``, shapes in the order they first appear and
    ``steps`` an int64 array (in the order of ``steps=``, default all). Steps that
    recorded ``None`` or a Python number belong to the shape of the tensor step
    before them (after them, for steps before the first tensor), so the lists
    together cover every selected step; a layer that recorded only Python numbers
    has the one shape ``()``, and one that recorded only ``None`` none at all.

    For a ranked layer pass one rank's layer (``layer.layer(r)``).

    Examples
    --------
    >>> for shape, st in shapes(store["output"]["sn1"]):           # doctest: +SKIP
    ...     counts = spike_counts(store["output"]["sn1"], st)      # doctest: +SKIP
    """
    if _ranks(layer) is not None:
        raise TypeError(f"layer {layer.name!r} is a ranked layer: pass layer.layer(rank)")
    sel = step_selection(layer, steps)
    fld = _field(layer, field)
    return _groups(fld, sel)


def record_shape(
    layer: Any, field: int | str = 0, *, steps: Any = None, rank: int | None = None
) -> tuple[int, ...]:
    """The tensor shape the layer's records (of field ``field``) are read at.

    The one shape of the selected steps (``steps``, default all). Where the
    records differ only in the batch axis (see "Mixed shapes" in the module
    docstring), the largest: the shape in which :func:`raster`, :func:`traces`,
    :func:`spike_counts` and :func:`spike_trains` number neurons. Steps that
    recorded a Python number broadcast to it. Shapes that differ in other axes
    raise ValueError, and so does a ranked layer whose ranks recorded different
    shapes (pick one with ``rank=``). The shape never includes the rank axis.
    """
    if rank is not None or _ranks(layer) is not None:
        found = _over_ranks(
            layer, steps, rank, lambda lay, st: record_shape(lay, field, steps=st), stack=False
        )
        if rank is not None:
            return found  # type: ignore[no-any-return]
        if len(set(found)) != 1:
            raise ValueError(
                f"layer {layer.name!r}: ranks {layer.ranks} recorded shapes {found}; "
                "choose a rank with rank="
            )
        return found[0]  # type: ignore[no-any-return]
    sel = step_selection(layer, steps)
    return _plan(layer, _field(layer, field), sel, pad=True)[0]


def _field_dtype(fld: FieldReader) -> str:
    tensors = [s for s in fld.segments if not s.get("python_scalar", False)]
    segs = tensors or fld.segments
    if not segs:
        return "float32"
    return segs[0]["dtype"]


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


def neuron_ids(
    neurons: Any,
    shape: tuple[int, ...],
    *,
    where: str | None = None,
    dims: Sequence[str] | None = None,
) -> np.ndarray:
    """Flat (C-order) indices into records of ``shape`` from a neuron selection.

    ``neurons`` is None (all), an int, or a sequence of flat ints or of index
    tuples (one index per axis of ``shape``), as the ``neurons`` argument of
    :func:`raster` and :func:`traces`. A neuron out of range, or a tuple with the
    wrong number of indices, is an IndexError naming ``where`` (e.g. the layer),
    ``shape`` with its axis names ``dims`` when given, and the valid range.

    Examples
    --------
    >>> neuron_ids([(0, 1), 5], (2, 3)).tolist()
    [1, 5]
    """
    shape = tuple(int(n) for n in shape)
    numel = math.prod(shape)
    if neurons is None:
        return np.arange(numel, dtype=np.int64)
    if isinstance(neurons, (int, np.integer)):
        neurons = [int(neurons)]
    elif isinstance(neurons, (np.ndarray, torch.Tensor)):
        neurons = neurons.tolist()
        if not isinstance(neurons, list):
            neurons = [neurons]

    def bad(item: Any) -> IndexError:
        named = f" (axes {tuple(dims)})" if dims is not None else ""
        valid = (
            f"give a flat index in 0..{numel - 1} or {len(shape)} indices, one per axis"
            if numel
            else "these records have no elements"
        )
        head = f"{where}: " if where else ""
        return IndexError(
            f"{head}neuron {item!r} is out of range for records of shape {shape}{named}: "
            f"{valid}"
        )

    flat = np.empty(len(neurons), dtype=np.int64)
    for i, item in enumerate(neurons):
        if isinstance(item, (tuple, list)):
            nd = tuple(int(v) for v in item)
            if len(nd) != len(shape) or any(not 0 <= v < n for v, n in zip(nd, shape, strict=True)):
                raise bad(tuple(item))
            flat[i] = np.ravel_multi_index(nd, shape) if shape else 0
        else:
            flat[i] = int(item)
            if not 0 <= flat[i] < numel:
                raise bad(item)
    return flat


class _Layout(NamedTuple):
    """How a neuron selection reads a window: the shape read at, the time axis (or
    None), its length (1 without), the neurons' shape, their flat ids in it, and
    the flat indices into the record to read (t-major with a time axis)."""

    shape: tuple[int, ...]
    axis: int | None
    t_len: int
    rest: tuple[int, ...]
    ids: np.ndarray
    flat: np.ndarray


def _layout(
    layer: Any, fld: FieldReader, sel: np.ndarray, neurons: Any, time_axis: Any
) -> _Layout:
    shape, _ = _plan(layer, fld, sel, pad=True)
    axis = _time(layer, time_axis, shape)
    if axis is None:
        t_len, rest = 1, shape
    else:
        t_len, rest = shape[axis], shape[:axis] + shape[axis + 1 :]
    dims = _dims(layer, len(shape))
    rest_dims = None if dims is None else tuple(d for i, d in enumerate(dims) if i != axis)
    if axis is None:
        where = f"{_where(layer)} (no time axis)"
    else:
        where = f"{_where(layer)} (records {shape}, time axis {axis}: neurons number the rest)"
    try:
        ids = neuron_ids(neurons, rest, where=where, dims=rest_dims)
    except IndexError as exc:
        if axis is None and len(shape) >= 2:
            raise IndexError(
                f"{exc}. If axis 0 is time, pass time_axis=True to number neurons "
                "without it"
            ) from None
        raise
    if axis is None:
        return _Layout(shape, None, 1, rest, ids, ids)
    return _Layout(shape, axis, t_len, rest, ids, _time_flat(shape, axis, ids))


def _time_flat(shape: tuple[int, ...], axis: int, ids: np.ndarray) -> np.ndarray:
    """Flat indices into records of ``shape`` of every ``(t, neuron)``, t-major, for
    neurons ``ids`` numbered in the record without axis ``axis``."""
    t_len = shape[axis]
    rest = shape[:axis] + shape[axis + 1 :]
    nd = list(np.unravel_index(ids, rest)) if rest else []
    grid = (t_len, len(ids))
    parts = [np.broadcast_to(a[None, :], grid) for a in nd]
    parts.insert(axis, np.broadcast_to(np.arange(t_len)[:, None], grid))
    return np.ravel_multi_index(tuple(parts), shape).reshape(-1)


def unravel(
    layer: Any,
    ids: Any,
    *,
    field: int | str = 0,
    steps: Any = None,
    time_axis: int | bool | None = None,
    rank: int | None = None,
) -> np.ndarray:
    """Per-axis indices of flat neuron ids, as :func:`raster` and :func:`spike_trains`
    number neurons: an int64 array ``(len(ids), ndim)``, one row per id.

    With a time axis (``time_axis`` as in :func:`raster`; default the layer's own),
    ``ndim`` counts the record's axes without it: for ``[T, B, N]`` records each row
    is ``(batch, neuron)``. Rows are accepted back as ``neurons=``. Out-of-range ids
    raise IndexError.

    Examples
    --------
    >>> t, n = raster(store["output"]["sn1"])              # doctest: +SKIP
    >>> batch, neuron = unravel(store["output"]["sn1"], n).T  # doctest: +SKIP
    """
    shape = record_shape(layer, field, steps=steps, rank=rank)
    one = _pick_rank(layer, rank)
    axis = _time(one, time_axis, shape)
    rest = shape if axis is None else shape[:axis] + shape[axis + 1 :]
    flat = neuron_ids(ids, rest, where=_where(layer))
    if not rest:
        return np.zeros((len(flat), 0), dtype=np.int64)
    return np.stack(np.unravel_index(flat, rest), axis=1).astype(np.int64)


# ------------------------------------------------------------------- summaries
def summary(
    layer: Any,
    steps: Any = None,
    *,
    field: int | str = 0,
    axis0: bool = False,
    rank: int | None = None,
) -> np.ndarray:
    """Per-step summary rows, read from the store without decoding any record.

    Parameters
    ----------
    layer : LayerReader
    steps : slice, int sequence or None
        Steps to read (default: all committed steps).
    field : int or str
        Field of a tuple/list record (its position, or its name).
    axis0 : bool
        If False, return ``(len(steps), 5)`` with columns ``numel, sum, min, max,
        mean`` (:data:`spikestore.summary.COLUMNS`; for spikes ``sum`` is the
        spike count). If True, return ``(len(steps), T)``: each record's sum over
        all axes but the first (the spike count per time step of a multi-step
        record).

    Rows of steps that recorded ``None`` are NaN. Rows are per step, so steps of
    different shapes mix freely (``numel`` tells them apart); with ``axis0`` a
    step whose first axis has another length than the first such step's is NaN. A
    store written without summaries is decoded instead (slower, same result). A
    summary that is there but cannot be read raises :class:`~spikestore.ReadError`
    (damaged or missing chunks) or :class:`~spikestore.FormatError` (malformed
    metadata).

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
    return _summary_decoded(layer, sel, _field_index(layer, field), axis0)


def _axis0_len(layer: Any, fld: FieldReader) -> int:
    shape = _plan(layer, fld, np.zeros(0, dtype=np.int64), pad=True)[0]
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


def mean_rate(layer: Any, field: int | str = 0, *, rank: int | None = None) -> Any:
    """Spikes per element over the whole layer, from its stored summary alone.

    None when the store has no summary for the field (format 1.0): nothing is
    decoded. Steps of any shape count alike (spikes over elements of every step).
    A summary that cannot be read raises :class:`~spikestore.ReadError`
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


def _mean_rate(layer: Any, steps: Any, field: int | str) -> float | None:
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
    field: int | str = 0,
    time_axis: int | bool | None = None,
    rank: int | None = None,
) -> np.ndarray:
    """Mean firing rate (spikes per neuron per record element) from the stored summaries.

    Parameters
    ----------
    over : {"step", "time"}
        ``"step"``: one rate per step, ``count / numel``, shape ``(len(steps),)``.
        ``"time"``: one rate per time step inside multi-step records ``[T, ...]``,
        ``count[t] / (numel / T)``, shape ``(len(steps), T)``; ``.reshape(-1)``
        gives the rate over the whole simulated time (global time ``s * T + t``).
    time_axis : int, bool or None
        For ``over="time"``: the record axis that is time. None (default): the
        layer's stored time axis, or axis 0 where none is stored. The summaries
        hold per-index sums over axis 0 only, so any other axis (or False) is a
        ValueError; read such layers with :func:`spike_trains` or :func:`raster`.

    NaN marks steps that recorded ``None``. No record is decoded. Rates are per
    step, so steps of different shapes (a smaller last batch) mix freely; with
    ``over="time"`` they need the same ``T``.

    Examples
    --------
    >>> rate = firing_rate(spikestore.open("run.spikes")["output"]["sn1"])  # doctest: +SKIP
    """
    if rank is not None or _ranks(layer) is not None:
        return _over_ranks(  # type: ignore[no-any-return]
            layer,
            steps,
            rank,
            lambda lay, st: firing_rate(lay, st, over=over, field=field, time_axis=time_axis),
        )
    if over == "step":
        s = summary(layer, steps, field=field)
        with np.errstate(invalid="ignore", divide="ignore"):
            return s[:, _STAT["sum"]] / s[:, _STAT["numel"]]
    if over == "time":
        stored = getattr(layer, "time_axis", None)
        axis = stored if time_axis is None else time_axis
        if axis is None or axis is True:
            axis = 0
        if axis is False or isinstance(axis, (bool, np.bool_)) or operator.index(axis) != 0:
            raise ValueError(
                f"{_where(layer)}: firing_rate(over='time') reads the per-time summaries, "
                f"which run along record axis 0; time_axis={axis!r} cannot use them: "
                "read the layer with spike_trains or raster (time_axis=...) instead"
            )
        per_t = summary(layer, steps, field=field, axis0=True)
        numel = summary(layer, steps, field=field)[:, _STAT["numel"]]
        with np.errstate(invalid="ignore", divide="ignore"):
            return per_t / (numel[:, None] / per_t.shape[1])
    raise ValueError(f"over must be 'step' or 'time', got {over!r}")


# ----------------------------------------------------------- decoding windows
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


def spike_counts(
    layer: Any,
    steps: Any = None,
    *,
    axis: int | Sequence[int] | None = None,
    time_axis: int | bool | None = None,
    field: int | str = 0,
    rank: int | None = None,
) -> np.ndarray:
    """Per-neuron spike counts (sums of the records) over a window of steps.

    Parameters
    ----------
    steps : slice, int sequence or None
        The window (default: all steps). Only its chunks are read.
    axis : int or sequence of int, optional
        Record axes to sum over as well, numbered in the whole record (time axis
        included), e.g. ``axis=(0, 1)`` for the time and batch axes of
        ``[T, N, C]`` records, leaving one count per channel.
    time_axis : int, bool or None
        The record axis that is time (see "Time axis" in the module docstring;
        default the layer's own): it is summed over, so a neuron's count covers
        every time step. False: keep every axis (unless in ``axis``).
    field : int or str
        Field of tuple records.

    Returns an int64 array (float64 if the records are not integral) of the
    record's shape without the time axis and ``axis``. Steps that recorded
    ``None`` count as zero. Over steps of several batch sizes the shape is the
    largest batch's, and each neuron counts the steps where it exists (see "Mixed
    shapes").

    Examples
    --------
    >>> counts = spike_counts(layer, slice(1000, 2000), axis=0)  # doctest: +SKIP
    """
    if rank is not None or _ranks(layer) is not None:
        return _over_ranks(  # type: ignore[no-any-return]
            layer,
            steps,
            rank,
            lambda lay, st: spike_counts(lay, st, axis=axis, time_axis=time_axis, field=field),
        )
    sel = step_selection(layer, steps)
    fld = _field(layer, field)
    shape, _ = _plan(layer, fld, sel, pad=True)
    t = _time(layer, time_axis, shape)
    total = np.zeros(shape, dtype=np.float64)
    for _, vals in _blocks(layer, sel, field, shape):
        total += np.nansum(vals, axis=0, dtype=np.float64)
    drop: set[int] = set() if t is None else {t}
    if axis is not None:
        for a in [axis] if isinstance(axis, (int, np.integer)) else axis:
            if not -len(shape) <= int(a) < len(shape):
                raise ValueError(
                    f"{_where(layer)}: axis {a} is not an axis of records of shape {shape}"
                )
            drop.add(int(a) % len(shape))
    if drop:
        total = total.sum(axis=tuple(sorted(drop)))
    if np.all(np.isfinite(total)) and np.all(total == np.round(total)):
        return total.astype(np.int64)
    return total


def raster(
    layer: Any,
    steps: Any = None,
    neurons: Any = None,
    *,
    time_axis: int | bool | None = None,
    field: int | str = 0,
    rank: int | None = None,
) -> Any:
    """Spike events ``(times, neurons)`` in a window of steps, for a subset of neurons.

    Parameters
    ----------
    steps : slice, int sequence or None
        The step window (default: all).
    neurons : None, int, sequence of flat indices, or sequence of index tuples
        Which neurons (default: all). Flat indices are C-order into the record,
        or into the record without its time axis when there is one (for
        ``[T, B, N]``: ``(batch, neuron)`` tuples, or ``b * N + n``). With a
        subset, only the chunks holding those neurons are read.
    time_axis : int, bool or None
        The record axis that is time (see "Time axis" in the module docstring).
        None (default): the layer's stored one; True: axis 0; False: none. With a
        time axis of length ``T`` events are placed at ``step * T + t``; without,
        at ``step``.
    field : int or str
        Field of tuple records.

    Returns
    -------
    times, neurons : int64 arrays of equal length
        Sorted by time, then by position in ``neurons``; neuron ids are flat (turn
        them into per-axis indices, e.g. ``(batch, neuron)`` pairs, with
        :func:`unravel`). An event is any nonzero element. Over steps of several
        batch sizes neurons are numbered in the largest batch's shape and a
        neuron has events only at steps where it exists (see "Mixed shapes"). For
        a ranked layer without ``rank=``, a list with one such pair per rank
        (events are ragged: the rank axis is a list).

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
    lay = _layout(layer, _field(layer, field), sel, neurons, time_axis)
    vals = _columns(layer, sel, lay.flat, field=field, shape=lay.shape)
    vals = np.nan_to_num(vals).reshape(len(sel), lay.t_len, len(lay.ids))
    s, t, j = np.nonzero(vals)
    if lay.axis is None:
        return sel[s], lay.ids[j]
    return sel[s] * lay.t_len + t, lay.ids[j]


def store_dt(layer: Any) -> float | None:
    """The ``dt`` the layer's store recorded (``StoreWriter(dt=...)``, format 1.5;
    in ``layer.store.time_unit``), or None."""
    dt = getattr(getattr(layer, "store", None), "dt", None)
    return float(dt) if isinstance(dt, (int, float)) and not isinstance(dt, bool) else None


def spike_trains(
    layer: Any,
    steps: Any = None,
    *,
    dt: float | None = None,
    neurons: Any = None,
    field: int | str | None = None,
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
      index into that shape (for ``[T, B, N]``: ``b * N + n``; :func:`unravel`
      gives ``(b, n)``). Its spike at step ``s``, time index ``t`` has time
      ``(s * T + t) * dt``.

    ``s`` is the step number in the store (not the position in ``steps``), so a
    window's times are those of the whole recording. ``dt`` is the duration of one
    simulation time step (a whole step for single-step records, one ``t`` for
    multi-step ones); times are in ``dt``'s unit. By default (``dt=None``) the store's
    own ``dt`` (``StoreWriter(dt=...)``, in ``store.time_unit``), else 1.0: times in
    time steps. An event is any nonzero element (a value of 2 is one spike, not two);
    steps that recorded ``None`` have no spikes. Over steps of several batch sizes,
    neurons are numbered in the largest batch's shape and a neuron has spikes only
    at steps where it exists (see "Mixed shapes").

    Parameters
    ----------
    steps : slice, int sequence or None
        The step window (default: all committed steps).
    neurons : None, int, sequence of flat indices, or sequence of index tuples
        Which neurons, numbered as above (default: all). With a subset only the
        chunks holding them are read.
    field : int or str, optional
        The field of tuple records (default 0).
    time_axis : int, bool or None
        None (default): the layer's own ``time_axis``. False: treat each step as one
        time point even if the layer has a time axis. True or an int: that record
        axis is time (True is axis 0).
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
    field = 0 if field is None else field
    if dt is None:
        dt = store_dt(layer) or 1.0
    sel = step_selection(layer, steps)
    lay = _layout(layer, _field(layer, field), sel, neurons, time_axis)
    t_len, ids = lay.t_len, lay.ids
    ncols = max(1, len(lay.flat))
    block = max(1, _TRAIN_BLOCK // ncols)
    js: list[np.ndarray] = []
    ticks: list[np.ndarray] = []
    for a in range(0, len(sel), block):
        part = sel[a : a + block]
        vals = _columns(layer, part, lay.flat, dtype=np.float64, field=field, shape=lay.shape)
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
    time_axis: int | bool | None = None,
    field: int | str = 0,
    rank: int | None = None,
) -> np.ndarray:
    """Chosen neurons' values (e.g. membrane potential) over steps, reading only their chunks.

    Parameters
    ----------
    neurons : int, sequence of flat indices, or sequence of index tuples
        As in :func:`raster`.
    time_axis : int, bool or None
        The record axis that is time, as in :func:`raster` (default: the layer's
        stored one). With one of length ``T``: one row per ``(step, t)``,
        ``step * T + t`` in order.
    field : int or str
        Field of tuple records.

    Returns
    -------
    ndarray, float64, shape ``(len(steps), len(neurons))`` (``(len(steps) * T,
    len(neurons))`` with a time axis). NaN where a step recorded ``None``, and over
    steps of several batch sizes where the neuron does not exist in the step's
    batch (see "Mixed shapes").

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
    lay = _layout(layer, _field(layer, field), sel, neurons, time_axis)
    vals = _columns(layer, sel, lay.flat, field=field, shape=lay.shape)
    return vals.reshape(len(sel) * lay.t_len, len(lay.ids))


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
    nor its values. ``field`` is a position or a field name. Steps of several
    batch sizes are a ValueError unless ``pad=True``: then the record shape is the
    largest batch's and elements beyond a step's own batch read as NaN (see "Mixed
    shapes" in the module docstring; integer and bool records become float64). It pickles as a
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

    def __init__(
        self, layer: Any, field: int | str = 0, *, length: int | None = None, pad: bool = False
    ) -> None:
        if _ranks(layer) is not None:
            raise TypeError(
                f"layer {layer.name!r} is a ranked layer: use RankedArray, or .layer(rank)"
            )
        self._layer = layer
        self.monitor: str = layer.monitor
        self.name: str = layer.name
        self.source = _source_of(layer)
        self.field = _field_index(layer, field)
        fld = _field(layer, self.field)
        steps = len(layer)
        if length is not None:
            if not 0 <= length <= steps:
                raise ValueError(f"length {length} is not in 0..{steps} (committed steps)")
            steps = length
        what = "a LayerArray (to_numpy, to_dask, to_xarray)"
        self.record_shape, padded = _plan(
            layer, fld, np.arange(steps, dtype=np.int64), pad=pad, what=what
        )
        self.shape: tuple[int, ...] = (steps, *self.record_shape)
        dt = _np_dtype(_field_dtype(fld))
        has_gaps = bool(steps) and int(fld.index(0, steps)[:, 0].min()) < 0
        if padded or has_gaps or any(s.get("python_scalar", False) for s in fld.segments):
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

    def __init__(self, layer: Any, field: int | str = 0, *, pad: bool = False) -> None:
        ranks = _ranks(layer)
        if ranks is None:
            raise TypeError(f"layer {layer.name!r} is not a layer of a ranked store")
        self.ranks = ranks
        self.monitor: str = layer.monitor
        self.name: str = layer.name
        n = len(layer)
        self.arrays = [LayerArray(layer.layer(r), field, length=n, pad=pad) for r in ranks]
        self.field = self.arrays[0].field
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
    layer: Any,
    steps: Any = None,
    *,
    field: int | str = 0,
    pad: bool = False,
    rank: int | None = None,
) -> np.ndarray:
    """Decode a window of steps to a NumPy array ``(len(steps), *record shape)``.

    Values keep the record's dtype where NumPy has it (float16 included);
    bfloat16 and float8 records, which NumPy lacks, come back as float32.
    Python-number steps broadcast to the record shape; ``None`` steps are NaN
    (integer and bool records with such steps come back as float64). A ranked
    layer gives ``(ranks, len(steps), *record shape)``. ``field`` is a position
    or a field name.

    The selected steps must have one shape. Steps of several batch sizes (a
    smaller last batch) are a ValueError that lists the shapes and their steps,
    unless ``pad=True``: then the batch axis is padded to the largest batch with
    NaN (integer and bool records come back as float64). Shapes that differ in
    other axes are always a ValueError: pass ``steps=`` within one shape
    (:func:`shapes` lists them).
    """
    if rank is not None or _ranks(layer) is not None:
        return _over_ranks(  # type: ignore[no-any-return]
            layer, steps, rank, lambda lay, st: to_numpy(lay, st, field=field, pad=pad)
        )
    sel = step_selection(layer, steps)
    fld = _field(layer, field)
    shape, padded = _plan(layer, fld, sel, pad=pad, what="to_numpy")
    dt = _np_dtype(_field_dtype(fld))
    if not np.issubdtype(dt, np.floating):
        has_gaps = bool(len(layer)) and int(fld.index(0, len(layer))[:, 0].min()) < 0
        if padded or has_gaps or any(s.get("python_scalar", False) for s in fld.segments):
            dt = np.dtype("float64")
    if sel.size == 0:
        return np.zeros((0, *shape), dtype=dt)
    return np.concatenate([vals.astype(dt) for _, vals in _blocks(layer, sel, field, shape)])


def _store_chunks(layer: Any, arr: Any) -> tuple[Any, ...]:
    fld = _field(layer, arr.field)
    segs = [(k, s) for k, s in enumerate(fld.segments) if tuple(s["shape"]) == arr.record_shape]
    if not segs:
        # Padded: the step chunking of the first tensor segment, whole records.
        segs = [(k, s) for k, s in enumerate(fld.segments) if not s.get("python_scalar")][:1]
    step_chunk = 256
    rest: tuple[Any, ...] = tuple(-1 for _ in arr.record_shape)
    if segs:
        k, seg = segs[0]
        chunks = fld.array(k).chunks
        step_chunk = int(chunks[0])
        if seg["encoding"] != SPIKE_ENCODING and tuple(seg["shape"]) == arr.record_shape:
            rest = tuple(int(c) for c in chunks[1:])
    return (step_chunk, *rest)


def to_dask(
    layer: Any,
    *,
    field: int | str = 0,
    chunks: Any = None,
    pad: bool = False,
    rank: int | None = None,
) -> Any:
    """A lazy ``dask.array.Array`` of the layer, ``(steps, *record shape)``.

    ``field`` is a position or a field name. A layer of several batch sizes is a
    ValueError unless ``pad=True``, as in :func:`to_numpy` (then the batch axis is
    padded to the largest batch with NaN); other shape mixes are a ValueError.

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
        arr = RankedArray(layer, field, pad=pad)
        if chunks is None:
            chunks = (1, *_store_chunks(layer.layer(arr.ranks[0]), arr.arrays[0]))
        parts: list[Any] = [(repr(a.source), a.shape) for a in arr.arrays]
        if any(a.source is None for a in arr.arrays):
            parts.append(f"{id(layer):x}")
        token = tokenize(parts, arr.monitor, arr.name, arr.field, str(arr.dtype))
    else:
        arr = LayerArray(layer, field, pad=pad)
        if chunks is None:
            chunks = _store_chunks(layer, arr)
        if arr.source is not None:
            token = tokenize(
                repr(arr.source), arr.monitor, arr.name, arr.field, arr.shape, str(arr.dtype)
            )
        else:
            token = f"{id(layer):x}"
    name = f"spikestore-{layer.monitor}-{layer.name}-{arr.field}-{arr.shape[0]}-{token}"
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


def _mark_coords(layer: Any, arr: LayerArray | RankedArray, names: tuple[str, ...]) -> dict:
    """The writer's marks as step coordinates: over ``(rank, step)`` for a ranked layer
    whose ranks marked their steps differently, else over ``step``."""
    if isinstance(arr, RankedArray):
        n = arr.shape[1]
        per_rank = [layer.layer(r).marks() for r in arr.ranks]
        out: dict[str, Any] = {}
        for key in dict.fromkeys(k for m in per_rank for k in m):
            rows = [np.full(n, None, dtype=object) for _ in per_rank]
            for row, m in zip(rows, per_rank, strict=True):
                if key in m:
                    row[:] = m[key][:n]
            if all(row.tolist() == rows[0].tolist() for row in rows):
                out[key] = (names[1], rows[0])
            else:
                out[key] = (names[:2], np.stack(rows))
        return out
    marks = getattr(layer, "marks", None)
    return {
        key: (names[0], np.asarray(values, dtype=object)[: arr.shape[0]])
        for key, values in (marks() if callable(marks) else {}).items()
    }


def to_xarray(
    layer: Any,
    dims: Sequence[str] | None = None,
    *,
    coords: dict[str, Any] | None = None,
    field: int | str = 0,
    chunks: Any = "store",
    pad: bool = False,
    rank: int | None = None,
) -> Any:
    """A lazy, labelled ``xarray.DataArray`` of the layer.

    Parameters
    ----------
    dims : sequence of str, optional
        Names of the record's axes (``("time", "batch", "neuron")``), with or
        without the leading ``"step"`` (and for a ranked layer ``"rank"`` before
        it). Default: the names the store keeps for the layer (``layer.dims``,
        e.g. ``("time", "batch", "neuron")``), else ``dim_0, dim_1, ...`` as in the
        store's ``dimension_names``; the step dimension is ``"step"``.
    coords : dict, optional
        Extra or replacement coordinates; every dimension gets an integer range
        by default, and the ``rank`` dimension the rank numbers.
    field : int or str
        Field of tuple records (position or name).
    chunks : "store", None, or dask chunks
        ``"store"`` (default): a dask array chunked like the store when dask is
        installed, else xarray's own lazy indexing. ``None``: always xarray's
        lazy indexing (no dask). Anything else is passed to :func:`to_dask`.
    pad : bool
        For a layer of several batch sizes: pad the batch axis to the largest
        batch with NaN, as in :func:`to_numpy`. Without it such a layer is a
        ValueError listing the shapes and their steps.
    rank : int, optional
        For a ranked layer, that rank's layer alone (no ``rank`` dimension).

    Marks the writer recorded (``writer.mark(epoch=3)``; ``layer.marks()``) become
    coordinates along ``step``, one per key (missing, None or NaN, at steps before
    the key was first set, which groupby leaves out), so ``da.groupby("epoch")``
    works; a mark named like a dimension or a coordinate in ``coords`` is left out.
    A ranked layer gives a ``rank`` dimension first, over the steps every rank has;
    its marks are coordinates over ``step`` where every rank marked the same steps
    alike (ranks of one job marking epochs), else over ``(rank, step)``.
    Nothing is read until values are used; selecting (``.isel``/``.sel``) then
    reads only the chunks under the selection. Requires ``xarray``.

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
        arr, lead = RankedArray(layer, field, pad=pad), ("rank", "step")
        first = layer.layer(arr.ranks[0])
    else:
        arr, lead, first = LayerArray(layer, field, pad=pad), ("step",), layer
    n_rec = len(arr.record_shape)
    if dims is None:
        stored = _dims(first, n_rec, arr.field)
        if stored is None or len(set(stored)) != n_rec or set(stored) & set(lead):
            stored = tuple(f"dim_{i}" for i in range(n_rec))
        names = (*lead, *stored)
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
            data = to_dask(
                layer, field=arr.field, chunks=None if chunks == "store" else chunks, pad=pad
            )
        except ImportError:
            if chunks != "store":
                raise
            data = _xarray_backend(arr)
    all_coords: dict[str, Any] = {
        name: np.arange(n) for name, n in zip(names, arr.shape, strict=True)
    }
    if isinstance(arr, RankedArray):
        all_coords["rank"] = np.array(arr.ranks, dtype=np.int64)
    for key, coord in _mark_coords(layer, arr, names).items():
        if key not in names and key not in (coords or {}):
            all_coords[key] = coord
    all_coords.update(coords or {})
    fld = _field(first, arr.field)
    attrs = {
        "monitor": layer.monitor,
        "layer": layer.name,
        "dtype": _field_dtype(fld),
        "encodings": ",".join(sorted({s["encoding"] for s in fld.segments})),
    }
    return xr.DataArray(
        data, dims=names, coords=all_coords, name=f"{layer.monitor}/{layer.name}", attrs=attrs
    )
