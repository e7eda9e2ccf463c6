"""The decoding side of the viewer: a raster and membrane traces of a window of steps.

A raster is the events of the window as ``(time, neuron)`` pairs when they are few
enough to draw one by one (no more than the chart has pixels, and at most
:data:`MAX_EVENTS`), else a density image: spike counts in bins of ``kx`` time steps by
``ky`` neurons, at most one bin per pixel. Which one is decided from the stored
summaries before anything is decoded, as :func:`spikestore.plot.raster_plot` does;
the window is then decoded a block of steps at a time. A window that would decode more
than :data:`MAX_RASTER_VALUES` values is not read: the answer says how many steps fit.

Traces are the chosen neurons' values over the window, with the spikes of the same
neurons from the layer's spike twin (a layer of the same name and record shape in
another monitor, with as many steps) placed on them.

Runs in the caller's thread; :class:`~spikestore.view._data.ViewData`'s lock is held.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import analysis
from ..summary import COLUMNS
from ._data import BadRequest, ViewData, _is_spikes, _json_floats, _time_axis, _window

__all__ = ["raster", "traces", "MAX_RASTER_VALUES", "MAX_EVENTS", "MAX_TRACE_POINTS"]

#: The most values (steps x time x neurons) one raster window decodes.
MAX_RASTER_VALUES = 1 << 25
#: Above this many spikes a raster is sent as a density image.
MAX_EVENTS = 40_000
#: Values a density raster decodes at a time.
_BLOCK = 1 << 21
#: The most points (steps x time) of one neuron's trace.
MAX_TRACE_POINTS = 200_000
#: The most neurons one traces request may name.
MAX_TRACE_NEURONS = 16
_SUM = COLUMNS.index("sum")


def _per_bin(n: int, pixels: int) -> int:
    return max(1, -(-n // max(1, pixels)))


def _layout(lay: Any, field: int) -> tuple[tuple[int, ...], int | None, int, int]:
    """The record shape, its time axis (or None), T and the number of neurons."""
    try:
        shape = analysis.record_shape(lay, field)
    except ValueError as exc:
        raise BadRequest(" ".join(str(exc).split())) from None
    axis = _time_axis(lay, shape)
    t_len = shape[axis] if axis is not None else 1
    rest = shape if axis is None else shape[:axis] + shape[axis + 1 :]
    return shape, axis, t_len, math.prod(rest)


def raster(
    data: ViewData,
    monitor: str,
    layer: str,
    start: int | None,
    stop: int | None,
    *,
    width: int = 800,
    height: int = 300,
    neurons: tuple[int, int] | None = None,
    rank: int | None = None,
    field: int = 0,
) -> dict[str, Any]:
    """The spikes of steps ``[start, stop)`` of neurons ``[lo, hi)`` (``neurons``; default
    all) for a chart of ``width`` x ``height`` pixels: ``mode`` ``"events"`` with ``t``
    and ``n`` (time steps ``step * T + t`` and flat neuron ids), or ``"density"`` with
    counts ``z`` (``ny`` rows of ``nx``) in bins of ``kx`` time steps by ``ky`` neurons
    from ``x0``, ``y0``; or ``mode`` ``"too_large"`` with the most steps that fit."""
    if not (1 <= width <= 8192 and 1 <= height <= 8192):
        raise BadRequest(f"width and height must be from 1 to 8192, got {width}x{height}")
    with data._lock:
        data.refresh()
        lay = data.layer(monitor, layer, rank)
        field = data.field_of(lay, field)
        a, b = _window(start, stop, len(lay))
        if not len(lay):
            return {"monitor": monitor, "layer": layer, "start": 0, "stop": 0, "mode": "events",
                    "t": [], "n": [], "total": 0, "neurons": 0, "time_len": 1}  # fmt: skip
        _, axis, t_len, count = _layout(lay, field)
        lo, hi = (0, count) if neurons is None else neurons
        lo, hi = min(max(0, lo), count), min(max(0, hi), count)
        hi = max(lo, hi)
        rows = hi - lo
        out: dict[str, Any] = {
            "monitor": monitor, "layer": layer, "start": a, "stop": b, "time_len": t_len,
            "neurons": count, "lo": lo, "hi": hi, "spikes": _is_spikes(lay, field),
        }  # fmt: skip
        per_step = t_len * max(1, rows)
        if (b - a) * per_step > MAX_RASTER_VALUES:
            out.update(mode="too_large", max_steps=MAX_RASTER_VALUES // per_step)
            return out
        if b <= a or rows == 0:
            out.update(mode="events", t=[], n=[], total=0)
            return out
        ids = None if (lo, hi) == (0, count) else np.arange(lo, hi)
        s = analysis.summary(lay, slice(a, b), field=field)
        expected = float(np.nansum(s[:, _SUM])) * rows / max(1, count)
        ta = False if axis is None else axis
        if rows > height or expected > min(width * height, MAX_EVENTS):
            return _density(lay, out, (a, b, t_len), (lo, rows), ids, (width, height), field, ta)
        t, n = analysis.raster(lay, slice(a, b), ids, time_axis=ta, field=field)
        if len(t) > MAX_EVENTS:  # the summaries undercounted (values, not spikes)
            return _density(lay, out, (a, b, t_len), (lo, rows), ids, (width, height), field, ta)
        out.update(mode="events", t=t.tolist(), n=n.tolist(), total=len(t))
        return out


def _density(
    lay: Any,
    out: dict[str, Any],
    x: tuple[int, int, int],
    y: tuple[int, int],
    ids: np.ndarray | None,
    pixels: tuple[int, int],
    field: int,
    time_axis: int | bool,
) -> dict[str, Any]:
    (a, b, t_len), (y0, rows) = x, y
    x0, span = a * t_len, (b - a) * t_len
    kx, ky = _per_bin(span, pixels[0]), _per_bin(rows, pixels[1])
    nx, ny = -(-span // kx), -(-rows // ky)
    counts = np.zeros(nx * ny, dtype=np.int64)
    block = max(1, _BLOCK // max(1, t_len * rows))
    for i in range(a, b, block):
        t, n = analysis.raster(
            lay, slice(i, min(b, i + block)), ids, time_axis=time_axis, field=field
        )
        counts += np.bincount((n - y0) // ky * nx + (t - x0) // kx, minlength=nx * ny)
    out.update(
        mode="density", x0=x0, kx=kx, nx=nx, y0=y0, ky=ky, ny=ny,
        z=counts.reshape(ny, nx).tolist(), total=int(counts.sum()),
    )  # fmt: skip
    return out


def traces(
    data: ViewData,
    monitor: str,
    layer: str,
    neurons: list[int],
    start: int | None,
    stop: int | None,
    *,
    rank: int | None = None,
    field: int = 0,
) -> dict[str, Any]:
    """The values of ``neurons`` (flat ids, as in the raster) over steps ``[start, stop)``:
    ``x`` (time steps) and one list ``y`` per neuron (None where a step recorded
    None); ``spikes`` with each neuron's spike times from the layer's spike twin
    (``spikes_from`` names it; None where there is none). A window of more than
    :data:`MAX_TRACE_POINTS` time steps gives ``mode`` ``"too_large"``."""
    if not neurons or len(neurons) > MAX_TRACE_NEURONS:
        raise BadRequest(f"give 1 to {MAX_TRACE_NEURONS} neurons, got {len(neurons)}")
    with data._lock:
        data.refresh()
        lay = data.layer(monitor, layer, rank)
        field = data.field_of(lay, field)
        a, b = _window(start, stop, len(lay))
        shape, axis, t_len, count = _layout(lay, field)
        bad = [i for i in neurons if not 0 <= i < count]
        if bad:
            raise BadRequest(
                f"monitor {monitor!r}, layer {layer!r}: neurons {bad} out of range "
                f"0..{count - 1} (record shape {list(shape)})"
            )
        out: dict[str, Any] = {
            "monitor": monitor, "layer": layer, "start": a, "stop": b, "time_len": t_len,
            "neurons": neurons, "spikes_from": None,
        }  # fmt: skip
        if (b - a) * t_len > MAX_TRACE_POINTS:
            out.update(mode="too_large", max_steps=MAX_TRACE_POINTS // t_len)
            return out
        ta = False if axis is None else axis
        ids = np.asarray(neurons, dtype=np.int64)
        v = analysis.traces(lay, ids, slice(a, b), time_axis=ta, field=field)
        out.update(mode="traces", x=list(range(a * t_len, b * t_len)))
        out["y"] = [_json_floats(v[:, j]) for j in range(len(ids))]
        twin = _spike_twin(data, lay, shape, rank)
        if twin is not None and b > a:
            t, n = analysis.raster(twin, slice(a, b), ids, time_axis=ta)
            out["spikes_from"] = [twin.monitor, twin.name]
            out["spikes"] = [t[n == i].tolist() for i in ids]
        return out


def _spike_twin(data: ViewData, lay: Any, shape: tuple[int, ...], rank: int | None) -> Any:
    """A spike layer of the same name and record shape as ``lay`` in another monitor,
    recorded at the same steps (as many of them, give or take what one commit adds
    while a writer runs); None where there is none."""
    if _is_spikes(lay, 0):
        return lay
    store = data._reader(rank)
    for mon in store.values():
        if mon.name == lay.monitor or lay.name not in mon:
            continue
        cand = mon[lay.name]
        if not _is_spikes(cand, 0) or abs(len(cand) - len(lay)) > max(64, len(lay) // 100):
            continue
        try:
            if analysis.record_shape(cand, 0) == shape:
                return cand
        except ValueError:
            continue
    return None
