"""The viewer's data side: JSON shapes, decimation against the analysis functions,
marks, rasters, traces, ranked stores and the writer's state (no browser, no server)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import spikestore
from spikestore import analysis
from spikestore.view import ViewData, _windows, decimate, raster, traces, writer_locked
from spikestore.view._data import BadRequest, NotFound

FIXTURES = Path(__file__).parents[1] / "fixtures"
STEPS = 300


def _record(w: spikestore.StoreWriter, i: int, g: torch.Generator) -> None:
    if i % 100 == 0:
        w.mark(epoch=i // 100)
    rate = 0.05 + 0.3 * (i // 100)  # each epoch fires more
    w.append("output", "lif", (torch.rand(4, 8, generator=g) < rate).float())
    w.append("v", "lif", torch.randn(4, 8, generator=g), units="mV")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("view") / "run.spikes"
    g = torch.Generator().manual_seed(0)
    with spikestore.StoreWriter(path, dt=1.0, time_unit="ms") as w:
        for i in range(STEPS):
            _record(w, i, g)
    return path


@pytest.fixture(scope="module")
def data(store: Path) -> ViewData:
    return ViewData(store)


def test_layers_lists_every_layer_in_order_with_a_sparkline(data: ViewData) -> None:
    body = data.layers()
    json.dumps(body, allow_nan=False)
    rows = body["layers"]
    assert [(r["monitor"], r["layer"]) for r in rows] == [("output", "lif"), ("v", "lif")]
    spikes, values = rows
    assert spikes["kind"] == "spikes" and values["kind"] == "values"
    assert spikes["steps"] == STEPS and spikes["shape"] == [4, 8] and spikes["neurons"] == 32
    assert values["units"] == "mV"
    assert len(spikes["spark"]) == 75  # bins of 4 steps: at most 96
    assert spikes["spark"][-1] > spikes["spark"][0]  # the rate rises epoch by epoch
    assert body["dt"] == 1.0 and body["time_unit"] == "ms" and body["ranks"] is None
    assert body["writer"] == {"locked": False, "growing": False, "steps": 2 * STEPS}


@pytest.mark.parametrize(("start", "stop", "bins"), [(None, None, 7), (10, 20, 100), (5, 299, 13)])
def test_overview_bins_are_min_mean_max_of_firing_rate(
    data: ViewData, store: Path, start: int | None, stop: int | None, bins: int
) -> None:
    ov = data.overview("output", "lif", start, stop, bins)
    json.dumps(ov, allow_nan=False)
    rate = analysis.firing_rate(spikestore.open(store)["output"]["lif"])
    a, b = start or 0, STEPS if stop is None else stop
    k = -(-(b - a) // bins)
    assert ov["k"] == k and ov["start"] == a and ov["stop"] == b and ov["steps"] == STEPS
    assert len(ov["x"]) == len(ov["mean"]) <= bins
    for j, x in enumerate(ov["x"]):
        part = rate[x : min(x + k, b)]
        assert ov["mean"][j] == pytest.approx(part.mean())
        assert ov["min"][j] == pytest.approx(part.min())
        assert ov["max"][j] == pytest.approx(part.max())


def test_overview_of_values_is_their_mean(data: ViewData, store: Path) -> None:
    ov = data.overview("v", "lif", 0, 50, 50)
    mean = analysis.summary(spikestore.open(store)["v"]["lif"], slice(0, 50))[:, 4]
    assert ov["kind"] == "values" and ov["k"] == 1
    np.testing.assert_allclose(ov["mean"], mean)


def test_decimate_gives_none_for_empty_bins() -> None:
    out = decimate(np.array([1.0, np.nan, np.nan, np.nan, 3.0]), 0, 5, 3)
    assert out["k"] == 2 and out["x"] == [0, 2, 4]
    assert out["mean"] == [1.0, None, 3.0] and out["min"] == [1.0, None, 3.0]


def test_marks_are_intervals(data: ViewData) -> None:
    marks = data.overview("output", "lif")["marks"]
    assert marks == {
        "epoch": {"count": 3, "intervals": [[0, 100, 0], [100, 200, 1], [200, 300, 2]]}
    }


def test_raster_events_are_those_of_analysis(data: ViewData, store: Path) -> None:
    r = raster(data, "output", "lif", 20, 40, width=800, height=300)
    t, n = analysis.raster(spikestore.open(store)["output"]["lif"], slice(20, 40))
    assert r["mode"] == "events" and r["t"] == t.tolist() and r["n"] == n.tolist()
    assert r["total"] == len(t) and (r["lo"], r["hi"], r["neurons"]) == (0, 32, 32)
    sub = raster(data, "output", "lif", 20, 40, neurons=(8, 16))
    keep = (n >= 8) & (n < 16)
    assert sub["t"] == t[keep].tolist() and sub["n"] == n[keep].tolist()


def test_raster_with_more_spikes_than_pixels_is_a_density_image(
    data: ViewData, store: Path
) -> None:
    r = raster(data, "output", "lif", 0, STEPS, width=50, height=8)
    t, n = analysis.raster(spikestore.open(store)["output"]["lif"], slice(0, STEPS))
    assert r["mode"] == "density"
    assert (r["kx"], r["ky"], r["nx"], r["ny"]) == (6, 4, 50, 8)
    z = np.array(r["z"])
    expected = np.zeros((8, 50), dtype=np.int64)
    np.add.at(expected, (n // 4, t // 6), 1)
    np.testing.assert_array_equal(z, expected)
    assert r["total"] == len(t)


def test_a_raster_too_long_to_decode_says_how_many_steps_fit(
    data: ViewData, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_windows, "MAX_RASTER_VALUES", 32 * 100)
    r = raster(data, "output", "lif", 0, STEPS)
    assert r["mode"] == "too_large" and r["max_steps"] == 100


def test_traces_carry_the_spikes_of_the_spike_twin(data: ViewData, store: Path) -> None:
    s = spikestore.open(store)
    out = traces(data, "v", "lif", [0, 5], 10, 60)
    v = analysis.traces(s["v"]["lif"], [0, 5], slice(10, 60))
    assert out["x"] == list(range(10, 60))
    np.testing.assert_allclose(np.array(out["y"]).T, v)
    assert out["spikes_from"] == ["output", "lif"]
    t, n = analysis.raster(s["output"]["lif"], slice(10, 60), [0, 5])
    assert out["spikes"] == [t[n == 0].tolist(), t[n == 5].tolist()]


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda d: d.overview("output", "nope"), NotFound),
        (lambda d: d.overview("nope", "lif"), NotFound),
        (lambda d: d.overview("output", "lif", field=3), NotFound),
        (lambda d: d.overview("output", "lif", rank=0), BadRequest),
        (lambda d: d.overview("output", "lif", bins=0), BadRequest),
        (lambda d: traces(d, "v", "lif", [32], 0, 10), BadRequest),
        (lambda d: traces(d, "v", "lif", [], 0, 10), BadRequest),
        (lambda d: raster(d, "output", "lif", 0, 10, width=0), BadRequest),
    ],
)
def test_bad_requests_are_refused_by_name(data: ViewData, call, error) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error):
        call(data)


def test_a_layer_name_is_looked_up_never_a_path(tmp_path: Path) -> None:
    d = ViewData(FIXTURES / "store_v1.4_ranked")
    names = [r["layer"] for r in d.layers()["layers"]]
    assert "../odd/name" in names  # listed, and read by name
    assert d.overview("input", "../odd/name", rank=1)["steps"] == 3
    with pytest.raises(NotFound):
        d.overview("input", "../../etc/passwd")


def test_a_ranked_store_reads_the_rank_asked_for() -> None:
    d = ViewData(FIXTURES / "store_v1.4_ranked")
    body = d.layers()
    assert body["ranks"] == [0, 1] and body["rank"] == 0
    s = spikestore.open(FIXTURES / "store_v1.4_ranked")
    for r in (0, 1):
        lay = s.rank(r)["output"]["features.0.sn"]
        ov = d.overview("output", "features.0.sn", rank=r, bins=1000)
        np.testing.assert_allclose(ov["mean"], analysis.firing_rate(lay))
    with pytest.raises(NotFound):
        d.overview("output", "features.0.sn", rank=5)


def test_a_store_being_written_grows_and_its_writer_is_seen(tmp_path: Path) -> None:
    path = tmp_path / "live.spikes"
    g = torch.Generator().manual_seed(1)
    with spikestore.StoreWriter(path) as w:
        for i in range(10):
            _record(w, i, g)
        w.flush()
        d = ViewData(path)
        first = d.layers()
        assert first["layers"][0]["steps"] == 10
        assert first["writer"]["locked"] is True and writer_locked(str(path)) is True
        for i in range(10, 25):
            _record(w, i, g)
        w.flush()
        d.refresh(force=True)
        status = d.status()
        assert [r["steps"] for r in status["layers"]] == [25, 25]
        assert status["writer"]["growing"] is True
        ov = d.overview("output", "lif", bins=1000)
        rate = analysis.firing_rate(spikestore.open(path)["output"]["lif"])
        np.testing.assert_allclose(ov["mean"], rate)  # the cached head and the new tail
    assert writer_locked(str(path)) is False
    assert writer_locked("s3://bucket/run") is None


def test_each_writer_opening_is_a_run_interval(tmp_path: Path) -> None:
    path = tmp_path / "runs.spikes"
    for mode, n in (("w", 30), ("a", 20), ("a", 10)):
        with spikestore.StoreWriter(path, mode=mode) as w:
            for _ in range(n):
                w.append("output", "lif", torch.zeros(8))
    runs = ViewData(path).overview("output", "lif")["runs"]
    assert [r[:3] for r in runs] == [[0, 30, 0], [30, 50, 1], [50, 60, 2]]
    assert all(isinstance(r[3], str) for r in runs)


def test_a_replaced_store_is_read_afresh(tmp_path: Path) -> None:
    path = tmp_path / "replaced.spikes"
    with spikestore.StoreWriter(path) as w:
        for _ in range(20):
            w.append("output", "lif", torch.zeros(8))
    d = ViewData(path)
    assert d.overview("output", "lif")["mean"] == [0.0] * 20
    with spikestore.StoreWriter(path, mode="w") as w:
        for _ in range(30):
            w.append("output", "lif", torch.ones(8))
    d.refresh(force=True)
    assert d.overview("output", "lif")["mean"] == [1.0] * 30


def test_a_store_on_object_storage(s3) -> None:  # type: ignore[no-untyped-def]
    url = s3.url("view-run")
    with spikestore.StoreWriter(url, storage_options=s3.storage_options) as w:
        for i in range(12):
            w.append("output", "lif", torch.full((8,), float(i % 2)))
    d = ViewData(url, storage_options=s3.storage_options)
    body = d.layers()
    assert body["layers"][0]["steps"] == 12 and body["writer"]["locked"] is None
    assert d.overview("output", "lif")["mean"] == [0.0, 1.0] * 6
    assert raster(d, "output", "lif", 0, 2)["t"] == [1] * 8


def test_a_damaged_summary_is_named_and_the_other_layers_stay(tmp_path: Path) -> None:
    path = tmp_path / "damaged.spikes"
    g = torch.Generator().manual_seed(2)
    with spikestore.StoreWriter(path) as w:
        for i in range(20):
            _record(w, i, g)
    for f in (path / "output").rglob("*"):
        if f.is_file() and "summary" in f.parts and "c" in f.parts:
            f.write_bytes(b"\0" * 16)
    rows = ViewData(path).layers()["layers"]
    bad, good = rows
    assert bad["kind"] is None and "lif" in bad["error"]
    assert good["kind"] == "values" and good["steps"] == 20


def test_a_store_replaced_by_the_other_kind_is_reopened_as_that_kind(tmp_path: Path) -> None:
    path = tmp_path / "swap.spikes"
    with spikestore.StoreWriter(path) as w:
        for _ in range(7):
            w.append("output", "lif", torch.ones(8))
    d = ViewData(path)
    assert d.layers()["ranks"] is None
    shutil.rmtree(path)
    shutil.copytree(FIXTURES / "store_v1.4_ranked", path)  # now ranked
    d.refresh(force=True)
    body = d.layers()
    assert body["ranks"] == [0, 1] and body["rank"] == 0
    assert d.overview("output", "features.0.sn", rank=1)["steps"] > 0
    shutil.rmtree(path)
    with spikestore.StoreWriter(path) as w:  # and one process's store again
        for _ in range(5):
            w.append("output", "lif", torch.zeros(8))
    d.refresh(force=True)
    assert d.layers()["ranks"] is None
    assert d.overview("output", "lif")["mean"] == [0.0] * 5
    with pytest.raises(BadRequest, match=r"not a ranked store.*reload the page"):
        d.status(rank=0)


def test_json_safe_makes_any_answer_strict_json() -> None:
    from spikestore.view import _data

    value = {"a": np.float32(np.nan), 1: (np.int64(3), np.array([1.0, np.inf])), "b": np.bool_(1)}
    assert _data.json_safe(value) == {"a": None, "1": [3, [1.0, None]], "b": True}
    deep: list[object] = []
    for _ in range(500):
        deep = [deep]
    text = json.dumps(_data.json_safe(deep), allow_nan=False)
    assert "nested more than 100 levels deep" in text
    assert _data.json_safe(10**400) is None and _data.json_safe(object()).startswith("<object")
