"""Plots of recorded layers with matplotlib (an optional dependency).

Every function draws on ``ax`` (a new figure's axes by default) and returns the
Axes, so plots compose and work under any backend, including the headless
``Agg``. Data comes from :mod:`spikestore.analysis`, so each plot reads only
what it shows: rates and scalar gradient norms come from the stored summaries,
rasters and traces read only the chosen neurons' chunks.

Steps, time and neurons
-----------------------
The functions share one reading of a layer (the vocabulary of
:func:`spikestore.analysis.spike_trains`):

* ``time_axis=None`` (default) uses the layer's own ``time_axis``. For a
  multi-step layer (SpikingJelly's ``[T, B, ...]`` records, time axis 0) the x
  axis is **time**: step ``s``, time index ``t`` is drawn at ``s * T + t``
  and labelled "time step"; a neuron is an element of the record *without* its
  time axis, numbered by its flat C-order index (``b * N + n`` for ``[T, B, N]``).
  ``time_axis=False`` draws one point per **step** (labelled "step") and numbers
  neurons over the whole record; an int names the record axis that is time.
* The x limits are the window of steps asked for (``steps``; every committed step
  by default), ``[first * T, (last + 1) * T)`` in time, whatever was recorded in
  it, so silence shows as silence.
* ``field=`` picks the field of tuple records, by position or by name (where the
  reader knows the fields' names): snnTorch's ``(spk, mem)`` has the membrane
  potential in field 1.

Plots at scale
--------------
A plot never draws more columns or marks than its axes have pixels to show them:
:func:`rate_heatmap` averages steps into bins that fit the axes' width (the mean rate
over each bin, never every k-th step, which aliases), and :func:`raster_plot` of more
spikes than the axes have pixels (or more neurons than pixel rows) draws a density
image of spike counts per bin instead of one mark per spike. Each says so in its
title and colour bar label; ``bins=`` and ``density=`` choose for yourself. Pixels
are counted at the figure's size and dpi when the plot is made.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from . import analysis
from .analysis._select import field_index, one_rank, ranks_of, record_dims, time_axis_of
from .analysis._shapes import time_flat
from .reader import LayerReader, RankedLayerReader
from .summary import COLUMNS

__all__ = ["raster_plot", "rate_heatmap", "membrane_traces", "gradient_norms"]

#: Above this many records in view, membrane traces draw no boundary lines
#: (the breaks in the lines still show every boundary).
_MAX_BOUNDARY_LINES = 64
#: At most this many batch separators are drawn across a raster.
_MAX_GROUP_LINES = 32
#: Values a density raster decodes at a time (steps x time x chosen neurons).
_DENSITY_BLOCK = 1 << 21


def _axes(ax: Any, figsize: tuple[float, float] | None = None) -> tuple[Any, bool]:
    """``ax``, or the axes of a new figure; and whether the figure is new."""
    if ax is not None:
        return ax, False
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("spikestore.plot needs matplotlib: pip install matplotlib") from exc
    _, ax = plt.subplots(figsize=figsize)
    return ax, True


def _named(layers: Any, rank: int | None = None) -> list[tuple[str, Any]]:
    """(label, LayerReader) pairs from a MonitorReader/dict, a list, or one layer,
    in the order given (a MonitorReader's own order); of rank ``rank`` for a ranked
    store's layers (a plot draws one rank: the ranks' steps are separate runs of the
    same network)."""
    if isinstance(layers, Mapping):
        named = [(str(k), v) for k, v in layers.items()]
    elif isinstance(layers, (LayerReader, RankedLayerReader)):
        named = [(layers.name, layers)]
    elif isinstance(layers, Iterable):
        named = [(lay.name, lay) for lay in layers]
    else:
        raise TypeError(
            f"expected layers (a monitor, dict, list or one layer), got {type(layers)}"
        )
    return [(name, one_rank(lay, rank)) for name, lay in named]


def _field_name(layer: Any, field: int) -> str | None:
    """How to name field ``field`` in a label: None for a layer of plain tensors."""
    if len(layer.fields) <= 1 and field == 0:
        return None
    names = getattr(layer, "field_names", None)
    if names is not None and 0 <= field < len(names) and str(names[field]) != str(field):
        return f"field {names[field]}"
    return f"field {field}"


def _columns(
    shape: tuple[int, ...], axis: int | None, neurons: Any
) -> tuple[int, tuple[int, ...], np.ndarray, np.ndarray]:
    """T, the neuron shape (the record without its time axis), the chosen neurons'
    flat ids in it, and the flat record indices of (t, neuron), t-major."""
    if axis is None:
        ids = analysis.neuron_ids(neurons, shape)
        return 1, shape, ids, ids
    rest = shape[:axis] + shape[axis + 1 :]
    ids = analysis.neuron_ids(neurons, rest)
    return shape[axis], rest, ids, time_flat(shape, axis, ids)


def _dims(
    layer: Any, shape: tuple[int, ...], axis: int | None, field: int
) -> tuple[str, ...] | None:
    """Names of the neuron axes (the record's axes without time), when the reader knows them."""
    names = record_dims(layer, len(shape), field)
    if names is None or axis is None:
        return names
    return names[:axis] + names[axis + 1 :]


def _neuron_label(rest: tuple[int, ...], names: tuple[str, ...] | None) -> str:
    """The neuron axis label: ``neuron``, or how a flat index runs over several axes
    (axes of length 1, such as a batch of one, change no index and are left out)."""
    keep = [i for i, k in enumerate(rest) if k > 1]
    if len(keep) <= 1:
        name = names[keep[0]] if names and keep else None
        return "neuron" if name in (None, "neuron") else f"neuron ({name})"
    rest = tuple(rest[i] for i in keep)
    names = tuple(names[i] for i in keep) if names else None
    if names:
        axes = ", ".join(f"{n} {k}" for n, k in zip(names, rest, strict=True))
    else:
        axes = " x ".join(str(k) for k in rest)
    return f"neuron: flat index over ({axes})"


def _neuron_name(i: int, rest: tuple[int, ...], names: tuple[str, ...] | None) -> str:
    """A neuron's legend entry: ``neuron 7``, ``neuron (0, 7)`` or ``batch 0, neuron 7``."""
    if len(rest) <= 1:
        return f"neuron {i}"
    where = tuple(int(k) for k in np.unravel_index(i, rest))
    if names:
        return ", ".join(f"{n} {k}" for n, k in zip(names, where, strict=True))
    return f"neuron {where}"


def _time_label(layer: Any, timed: bool) -> str:
    """``time step`` or ``step``, with the store's duration of one when it is known."""
    label = "time step" if timed else "step"
    store = getattr(layer, "store", None)
    dt = getattr(store, "dt", None)
    if isinstance(dt, (int, float)) and not isinstance(dt, bool):
        unit = getattr(store, "time_unit", None) or ""
        label += f" (dt = {dt:g}{' ' + unit if unit else ''})"
    return label


def _window(layer: Any, steps: Any, sel: np.ndarray) -> tuple[int, int]:
    """The steps ``[a, b)`` a plot spans: the selection's, or an empty slice's position."""
    if sel.size:
        return int(sel.min()), int(sel.max()) + 1
    if isinstance(steps, slice):
        a = steps.indices(len(layer))[0]
        return a, a
    return 0, 0


def _xlim(ax: Any, a: int, b: int, t_len: int) -> None:
    """x limits ``[a * T, b * T)`` for the window of steps ``[a, b)``, on integer ticks."""
    from matplotlib.ticker import MaxNLocator

    lo, hi = a * t_len, b * t_len
    if hi <= lo:  # an empty window: one step's width where it would be
        hi = lo + max(t_len, 1)
    ax.set_xlim(lo, hi)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _pixels(ax: Any) -> tuple[int, int]:
    """The axes' width and height in pixels, at the figure's size and dpi (at least 1);
    a figure with a layout engine (``layout="constrained"``) is laid out first, as it
    places its axes only when drawn."""
    fig = getattr(ax.figure, "figure", None) or ax.figure  # a subfigure's root figure
    engine = fig.get_layout_engine() if hasattr(fig, "get_layout_engine") else None
    if engine is not None:
        engine.execute(fig)
    box = ax.get_window_extent()
    return max(1, int(box.width)), max(1, int(box.height))


def _per_bin(n: int, pixels: int) -> int:
    """How many of ``n`` columns (or rows) one bin takes so that the bins fit in ``pixels``."""
    return max(1, -(-n // max(1, pixels)))


def _plural(k: int, unit: str) -> str:
    """``1 step``, ``41 steps``."""
    return f"{k} {unit}{'' if k == 1 else 's'}"


def _mean_bins(grid: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The mean of each row's finite values over the columns ``[edges[i], edges[i + 1])``
    (NaN where a bin has none); ``edges`` increase strictly from 0 to the width."""
    ok = np.isfinite(grid)
    sums = np.add.reduceat(np.where(ok, grid, 0.0), edges[:-1], axis=1)
    counts = np.add.reduceat(ok.astype(np.int64), edges[:-1], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def raster_plot(
    layer: Any,
    steps: Any = None,
    neurons: Any = None,
    *,
    time_axis: bool | int | None = None,
    field: int | str = 0,
    density: bool | None = None,
    rank: int | None = None,
    ax: Any = None,
    **scatter: Any,
) -> Any:
    """Spike raster of a layer: one mark per spike at (step or time, neuron), or a
    density image of spike counts when there are more spikes than pixels.

    Parameters
    ----------
    layer : LayerReader
    steps : slice, int sequence or None
        The window of steps (default: every committed step). The x limits are
        this window, not the extent of the spikes in it, and the y limits are
        the chosen neurons, so silent stretches and silent neurons show.
    neurons : None, int, sequence of flat indices, or sequence of index tuples
        Which neurons (default: all), numbered in the record without its time axis
        when there is one (see the module's notes). Only their chunks are read.
    time_axis : None, bool or int
        None (default): the layer's own ``time_axis``; a multi-step layer is drawn
        over time, ``step * T + t``. False: over steps, neurons numbered over the
        whole record. True or an int: that record axis is time.
    field : int or str
        Field of tuple records.
    density : bool, optional
        None (default): a density image when the window holds more spikes than the
        axes have pixels (counted from the stored summaries, before any record is
        decoded), or more neurons than pixel rows; one mark per spike otherwise.
        True or False: always or never. The image bins time and neurons to the
        axes' pixels (each bin ``k`` time steps by ``m`` neurons, at least one
        pixel), shows the spikes in each bin (they sum to the spikes in the title),
        reads the window a bounded block of steps at a time, and says its bins in
        the colour bar's label and "(density)" in the title.
    rank : int, optional
        For a layer of a ranked store (a ``torchrun`` job), the rank to draw.
    **scatter
        Passed to ``ax.scatter``. A density image takes ``color`` (white to that
        colour; default black) or ``cmap``, and ``vmax``.

    Examples
    --------
    >>> ax = raster_plot(store["output"]["sn1"], slice(0, 500), range(64))  # doctest: +SKIP
    """
    layer = one_rank(layer, rank)
    ax, _ = _axes(ax)
    f = field_index(layer, field)
    sel = analysis.step_selection(layer, steps)
    shape = analysis.record_shape(layer, f)
    axis = time_axis_of(layer, time_axis, shape)
    t_len, rest, ids, _ = _columns(shape, axis, neurons)
    a, b = _window(layer, steps, sel)
    lo, hi = (int(ids.min()), int(ids.max())) if ids.size else (0, 0)
    if density is None:
        density = _crowded(ax, layer, sel, f, ids, rest)
    if density:
        total = _density_image(
            ax,
            layer,
            (sel, f, neurons, ids, axis, t_len),
            (a * t_len, max(1, (b - a) * t_len)),
            (lo, hi - lo + 1),
            scatter,
        )
    else:
        trains = analysis.spike_trains(
            layer,
            sel,
            dt=1.0,
            neurons=None if neurons is None else ids,
            field=f,
            time_axis=False if axis is None else axis,
        )
        counts = np.array([len(tr) for tr in trains], dtype=np.int64)
        x = np.concatenate(trains) if len(trains) else np.zeros(0)
        y = np.repeat(ids, counts)
        style = {"marker": "|", "s": 12, "linewidths": 0.8, "color": "k"}
        style.update(scatter)
        ax.scatter(x, y, **style)
        total = int(counts.sum())
    _xlim(ax, a, b, t_len)
    ax.set_ylim(lo - 0.5, hi + 0.5)
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if len(rest) >= 2 and math.prod(rest[1:]) > 1:
        # Separate the groups of the first neuron axis (e.g. the samples of a batch).
        group = math.prod(rest[1:])
        edges = np.arange((lo // group + 1) * group, hi + 1, group) - 0.5
        if 0 < len(edges) <= _MAX_GROUP_LINES:
            ax.hlines(
                edges,
                0,
                1,
                transform=ax.get_yaxis_transform(),
                colors="0.8",
                linewidths=0.6,
                gid="groups",
                zorder=0.5 if density else 0,
            )
    ax.set_xlabel(_time_label(layer, axis is not None))
    ax.set_ylabel(_neuron_label(rest, _dims(layer, shape, axis, f)))
    what = _field_name(layer, f)
    title = f"{layer.name}{' ' + what if what else ''}: {total} spikes"
    ax.set_title(title + (" (density)" if density else ""))
    return ax


def _crowded(ax: Any, layer: Any, sel: np.ndarray, f: int, ids: np.ndarray, rest: Any) -> bool:
    """Whether a raster of neurons ``ids`` over steps ``sel`` has more neurons than the
    axes have pixel rows, or more spikes than pixels: the spikes counted from the
    stored summaries (for a subset of neurons, their share of the layer's spikes)."""
    if not len(sel) or not len(ids):
        return False
    width, height = _pixels(ax)
    if len(ids) > height:
        return True
    counts = analysis.summary(layer, sel, field=f)[:, COLUMNS.index("sum")]
    spikes = float(np.nansum(counts)) * len(ids) / max(1, math.prod(rest))
    return spikes > width * height


def _density_image(
    ax: Any,
    layer: Any,
    what: tuple[np.ndarray, int, Any, np.ndarray, int | None, int],
    x: tuple[int, int],
    y: tuple[int, int],
    style: Mapping[str, Any],
) -> int:
    """Draw the spikes of ``what`` (steps, field, ``neurons``, their ids, time axis,
    T) as counts in bins of the axes' pixel grid, over times ``[x0, x0 + span)`` and
    neuron ids ``[y0, y0 + rows)`` (``x`` and ``y``), with a colour bar; the spikes."""
    from matplotlib.colors import LinearSegmentedColormap, to_rgba

    sel, f, neurons, ids, axis, t_len = what
    (x0, span), (y0, rows) = x, y
    cmap = style.get("cmap")
    if cmap is None:
        color = style.get("color", "k")
        cmap = LinearSegmentedColormap.from_list("spikes", [to_rgba("white"), to_rgba(color)])
    im = ax.imshow(
        np.zeros((1, 1)),
        origin="lower",
        aspect="auto",
        interpolation="nearest",
        cmap=cmap,
        extent=(x0, x0 + span, y0 - 0.5, y0 - 0.5 + rows),
    )
    cbar = ax.figure.colorbar(im, ax=ax)
    width, height = _pixels(ax)  # what the colour bar left
    kx, ky = _per_bin(span, width), _per_bin(rows, height)
    nx, ny = -(-span // kx), -(-rows // ky)
    counts = np.zeros(nx * ny, dtype=np.int64)
    block = max(1, _DENSITY_BLOCK // max(1, t_len * len(ids)))
    for i in range(0, len(sel), block):
        t, n = analysis.raster(
            layer,
            sel[i : i + block],
            None if neurons is None else ids,
            field=f,
            time_axis=False if axis is None else axis,
        )
        cell = (n - y0) // ky * nx + (t - x0) // kx
        counts += np.bincount(cell, minlength=nx * ny)
    img = counts.reshape(ny, nx)
    im.set_data(img)
    im.set_extent((x0, x0 + nx * kx, y0 - 0.5, y0 - 0.5 + ny * ky))
    im.set_clim(0, style.get("vmax", max(1, int(img.max()))))
    unit = "step" if axis is None else "time step"
    who = "neuron" if len(ids) == rows else "neuron id"
    cbar.set_label(f"spikes per bin ({_plural(kx, unit)} x {_plural(ky, who)})")
    return int(counts.sum())


def rate_heatmap(
    layers: Any,
    steps: Any = None,
    *,
    over: str | None = None,
    time_axis: bool | None = None,
    norm: str = "layer",
    field: int | str = 0,
    bins: int | str | None = None,
    rank: int | None = None,
    ax: Any = None,
    **imshow: Any,
) -> Any:
    """Firing rate of several layers over steps, one row per layer (from summaries).

    Parameters
    ----------
    layers : MonitorReader, dict of name -> LayerReader, or list of LayerReader
        Layers to show (e.g. ``store["output"]``), top to bottom in the order given
        (a monitor's own order), labelled with their full names; non-spiking
        layers show their mean.
    steps : slice, int sequence or None
        The window of steps (default: all); the x limits are this window.
    over : {"step", "time"}, optional
        Columns per step, or per time step inside multi-step records. Default:
        as ``time_axis`` says.
    time_axis : bool, optional
        None (default): over time when every layer is multi-step with time axis
        0, else over steps. False: over steps. True: over time.
    norm : {"layer", "shared"}
        ``"layer"`` (default): each row scaled to its own maximum, so quiet layers
        show their pattern too (colour bar "rate / layer max"). ``"shared"``: one
        colour scale of rates for every row.
    field : int or str
        Field of tuple records, in every layer.
    bins : int, "auto" or None
        None or ``"auto"`` (default): at most one column per pixel column of the
        axes: when the window has more steps (or time steps) than that, each column
        is the mean rate over a bin of ``k`` consecutive ones, and the title says
        "mean firing rate over bins of k steps". An int: that many bins of (nearly)
        equal width. 0: one column per step, however many.
    rank : int, optional
        For the layers of a ranked store (a ``torchrun`` job), the rank to draw.

    Bins average (a bin's columns all count); they never pick every ``k``-th step,
    which aliases a long run into stripes that look like bursts. Pixels are counted
    at the figure's size and dpi when the plot is made, after the colour bar and
    (for a new figure) ``fig.tight_layout()`` took their room; on axes of your own,
    lay the figure out before the call.

    Examples
    --------
    >>> ax = rate_heatmap(spikestore.open("run.spikes")["output"])  # doctest: +SKIP
    """
    if norm not in ("layer", "shared"):
        raise ValueError(f"norm must be 'layer' or 'shared', got {norm!r}")
    auto = bins is None or bins == "auto"
    if not auto and (isinstance(bins, (str, bool)) or int(bins) < 0):  # type: ignore[arg-type]
        raise ValueError(f"bins must be None, 'auto' or an int >= 0, got {bins!r}")
    named = _named(layers, rank)
    if over is None:
        if time_axis is None:
            timed = bool(named) and all(lay.time_axis == 0 for _, lay in named)
        else:
            timed = bool(time_axis)
        over = "time" if timed else "step"
    ax, new = _axes(ax, figsize=(8.0, max(2.5, 1.6 + 0.3 * len(named))))
    rows = []
    for _, lay in named:
        r = analysis.firing_rate(lay, steps, over=over, field=field_index(lay, field))
        rows.append(np.asarray(r, dtype=np.float64).reshape(-1))
    width = max((len(r) for r in rows), default=0)
    grid = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        grid[i, : len(r)] = r
    sel = analysis.step_selection(named[0][1], steps) if named else np.zeros(0, dtype=np.int64)
    t_len = width // len(sel) if len(sel) and over == "time" else 1
    start = int(sel[0]) * t_len if len(sel) else 0
    stop = start + max(width, 1)
    style: dict[str, Any] = {"aspect": "auto", "interpolation": "nearest", "cmap": "viridis"}
    style.update(imshow)
    # The image is drawn at full width first, so that the colour bar and the layout
    # take their room; then its columns are binned to the pixels left.
    im = ax.imshow(np.zeros((len(rows), 1)), extent=(start, stop, len(rows) - 0.5, -0.5), **style)
    _xlim(ax, start, stop, 1)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([name for name, _ in named])
    ax.set_xlabel(_time_label(named[0][1], over == "time") if named else "step")
    ax.set_ylabel("layer")
    label = "rate / layer max" if norm == "layer" else "firing rate"
    ax.figure.colorbar(im, ax=ax, label=label)
    if new:
        ax.figure.tight_layout()
    unit = "time step" if over == "time" else "step"
    title = f"firing rate per {unit}"
    most = _pixels(ax)[0] if auto else (int(bins) or width)  # type: ignore[arg-type]
    if 0 < most < width:
        if auto:  # bins of k columns each (the last one may be shorter)
            k = _per_bin(width, most)
            edges = np.append(np.arange(0, width, k), width)
            title = f"mean firing rate over bins of {_plural(k, unit)}"
            stop = start + (len(edges) - 1) * k
        else:  # as many bins as asked, of nearly equal widths
            edges = np.linspace(0, width, most + 1).astype(int)
            k_lo, k_hi = int(np.diff(edges).min()), int(np.diff(edges).max())
            size = str(k_lo) if k_lo == k_hi else f"{k_lo}-{k_hi}"
            title = f"mean firing rate over {most} bins of {size} {unit}s"
        grid = _mean_bins(grid, edges)
    if norm == "layer":
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows stay NaN
            top = np.nanmax(np.abs(grid), axis=1, keepdims=True) if grid.size else grid[:, :1]
        top = np.where(top > 0, top, 1.0)  # a silent row stays 0
        grid = grid / top
    im.set_data(grid)
    im.set_extent((start, stop, len(rows) - 0.5, -0.5))
    _xlim(ax, start, start + max(width, 1), 1)
    if "norm" not in imshow:
        if norm == "layer":
            low = 0.0 if np.nanmin(grid, initial=0.0) >= 0 else -1.0
            im.set_clim(imshow.get("vmin", low), imshow.get("vmax", 1.0))
        elif np.isfinite(grid).any():
            fin = grid[np.isfinite(grid)]
            im.set_clim(imshow.get("vmin", fin.min()), imshow.get("vmax", fin.max()))
    monitors = {lay.monitor for _, lay in named}
    ax.set_title(f"{monitors.pop()}: {title}" if len(monitors) == 1 else title)
    return ax


def _trace_x(sel: np.ndarray, t_len: int, axis: int | None) -> np.ndarray:
    """x of each (step, t): ``(len(sel), T + 1)`` with a NaN column that breaks the
    line between multi-step records, or ``(len(sel), 1)`` for per-step values."""
    if axis is None:
        return sel[:, None].astype(np.float64)
    x = np.full((len(sel), t_len + 1), np.nan)
    x[:, :t_len] = sel[:, None] * t_len + np.arange(t_len)[None, :]
    return x


def membrane_traces(
    layer: Any,
    neurons: Any,
    steps: Any = None,
    *,
    time_axis: bool | int | None = None,
    field: int | str = 0,
    threshold: float | None = None,
    spikes: Any = None,
    boundaries: bool | None = None,
    rank: int | None = None,
    ax: Any = None,
    **plot: Any,
) -> Any:
    """Chosen neurons' recorded values (membrane potential) over steps, one line each.

    Parameters
    ----------
    neurons : int, sequence of flat indices, or sequence of index tuples
        Numbered as in :func:`raster_plot`.
    steps : slice, int sequence or None
        The window of steps (default: all); the x limits are this window.
    time_axis : None, bool or int
        As in :func:`raster_plot`: a multi-step layer is drawn over time by default.
        Each record's ``T`` values are then a line of their own (the line breaks
        between records, where a network is usually reset), and a dotted line
        marks each record boundary (see ``boundaries``).
    field : int or str
        Field of tuple records (snnTorch's ``(spk, mem)``: ``field=1``).
    threshold : float, optional
        Draw a dashed line at this value (and put spike marks on it).
    spikes : LayerReader, int or str, optional
        Mark each spike of the chosen neurons: a layer of spikes recorded beside
        this one (same record shape and steps, e.g. a SpikingJelly ``OutputMonitor``
        layer beside a ``v`` monitor layer), or a field of this layer (snnTorch:
        ``field=1, spikes=0``). Marks sit on ``threshold`` when given, else on the
        trace.
    boundaries : bool, optional
        Dotted vertical lines at record boundaries of a multi-step layer. Default:
        when at most 64 records are in view.
    rank : int, optional
        For a layer of a ranked store (a ``torchrun`` job), the rank to draw (of
        ``spikes`` too).
    **plot
        Passed to ``ax.plot`` for the traces.

    Examples
    --------
    >>> ax = membrane_traces(store["v"]["sn1"], [0, 1, 2], threshold=1.0,   # doctest: +SKIP
    ...                      spikes=store["output"]["sn1"])
    """
    layer = one_rank(layer, rank)
    if ranks_of(spikes) is not None:
        spikes = one_rank(spikes, rank)
    ax, _ = _axes(ax)
    f = field_index(layer, field)
    sel = analysis.step_selection(layer, steps)
    shape = analysis.record_shape(layer, f)
    axis = time_axis_of(layer, time_axis, shape)
    t_len, rest, ids, flat = _columns(shape, axis, neurons)
    vals = analysis.traces(layer, flat, sel, time_axis=False, field=f)
    vals = vals.reshape(len(sel), t_len, len(ids))
    x = _trace_x(sel, t_len, axis)
    y = np.full((*x.shape, len(ids)), np.nan)
    y[:, :t_len] = vals
    names = _dims(layer, shape, axis, f)
    colors = []
    for j, i in enumerate(ids):
        (line,) = ax.plot(
            x.reshape(-1), y[..., j].reshape(-1), label=_neuron_name(int(i), rest, names), **plot
        )
        colors.append(line.get_color())
    if threshold is not None:
        ax.axhline(threshold, color="k", linestyle="--", linewidth=0.8, label="threshold")
    if spikes is not None:
        marks = _spike_values(layer, spikes, sel, flat, shape, f)
        marks = marks.reshape(len(sel), t_len, len(ids))
        for j in range(len(ids)):
            s, t = np.nonzero(np.nan_to_num(marks[:, :, j]))
            at = y[s, t, j] if threshold is None else np.full(len(s), float(threshold))
            ax.scatter(
                x[s, t],
                at,
                marker="v",
                s=18,
                color=colors[j],
                zorder=3,
                gid="spikes",
                label="spike" if j == 0 else "_spike",
            )
    if axis is not None and len(sel) > 1:
        starts = sel[1:][np.diff(sel) > 0] * t_len  # a new record starts here
        if boundaries or (boundaries is None and len(sel) <= _MAX_BOUNDARY_LINES):
            ax.vlines(
                starts - 0.5,
                0,
                1,
                transform=ax.get_xaxis_transform(),
                colors="0.6",
                linestyles=":",
                linewidths=0.8,
                gid="boundaries",
                label="_boundaries",
            )
    a, b = _window(layer, steps, sel)
    _xlim(ax, a, b, t_len)
    ax.set_xlabel(_time_label(layer, axis is not None))
    ylabel = layer.monitor
    what = _field_name(layer, f)
    if what:
        ylabel += f" ({what})"
    units = getattr(layer, "units", None)
    if units:
        ylabel += f" [{units}]"
    ax.set_ylabel(ylabel)
    ax.set_title(layer.name)
    if len(ids) <= 10:
        ax.legend(loc="best", fontsize="small")
    return ax


def _spike_values(
    layer: Any, spikes: Any, sel: np.ndarray, flat: np.ndarray, shape: tuple[int, ...], f: int
) -> np.ndarray:
    """The spike layer's (or field's) values at the traced (step, t, neuron) columns."""
    if isinstance(spikes, (int, np.integer, str)) and not isinstance(spikes, bool):
        src, sf = layer, field_index(layer, spikes)
    elif isinstance(spikes, bool):
        raise TypeError("spikes= takes a layer of spikes or a field of this layer, not a bool")
    else:
        src, sf = spikes, 0
    sshape = analysis.record_shape(src, sf)
    if sshape != shape:
        raise ValueError(
            f"spikes: layer {src.name!r} records shape {sshape}, "
            f"layer {layer.name!r} field {f} records {shape}"
        )
    if len(sel) and int(sel.max()) >= len(src):
        raise ValueError(
            f"spikes: layer {src.name!r} has {len(src)} steps, the window reaches step "
            f"{int(sel.max())}"
        )
    return analysis.traces(src, flat, sel, time_axis=False, field=sf)


def gradient_norms(
    layers: Any,
    steps: Any = None,
    *,
    x: Sequence[Any] | None = None,
    log: bool = True,
    field: int | str = 0,
    rank: int | None = None,
    ax: Any = None,
    **plot: Any,
) -> Any:
    """Per-layer gradient norm over steps (e.g. a :class:`GradInputMonitor`'s records).

    Scalar records (``function_on_grad_input=torch.norm``) are read from the
    summaries without decoding; tensor records are decoded and their L2 norm
    taken per step.

    Parameters
    ----------
    layers : MonitorReader, dict or list of LayerReader
    x : sequence, optional
        x values, one per step (e.g. the surrogate ``alpha`` of each step).
    log : bool
        Logarithmic y axis.
    field : int or str
        Field of tuple records, in every layer.
    rank : int, optional
        For the layers of a ranked store (a ``torchrun`` job), the rank to draw.

    Examples
    --------
    >>> ax = gradient_norms(spikestore.open("grads.spikes")["grad_input"])  # doctest: +SKIP
    """
    ax, _ = _axes(ax)
    for name, lay in _named(layers, rank):
        f = field_index(lay, field)
        sel = analysis.step_selection(lay, steps)
        s = analysis.summary(lay, sel, field=f)
        if np.all((s[:, 0] == 1) | np.isnan(s[:, 0])):
            norms = s[:, COLUMNS.index("mean")]
        else:
            vals = analysis.to_numpy(lay, sel, field=f).reshape(len(sel), -1)
            norms = np.sqrt(np.nansum(vals.astype(np.float64) ** 2, axis=1))
        xs = np.asarray(x)[: len(sel)] if x is not None else sel
        ax.plot(xs, norms, marker="o", label=name, **plot)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("step" if x is None else "")
    ax.set_ylabel("gradient norm")
    ax.legend(loc="best", fontsize="small")
    return ax
