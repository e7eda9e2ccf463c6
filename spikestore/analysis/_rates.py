"""Rates and summaries: per-step summary rows, firing rates and mean rates, read from
the summaries the writer stored beside the records.

Runs in the caller's thread and keeps no state.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
import torch

from ..reader import FieldReader
from ..summary import COLUMNS, SUMMARY, SUMMARY_AXIS0
from ._ranks import per_rank
from ._select import _field, _where, field_index, step_selection
from ._shapes import _plan

__all__ = ["summary", "firing_rate", "mean_rate"]


_STAT = {name: i for i, name in enumerate(COLUMNS)}


@per_rank()
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
    return _summary_decoded(layer, sel, field_index(layer, field), axis0)


def _axis0_len(layer: Any, fld: FieldReader) -> int:
    shape = _plan(layer, fld, np.zeros(0, dtype=np.int64), pad=True)[0]
    if len(shape) < 2:
        raise ValueError(f"layer {layer.name!r} has no records of rank >= 2 (no time axis)")
    return shape[0]


def _summary_decoded(layer: Any, sel: np.ndarray, field: int, axis0: bool) -> np.ndarray:
    from ..codecs import Encoded, encode
    from ..summary import summarize

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
    return _mean_rate(layer, None, field, rank=rank)


def _rates(layer: Any, rates: list[float | None]) -> np.ndarray:
    """The ranks' mean rates as a float64 array, NaN for None."""
    return np.array([np.nan if r is None else r for r in rates], dtype=np.float64)


@per_rank(_rates)
def _mean_rate(layer: Any, steps: Any, field: int | str, *, rank: int | None = None) -> Any:
    """Spikes per element over ``steps`` from the stored summary, or None: a float (for
    a ranked layer without ``rank``, one per rank as an array)."""
    fld = _field(layer, field)
    sel = step_selection(layer, steps)
    s = fld.summary(SUMMARY, sel) if sel.size else None
    if s is None:
        return None
    total = float(np.nansum(s[:, _STAT["numel"]]))
    return float(np.nansum(s[:, _STAT["sum"]])) / total if total else None


@per_rank()
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
