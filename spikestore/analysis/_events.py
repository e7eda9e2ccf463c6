"""Events and values: spike counts, rasters, spike trains and traces over a window of
steps, decoded a bounded block at a time.

Runs in the caller's thread and keeps no state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._ranks import listed, per_rank
from ._read import _blocks, _columns
from ._select import _field, _where, step_selection, time_axis_of
from ._shapes import _layout, _plan

__all__ = ["spike_counts", "raster", "spike_trains", "store_dt", "traces"]


#: Values :func:`spike_trains` decodes at a time (steps x chosen elements).
_TRAIN_BLOCK = 1 << 21


@per_rank()
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
    sel = step_selection(layer, steps)
    fld = _field(layer, field)
    shape, _ = _plan(layer, fld, sel, pad=True)
    t = time_axis_of(layer, time_axis, shape)
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


@per_rank(listed)
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


@per_rank(listed)
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


@per_rank()
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
    sel = step_selection(layer, steps)
    lay = _layout(layer, _field(layer, field), sel, neurons, time_axis)
    vals = _columns(layer, sel, lay.flat, field=field, shape=lay.shape)
    return vals.reshape(len(sel) * lay.t_len, len(lay.ids))
