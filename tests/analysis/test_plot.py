"""spikestore.plot: figures rendered with Agg, checked on their axes (limits, labels,
rows, lines, marks) against the records written."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import spikestore

T, B, N = 4, 2, 5
STEPS = 12
LONG = "conv_fc.10.neuron"
LONGER = "features.backbone.stage4.block2.conv_fc.10.neuron"


@pytest.fixture
def plt():  # type: ignore[no-untyped-def]
    mpl = pytest.importorskip("matplotlib")
    mpl.use("Agg")
    import matplotlib.pyplot as plt

    yield plt
    plt.close("all")


@pytest.fixture(scope="module")
def ms(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Multi-step records ``[T, B, N]`` (time axis 0) with silence at both ends, their
    membrane potentials, a single-step layer, and snnTorch-style ``(spk, mem)``."""
    path = tmp_path_factory.mktemp("plot") / "ms.spikes"
    g = torch.Generator().manual_seed(3)
    rec: dict[str, list] = {k: [] for k in ("s", "v", "single", "pair", "quiet")}
    with spikestore.StoreWriter(path) as w:
        for i in range(STEPS):
            s = (torch.rand(T, B, N, generator=g) < 0.3).float()
            if not 3 <= i <= 8:
                s.zero_()  # silence before and after
            v = torch.rand(T, B, N, generator=g)
            single = (torch.rand(3, 8, generator=g) < 0.25).float()
            quiet = (torch.rand(T, B, N, generator=g) < 0.02).float()
            quiet[0, 0, 0] = 1.0
            mem = torch.rand(2, 6, generator=g)
            spk = (mem > 0.7).float()
            w.append("output", LONG, s, time_axis=0)
            w.append("output", LONGER, quiet, time_axis=0)
            w.append("v", LONG, v, time_axis=0)
            w.append("output", "single", single)
            w.append("snn", "lif", (spk, mem))
            rec["s"].append(s)
            rec["quiet"].append(quiet)
            rec["v"].append(v)
            rec["single"].append(single)
            rec["pair"].append((spk, mem))
    return {"path": path, "rec": rec, "store": spikestore.open(path)}


def _save(ax, name: str) -> None:  # type: ignore[no-untyped-def]
    """Draw the figure (layout, text extents); keep a PNG for looking at in
    ``$SPIKESTORE_PLOT_DIR`` when that is set."""
    import io
    import os

    out = os.environ.get("SPIKESTORE_PLOT_DIR")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        ax.figure.savefig(Path(out) / f"{name}.png", dpi=80)
    else:
        ax.figure.savefig(io.BytesIO(), format="png", dpi=80)


# ------------------------------------------------------------------ raster_plot
def test_raster_of_multistep_layer_is_over_time_with_the_window_as_limits(ms: dict, plt) -> None:  # type: ignore[no-untyped-def]
    from spikestore import plot

    lay = ms["store"]["output"][LONG]
    assert lay.time_axis == 0
    ax = plot.raster_plot(lay, slice(1, 11))
    _save(ax, "raster_multistep")
    # The window, in time: step 1 .. step 11 -> [4, 44), not the spikes' extent (12..35).
    assert ax.get_xlim() == (1 * T, 11 * T)
    assert ax.get_ylim() == (-0.5, B * N - 0.5)
    assert ax.get_xlabel() == "time step"
    assert ax.get_ylabel().startswith("neuron") and "2" in ax.get_ylabel()
    pts = ax.collections[0].get_offsets()
    x = np.concatenate([r.numpy() for r in ms["rec"]["s"]])  # [STEPS*T, B, N]
    t, n = np.nonzero(x[1 * T : 11 * T].reshape(-1, B * N))
    want = sorted(zip((t + T).tolist(), n.tolist(), strict=True))
    assert sorted(map(tuple, np.asarray(pts).astype(int).tolist())) == want
    assert pts[:, 0].min() > 3 * T - 1 and pts[:, 0].max() < 9 * T  # silence shows
    assert ax.get_title() == f"{LONG}: {len(want)} spikes"
    # One separator between the two samples of the batch.
    groups = [c for c in ax.collections if c.get_gid() == "groups"]
    assert len(groups) == 1 and len(groups[0].get_segments()) == B - 1


def test_raster_of_a_silent_window_draws_its_limits(ms: dict, plt) -> None:  # type: ignore[no-untyped-def]
    from spikestore import plot

    lay = ms["store"]["output"][LONG]
    ax = plot.raster_plot(lay, slice(9, 12), [1, 3])
    _save(ax, "raster_silent")
    assert len(ax.collections[0].get_offsets()) == 0
    assert ax.get_xlim() == (9 * T, 12 * T)
    assert ax.get_ylim() == (0.5, 3.5)
    assert ax.get_title().endswith(": 0 spikes")
    ax = plot.raster_plot(lay, slice(5, 5))  # no step at all: one step's width at step 5
    assert ax.get_xlim() == (5 * T, 6 * T)


def test_raster_time_axis_false_is_per_step_over_the_whole_record(ms: dict, plt) -> None:  # type: ignore[no-untyped-def]
    from spikestore import plot

    lay = ms["store"]["output"][LONG]
    ax = plot.raster_plot(lay, slice(0, 6), time_axis=False)
    assert ax.get_xlabel() == "step"
    assert ax.get_xlim() == (0, 6)
    assert ax.get_ylim() == (-0.5, T * B * N - 0.5)
    pts = np.asarray(ax.collections[0].get_offsets()).astype(int)
    x = torch.stack(ms["rec"]["s"][:6]).numpy().reshape(6, -1)
    s, n = np.nonzero(x)
    assert sorted(map(tuple, pts.tolist())) == sorted(zip(s.tolist(), n.tolist(), strict=True))


def test_raster_of_single_step_layer_and_neuron_subset(ms: dict, plt) -> None:  # type: ignore[no-untyped-def]
    from spikestore import plot

    lay = ms["store"]["output"]["single"]
    ax = plot.raster_plot(lay, None, [(1, 2), (2, 7)])
    assert ax.get_xlabel() == "step" and ax.get_xlim() == (0, STEPS)
    assert ax.get_ylim() == (1 * 8 + 2 - 0.5, 2 * 8 + 7 + 0.5)
    assert ax.get_ylabel() == "neuron: flat index over (3 x 8)"
    x = torch.stack(ms["rec"]["single"]).numpy()
    want = sum(int(x[:, i, j].sum()) for i, j in [(1, 2), (2, 7)])
    assert len(ax.collections[0].get_offsets()) == want


def test_raster_uses_dimension_names_when_the_reader_has_them(ms: dict, plt) -> None:  # type: ignore[no-untyped-def]
    from spikestore import plot

    class Named:
        """A layer whose reader knows its record's axis names (format 1.5)."""

        def __init__(self, lay, dims):  # type: ignore[no-untyped-def]
            self._lay, self.dims = lay, dims

        def __getattr__(self, name):  # type: ignore[no-untyped-def]
            return getattr(self._lay, name)

        # The reader's names per field and per rank, as analysis.record_dims reads them.
        def field_dims(self, field):  # type: ignore[no-untyped-def]
            return self.dims

        def dims_of(self, ndim):  # type: ignore[no-untyped-def]
            return self.dims if len(self.dims) == ndim else None

        def __len__(self) -> int:
            return len(self._lay)

    lay = Named(ms["store"]["output"][LONG], ("time", "batch", "neuron"))
    ax = plot.raster_plot(lay, slice(0, 4))
    assert ax.get_ylabel() == f"neuron: flat index over (batch {B}, neuron {N})"
    assert ax.get_xlabel() == "time step"
    v = Named(ms["store"]["v"][LONG], ("time", "batch", "neuron"))
    ax = plot.membrane_traces(v, [(1, 3)], slice(0, 2))
    assert ax.get_legend().get_texts()[0].get_text() == "batch 1, neuron 3"


# ----------------------------------------------------------------- rate_heatmap
def test_rate_heatmap_names_fit_in_the_figure_and_rows_keep_their_order(ms: dict, plt) -> None:  # type: ignore[no-untyped-def]
    from spikestore import plot

    out = ms["store"]["output"]
    order = [LONGER, "single", LONG]
    ax = plot.rate_heatmap([out[k] for k in order], time_axis=False)
    _save(ax, "heatmap_names")
    fig = ax.figure
    fig.canvas.draw()
    labels = ax.get_yticklabels()
    assert [lab.get_text() for lab in labels] == order  # full names, in the order given
    box = fig.bbox
    for lab in labels:
        ext = lab.get_window_extent()
        assert ext.x0 >= box.x0 and ext.x1 <= box.x1, lab.get_text()
        assert ext.y0 >= box.y0 and ext.y1 <= box.y1, lab.get_text()
    assert ax.get_title() == "output: firing rate per step"
    assert ax.get_xlim() == (0, STEPS) and ax.get_xlabel() == "step"
    assert ax.images[0].get_array().shape == (3, STEPS)


def test_rate_heatmap_scales_each_layer_to_its_max_by_default(ms: dict, plt) -> None:  # type: ignore[no-untyped-def]
    from spikestore import plot

    out = ms["store"]["output"]
    layers = {LONG: out[LONG], LONGER: out[LONGER]}
    ax = plot.rate_heatmap(layers, time_axis=False)
    grid = np.asarray(ax.images[0].get_array())
    rates = [
        torch.stack(ms["rec"][k]).numpy().reshape(STEPS, -1).mean(axis=1) for k in ("s", "quiet")
    ]
    for row, r in zip(grid, rates, strict=True):
        np.testing.assert_allclose(row, r / r.max())
    cbar = ax.figure.axes[-1]
    assert cbar.get_ylabel() == "rate / layer max"
    assert ax.images[0].get_clim() == (0.0, 1.0)

    ax = plot.rate_heatmap(layers, time_axis=False, norm="shared")
    np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), np.stack(rates))
    assert ax.figure.axes[-1].get_ylabel() == "firing rate"
    with pytest.raises(ValueError, match="norm"):
        plot.rate_heatmap(layers, norm="row")


def test_rate_heatmap_of_multistep_layers_is_over_time_by_default(ms: dict, plt) -> None:  # type: ignore[no-untyped-def]
    from spikestore import plot

    out = ms["store"]["output"]
    ax = plot.rate_heatmap({LONG: out[LONG], LONGER: out[LONGER]}, slice(2, 10))
    _save(ax, "heatmap_time")
    assert ax.images[0].get_array().shape == (2, 8 * T)
    assert ax.get_xlim() == (2 * T, 10 * T)
    assert ax.get_xlabel() == "time step"
    assert ax.get_title() == "output: firing rate per time step"
    x = torch.stack(ms["rec"]["s"][2:10]).numpy().reshape(8 * T, -1).mean(axis=1)
    np.testing.assert_allclose(np.asarray(ax.images[0].get_array())[0], x / x.max())


# ------------------------------------------------------------------ at scale
LONG_RUN = 5000


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A long run of a small layer (for rate_heatmap), a busy multi-step layer (more
    spikes than a small figure's pixels) and a wide one (more neurons than pixel rows,
    few spikes)."""
    path = tmp_path_factory.mktemp("plot") / "big.spikes"
    g = torch.Generator().manual_seed(7)
    rec: dict[str, list] = {"long": [], "busy": [], "wide": []}
    with spikestore.StoreWriter(path) as w:
        for i in range(LONG_RUN):
            # Bursts every 40 steps: what a heatmap that picks every k-th step aliases.
            p = 0.6 if i % 40 < 4 else 0.05
            s = (torch.rand(16, generator=g) < p).float()
            w.append("output", "long", s)
            rec["long"].append(s)
        for _ in range(300):
            s = (torch.rand(T, B, 50, generator=g) < 0.6).float()
            w.append("output", "busy", s, time_axis=0)
            rec["busy"].append(s)
        for _ in range(60):
            s = (torch.rand(3000, generator=g) < 0.01).float()
            w.append("output", "wide", s)
            rec["wide"].append(s)
    return {"path": path, "rec": rec, "store": spikestore.open(path)}


def test_rate_heatmap_of_a_long_run_bins_to_the_axes_width(big: dict, plt) -> None:  # type: ignore[no-untyped-def]
    import re

    from spikestore import plot

    lay = big["store"]["output"]["long"]
    _, ax = plt.subplots(figsize=(4, 2), dpi=100)
    ax = plot.rate_heatmap([lay], norm="shared", ax=ax)
    _save(ax, "heatmap_long")
    grid = np.asarray(ax.images[0].get_array())
    pixels = ax.get_window_extent().width
    assert grid.shape[0] == 1 and 1 < grid.shape[1] <= pixels
    m = re.fullmatch(r"output: mean firing rate over bins of (\d+) steps", ax.get_title())
    assert m, ax.get_title()
    k = int(m.group(1))
    assert grid.shape[1] == -(-LONG_RUN // k)
    # Each column is the mean rate over its bin of k steps (the last one shorter).
    rate = torch.stack(big["rec"]["long"]).numpy().astype(np.float64).mean(axis=1)
    want = [rate[i : i + k].mean() for i in range(0, LONG_RUN, k)]
    np.testing.assert_allclose(grid[0], want, rtol=1e-12)
    assert ax.get_xlim() == (0, LONG_RUN)
    # An explicit bins= still gives that many columns, and says so.
    ax = plot.rate_heatmap([lay], bins=200)
    assert ax.images[0].get_array().shape == (1, 200)
    assert ax.get_title() == "output: mean firing rate over 200 bins of 25 steps"
    # bins=0: every step.
    ax = plot.rate_heatmap([lay], slice(0, 2000), bins=0)
    assert ax.images[0].get_array().shape == (1, 2000)
    assert ax.get_title() == "output: firing rate per step"
    with pytest.raises(ValueError, match="bins"):
        plot.rate_heatmap([lay], bins="some")


def _density(ax):  # type: ignore[no-untyped-def]
    """The density image of a raster, and its colour bar's label."""
    (im,) = ax.images
    return np.asarray(im.get_array()), ax.figure.axes[-1].get_ylabel()


def test_raster_with_more_spikes_than_pixels_draws_a_density_image(big: dict, plt) -> None:  # type: ignore[no-untyped-def]
    import re

    from matplotlib.image import AxesImage

    from spikestore import plot

    lay = big["store"]["output"]["busy"]
    _, ax = plt.subplots(figsize=(3, 2), dpi=100)
    ax = plot.raster_plot(lay, ax=ax)
    _save(ax, "raster_density_busy")
    assert isinstance(ax.images[0], AxesImage)
    assert [c.get_gid() for c in ax.collections] == ["groups"]  # no marks
    img, label = _density(ax)
    x = torch.stack(big["rec"]["busy"]).numpy().reshape(300 * T, B * 50)  # [time, neuron]
    spikes = int(x.sum())
    assert spikes > 3 * 2 * 100**2  # more spikes than the figure has pixels
    assert img.sum() == spikes and ax.get_title() == f"busy: {spikes} spikes (density)"
    m = re.fullmatch(r"spikes per bin \((\d+) time steps? x (\d+) neurons?\)", label)
    assert m, label
    kx, ky = int(m.group(1)), int(m.group(2))
    w, h = ax.get_window_extent().width, ax.get_window_extent().height
    assert img.shape == (-(-B * 50 // ky), -(-300 * T // kx))
    assert img.shape[0] <= h and img.shape[1] <= w and kx > 1
    # Each bin holds the spikes of its k time steps x m neurons (row 0: neurons 0..m-1).
    t, n = np.nonzero(x)
    want = np.zeros(img.shape, dtype=np.int64)
    np.add.at(want, (n // ky, t // kx), 1)
    np.testing.assert_array_equal(img, want)
    assert ax.get_xlim() == (0, 300 * T) and ax.get_ylim() == (-0.5, B * 50 - 0.5)
    # A window and a neuron subset are binned the same way.
    ax = plot.raster_plot(lay, slice(100, 200), range(10, 90), density=True)
    img, _ = _density(ax)
    assert img.sum() == int(x[100 * T : 200 * T, 10:90].sum())
    assert ax.get_xlim() == (100 * T, 200 * T) and ax.get_ylim() == (9.5, 89.5)
    # A small window of the same layer is still one mark per spike.
    ax = plot.raster_plot(lay, slice(0, 3), range(20))
    assert not ax.images and len(ax.collections[0].get_offsets()) == int(x[: 3 * T, :20].sum())
    assert not ax.get_title().endswith("(density)")
    # density=False forces the marks.
    ax = plot.raster_plot(lay, slice(0, 50), density=False)
    assert not ax.images and len(ax.collections[0].get_offsets()) == int(x[: 50 * T].sum())


def test_raster_with_more_neurons_than_pixel_rows_draws_a_density_image(big: dict, plt) -> None:  # type: ignore[no-untyped-def]
    from spikestore import plot

    lay = big["store"]["output"]["wide"]
    _, ax = plt.subplots(figsize=(3, 2), dpi=100)
    ax = plot.raster_plot(lay, ax=ax, color="tab:red")
    _save(ax, "raster_density_wide")
    img, label = _density(ax)
    x = torch.stack(big["rec"]["wide"]).numpy()  # [step, neuron]
    assert img.sum() == int(x.sum()) < 3 * 2 * 100**2  # few spikes, but 3000 rows
    assert img.shape[1] == 60 and label.startswith("spikes per bin (1 step x ")
    assert img.shape[0] <= ax.get_window_extent().height
    # Marks still, on a tall enough figure for a subset.
    ax = plot.raster_plot(lay, neurons=range(100))
    assert not ax.images and len(ax.collections[0].get_offsets()) == int(x[:, :100].sum())


# -------------------------------------------------------------- membrane_traces
def test_membrane_traces_of_multistep_layer_break_between_records(ms: dict, plt) -> None:  # type: ignore[no-untyped-def]
    from spikestore import plot

    lay = ms["store"]["v"][LONG]
    ax = plot.membrane_traces(lay, [(0, 1), (1, 4)], slice(2, 6), threshold=0.9)
    _save(ax, "traces_multistep")
    traces = [ln for ln in ax.lines if ln.get_label().startswith("neuron")]
    assert [ln.get_label() for ln in traces] == ["neuron (0, 1)", "neuron (1, 4)"]
    v = torch.stack(ms["rec"]["v"][2:6]).numpy()  # [4 steps, T, B, N]
    for ln, (b, n) in zip(traces, [(0, 1), (1, 4)], strict=True):
        xd, yd = np.asarray(ln.get_xdata()), np.asarray(ln.get_ydata())
        # Each record's T values, then a NaN that breaks the line at the boundary.
        assert len(xd) == 4 * (T + 1)
        assert np.isnan(xd.reshape(4, T + 1)[:, T]).all()
        np.testing.assert_array_equal(xd.reshape(4, T + 1)[:, :T].reshape(-1), np.arange(8, 24))
        np.testing.assert_allclose(yd.reshape(4, T + 1)[:, :T], v[:, :, b, n], rtol=1e-6)
    (bounds,) = [c for c in ax.collections if c.get_gid() == "boundaries"]
    assert [seg[0][0] for seg in bounds.get_segments()] == [11.5, 15.5, 19.5]
    (thr,) = [ln for ln in ax.lines if ln.get_label() == "threshold"]
    assert thr.get_linestyle() == "--" and thr.get_ydata()[0] == 0.9
    assert ax.get_xlim() == (2 * T, 6 * T)
    assert ax.get_xlabel() == "time step" and ax.get_ylabel() == "v"


def test_membrane_traces_mark_spikes_of_a_layer_beside(ms: dict, plt) -> None:  # type: ignore[no-untyped-def]
    from spikestore import plot

    v, s = ms["store"]["v"][LONG], ms["store"]["output"][LONG]
    ax = plot.membrane_traces(v, [(0, 0), (1, 2)], slice(3, 8), spikes=s, threshold=1.0)
    _save(ax, "traces_spikes")
    marks = [c for c in ax.collections if c.get_gid() == "spikes"]
    assert len(marks) == 2
    rec = torch.stack(ms["rec"]["s"][3:8]).numpy().reshape(5 * T, B, N)
    for c, (b, n) in zip(marks, [(0, 0), (1, 2)], strict=True):
        pts = np.asarray(c.get_offsets())
        np.testing.assert_array_equal(pts[:, 0], np.nonzero(rec[:, b, n])[0] + 3 * T)
        assert (pts[:, 1] == 1.0).all()  # on the threshold
    assert sum(len(c.get_offsets()) for c in marks) > 0
    # Without a threshold the marks sit on the trace.
    ax = plot.membrane_traces(v, [(0, 0)], slice(3, 8), spikes=s)
    (c,) = [c for c in ax.collections if c.get_gid() == "spikes"]
    pts = np.asarray(c.get_offsets())
    vv = torch.stack(ms["rec"]["v"][3:8]).numpy().reshape(5 * T, B, N)[:, 0, 0]
    np.testing.assert_allclose(pts[:, 1], vv[pts[:, 0].astype(int) - 3 * T], rtol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        plot.membrane_traces(v, [0], spikes=ms["store"]["output"]["single"])


def test_membrane_traces_field_of_snntorch_pair(ms: dict, plt) -> None:  # type: ignore[no-untyped-def]
    from spikestore import plot

    lay = ms["store"]["snn"]["lif"]
    ax = plot.membrane_traces(lay, [0, 7], field=1, spikes=0, threshold=0.7)
    _save(ax, "traces_snntorch")
    mem = np.stack([m.numpy() for _, m in ms["rec"]["pair"]]).reshape(STEPS, -1)
    spk = np.stack([s.numpy() for s, _ in ms["rec"]["pair"]]).reshape(STEPS, -1)
    lines = [ln for ln in ax.lines if ln.get_label().startswith("neuron")]
    assert len(lines) == 2
    np.testing.assert_allclose(lines[1].get_ydata(), mem[:, 7], rtol=1e-6)
    np.testing.assert_array_equal(lines[1].get_xdata(), np.arange(STEPS))
    assert not [c for c in ax.collections if c.get_gid() == "boundaries"]  # single-step
    marks = [c for c in ax.collections if c.get_gid() == "spikes"]
    at = np.asarray(marks[1].get_offsets())[:, 0]
    np.testing.assert_array_equal(at, np.nonzero(spk[:, 7])[0])
    assert ax.get_xlabel() == "step" and ax.get_ylabel() == "snn (field 1)"
    assert ax.get_xlim() == (0, STEPS)
    # The spike half, as a raster.
    ax = plot.raster_plot(lay, field=0)
    assert len(ax.collections[0].get_offsets()) == int(spk.sum())
    with pytest.raises(IndexError):
        plot.membrane_traces(lay, [0], field=2)


def test_membrane_traces_time_axis_false_plots_per_step(ms: dict, plt) -> None:  # type: ignore[no-untyped-def]
    from spikestore import plot

    lay = ms["store"]["v"][LONG]
    ax = plot.membrane_traces(lay, [5], time_axis=False)
    (ln,) = [ln for ln in ax.lines if ln.get_label().startswith("neuron")]
    v = torch.stack(ms["rec"]["v"]).numpy().reshape(STEPS, -1)
    np.testing.assert_allclose(ln.get_ydata(), v[:, 5], rtol=1e-6)
    assert ax.get_xlabel() == "step" and ax.get_xlim() == (0, STEPS)
    assert not [c for c in ax.collections if c.get_gid() == "boundaries"]


# -------------------------------------------------------- all of them together
def test_every_plot_function_takes_field_and_time_axis() -> None:
    import inspect

    from spikestore import plot

    for name in plot.__all__:
        params = inspect.signature(getattr(plot, name)).parameters
        assert "field" in params, name
        if name != "gradient_norms":
            assert params["time_axis"].default is None, name


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Single-step layers: ``[T, N, C]`` spikes and potentials written without a time
    axis, odd shapes, a layer with ``None`` steps, and scalar norms."""
    path = tmp_path_factory.mktemp("plot") / "run.spikes"
    g = torch.Generator().manual_seed(1)
    steps = 60
    rec: dict[str, list] = {k: [] for k in ("sn", "v", "odd", "rank1", "gaps", "norm")}
    with spikestore.StoreWriter(path, chunk_bytes=1 << 10) as w:
        for i in range(steps):
            vals = {
                "sn": (torch.rand(4, 3, 40, generator=g) < 0.2).float(),
                "odd": torch.rand(3, 7, generator=g) < 0.5,
                "rank1": (torch.rand(13, generator=g) < 0.3).to(torch.int8),
                "gaps": None if i % 4 == 1 else torch.randn(2, 5, generator=g),
                "norm": torch.rand((), generator=g) * 10,
            }
            for name, val in vals.items():
                w.append("output", name, val)
                rec[name].append(val)
            v: float | torch.Tensor = 0.0 if i == 0 else torch.randn(4, 3, 40, generator=g)
            w.append("v", "sn", v)
            rec["v"].append(v)
    return {"path": path, "rec": rec, "steps": steps, "store": spikestore.open(path)}


def test_plots_produce_figures(run: dict, plt) -> None:  # type: ignore[no-untyped-def]
    from spikestore import plot

    s = run["store"]
    ax = plot.raster_plot(s["output"]["sn"], slice(0, 20), range(50))
    assert len(ax.collections) == 1 and ax.figure is not None
    ax = plot.raster_plot(s["output"]["sn"], slice(0, 5), [1, 2], time_axis=True, color="r")
    assert ax.get_xlabel() == "time step"
    ax = plot.rate_heatmap({k: s["output"][k] for k in ("sn", "odd", "rank1")}, bins=30)
    assert ax.images[0].get_array().shape == (3, 30)
    ax = plot.rate_heatmap([s["output"]["sn"]], over="time")
    assert ax.images[0].get_array().shape == (1, run["steps"] * 4)
    ax = plot.rate_heatmap(s["output"]["sn"], slice(10, 20))  # one layer
    assert ax.images[0].get_array().shape == (1, 10) and ax.get_yticklabels()[0].get_text() == "sn"
    ax = plot.membrane_traces(s["v"]["sn"], [0, 7], slice(0, 30), threshold=1.0)
    assert len(ax.lines) == 3
    ax = plot.membrane_traces(s["v"]["sn"], [(0, 7)], time_axis=True)
    xd = np.asarray(ax.lines[0].get_xdata())
    assert np.count_nonzero(~np.isnan(xd)) == run["steps"] * 4
    fig, axes = plt.subplots(1, 2)
    ax = plot.gradient_norms({"norm": s["output"]["norm"], "gaps": s["output"]["gaps"]}, ax=axes[0])
    assert ax.figure is fig and len(ax.lines) == 2
    want = torch.stack(run["rec"]["norm"]).numpy()
    np.testing.assert_allclose(ax.lines[0].get_ydata(), want, rtol=1e-6)
    gaps = ax.lines[1].get_ydata()
    for i, r in enumerate(run["rec"]["gaps"]):
        if r is None:
            assert gaps[i] == 0 or np.isnan(gaps[i])
        else:
            assert math.isclose(gaps[i], float(r.double().norm()), rel_tol=1e-6)


# ------------------------------------------------- format 1.5 names, units, dt, order
def test_plots_use_the_stores_dims_units_dt_field_names_and_call_order(
    tmp_path: Path,
    plt,  # type: ignore[no-untyped-def]
) -> None:
    from collections import namedtuple

    from spikestore import plot

    State = namedtuple("State", ["spk", "mem"])
    g = torch.Generator().manual_seed(5)
    order = ["z.neuron", "a.neuron", "m.neuron"]
    with spikestore.StoreWriter(tmp_path / "s", dt=0.5, time_unit="ms") as w:
        for _ in range(6):
            for name in order:
                spikes = (torch.rand(T, B, N, generator=g) < 0.3).float()
                w.append("output", name, spikes, time_axis=0, dims=("time", "batch", "neuron"))
            v = torch.rand(T, B, N, generator=g)
            w.append("v", "a.neuron", v, time_axis=0, dims=("time", "batch", "neuron"), units="mV")
            mem = torch.rand(3, generator=g)
            w.append("snn", "lif", State(spk=(mem > 0.5).float(), mem=mem))
            one = (torch.rand(T, 1, N, generator=g) < 0.3).float()  # a batch of one
            w.append("one", "sn", one, time_axis=0, dims=("time", "batch", "channel"))
    s = spikestore.open(tmp_path / "s")
    ax = plot.rate_heatmap(s["output"])
    assert [t.get_text() for t in ax.get_yticklabels()] == order  # call order, not sorted
    assert ax.get_xlabel() == "time step (dt = 0.5 ms)"
    ax = plot.raster_plot(s["output"]["a.neuron"])
    assert ax.get_ylabel() == f"neuron: flat index over (batch {B}, neuron {N})"
    assert ax.get_xlabel() == "time step (dt = 0.5 ms)"
    ax = plot.membrane_traces(s["v"]["a.neuron"], [(1, 2)], threshold=0.5)
    assert ax.get_ylabel() == "v [mV]"
    assert ax.get_legend().get_texts()[0].get_text() == "batch 1, neuron 2"
    lif = s["snn"]["lif"]
    ax = plot.membrane_traces(lif, [0, 2], field="mem", spikes="spk")
    assert ax.get_ylabel() == "snn (field mem)" and ax.get_xlabel() == "step (dt = 0.5 ms)"
    by_name = [ln.get_ydata() for ln in ax.lines if ln.get_label().startswith("neuron")]
    ax = plot.membrane_traces(lif, [0, 2], field=1)
    by_pos = [ln.get_ydata() for ln in ax.lines if ln.get_label().startswith("neuron")]
    np.testing.assert_array_equal(by_name, by_pos)
    with pytest.raises(KeyError, match="fields"):
        plot.raster_plot(lif, field="v")
    ax = plot.raster_plot(s["one"]["sn"])  # the batch of one changes no index
    assert ax.get_ylabel() == "neuron (channel)" and ax.get_ylim() == (-0.5, N - 0.5)


# ------------------------------------------------------------------ ranked stores
def test_plots_of_a_ranked_store_draw_the_rank_asked_for(tmp_path: Path, plt) -> None:  # type: ignore[no-untyped-def]
    """Regression: a ranked store's layers (a torchrun job) failed with numpy's
    "inhomogeneous shape" in raster_plot and an AttributeError in rate_heatmap."""
    import zarr
    from zarr.storage import LocalStore

    from spikestore import plot
    from spikestore.format import rank_key, ranked_root_attrs

    root = tmp_path / "ddp.spikes"
    rec: dict[int, list] = {0: [], 1: []}
    for r, p in ((0, 0.1), (1, 0.6)):
        g = torch.Generator().manual_seed(r)
        with spikestore.StoreWriter(root / rank_key(r)) as w:
            for _ in range(6):
                s = (torch.rand(T, B, N, generator=g) < p).float()
                w.append("output", "sn", s, time_axis=0)
                w.append("v", "sn", torch.rand(T, B, N, generator=g) + r, time_axis=0)
                w.append("grad", "sn", torch.tensor(float(r + 1)))
                rec[r].append(s)
    zarr.create_group(
        store=LocalStore(root), attributes=ranked_root_attrs("t", 2, [0, 1]), zarr_format=3
    )
    store = spikestore.open(root)
    sn, v = store["output"]["sn"], store["v"]["sn"]
    for r in (0, 1):
        ax = plot.raster_plot(sn, rank=r)
        assert len(ax.collections[0].get_offsets()) == int(torch.stack(rec[r]).sum())
        plt.close("all")
    with pytest.raises(ValueError, match=r"ranked store \(ranks \[0, 1\]\): pass rank="):
        plot.raster_plot(sn)
    with pytest.raises(ValueError, match="has ranks"):
        plot.raster_plot(sn, rank=5)
    with pytest.raises(ValueError, match="not a layer of a ranked store"):
        plot.raster_plot(store.rank(0)["output"]["sn"], rank=0)
    ax = plot.rate_heatmap(store["output"], rank=1, norm="shared")
    rates = ax.images[0].get_array()
    np.testing.assert_allclose(
        np.asarray(rates).ravel(), torch.stack(rec[1]).mean(dim=(2, 3)).reshape(-1).numpy()
    )
    with pytest.raises(ValueError, match="pass rank="):
        plot.rate_heatmap(store["output"])
    ax = plot.membrane_traces(v, [0], rank=1, spikes=sn)
    assert np.nanmin(ax.lines[0].get_ydata()) >= 1.0  # rank 1's potentials (+1)
    ax = plot.gradient_norms(store["grad"], rank=1, log=False)
    assert ax.lines[0].get_ydata().tolist() == [2.0] * 6
