"""Summaries written at record time, and the analysis, interop and plot helpers."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from zarr.storage import LocalStore

import spikestore
from spikestore import analysis as A
from spikestore.summary import COLUMNS, MAX_AXIS0, SUMMARY, SUMMARY_AXIS0, SUMMARY_CHUNK


# ----------------------------------------------------------------- fixtures
def _expected_summary(rec: torch.Tensor | float | None) -> tuple[np.ndarray, np.ndarray | None]:
    if rec is None:
        return np.full(len(COLUMNS), np.nan), None
    x = torch.as_tensor(rec).detach().to(torch.float64).numpy()
    flat = x.reshape(-1)
    good = flat[~np.isnan(flat)]
    if good.size:
        row = [flat.size, good.sum(), good.min(), good.max(), good.mean()]
    else:
        row = [flat.size, 0.0, np.nan, np.nan, np.nan]
    axis0 = np.nansum(x, axis=tuple(range(1, x.ndim))) if x.ndim >= 2 and len(x) else None
    return np.array(row, dtype=np.float64), axis0


class CountingStore(LocalStore):
    """A read-only local store that logs the keys it reads."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, read_only=True)
        self.keys: list[str] = []

    async def get(self, key, prototype=None, byte_range=None):  # type: ignore[no-untyped-def]
        self.keys.append(key)
        return await super().get(key, prototype, byte_range)

    async def get_partial_values(self, prototype, key_ranges):  # type: ignore[no-untyped-def]
        key_ranges = list(key_ranges)
        self.keys.extend(k for k, _ in key_ranges)
        return await super().get_partial_values(prototype, key_ranges)

    def data_reads(self, under: str) -> list[str]:
        """Chunk reads under a path prefix; ``.../s`` means the segments ``s<k>``."""
        if under.endswith("/s"):
            pat = re.compile(re.escape(under) + r"\d+/")
            return [k for k in self.keys if pat.match(k) and "zarr.json" not in k]
        return [k for k in self.keys if k.startswith(under) and "zarr.json" not in k]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A store with multi-step spikes, float potentials, odd shapes, gaps and scalars."""
    path = tmp_path_factory.mktemp("analysis") / "run.spikes"
    g = torch.Generator().manual_seed(1)
    steps = 150
    rec: dict[str, list] = {k: [] for k in ("sn", "v", "odd", "rank1", "gaps", "norm", "bf")}
    with spikestore.StoreWriter(path, flush_interval=0.05, chunk_bytes=1 << 10) as w:
        for i in range(steps):
            sn = (torch.rand(4, 3, 40, generator=g) < 0.2).float()  # [T, N, C]
            v = torch.randn(4, 3, 40, generator=g)
            v[0, 0, 0] = float("nan") if i % 5 == 0 else v[0, 0, 0]
            odd = torch.rand(3, 7, generator=g) < 0.5  # 21 bits: leftover bits
            r1 = (torch.rand(13, generator=g) < 0.3).to(torch.int8)
            gap = None if i % 4 == 1 else torch.randn(2, 5, generator=g)
            norm = torch.rand((), generator=g) * 10
            bf = torch.randn(6, 2, generator=g).to(torch.bfloat16)
            # SpikingJelly's ``v`` is the number 0.0 before the first step.
            vnum: float | torch.Tensor = 0.0 if i == 0 else v
            for name, val in (
                ("sn", sn),
                ("odd", odd),
                ("rank1", r1),
                ("gaps", gap),
                ("norm", norm),
                ("bf", bf),
            ):
                w.append("output", name, val)
                rec[name].append(val)
            w.append("v", "sn", vnum)
            rec["v"].append(vnum)
            if i == 70:
                w.flush()
        w.append("output", "pair", (torch.ones(2, 8), 3.5))
    return {"path": path, "rec": rec, "steps": steps, "store": spikestore.open(path)}


def _dense(recs: list, shape: tuple[int, ...]) -> np.ndarray:
    out = []
    for r in recs:
        if r is None:
            out.append(np.full(shape, np.nan))
        else:
            out.append(np.broadcast_to(torch.as_tensor(r).to(torch.float64).numpy(), shape))
    return np.stack(out)


# ---------------------------------------------------------------- summaries
@pytest.mark.parametrize(
    ("monitor", "layer"),
    [
        ("output", "sn"),
        ("v", "sn"),
        ("output", "odd"),
        ("output", "rank1"),
        ("output", "gaps"),
        ("output", "norm"),
        ("output", "bf"),
    ],
)
def test_summaries_match_records(run: dict, monitor: str, layer: str) -> None:
    lay = run["store"][monitor][layer]
    recs = run["rec"]["v" if monitor == "v" else layer]
    grp = lay.field(0).group
    assert grp[SUMMARY].shape == (run["steps"], len(COLUMNS))
    stored = np.asarray(grp[SUMMARY][:])
    for i, r in enumerate(recs):
        want, want0 = _expected_summary(r)
        np.testing.assert_allclose(stored[i], want, rtol=1e-6, atol=1e-9, equal_nan=True)
        if want0 is not None:
            np.testing.assert_allclose(
                grp[SUMMARY_AXIS0][i], want0, rtol=1e-6, atol=1e-9, equal_nan=True
            )
    if all(r is None or torch.as_tensor(r).dim() < 2 for r in recs):
        assert SUMMARY_AXIS0 not in grp


def test_summary_metadata(run: dict) -> None:
    grp = run["store"]["output"]["sn"].field(0).group
    arr = grp[SUMMARY]
    assert arr.dtype == np.float64
    assert arr.shards == (SUMMARY_CHUNK, len(COLUMNS))
    assert arr.chunks[0] * 8 * len(COLUMNS) <= 1 << 19
    assert arr.metadata.dimension_names == ("step", "stat")
    assert dict(arr.attrs)["spikestore"] == {"node": "summary", "columns": list(COLUMNS)}
    ax0 = grp[SUMMARY_AXIS0]
    assert ax0.shape == (run["steps"], 4)
    assert ax0.metadata.dimension_names == ("step", "axis0")
    assert dict(ax0.attrs)["spikestore"]["axis0_length"] == 4
    # Only spikes were stored for this layer, and their counts are integers.
    assert np.all(np.asarray(arr[:, 1]) == np.round(arr[:, 1]))


def test_summary_of_tuple_fields(run: dict) -> None:
    lay = run["store"]["output"]["pair"]
    np.testing.assert_array_equal(A.summary(lay, field=0)[0], [16, 16, 1, 1, 1])
    np.testing.assert_array_equal(A.summary(lay, field=1)[0], [1, 3.5, 3.5, 3.5, 3.5])


def test_axis0_mismatch_and_wide_first_axis(tmp_path: Path) -> None:
    with spikestore.StoreWriter(tmp_path / "s") as w:
        w.append("o", "x", torch.ones(3, 2))
        w.append("o", "x", torch.ones(5, 2))  # other first-axis length: NaN per-index sums
        w.append("o", "wide", torch.ones(MAX_AXIS0 + 1, 1))
    s = spikestore.open(tmp_path / "s")
    ax0 = A.summary(s["o"]["x"], axis0=True)
    np.testing.assert_array_equal(ax0[0], [2, 2, 2])
    assert np.isnan(ax0[1]).all()
    np.testing.assert_array_equal(A.summary(s["o"]["x"])[:, 1], [6, 10])
    assert SUMMARY_AXIS0 not in s["o"]["wide"].field(0).group


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_summary_special_values(tmp_path: Path) -> None:
    recs = [
        torch.tensor([[1.0, float("inf")], [float("-inf"), 2.0]]),
        torch.full((2, 2), float("nan")),
        torch.zeros(0, 3),
        torch.tensor([[5, -7], [2**40, 0]]),
        torch.tensor([[True, False], [True, True]]),
    ]
    with spikestore.StoreWriter(tmp_path / "s") as w:
        for i, r in enumerate(recs):
            w.append("o", str(i), r)
    s = spikestore.open(tmp_path / "s")
    for i, r in enumerate(recs):
        with np.errstate(all="ignore"):
            want, want0 = _expected_summary(r)
        np.testing.assert_array_equal(A.summary(s["o"][str(i)])[0], want)
        if want0 is None:
            with pytest.raises(ValueError, match="rank >= 2"):
                A.summary(s["o"][str(i)], axis0=True)
        else:
            np.testing.assert_array_equal(A.summary(s["o"][str(i)], axis0=True)[0], want0)


def test_summary_continues_in_append_mode(tmp_path: Path) -> None:
    p = tmp_path / "s"
    with spikestore.StoreWriter(p) as w:
        for i in range(5):
            w.append("o", "x", torch.full((2, 3), float(i)))
    with spikestore.StoreWriter(p, mode="a") as w:
        for i in range(5, 9):
            w.append("o", "x", torch.full((2, 3), float(i)))
    s = A.summary(spikestore.open(p)["o"]["x"])
    np.testing.assert_array_equal(s[:, 4], np.arange(9))
    np.testing.assert_array_equal(
        A.summary(spikestore.open(p)["o"]["x"], axis0=True)[:, 1], np.arange(9) * 3
    )


def test_store_without_summaries_is_decoded(tmp_path: Path) -> None:
    p = tmp_path / "s"
    g = torch.Generator().manual_seed(3)
    recs = [(torch.rand(2, 16, generator=g) < 0.4).float() for _ in range(20)]
    with spikestore.StoreWriter(p) as w:
        for r in recs:
            w.append("o", "x", r)
    want = A.summary(spikestore.open(p)["o"]["x"])
    want0 = A.firing_rate(spikestore.open(p)["o"]["x"], over="time")
    grp = zarr.open_group(p / "o" / "x" / "f0", mode="a")
    del grp[SUMMARY]
    del grp[SUMMARY_AXIS0]
    lay = spikestore.open(p)["o"]["x"]
    np.testing.assert_array_equal(A.summary(lay), want)
    np.testing.assert_array_equal(A.firing_rate(lay, over="time"), want0)
    # Appending to a field without summaries does not start a misleading one.
    with spikestore.StoreWriter(p, mode="a") as w:
        w.append("o", "x", recs[0])
    assert SUMMARY not in zarr.open_group(p / "o" / "x" / "f0", mode="r")
    assert A.summary(spikestore.open(p)["o"]["x"]).shape == (21, 5)


# ---------------------------------------------------- public helpers and names
def test_public_helpers(run: dict) -> None:
    lay = run["store"]["output"]["sn"]
    np.testing.assert_array_equal(A.step_selection(lay), np.arange(run["steps"]))
    np.testing.assert_array_equal(A.step_selection(lay, -1), [run["steps"] - 1])
    np.testing.assert_array_equal(A.step_selection(lay, (3, -1)), [3, run["steps"] - 1])
    np.testing.assert_array_equal(A.step_selection(lay, range(2, 8, 3)), [2, 5])
    assert A.record_shape(lay) == (4, 3, 40)
    assert A.record_shape(run["store"]["v"]["sn"]) == (4, 3, 40)  # the 0.0 step broadcasts
    assert A.record_shape(run["store"]["output"]["pair"], field=1) == ()
    assert A.neuron_ids([(0, 1), 5], (2, 3)).tolist() == [1, 5]
    assert A.neuron_ids(None, (2, 3)).tolist() == list(range(6))
    with pytest.raises(IndexError, match="out of range"):
        A.neuron_ids([6], (2, 3))
    with pytest.raises(IndexError, match="no field 2"):
        A.record_shape(run["store"]["output"]["pair"], field=2)


@pytest.mark.parametrize("steps", [True, np.array([0.0, 1.0]), [False, True], "3"])
def test_steps_of_the_wrong_type_are_refused(run: dict, steps: object) -> None:
    # Booleans and floats used to be cast to step numbers (True was step 1).
    lay = run["store"]["output"]["sn"]
    for read in (A.summary, A.firing_rate, A.raster, A.to_numpy):
        with pytest.raises(TypeError, match="step indices must be"):
            read(lay, steps)


def test_steps_out_of_range_name_the_layer(run: dict) -> None:
    with pytest.raises(IndexError, match=r"monitor 'output', layer 'sn': 150 steps"):
        A.raster(run["store"]["output"]["sn"], [0, 150])


def _foreign_private_attributes(source: str) -> list[str]:
    """``x._name`` where ``_name`` is not defined in the module itself."""
    tree = ast.parse(source)
    own = {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
    }
    own |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    own |= {
        t.attr
        for node in ast.walk(tree)
        if isinstance(node, (ast.Assign, ast.AnnAssign))
        for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(t, ast.Attribute)
    }
    return [
        f"line {node.lineno}: .{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and node.attr not in own
    ]


def _imports_past_public_names(module: str, source: str) -> list[str]:
    """Names that ``module`` (dotted) imports from ``reader`` or ``analysis`` that are
    not public: a name of ``reader`` must be in its ``__all__``; a name of the analysis
    package or one of its modules must be in that module's ``__all__`` (modules of
    the analysis package share their private helpers among themselves)."""
    import importlib

    is_package = hasattr(importlib.import_module(module), "__path__")
    package = module if is_package else module.rsplit(".", 1)[0]
    inside_analysis = module.startswith("spikestore.analysis")
    bad = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ImportFrom):
            continue
        base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
        for alias in node.names:
            target, name = base, alias.name
            if f"{base}.{name}" in ("spikestore.reader", "spikestore.analysis"):
                continue  # ``from . import analysis``: the module itself
            if not target.startswith(("spikestore.reader", "spikestore.analysis")):
                continue
            if inside_analysis and target.startswith("spikestore.analysis"):
                continue
            if target.startswith("spikestore.reader") and target != "spikestore.reader":
                bad.append(f"line {node.lineno}: from {target} (a module inside reader)")
                continue
            public = getattr(importlib.import_module(target), "__all__", [])
            if name not in public:
                bad.append(f"line {node.lineno}: {name} from {target}")
    return bad


_READ_THROUGH_PUBLIC_NAMES = sorted(
    ["spikestore.plot", "spikestore.export", "spikestore._nwb"]
    + [
        "spikestore.analysis" + ("" if p.stem == "__init__" else f".{p.stem}")
        for p in (Path(__file__).parents[2] / "spikestore" / "analysis").glob("*.py")
    ]
)


@pytest.mark.parametrize("module", _READ_THROUGH_PUBLIC_NAMES)
def test_analysis_and_plot_use_only_public_names(module: str) -> None:
    import importlib

    source = Path(importlib.import_module(module).__file__ or "").read_text()
    assert _foreign_private_attributes(source) == []
    assert _imports_past_public_names(module, source) == []


def test_the_public_names_check_covers_the_analysis_package() -> None:
    assert "spikestore.analysis" in _READ_THROUGH_PUBLIC_NAMES
    assert len(_READ_THROUGH_PUBLIC_NAMES) >= 6
    inside = "from ..reader import _private, FieldReader\nfrom ._select import _field\n"
    assert len(_imports_past_public_names("spikestore.analysis._select", inside)) == 1
    outside = "from .reader import FieldReader\nfrom .analysis._select import _field\n"
    assert len(_imports_past_public_names("spikestore.plot", outside)) == 1


def test_float16_stays_float16_and_bfloat16_widens(tmp_path: Path) -> None:
    recs = [torch.randn(2, 3, dtype=torch.float32) for _ in range(3)]
    with spikestore.StoreWriter(tmp_path / "s") as w:
        for r in recs:
            w.append("o", "h", r.half())
            w.append("o", "b", r.bfloat16())
    s = spikestore.open(tmp_path / "s")
    h = A.to_numpy(s["o"]["h"])
    assert h.dtype == np.float16
    np.testing.assert_array_equal(h, torch.stack(recs).half().numpy())
    b = A.to_numpy(s["o"]["b"])
    assert b.dtype == np.float32
    np.testing.assert_array_equal(b, torch.stack(recs).bfloat16().float().numpy())
    assert A.LayerArray(s["o"]["h"]).dtype == np.float16


# ------------------------------------------------------------------- rates
def test_firing_rate_over_steps_and_time(run: dict) -> None:
    lay = run["store"]["output"]["sn"]
    x = torch.stack(run["rec"]["sn"]).numpy()
    np.testing.assert_allclose(A.firing_rate(lay), x.mean(axis=(1, 2, 3)))
    np.testing.assert_allclose(A.firing_rate(lay, over="time"), x.mean(axis=(2, 3)))
    np.testing.assert_allclose(A.firing_rate(lay, slice(10, 20)), x[10:20].mean(axis=(1, 2, 3)))
    np.testing.assert_allclose(A.firing_rate(lay, [3, 1, -1]), x[[3, 1, -1]].mean(axis=(1, 2, 3)))
    gaps = A.firing_rate(run["store"]["output"]["gaps"])
    assert np.isnan(gaps[1::4]).all() and not np.isnan(gaps[::4]).any()
    with pytest.raises(ValueError, match="over"):
        A.firing_rate(lay, over="neuron")


def test_firing_rate_reads_no_records(run: dict) -> None:
    cs = CountingStore(run["path"])
    lay = spikestore.StoreReader(store=cs)["output"]["sn"]
    A.firing_rate(lay)
    A.firing_rate(lay, over="time")
    assert cs.data_reads("output/sn/f0/s") == []
    assert cs.data_reads("output/sn/f0/summary")


# --------------------------------------------------- counts, rasters, traces
def test_spike_counts(run: dict) -> None:
    lay = run["store"]["output"]["sn"]
    x = torch.stack(run["rec"]["sn"]).numpy()
    got = A.spike_counts(lay, slice(30, 90))
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, x[30:90].sum(0))
    np.testing.assert_array_equal(A.spike_counts(lay, axis=(0, 1)), x.sum(axis=(0, 1, 2)))
    odd = torch.stack(run["rec"]["odd"]).numpy()
    np.testing.assert_array_equal(A.spike_counts(run["store"]["output"]["odd"]), odd.sum(0))


def test_raster_matches_numpy(run: dict) -> None:
    lay = run["store"]["output"]["sn"]
    x = torch.stack(run["rec"]["sn"]).numpy().reshape(run["steps"], -1)
    neurons = [5, 0, 477, 100]
    t, n = A.raster(lay, slice(20, 60), neurons)
    s, j = np.nonzero(x[20:60][:, neurons])
    np.testing.assert_array_equal(t, s + 20)
    np.testing.assert_array_equal(n, np.array(neurons)[j])
    t, n = A.raster(lay)
    s, j = np.nonzero(x)
    np.testing.assert_array_equal(t, s)
    np.testing.assert_array_equal(n, j)


def test_raster_over_time_inside_records(run: dict) -> None:
    lay = run["store"]["output"]["sn"]
    x = torch.stack(run["rec"]["sn"]).numpy().reshape(run["steps"] * 4, 120)
    t, n = A.raster(lay, slice(10, 30), [(0, 3), (2, 39)], time_axis=True)
    cols = [3, 2 * 40 + 39]
    s, j = np.nonzero(x[40:120][:, cols])
    np.testing.assert_array_equal(t, s + 40)
    np.testing.assert_array_equal(n, np.array(cols)[j])


def test_traces_match_numpy(run: dict) -> None:
    lay = run["store"]["v"]["sn"]
    v = _dense(run["rec"]["v"], (4, 3, 40)).reshape(run["steps"], -1)
    tr = A.traces(lay, [0, (1, 2, 3), 479])
    np.testing.assert_array_equal(tr, v[:, [0, 1 * 120 + 2 * 40 + 3, 479]])
    assert (tr[0] == 0).all()  # the Python number 0.0 broadcast to every neuron
    tt = A.traces(lay, [(0, 0), (2, 7)], slice(5, 9), time_axis=True)
    vt = _dense(run["rec"]["v"], (4, 3, 40))[5:9].reshape(16, 120)
    np.testing.assert_array_equal(tt, vt[:, [0, 87]])
    gaps = A.traces(run["store"]["output"]["gaps"], [0, 9])
    np.testing.assert_array_equal(
        gaps, _dense(run["rec"]["gaps"], (2, 5)).reshape(-1, 10)[:, [0, 9]]
    )
    bf = A.traces(run["store"]["output"]["bf"], [3])
    np.testing.assert_array_equal(
        bf[:, 0], torch.stack(run["rec"]["bf"]).float().reshape(-1, 12)[:, 3]
    )
    with pytest.raises(IndexError):
        A.traces(lay, [480])


def test_neuron_reads_read_only_their_chunks(tmp_path: Path) -> None:
    p = tmp_path / "s"
    g = torch.Generator().manual_seed(0)
    with spikestore.StoreWriter(p, chunk_bytes=64) as w:
        for _ in range(64):
            w.append("o", "x", (torch.rand(512, generator=g) < 0.3).float())
            w.append("v", "x", torch.randn(64, generator=g))
    counts = {}
    for what in ("one", "all"):
        cs = CountingStore(p)
        s = spikestore.StoreReader(store=cs)
        if what == "one":
            A.raster(s["o"]["x"], neurons=[7])
            A.traces(s["v"]["x"], [3])
        else:
            A.raster(s["o"]["x"])
            A.traces(s["v"]["x"], list(range(64)))
        counts[what] = (len(cs.data_reads("o/x/f0/s0")), len(cs.data_reads("v/x/f0/s0")))
    assert counts["one"][0] < counts["all"][0] / 4
    assert counts["one"][1] < counts["all"][1] / 4


# ------------------------------------------------------------------ interop
def test_to_numpy(run: dict) -> None:
    v = _dense(run["rec"]["v"], (4, 3, 40))
    got = A.to_numpy(run["store"]["v"]["sn"], slice(0, 50))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, v[:50])
    gaps = A.to_numpy(run["store"]["output"]["gaps"])
    np.testing.assert_array_equal(gaps, _dense(run["rec"]["gaps"], (2, 5)))
    bf = A.to_numpy(run["store"]["output"]["bf"])
    assert bf.dtype == np.float32
    np.testing.assert_array_equal(bf, torch.stack(run["rec"]["bf"]).float().numpy())
    odd = A.to_numpy(run["store"]["output"]["odd"])
    assert odd.dtype == np.bool_
    np.testing.assert_array_equal(odd, torch.stack(run["rec"]["odd"]).numpy())


def test_layer_array_indexing(run: dict) -> None:
    arr = A.LayerArray(run["store"]["output"]["rank1"])
    x = torch.stack(run["rec"]["rank1"]).numpy()
    assert arr.shape == (run["steps"], 13) and arr.dtype == np.int8
    np.testing.assert_array_equal(arr[3], x[3])
    np.testing.assert_array_equal(arr[-5:, 2:9:3], x[-5:, 2:9:3])
    np.testing.assert_array_equal(arr[..., 4], x[..., 4])
    np.testing.assert_array_equal(np.asarray(arr), x)


def test_to_dask(run: dict) -> None:
    da = pytest.importorskip("dask.array")
    lay = run["store"]["v"]["sn"]
    x = A.to_dask(lay)
    assert isinstance(x, da.Array)
    assert x.shape == (run["steps"], 4, 3, 40) and x.dtype == np.float32
    seg = lay.field(0).array(1)  # the tensor segment (s0 holds the step-0 number)
    assert x.chunks[0][0] == seg.chunks[0]
    assert x.chunks[1:] == tuple(
        tuple(min(c, n - i) for i in range(0, n, c))
        for c, n in zip(seg.chunks[1:], (4, 3, 40), strict=True)
    )
    v = _dense(run["rec"]["v"], (4, 3, 40))
    np.testing.assert_array_equal(x[10:40, 2].compute(), v[10:40, 2])
    np.testing.assert_allclose(
        da.nanmean(x, axis=(1, 2, 3)).compute(), np.nanmean(v, axis=(1, 2, 3)), rtol=1e-5, atol=1e-6
    )
    spikes = A.to_dask(run["store"]["output"]["sn"])
    assert spikes.chunks[1:] == ((4,), (3,), (40,))
    np.testing.assert_array_equal(
        spikes.sum(axis=(2, 3)).compute(), torch.stack(run["rec"]["sn"]).numpy().sum(axis=(2, 3))
    )
    custom = A.to_dask(run["store"]["output"]["sn"], chunks=(16, 2, 3, 40))
    assert custom.chunks[0][0] == 16 and custom.chunks[1] == (2, 2)


def test_to_dask_is_lazy(run: dict) -> None:
    pytest.importorskip("dask.array")
    cs = CountingStore(run["path"])
    lay = spikestore.StoreReader(store=cs)["output"]["sn"]
    x = A.to_dask(lay)
    assert cs.data_reads("output/sn/f0/s") == []
    x[:5].sum().compute()
    assert cs.data_reads("output/sn/f0/s")


def test_to_xarray(run: dict) -> None:
    pytest.importorskip("xarray")
    pytest.importorskip("dask.array")
    lay = run["store"]["output"]["sn"]
    xa = A.to_xarray(lay, dims=("time", "batch", "neuron"))
    assert xa.dims == ("step", "time", "batch", "neuron")
    assert xa.shape == (run["steps"], 4, 3, 40)
    np.testing.assert_array_equal(xa.coords["step"].values, np.arange(run["steps"]))
    assert xa.attrs["layer"] == "sn" and xa.attrs["encodings"] == "bitpack"
    x = torch.stack(run["rec"]["sn"]).numpy()
    got = xa.sel(batch=1, neuron=slice(5, 9)).sum("time").values
    np.testing.assert_array_equal(got, x[:, :, 1, 5:10].sum(1))
    default = A.to_xarray(run["store"]["v"]["sn"])
    assert default.dims == ("step", "dim_0", "dim_1", "dim_2")
    assert default.chunks is not None
    coords = A.to_xarray(lay, ("step", "t", "b", "n"), coords={"n": np.arange(40) * 10})
    assert coords.sel(n=50).shape == (run["steps"], 4, 3)
    with pytest.raises(ValueError, match="dims"):
        A.to_xarray(lay, dims=("a", "b"))


def test_to_xarray_without_dask(run: dict) -> None:
    pytest.importorskip("xarray")
    cs = CountingStore(run["path"])
    lay = spikestore.StoreReader(store=cs)["v"]["sn"]
    xa = A.to_xarray(lay, chunks=None)
    assert xa.chunks is None
    assert cs.data_reads("v/sn/f0/s") == []
    v = _dense(run["rec"]["v"], (4, 3, 40))
    np.testing.assert_array_equal(xa.isel(step=[3, 7], dim_2=[0, 5]).values, v[[3, 7]][..., [0, 5]])


def test_raw_segments_open_with_plain_xarray_and_dask(run: dict) -> None:
    xr = pytest.importorskip("xarray")
    da = pytest.importorskip("dask.array")
    # One raw segment, no None steps: rows are steps.
    ds = xr.open_zarr(run["path"], group="output/bf/f0", consolidated=False)
    assert ds["s0"].dims == ("step", "dim_0", "dim_1")
    assert ds["summary"].dims == ("step", "stat")
    x = da.from_zarr(str(run["path"]), component="output/bf/f0/s0")
    got = torch.from_numpy(np.asarray(x[7])).view(torch.bfloat16)
    assert torch.equal(got, run["rec"]["bf"][7])


# -------------------------------------------------------------------- ranked stores
def _ranked_store(root: Path, steps: dict[int, int]) -> None:
    """A ranked store as the ranks of a job write it: one store per rank in
    ``root/rank<r>``, and the ranked root metadata."""
    from spikestore.format import rank_key, ranked_root_attrs

    for r, n in steps.items():
        g = torch.Generator().manual_seed(100 + r)
        with spikestore.StoreWriter(root / rank_key(r)) as w:
            w.mark(shard=f"part{r}")  # differs between the ranks
            for i in range(n):
                if i % 10 == 0:
                    w.mark(epoch=i // 10)  # the same on every rank
                w.append("output", "sn", (torch.rand(4, 3, 10, generator=g) < 0.3).float())
                w.append("output", "ms", (torch.rand(3, 2, 4, generator=g) < 0.4).float(),
                         time_axis=0)
                w.append("v", "sn", torch.randn(2, 5, generator=g))
    zarr.create_group(
        store=LocalStore(root),
        attributes=ranked_root_attrs("spikestore tests", max(steps) + 1, sorted(steps)),
        zarr_format=3,
    )


@pytest.fixture(scope="module")
def ranked(tmp_path_factory: pytest.TempPathFactory) -> spikestore.reader.RankedStoreReader:
    root = tmp_path_factory.mktemp("ranked") / "ddp.spikes"
    _ranked_store(root, {0: 30, 1: 25})
    return spikestore.open(root)


def test_ranked_layers_have_a_leading_rank_axis(ranked) -> None:  # type: ignore[no-untyped-def]
    sn = ranked["output"]["sn"]
    assert sn.ranks == [0, 1] and sn.lengths == {0: 30, 1: 25} and len(sn) == 25
    per_rank = [A.to_numpy(sn.layer(r))[:25] for r in sn.ranks]
    x = A.to_numpy(sn)
    assert x.shape == (2, 25, 4, 3, 10) and np.array_equal(x, np.stack(per_rank))
    assert np.array_equal(x[:, 7], sn[7].numpy())  # the reader stacks ranks the same way
    assert A.to_numpy(sn, rank=0).shape == (30, 4, 3, 10)
    assert A.record_shape(sn) == (4, 3, 10) and A.step_selection(sn).tolist() == list(range(25))
    # Summaries, rates and counts: one row per rank, over the steps every rank has.
    assert A.summary(sn).shape == (2, 25, len(COLUMNS))
    rate = A.firing_rate(sn)
    assert rate.shape == (2, 25)
    np.testing.assert_array_equal(rate, x.reshape(2, 25, -1).sum(axis=2, dtype=float) / 120)
    np.testing.assert_array_equal(A.firing_rate(sn, rank=0), A.firing_rate(sn.layer(0)))
    assert A.firing_rate(sn, slice(-5, None)).shape == (2, 5)
    ms = ranked["output"]["ms"]
    assert A.firing_rate(ms, over="time").shape == (2, 25, 3)
    counts = A.spike_counts(sn, axis=0)
    assert counts.dtype == np.int64 and np.array_equal(counts, x.sum(axis=(1, 2)))
    np.testing.assert_allclose(A.mean_rate(sn), x.reshape(2, -1).mean(axis=1, dtype=float))
    assert A.mean_rate(sn, rank=0) == pytest.approx(A.to_numpy(sn.layer(0)).mean())
    # Events are ragged: one (times, neurons) pair per rank.
    events = A.raster(sn, slice(0, 10), neurons=range(20))
    assert len(events) == 2
    for r, (t, n) in zip(sn.ranks, events, strict=True):
        want = A.raster(sn.layer(r), slice(0, 10), neurons=range(20))
        assert np.array_equal(t, want[0]) and np.array_equal(n, want[1])
    v = ranked["v"]["sn"]
    tr = A.traces(v, neurons=[0, 7])
    assert tr.shape == (2, 25, 2)
    np.testing.assert_array_equal(tr[1], A.to_numpy(v, rank=1).reshape(25, -1)[:, [0, 7]])
    with pytest.raises(ValueError, match="not a layer of a ranked store"):
        A.firing_rate(sn.layer(0), rank=0)
    with pytest.raises(KeyError):
        A.firing_rate(sn, rank=5)


def test_one_rule_for_ranks_written_once(ranked) -> None:  # type: ignore[no-untyped-def]
    import inspect

    from spikestore.analysis._ranks import listed, per_rank
    from spikestore.analysis._select import one_rank

    seen: list[tuple[object, object]] = []

    @per_rank(listed)
    def read(layer, steps=None, *, field=0, rank=None):  # type: ignore[no-untyped-def]
        assert rank is None  # the decorator takes rank
        seen.append((layer, steps))
        return field

    sn = ranked["output"]["sn"]
    assert read(sn, field=3) == [3, 3]
    assert [lay for lay, _ in seen] == [sn.layer(0), sn.layer(1)]
    assert [st.tolist() for _, st in seen] == [list(range(25))] * 2  # steps every rank has
    seen.clear()
    assert read(sn, slice(-2, None), rank=1) == 0
    assert seen == [(sn.layer(1), slice(-2, None))]  # rank 1's own steps
    plain = sn.layer(0)
    seen.clear()
    assert read(plain, [4]) == 0 and seen == [(plain, [4])]
    with pytest.raises(ValueError, match="not a layer of a ranked store"):
        read(plain, rank=0)
    with pytest.raises(TypeError, match="keyword-only rank"):
        per_rank()(lambda layer, steps=None, rank=None: None)
    # The public functions keep their own signatures, rank included.
    for f in (A.summary, A.firing_rate, A.spike_counts, A.raster, A.traces, A.to_numpy):
        assert inspect.signature(f).parameters["rank"].kind is inspect.Parameter.KEYWORD_ONLY
    # What reads one rank (a plot) must be told which.
    assert one_rank(plain, None) is plain and one_rank(sn, 1) is sn.layer(1)
    with pytest.raises(ValueError, match=r"ranks \[0, 1\]\): pass rank="):
        one_rank(sn, None)
    with pytest.raises(ValueError, match="has ranks"):
        one_rank(sn, 5)


def test_spike_trains_in_small_blocks(run: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from spikestore.analysis import _events

    lay = run["store"]["output"]["sn"]
    want = A.spike_trains(lay, slice(3, 40), neurons=range(30))
    monkeypatch.setattr(_events, "_TRAIN_BLOCK", 7)  # a step or so per block
    got = A.spike_trains(lay, slice(3, 40), neurons=range(30))
    assert len(got) == len(want) == 30
    assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))


def test_ranked_dask_and_xarray(ranked) -> None:  # type: ignore[no-untyped-def]
    import pickle

    pytest.importorskip("dask.array")
    xr = pytest.importorskip("xarray")
    sn, v = ranked["output"]["sn"], ranked["v"]["sn"]
    x = A.to_dask(v)
    assert x.shape == (2, 25, 2, 5) and x.chunks[0] == (1, 1)
    np.testing.assert_array_equal(x.compute(), A.to_numpy(v))
    np.testing.assert_array_equal(x[1, 3:9, 1].compute(), A.to_numpy(v)[1, 3:9, 1])
    graph = pickle.dumps(x.__dask_graph__())
    assert len(graph) < 20_000 and b"StoreReader" not in graph and b"LocalStore" not in graph
    assert A.to_dask(v, rank=0).shape == (30, 2, 5)
    da = A.to_xarray(sn, dims=("batch", "channel", "neuron"))
    assert da.dims == ("rank", "step", "batch", "channel", "neuron")
    assert da["rank"].values.tolist() == [0, 1]
    np.testing.assert_array_equal(da.sel(rank=1).values, A.to_numpy(sn)[1])
    lazy = A.to_xarray(sn, chunks=None)
    assert lazy.dims[:2] == ("rank", "step") and isinstance(lazy, xr.DataArray)
    np.testing.assert_array_equal(lazy.isel(rank=0, step=slice(2, 4)).values,
                                  A.to_numpy(sn)[0, 2:4])
    one = A.to_xarray(sn, rank=1)
    assert one.dims[0] == "step" and one.shape[0] == 25
    # Marks: over step where the ranks agree, over (rank, step) where they differ.
    assert da["epoch"].dims == ("step",)
    assert da["epoch"].values.tolist() == [0] * 10 + [1] * 10 + [2] * 5
    assert da["shard"].dims == ("rank", "step")
    assert da["shard"].values[:, 0].tolist() == ["part0", "part1"]
    rates = da.groupby("epoch").mean(...)
    assert rates.sizes["epoch"] == 3
    np.testing.assert_allclose(float(rates.sel(epoch=1)), A.to_numpy(sn)[:, 10:20].mean())
    assert sorted(da.groupby("shard").groups) == ["part0", "part1"]
    assert one["shard"].values.tolist() == ["part1"] * 25 and "epoch" in one.coords
    with pytest.raises(ValueError, match="dims"):
        A.to_xarray(sn, dims=("a", "b"))


# ------------------------------------------------- mixed shapes, time axes, errors
N_MIX = 5  # neurons per sample in the mixed-batch fixture
MIX_BATCHES = [4, 4, 4, 2, 4, 4, 3, 3]  # a smaller last batch (step 3), an eval size (6, 7)


def _padded(recs: list, width: int, batch_axis: int) -> np.ndarray:
    """Records stacked with the batch axis padded to ``width`` with NaN (None: NaN)."""
    out = []
    for r in recs:
        if r is None:
            out.append(None)
            continue
        x = torch.as_tensor(r).to(torch.float64).numpy()
        pad = [(0, 0)] * x.ndim
        pad[batch_axis] = (0, width - x.shape[batch_axis])
        out.append(np.pad(x, pad, constant_values=np.nan))
    shape = next(o.shape for o in out if o is not None)
    return np.stack([np.full(shape, np.nan) if o is None else o for o in out])


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Layers with several record shapes, a [T, B, N] layer stored with time_axis=0,
    a layer that recorded only None, and tuple records."""
    path = tmp_path_factory.mktemp("mixed") / "mixed.spikes"
    g = torch.Generator().manual_seed(7)
    rec: dict[str, list] = {k: [] for k in ("sn", "v", "ms", "other", "tup_spk", "tup_mem")}
    with spikestore.StoreWriter(path, chunk_bytes=256) as w:
        for i, b in enumerate(MIX_BATCHES):
            sn = (torch.rand(b, N_MIX, generator=g) < 0.4).float()
            v = None if i == 5 else torch.randn(b, N_MIX, generator=g)
            ms = (torch.rand(3, b, N_MIX, generator=g) < 0.4).float()  # [T, B, N]
            other = torch.randn(2, 4 if i < 5 else 6, generator=g)  # differs in a non-batch axis
            mem = torch.randn(b, N_MIX, generator=g)
            w.append("o", "sn", sn)
            w.append("v", "mem", v)
            w.append("o", "ms", ms, time_axis=0)
            w.append("o", "other", other)
            w.append("o", "tup", (sn, mem))
            w.append("o", "none", None)
            for k, x in (("sn", sn), ("v", v), ("ms", ms), ("other", other),
                         ("tup_spk", sn), ("tup_mem", mem)):
                rec[k].append(x)
    return {"path": path, "rec": rec, "store": spikestore.open(path)}


def test_shapes_lists_each_shape_with_its_steps(mixed: dict) -> None:
    sn = mixed["store"]["o"]["sn"]
    got = [(shape, steps.tolist()) for shape, steps in A.shapes(sn)]
    assert got == [((4, N_MIX), [0, 1, 2, 4, 5]), ((2, N_MIX), [3]), ((3, N_MIX), [6, 7])]
    assert [s for s, _ in A.shapes(sn, steps=slice(2, 4))] == [(4, N_MIX), (2, N_MIX)]
    # A None step joins the shape of the step before it: the lists cover every step.
    v = A.shapes(mixed["store"]["v"]["mem"])
    assert sorted(np.concatenate([st for _, st in v]).tolist()) == list(range(8))
    assert A.shapes(mixed["store"]["o"]["none"]) == []
    assert A.record_shape(sn) == (4, N_MIX)  # the largest batch
    assert A.record_shape(sn, steps=[3]) == (2, N_MIX)
    assert A.record_shape(mixed["store"]["o"]["ms"]) == (3, 4, N_MIX)  # batch is axis 1


@pytest.mark.parametrize("steps", [[0, 1, 2, 4, 5], [3], slice(6, 8)])
def test_steps_within_one_shape_read_as_a_one_shape_layer(mixed: dict, steps: object) -> None:
    # Every one of these raised "records tensors of several shapes" for the whole layer.
    s, rec = mixed["store"], mixed["rec"]
    sel = A.step_selection(s["o"]["sn"], steps)
    x = torch.stack([rec["sn"][i] for i in sel]).numpy()
    np.testing.assert_array_equal(A.to_numpy(s["o"]["sn"], steps), x)
    assert A.to_numpy(s["o"]["sn"], steps).dtype == np.float32
    np.testing.assert_array_equal(A.spike_counts(s["o"]["sn"], steps), x.sum(0))
    t, n = A.raster(s["o"]["sn"], steps)
    i, j = np.nonzero(x.reshape(len(sel), -1))
    np.testing.assert_array_equal(t, sel[i])
    np.testing.assert_array_equal(n, j)
    np.testing.assert_array_equal(
        A.traces(s["o"]["sn"], [0, 3], steps), x.reshape(len(sel), -1)[:, [0, 3]]
    )
    trains = A.spike_trains(s["o"]["sn"], steps)
    assert len(trains) == x[0].size and sum(len(tr) for tr in trains) == int(x.sum())
    np.testing.assert_array_equal(A.to_numpy(s["o"]["tup"], steps, field=1),
                                  torch.stack([rec["tup_mem"][i] for i in sel]).numpy())
    ms = torch.stack([rec["ms"][i] for i in sel]).numpy()
    np.testing.assert_array_equal(A.to_numpy(s["o"]["ms"], steps), ms)
    np.testing.assert_array_equal(A.spike_counts(s["o"]["ms"], steps), ms.sum(axis=(0, 1)))


def test_mixed_batch_sizes_count_raster_trace_where_neurons_exist(mixed: dict) -> None:
    s, rec = mixed["store"], mixed["rec"]
    sn = s["o"]["sn"]
    x = _padded(rec["sn"], 4, 0)  # (8, 4, N): NaN beyond each step's batch
    np.testing.assert_array_equal(A.spike_counts(sn), np.nansum(x, axis=0).astype(np.int64))
    np.testing.assert_array_equal(A.spike_counts(sn, axis=1), np.nansum(x, axis=(0, 2)))
    flat = np.nan_to_num(x).reshape(8, -1)
    t, n = A.raster(sn)
    i, j = np.nonzero(flat)
    np.testing.assert_array_equal(t, i)
    np.testing.assert_array_equal(n, j)
    # Neuron (3, 1) exists only at steps of batch 4: no events elsewhere.
    t3, _ = A.raster(sn, neurons=[(3, 1)])
    assert not set(t3.tolist()) & {3, 6, 7}
    np.testing.assert_array_equal(t3, np.nonzero(flat[:, 3 * N_MIX + 1])[0])
    tr = A.traces(s["v"]["mem"], [(0, 2), (3, 4)])
    v = _padded(rec["v"], 4, 0).reshape(8, -1)
    np.testing.assert_array_equal(tr, v[:, [2, 3 * N_MIX + 4]].astype(np.float32).astype(float))
    assert np.isnan(tr[[3, 5, 6, 7], 1]).all() and not np.isnan(tr[[0, 1, 2, 4], 1]).any()
    trains = A.spike_trains(sn, neurons=[(3, 1), (0, 0)])
    np.testing.assert_array_equal(trains[0], t3.astype(float))
    np.testing.assert_array_equal(trains[1], np.nonzero(flat[:, 0])[0].astype(float))
    # Per-step functions never minded the shapes.
    np.testing.assert_allclose(
        A.firing_rate(sn), [r.double().mean().item() for r in rec["sn"]], rtol=1e-12
    )
    assert A.summary(sn).shape == (8, len(COLUMNS))
    assert A.mean_rate(sn) == pytest.approx(np.nansum(x) / np.isfinite(x).sum())


def test_mixed_batch_arrays_refuse_unless_padded(mixed: dict) -> None:
    s, rec = mixed["store"], mixed["rec"]
    sn = s["o"]["sn"]
    with pytest.raises(ValueError, match=r"batch sizes.*\(4, 5\): 5 steps, first 0, last 5.*"
                       r"\(2, 5\): 1 step, first 3, last 3.*pad=True") as err:
        A.to_numpy(sn)
    assert "steps=" in str(err.value) and "'o', layer 'sn'" in str(err.value)
    got = A.to_numpy(sn, pad=True)
    assert got.dtype == np.float32  # float records keep their dtype
    np.testing.assert_array_equal(got, _padded(rec["sn"], 4, 0))
    ms = A.to_numpy(s["o"]["ms"], slice(2, 5), pad=True)  # [T, B, N]: batch is axis 1
    np.testing.assert_array_equal(ms, _padded(rec["ms"][2:5], 4, 1))
    with pytest.raises(ValueError, match="pad=True"):
        A.LayerArray(sn)
    arr = A.LayerArray(sn, pad=True)
    assert arr.shape == (8, 4, N_MIX)
    np.testing.assert_array_equal(arr[3, :, 1], _padded(rec["sn"], 4, 0)[3, :, 1])
    pytest.importorskip("dask.array")
    with pytest.raises(ValueError, match="pad=True"):
        A.to_dask(sn)
    np.testing.assert_array_equal(A.to_dask(sn, pad=True).compute(), _padded(rec["sn"], 4, 0))
    pytest.importorskip("xarray")
    with pytest.raises(ValueError, match="pad=True"):
        A.to_xarray(sn)
    xa = A.to_xarray(s["v"]["mem"], pad=True, chunks=None)
    np.testing.assert_array_equal(xa.values, _padded(rec["v"], 4, 0).astype(np.float32))


def test_shapes_that_differ_in_other_axes_name_them(mixed: dict) -> None:
    other = mixed["store"]["o"]["other"]
    msg = (r"'o', layer 'other'.*several shapes.*\(2, 4\): 5 steps, first 0, last 4; "
           r"\(2, 6\): 3 steps, first 5, last 7.*steps= within one shape")
    for read in (A.to_numpy, A.spike_counts, A.raster, A.record_shape, A.spike_trains):
        with pytest.raises(ValueError, match=msg):
            read(other)
    with pytest.raises(ValueError, match=msg):
        A.to_numpy(other, pad=True)
    with pytest.raises(ValueError, match=msg):
        A.traces(other, [0])
    np.testing.assert_array_equal(A.to_numpy(other, slice(5, 8)),
                                  torch.stack(mixed["rec"]["other"][5:]).numpy())


def test_multi_step_layers_use_their_stored_time_axis(mixed: dict) -> None:
    s, rec = mixed["store"], mixed["rec"]
    ms = s["o"]["ms"]
    assert ms.time_axis == 0
    sel = np.arange(3)  # batch 4 at steps 0-2
    x = torch.stack(rec["ms"][:3]).numpy()  # (3 steps, T=3, B=4, N)
    per_time = x.reshape(9, 4 * N_MIX)  # global time s * T + t
    t, n = A.raster(ms, sel)
    i, j = np.nonzero(per_time)
    np.testing.assert_array_equal(t, i)
    np.testing.assert_array_equal(n, j)
    assert n.dtype == np.int64
    # (batch, neuron) pairs for the flat ids, accepted back as neurons=.
    pairs = A.unravel(ms, n)
    np.testing.assert_array_equal(pairs, np.stack([j // N_MIX, j % N_MIX], axis=1))
    t2, n2 = A.raster(ms, sel, neurons=A.unravel(ms, np.unique(n)))
    np.testing.assert_array_equal(t2, t)
    np.testing.assert_array_equal(n2, n)
    np.testing.assert_array_equal(A.raster(ms, sel, time_axis=True)[0], t)  # True is axis 0
    # time_axis=False: one time point per step, neurons over the whole record.
    tf, nf = A.raster(ms, sel, time_axis=False)
    i, j = np.nonzero(x.reshape(3, -1))
    np.testing.assert_array_equal(tf, i)
    np.testing.assert_array_equal(nf, j)
    np.testing.assert_array_equal(A.traces(ms, [(1, 2)], sel), per_time[:, [N_MIX + 2]])
    assert A.traces(ms, [7], sel, time_axis=False).shape == (3, 1)
    counts = A.spike_counts(ms, sel)
    np.testing.assert_array_equal(counts, x.sum(axis=(0, 1)))  # (B, N): time summed
    np.testing.assert_array_equal(A.spike_counts(ms, sel, time_axis=False), x.sum(axis=0))
    np.testing.assert_array_equal(A.spike_counts(ms, sel, axis=(0, 1)), x.sum(axis=(0, 1, 2)))
    trains = A.spike_trains(ms, sel, neurons=[(2, 3)], dt=0.5)
    np.testing.assert_array_equal(trains[0], np.nonzero(per_time[:, 2 * N_MIX + 3])[0] * 0.5)
    np.testing.assert_allclose(A.firing_rate(ms, sel, over="time"), x.mean(axis=(2, 3)))
    with pytest.raises(ValueError, match="axis 0"):
        A.firing_rate(ms, over="time", time_axis=1)
    # Over the smaller batch too: neurons (3, n) have no events at step 3.
    allx = _padded(rec["ms"], 4, 1)  # (8, T, 4, N)
    t, n = A.raster(ms)
    i, j = np.nonzero(np.nan_to_num(allx).reshape(8 * 3, -1))
    np.testing.assert_array_equal(t, i)
    np.testing.assert_array_equal(n, j)
    np.testing.assert_array_equal(A.spike_counts(ms), np.nansum(allx, axis=(0, 1)))


def test_ranked_multi_step_layer_uses_its_time_axis(ranked) -> None:  # type: ignore[no-untyped-def]
    ms = ranked["output"]["ms"]
    x = A.to_numpy(ms, rank=0)  # (30, T=3, B=2, 4)
    t, n = A.raster(ms, rank=0)
    i, j = np.nonzero(x.reshape(30 * 3, 8))
    np.testing.assert_array_equal(t, i)
    np.testing.assert_array_equal(n, j)
    assert A.spike_counts(ms).shape == (2, 2, 4)
    assert A.unravel(ms, [7]).tolist() == [[1, 3]]


def test_a_layer_of_only_none_says_so(mixed: dict) -> None:
    none = mixed["store"]["o"]["none"]
    for read in (A.to_numpy, A.spike_counts, A.raster, A.record_shape):
        with pytest.raises(ValueError, match=r"layer 'none' recorded only None.*never set"):
            read(none)
    with pytest.raises(ValueError, match="only None"):
        A.traces(none, [0])
    assert np.isnan(A.firing_rate(none)).all()  # per-step rates are NaN, not an error


def test_bad_neurons_name_the_layer_shape_and_range(mixed: dict, run: dict) -> None:
    sn = run["store"]["output"]["sn"]  # [4, 3, 40] written without a time axis
    with pytest.raises(IndexError, match=r"layer 'sn'.*neuron \(0, 1\).*shape \(4, 3, 40\).*"
                       r"0\.\.479.*time_axis=True"):
        A.raster(sn, slice(0, 2), [(0, 1)])
    with pytest.raises(IndexError, match=r"layer 'sn'.*neuron 480 .*0\.\.479"):
        A.traces(sn, [480])
    with pytest.raises(IndexError, match=r"neuron \(4, 0, 0\)"):
        A.spike_trains(sn, neurons=[(4, 0, 0)])
    ms = mixed["store"]["o"]["ms"]
    with pytest.raises(IndexError, match=r"layer 'ms'.*time axis 0.*neuron \(4, 0\).*"
                       r"shape \(4, 5\).*0\.\.19"):
        A.raster(ms, neurons=[(4, 0)])
    with pytest.raises(IndexError, match=r"neuron 20 .*0\.\.19"):
        A.unravel(ms, [20])
    with pytest.raises(ValueError, match="time_axis=3"):
        A.raster(ms, time_axis=3)


def test_field_by_position_everywhere(mixed: dict) -> None:
    s, rec = mixed["store"], mixed["rec"]
    tup = s["o"]["tup"]
    mem = _padded(rec["tup_mem"], 4, 0)
    np.testing.assert_array_equal(A.to_numpy(tup, field=1, pad=True), mem.astype(np.float32))
    np.testing.assert_array_equal(
        A.traces(tup, [0], field=1), mem.reshape(8, -1)[:, [0]].astype(np.float32).astype(float)
    )
    np.testing.assert_array_equal(A.spike_counts(tup, field=0), A.spike_counts(s["o"]["sn"]))
    assert A.record_shape(tup, 1) == (4, N_MIX)
    assert [sh for sh, _ in A.shapes(tup, 1)] == [(4, N_MIX), (2, N_MIX), (3, N_MIX)]
    np.testing.assert_allclose(A.summary(tup, field=1)[:, 0], [b * N_MIX for b in MIX_BATCHES])


def test_format_1_5_dims_marks_and_field_names(tmp_path: Path) -> None:
    """Axis names from the store name xarray's dimensions and pick the batch axis,
    marks become step coordinates, and fields are chosen by name."""
    from collections import namedtuple

    xr = pytest.importorskip("xarray")
    State = namedtuple("State", ["spk", "mem"])
    g = torch.Generator().manual_seed(11)
    rec: dict[str, list] = {"x": [], "g": [], "mem": []}
    with spikestore.StoreWriter(tmp_path / "s") as w:
        for i, b in enumerate([4, 4, 4, 4, 4, 2]):
            if i in (0, 3):
                w.mark(epoch=i // 3)
            if i == 4:
                w.mark(phase="eval")
            x = (torch.rand(3, b, 2, generator=g) < 0.5).float()
            w.append("o", "x", x, time_axis=0, dims=("time", "batch", "neuron"))
            # Batch on axis 1 without a time axis: only the names say which axis it is.
            gr = torch.randn(2, b, 3, generator=g)
            w.append("o", "g", gr, dims=("group", "batch", "neuron"))
            mem = torch.randn(b, 2, generator=g)
            w.append("o", "st", State(x[0], mem))
            rec["x"].append(x)
            rec["g"].append(gr)
            rec["mem"].append(mem)
    s = spikestore.open(tmp_path / "s")
    lay = s["o"]["x"]
    assert lay.dims == ("time", "batch", "neuron")
    da = A.to_xarray(lay, pad=True, chunks=None)
    assert da.dims == ("step", "time", "batch", "neuron")
    assert A.to_xarray(lay, ("t", "b", "n"), pad=True).dims == ("step", "t", "b", "n")
    assert da["epoch"].values.tolist() == [0, 0, 0, 1, 1, 1]
    phase = da["phase"].values.tolist()
    assert phase[4:] == ["eval"] * 2 and all(p is None or p != p for p in phase[:4])  # unset
    per_epoch = da.groupby("epoch").sum(dim=["step", "time", "batch", "neuron"])
    want = [float(sum(r.sum() for r in rec["x"][:3])), float(sum(r.sum() for r in rec["x"][3:]))]
    np.testing.assert_array_equal(per_epoch.values, want)
    assert isinstance(da, xr.DataArray)
    # The "batch" name puts the batch on axis 1 of the [group, batch, neuron] layer.
    assert A.record_shape(s["o"]["g"]) == (2, 4, 3)
    np.testing.assert_array_equal(A.to_numpy(s["o"]["g"], pad=True).astype(np.float64),
                                  _padded(rec["g"], 4, 1).astype(np.float32))
    with pytest.raises(IndexError, match=r"axes \('group', 'batch', 'neuron'\)"):
        A.traces(s["o"]["g"], [(0, 4, 0)])
    # Fields by name.
    st = s["o"]["st"]
    assert st.field_names == ["spk", "mem"]
    mem = _padded(rec["mem"], 4, 0).reshape(6, -1)
    np.testing.assert_array_equal(A.traces(st, [(3, 1)], field="mem"),
                                  mem[:, [7]].astype(np.float32).astype(float))
    np.testing.assert_array_equal(A.to_numpy(st, slice(0, 5), field="mem"),
                                  torch.stack(rec["mem"][:5]).numpy())
    assert A.spike_counts(st, field="spk").sum() == sum(float(r[0].sum()) for r in rec["x"])
    np.testing.assert_array_equal(A.summary(st, field="mem"), A.summary(st, field=1))
    assert A.record_shape(st, "mem") == (4, 2)
    assert A.to_xarray(st, field="mem", pad=True, chunks=None).shape == (6, 4, 2)
    with pytest.raises(KeyError, match="'nope'"):
        A.raster(st, field="nope")


def test_a_stored_time_axis_other_than_0(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(5)
    recs = [(torch.rand(2, 3, 4, generator=g) < 0.5).float() for _ in range(4)]  # [B, T, N]
    with spikestore.StoreWriter(tmp_path / "s") as w:
        for r in recs:
            w.append("o", "x", r, time_axis=1)
    lay = spikestore.open(tmp_path / "s")["o"]["x"]
    x = torch.stack(recs).numpy().transpose(0, 2, 1, 3).reshape(12, 8)  # (s * T + t, b * N + n)
    t, n = A.raster(lay)
    i, j = np.nonzero(x)
    np.testing.assert_array_equal(t, i)
    np.testing.assert_array_equal(n, j)
    np.testing.assert_array_equal(A.traces(lay, [(1, 2)]), x[:, [6]])
    np.testing.assert_array_equal(A.spike_counts(lay), x.sum(0).reshape(2, 4))
    assert A.unravel(lay, [6]).tolist() == [[1, 2]]
    with pytest.raises(ValueError, match="axis 0"):
        A.firing_rate(lay, over="time")


def test_xarray_marks_are_typed_coordinates(tmp_path: Path) -> None:
    """Marks come out as int, float, str or bool coordinates, not object arrays
    (issue 24, item 7); numbers not yet marked at the first steps are NaN."""
    pytest.importorskip("xarray")
    path = tmp_path / "run.spikes"
    with spikestore.StoreWriter(path) as w:
        for i in range(6):
            if i == 0:
                w.mark(epoch=0, phase="train", eval=False)
            if i == 2:
                w.mark(lr=0.1)
            if i == 4:
                w.mark(epoch=1, phase="eval", eval=True, lr=0.01)
            w.append("output", "sn", torch.zeros(3))
    da = A.to_xarray(spikestore.open(path)["output"]["sn"])
    assert da.coords["epoch"].dtype == np.int64
    assert da.coords["epoch"].values.tolist() == [0, 0, 0, 0, 1, 1]
    assert da.coords["phase"].dtype.kind == "U"
    assert da.coords["eval"].dtype == bool
    lr = da.coords["lr"].values
    assert lr.dtype == np.float64 and np.isnan(lr[:2]).all()
    assert lr[2:].tolist() == [0.1, 0.1, 0.01, 0.01]
    assert da.groupby("epoch").mean().sizes["epoch"] == 2
