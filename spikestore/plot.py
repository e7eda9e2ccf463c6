"""Plots of recorded layers with matplotlib (an optional dependency).

Every function draws on ``ax`` (a new figure's axes by default) and returns the
Axes, so plots compose and work under any backend, including the headless
``Agg``. Data comes from :mod:`spikestore.analysis`, so each plot reads only
what it shows: rates and scalar gradient norms come from the stored summaries,
rasters and traces read only the chosen neurons' chunks.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from . import analysis
from .reader import LayerReader
from .summary import COLUMNS

__all__ = ["raster_plot", "rate_heatmap", "membrane_traces", "gradient_norms"]


def _axes(ax: Any) -> Any:
    if ax is not None:
        return ax
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("spikestore.plot needs matplotlib: pip install matplotlib") from exc
    _, ax = plt.subplots()
    return ax


def _named(layers: Any) -> list[tuple[str, Any]]:
    """(label, LayerReader) pairs from a MonitorReader/dict, a list, or one layer."""
    if isinstance(layers, Mapping):
        return [(str(k), v) for k, v in layers.items()]
    if isinstance(layers, LayerReader):
        return [(layers.name, layers)]
    if isinstance(layers, Iterable):
        return [(lay.name, lay) for lay in layers]
    raise TypeError(f"expected layers (a monitor, dict, list or one layer), got {type(layers)}")


def raster_plot(
    layer: Any,
    steps: Any = None,
    neurons: Any = None,
    *,
    time_axis: bool = False,
    ax: Any = None,
    **scatter: Any,
) -> Any:
    """Spike raster of a layer: one mark per spike at (step or time, neuron).

    ``steps``, ``neurons`` and ``time_axis`` are as in
    :func:`spikestore.analysis.raster`; extra keywords go to ``ax.scatter``.

    Examples
    --------
    >>> ax = raster_plot(store["output"]["sn1"], slice(0, 500), range(64))  # doctest: +SKIP
    """
    ax = _axes(ax)
    t, n = analysis.raster(layer, steps, neurons, time_axis=time_axis)
    style = {"marker": "|", "s": 12, "linewidths": 0.8, "color": "k"}
    style.update(scatter)
    ax.scatter(t, n, **style)
    ax.set_xlabel("time step" if time_axis else "step")
    ax.set_ylabel("neuron")
    ax.set_title(f"{layer.name}: {len(t)} spikes")
    return ax


def rate_heatmap(
    layers: Any,
    steps: Any = None,
    *,
    over: str = "step",
    bins: int | None = None,
    ax: Any = None,
    **imshow: Any,
) -> Any:
    """Firing rate of several layers over steps, one row per layer (from summaries).

    Parameters
    ----------
    layers : MonitorReader, dict of name -> LayerReader, or list of LayerReader
        Layers to show (e.g. ``store["output"]``); non-spiking layers show their mean.
    over : {"step", "time"}
        Columns per step, or per time step inside multi-step records.
    bins : int, optional
        Average the columns into this many bins (for long runs).

    Examples
    --------
    >>> ax = rate_heatmap(spikestore.open("run.spikes")["output"], bins=200)  # doctest: +SKIP
    """
    ax = _axes(ax)
    named = _named(layers)
    rows = []
    for _, lay in named:
        r = analysis.firing_rate(lay, steps, over=over)
        rows.append(np.asarray(r, dtype=np.float64).reshape(-1))
    width = max((len(r) for r in rows), default=0)
    grid = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        grid[i, : len(r)] = r
    if bins is not None and 0 < bins < width:
        edges = np.linspace(0, width, bins + 1).astype(int)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN bins stay NaN
            grid = np.stack(
                [np.nanmean(grid[:, a:b], axis=1) for a, b in itertools.pairwise(edges)],
                axis=1,
            )
    style = {"aspect": "auto", "interpolation": "nearest", "cmap": "viridis"}
    style.update(imshow)
    sel = analysis.step_selection(named[0][1], steps) if named else np.zeros(0, dtype=np.int64)
    start = int(sel[0]) * (width // len(sel)) if len(sel) else 0
    im = ax.imshow(grid, extent=(start - 0.5, start + width - 0.5, len(rows) - 0.5, -0.5), **style)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([name for name, _ in named])
    ax.set_xlabel("time step" if over == "time" else "step")
    ax.figure.colorbar(im, ax=ax, label="firing rate")
    return ax


def membrane_traces(
    layer: Any,
    neurons: Any,
    steps: Any = None,
    *,
    time_axis: bool = False,
    threshold: float | None = None,
    ax: Any = None,
    **plot: Any,
) -> Any:
    """Chosen neurons' recorded values (membrane potential) over steps, one line each.

    ``neurons``, ``steps``, ``time_axis`` are as in
    :func:`spikestore.analysis.traces`; ``threshold`` draws a dashed line.

    Examples
    --------
    >>> ax = membrane_traces(store["v"]["sn1"], [0, 1, 2], threshold=1.0)  # doctest: +SKIP
    """
    ax = _axes(ax)
    vals = analysis.traces(layer, neurons, steps, time_axis=time_axis)
    sel = analysis.step_selection(layer, steps)
    if time_axis:
        t_len = vals.shape[0] // max(1, len(sel))
        x = (sel[:, None] * t_len + np.arange(t_len)[None, :]).reshape(-1)
    else:
        x = sel
    shape = analysis.record_shape(layer)
    ids = analysis.neuron_ids(neurons, shape[1:] if time_axis else shape)
    for j, i in enumerate(ids):
        ax.plot(x, vals[:, j], label=f"neuron {int(i)}", **plot)
    if threshold is not None:
        ax.axhline(threshold, color="k", linestyle="--", linewidth=0.8, label="threshold")
    ax.set_xlabel("time step" if time_axis else "step")
    ax.set_ylabel(layer.monitor)
    ax.set_title(layer.name)
    if len(ids) <= 10:
        ax.legend(loc="best", fontsize="small")
    return ax


def gradient_norms(
    layers: Any,
    steps: Any = None,
    *,
    x: Sequence[Any] | None = None,
    log: bool = True,
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

    Examples
    --------
    >>> ax = gradient_norms(spikestore.open("grads.spikes")["grad_input"])  # doctest: +SKIP
    """
    ax = _axes(ax)
    for name, lay in _named(layers):
        sel = analysis.step_selection(lay, steps)
        s = analysis.summary(lay, sel)
        if np.all((s[:, 0] == 1) | np.isnan(s[:, 0])):
            norms = s[:, COLUMNS.index("mean")]
        else:
            vals = analysis.to_numpy(lay, sel).reshape(len(sel), -1)
            norms = np.sqrt(np.nansum(vals.astype(np.float64) ** 2, axis=1))
        xs = np.asarray(x)[: len(sel)] if x is not None else sel
        ax.plot(xs, norms, marker="o", label=name, **plot)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("step" if x is None else "")
    ax.set_ylabel("gradient norm")
    ax.legend(loc="best", fontsize="small")
    return ax
