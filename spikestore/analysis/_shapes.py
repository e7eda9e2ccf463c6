"""Shapes: the shape a selection of steps is read at (mixed shapes, the batch axis),
and how a neuron selection lays out over it. :func:`shapes`, :func:`record_shape`
and :func:`unravel` are public; :func:`time_flat` is in ``__all__`` for
:mod:`spikestore.plot`, which lays neurons out over time the same way.

Every function here runs in the caller's thread and keeps no state.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..codecs import dtype_name
from ..reader import FieldReader
from ._ranks import per_rank
from ._select import (
    _batch_axis,
    _field,
    _where,
    neuron_ids,
    pick_rank,
    ranks_of,
    record_dims,
    step_selection,
    time_axis_of,
)

__all__ = ["shapes", "record_shape", "unravel", "time_flat"]


def _groups(fld: FieldReader, sel: np.ndarray) -> list[tuple[tuple[int, ...], np.ndarray]]:
    """``(shape, steps)`` for each tensor shape of the selected steps, in order of first
    appearance (:meth:`FieldReader.layouts`)."""
    return [(g.shape, g.steps) for g in fld.layouts(sel)]


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
    known = fld.tensor_shapes()
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
        dims = record_dims(layer, ndim)
        axis = f"axis {b}" + (f" ({dims[b]!r})" if dims else "")
        raise ValueError(
            f"{_where(layer)}: the selected steps have several batch sizes ({_listing(groups)}); "
            f"{what or 'this'} needs one shape: pass steps= within one shape "
            f"(spikestore.analysis.shapes(layer) lists them), or pad=True to pad the batch "
            f"axis ({axis}) to {widest} with NaN"
        )
    dims = record_dims(layer, ndim)
    named = f" (dims {dims})" if dims else ""
    raise ValueError(
        f"{_where(layer)}: the selected steps recorded tensors of several shapes{named} "
        f"that differ in more than the batch axis ({_listing(groups)}); pass steps= "
        "within one shape (spikestore.analysis.shapes(layer) lists each shape's steps)"
    )


def shapes(
    layer: Any, field: int | str = 0, *, steps: Any = None, dtypes: bool = False
) -> list[Any]:
    """The record shapes of a layer, each with the steps that recorded it.

    Returns a list of ``(shape, steps)``, shapes in the order they first appear and
    ``steps`` an int64 array (in the order of ``steps=``, default all). Steps that
    recorded ``None`` or a Python number belong to the shape of the tensor step
    before them (after them, for steps before the first tensor), so the lists
    together cover every selected step; a layer that recorded only Python numbers
    has the one shape ``()``, and one that recorded only ``None`` none at all.

    With ``dtypes=True`` a dtype change (an eval pass under ``torch.autocast``, a
    ``net.double()`` phase) splits too: each entry is a :class:`~spikestore.reader.Layout`
    ``(shape, dtype, steps)``, the same list as ``layer.shapes`` for field 0. Analyses
    read records of several dtypes in their common one (``layer.field(f).dtype``:
    torch's promotion, float64 where torch has none).

    For a ranked layer pass one rank's layer (``layer.layer(r)``).

    Examples
    --------
    >>> for shape, st in shapes(store["output"]["sn1"]):           # doctest: +SKIP
    ...     counts = spike_counts(store["output"]["sn1"], st)      # doctest: +SKIP
    >>> for shape, dtype, st in shapes(layer, dtypes=True):        # doctest: +SKIP
    ...     print(shape, dtype, len(st))                           # doctest: +SKIP
    """
    if ranks_of(layer) is not None:
        raise TypeError(f"layer {layer.name!r} is a ranked layer: pass layer.layer(rank)")
    sel = step_selection(layer, steps)
    fld = _field(layer, field)
    if dtypes:
        return fld.layouts(sel, dtypes=True)
    return _groups(fld, sel)


def _one_shape(layer: Any, found: list[tuple[int, ...]]) -> tuple[int, ...]:
    """The ranks' one record shape; a ValueError when they recorded several."""
    if len(set(found)) != 1:
        raise ValueError(
            f"layer {layer.name!r}: ranks {layer.ranks} recorded shapes {found}; "
            "choose a rank with rank="
        )
    return found[0]


@per_rank(_one_shape)
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
    sel = step_selection(layer, steps)
    return _plan(layer, _field(layer, field), sel, pad=True)[0]


def _field_dtype(fld: FieldReader) -> str:
    """The one dtype an analysis reads a field's records in (:attr:`FieldReader.dtype`:
    the recorded one, promoted where it changed between steps)."""
    dtype = fld.dtype
    return "float32" if dtype is None else dtype_name(dtype)


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
    axis = time_axis_of(layer, time_axis, shape)
    if axis is None:
        t_len, rest = 1, shape
    else:
        t_len, rest = shape[axis], shape[:axis] + shape[axis + 1 :]
    dims = record_dims(layer, len(shape))
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
    return _Layout(shape, axis, t_len, rest, ids, time_flat(shape, axis, ids))


def time_flat(shape: tuple[int, ...], axis: int, ids: np.ndarray) -> np.ndarray:
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
    one = pick_rank(layer, rank)
    axis = time_axis_of(one, time_axis, shape)
    rest = shape if axis is None else shape[:axis] + shape[axis + 1 :]
    flat = neuron_ids(ids, rest, where=_where(layer))
    if not rest:
        return np.zeros((len(flat), 0), dtype=np.int64)
    return np.stack(np.unravel_index(flat, rest), axis=1).astype(np.int64)
