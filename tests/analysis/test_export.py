"""Spike trains per neuron (analysis.spike_trains) and the Neo and NWB exports."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import spikestore
from spikestore import _nwb, export
from spikestore import analysis as A

STEPS = 40
T = 3


def _spikes(gen: torch.Generator, shape: tuple[int, ...], p: float = 0.2) -> torch.Tensor:
    return (torch.rand(shape, generator=gen) < p).float()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list]]:
    """A store with single-step and multi-step spike and float layers, and what was recorded."""
    path = tmp_path_factory.mktemp("export") / "run.spikes"
    gen = torch.Generator().manual_seed(11)
    recs: dict[str, list] = {"single": [], "multi": [], "bt": [], "v": [], "vm": []}
    with spikestore.StoreWriter(path, mode="w") as w:
        for _ in range(STEPS):
            x = _spikes(gen, (4, 6))
            m = _spikes(gen, (T, 2, 5), 0.3)
            bt = _spikes(gen, (2, T), 0.4)
            v = torch.randn(4, 6, generator=gen)
            vm = torch.randn(T, 2, 5, generator=gen, dtype=torch.float64)
            w.append("output", "single", x)
            w.append("output", "multi", m, time_axis=0)
            w.append("output", "bt", bt, time_axis=1)
            w.append("v", "single", v)
            w.append("v", "multi", vm, time_axis=0)
            for k, r in zip(recs, (x, m, bt, v, vm), strict=True):
                recs[k].append(r.numpy())
    return path, {k: np.stack(v) for k, v in recs.items()}


def _expected_single(x: np.ndarray, dt: float) -> list[np.ndarray]:
    """x: [steps, *shape] -> trains of the flat neurons, times step * dt."""
    flat = x.reshape(len(x), -1)
    return [np.nonzero(flat[:, n])[0] * dt for n in range(flat.shape[1])]


def _expected_multi(x: np.ndarray, axis: int, dt: float) -> list[np.ndarray]:
    """x: [steps, *record] with record axis ``axis`` time -> neuron = flat index of the
    rest, time (step * T + t) * dt."""
    moved = np.moveaxis(x, axis + 1, 1)  # [steps, T, *rest]
    series = moved.reshape(moved.shape[0] * moved.shape[1], -1)
    return [np.nonzero(series[:, n])[0] * dt for n in range(series.shape[1])]


def _same(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for g, e in zip(got, want, strict=True):
        assert g.dtype == np.float64
        np.testing.assert_array_equal(g, e.astype(np.float64))


# ------------------------------------------------------------- spike_trains
def test_spike_trains_single_step(recorded: tuple[Path, dict]) -> None:
    path, recs = recorded
    layer = spikestore.open(path)["output"]["single"]
    assert layer.time_axis is None
    _same(A.spike_trains(layer), _expected_single(recs["single"], 1.0))
    _same(A.spike_trains(layer, dt=0.5), _expected_single(recs["single"], 0.5))


def test_spike_trains_multi_step(recorded: tuple[Path, dict]) -> None:
    path, recs = recorded
    store = spikestore.open(path)
    layer = store["output"]["multi"]
    assert layer.time_axis == 0
    got = A.spike_trains(layer, dt=0.25)
    assert len(got) == 2 * 5  # neurons: b * 5 + n
    _same(got, _expected_multi(recs["multi"], 0, 0.25))
    # time axis last ([B, T]): neurons are b, times (s * T + t) * dt
    bt = store["output"]["bt"]
    assert bt.time_axis == 1
    _same(A.spike_trains(bt, dt=2.0), _expected_multi(recs["bt"], 1, 2.0))
    # time_axis=False: every element of [T, B, N] is a neuron, times are steps
    _same(A.spike_trains(layer, time_axis=False), _expected_single(recs["multi"], 1.0))


def test_spike_trains_window_neurons_blocks(
    recorded: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, recs = recorded
    layer = spikestore.open(path)["output"]["multi"]
    want = _expected_multi(recs["multi"], 0, 1.0)
    picks = [(1, 4), 0, (0, 2)]
    flat = [9, 0, 2]
    lo, hi = 7, 31
    exp = [w[(w >= lo * T) & (w < hi * T)] for w in want]
    expected = [exp[i] for i in flat]
    _same(A.spike_trains(layer, slice(lo, hi), neurons=picks), expected)
    # decoded a few values at a time: the same trains
    monkeypatch.setattr(A._events, "_TRAIN_BLOCK", 7)
    _same(A.spike_trains(layer, slice(lo, hi), neurons=picks), expected)
    _same(A.spike_trains(layer), want)
    # steps out of order: still sorted times
    got = A.spike_trains(layer, [20, 3, 11], neurons=[9])
    sel = np.isin(want[9] // T, [3, 11, 20])
    _same(got, [want[9][sel]])


# --------------------------------------------------------------------- Neo
def test_to_neo_elephant_statistics(recorded: tuple[Path, dict]) -> None:
    pytest.importorskip("neo")
    stats = pytest.importorskip("elephant.statistics")
    import quantities as pq

    from spikestore.export import to_neo

    path = recorded[0]
    layer = spikestore.open(path)["output"]["multi"]
    dt = 1.0  # ms
    trains = to_neo(layer, dt=dt, units="ms")
    decoded = A.spike_trains(layer, dt=dt)
    assert len(trains) == len(decoded) == 10
    duration = STEPS * T * dt
    for n, (st, times) in enumerate(zip(trains, decoded, strict=True)):
        assert st.units == pq.ms
        assert float(st.t_start) == 0.0 and float(st.t_stop) == duration
        np.testing.assert_array_equal(st.magnitude, times)
        assert st.annotations["monitor"] == "output"
        assert st.annotations["layer"] == "multi"
        assert st.annotations["neuron"] == n
        assert st.annotations["neuron_index"] == tuple(np.unravel_index(n, (2, 5)))
        assert st.annotations["store"] == str(path)
        rate = stats.mean_firing_rate(st)
        assert rate.rescale(1 / pq.ms).magnitude == pytest.approx(len(times) / duration)
        if len(times) >= 3:
            isi = np.diff(times)
            cv = stats.cv(stats.isi(st))
            assert cv == pytest.approx(np.std(isi) / np.mean(isi))
    # a window in seconds: t_start/t_stop follow the steps chosen
    win = to_neo(layer, slice(10, 20), dt=1e-3, units="s", neurons=[3])
    assert float(win[0].t_start) == pytest.approx(10 * T * 1e-3)
    assert float(win[0].t_stop) == pytest.approx(20 * T * 1e-3)
    assert win[0].annotations["neuron"] == 3


def test_to_neo_without_neo(recorded: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch) -> None:
    from spikestore.export import to_neo

    monkeypatch.setitem(sys.modules, "neo", None)
    layer = spikestore.open(recorded[0])["output"]["single"]
    with pytest.raises(ImportError, match=r"spikestore\[neo\]"):
        to_neo(layer)


# --------------------------------------------------------------------- NWB
def test_to_nwb_round_trip(recorded: tuple[Path, dict], tmp_path: Path) -> None:
    pynwb = pytest.importorskip("pynwb")

    from spikestore.export import to_nwb

    path, recs = recorded
    out = tmp_path / "run.nwb"
    dt = 1e-3
    assert to_nwb(path, out, dt=dt, session_description="test run") == str(out)
    with pytest.raises(FileExistsError):
        to_nwb(path, out, dt=dt)
    with pynwb.NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        assert nwb.session_description == "test run"
        notes = json.loads(nwb.notes)
        assert notes["format_version"] == spikestore.open(path).version
        assert notes["created_by"].startswith("spikestore")
        assert notes["dt_seconds"] == dt and notes["skipped"] == []
        units = nwb.units.to_dataframe()
        want = {
            "single": _expected_single(recs["single"], dt),
            "multi": _expected_multi(recs["multi"], 0, dt),
            "bt": _expected_multi(recs["bt"], 1, dt),
        }
        assert len(units) == sum(len(v) for v in want.values())
        shapes = {"single": (4, 6), "multi": (2, 5), "bt": (2,)}
        for name, trains in want.items():
            rows = units[(units["monitor"] == "output") & (units["layer"] == name)]
            assert list(rows["neuron"]) == list(range(len(trains)))
            assert list(rows["neuron_index"]) == [
                str(tuple(int(i) for i in np.unravel_index(n, shapes[name])))
                for n in range(len(trains))
            ]
            for times, exp in zip(rows["spike_times"], trains, strict=True):
                np.testing.assert_array_equal(np.asarray(times), exp)
        series = nwb.processing["spikestore"]
        v = series["v.single"]
        assert v.rate == pytest.approx(1 / dt) and v.starting_time == 0.0
        np.testing.assert_array_equal(v.data[:], recs["v"])
        assert v.data.dtype == np.float32
        vm = series["v.multi"]
        # [steps, T, B, N] -> rows step * T + t
        np.testing.assert_array_equal(vm.data[:], recs["vm"].reshape(STEPS * T, 2, 5))
        assert vm.data.dtype == np.float64


def test_to_nwb_chunked_series(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A series written in several hdmf chunks and buffers, and an integer layer."""
    pynwb = pytest.importorskip("pynwb")

    from spikestore import export

    path = tmp_path / "big.spikes"
    gen = torch.Generator().manual_seed(3)
    vs, ns = [], []
    with spikestore.StoreWriter(path, mode="w") as w:
        for _ in range(60):
            v = torch.randn(T, 4096, generator=gen)  # 48 KiB a step
            n = torch.randint(-5, 100, (7,), generator=gen)
            w.append("v", "big", v, time_axis=0)
            w.append("count", "n", n)
            vs.append(v.numpy())
            ns.append(n.numpy())
    out = tmp_path / "big.nwb"
    # chunks of 2 rows, buffers of 4: reads start inside a step of T = 3 rows
    monkeypatch.setattr(_nwb, "CHUNK_BYTES", 2 * 4096 * 4)
    monkeypatch.setattr(_nwb, "BUFFER_BYTES", 5 * 4096 * 4)
    export.to_nwb(spikestore.open(path), out, dt=0.5)
    with pynwb.NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        assert nwb.units is None  # no spike layers
        big = nwb.processing["spikestore"]["v.big"]
        assert big.data.chunks == (2, 4096)
        np.testing.assert_array_equal(big.data[:], np.stack(vs).reshape(60 * T, 4096))
        assert big.rate == 2.0
        cnt = nwb.processing["spikestore"]["count.n"]
        np.testing.assert_array_equal(cnt.data[:], np.stack(ns))
        assert cnt.data.dtype == np.int64
        assert math.isclose(json.loads(nwb.notes)["dt_seconds"], 0.5)


def test_to_nwb_without_pynwb(
    recorded: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from spikestore.export import to_nwb

    monkeypatch.setitem(sys.modules, "pynwb", None)
    with pytest.raises(ImportError, match=r"spikestore\[nwb\]"):
        to_nwb(recorded[0], tmp_path / "x.nwb")


def test_none_steps_and_tuple_records(tmp_path: Path) -> None:
    """Steps that recorded None have no spikes (trains) and NaN rows (NWB series);
    tuple records give one export per field."""
    path = tmp_path / "gaps.spikes"
    gen = torch.Generator().manual_seed(5)
    spikes, vs, cur = [], [], []
    with spikestore.StoreWriter(path, mode="w") as w:
        for s in range(12):
            x = None if s in (0, 7) else _spikes(gen, (3, 4), 0.5)
            v = None if s == 3 else torch.randn(2, generator=gen)
            pair = (torch.randn(3, generator=gen), _spikes(gen, (3,), 0.5))
            w.append("out", "sn", x)
            w.append("v", "lif", v)
            w.append("pair", "sn", pair)
            spikes.append(np.zeros((3, 4)) if x is None else x.numpy())
            vs.append(np.full(2, np.nan, dtype=np.float32) if v is None else v.numpy())
            cur.append([p.numpy() for p in pair])
    store = spikestore.open(path)
    _same(A.spike_trains(store["out"]["sn"]), _expected_single(np.stack(spikes), 1.0))
    second = np.stack([c[1] for c in cur])
    _same(A.spike_trains(store["pair"]["sn"], field=1), _expected_single(second, 1.0))
    pynwb = pytest.importorskip("pynwb")
    from spikestore.export import to_nwb

    out = tmp_path / "gaps.nwb"
    to_nwb(store, out, dt=0.01)
    with pynwb.NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        series = nwb.processing["spikestore"]
        np.testing.assert_array_equal(series["v.lif"].data[:], np.stack(vs))
        np.testing.assert_array_equal(series["pair.sn.f0"].data[:], np.stack([c[0] for c in cur]))
        units = nwb.units.to_dataframe()
        pair = units[units["monitor"] == "pair"]
        assert list(pair["field"]) == [1, 1, 1]
        for times, exp in zip(pair["spike_times"], _expected_single(second, 0.01), strict=True):
            np.testing.assert_array_equal(np.asarray(times), exp)
        sn = units[units["monitor"] == "out"]
        for times, exp in zip(
            sn["spike_times"], _expected_single(np.stack(spikes), 0.01), strict=True
        ):
            np.testing.assert_array_equal(np.asarray(times), exp)


def test_times_default_to_the_stores_dt(tmp_path: Path) -> None:
    """A store that recorded dt (format 1.5) needs no dt= in a fresh process: spike
    trains, Neo trains and NWB spike times use it, in its unit; without one, times are
    in steps (spike_trains), ms steps (to_neo) and 1 ms steps (to_nwb) as before."""
    pynwb = pytest.importorskip("pynwb")
    pytest.importorskip("neo")
    x = torch.zeros(6, 3)
    x[2, 1] = x[5, 1] = 1
    for name, kw in (("ms", {"dt": 0.5, "time_unit": "ms"}), ("none", {})):
        with spikestore.StoreWriter(tmp_path / name, attrs={"run": name}, **kw) as w:
            w.mark(epoch=0)
            for row in x:
                w.append("output", "sn", row)
    layer = spikestore.open(tmp_path / "ms")["output"]["sn"]
    assert A.spike_trains(layer)[1].tolist() == [1.0, 2.5]  # 0.5 ms a step
    (st,) = export.to_neo(layer, neurons=[1])
    assert st.times.magnitude.tolist() == [1.0, 2.5] and str(st.units.dimensionality) == "ms"
    plain = spikestore.open(tmp_path / "none")["output"]["sn"]
    assert A.spike_trains(plain)[1].tolist() == [2.0, 5.0]
    (st,) = export.to_neo(plain, neurons=[1])
    assert st.times.magnitude.tolist() == [2.0, 5.0] and str(st.units.dimensionality) == "ms"
    for name, want in (("ms", [1e-3, 2.5e-3]), ("none", [2e-3, 5e-3])):
        out = export.to_nwb(tmp_path / name, tmp_path / f"{name}.nwb")
        with pynwb.NWBHDF5IO(out, "r") as io:
            nwb = io.read()
            np.testing.assert_allclose(nwb.units["spike_times"][1], want)
            notes = json.loads(nwb.notes)
        assert notes["attrs"] == {"run": name} and notes["marks"]["marks"][0]["values"] == {
            "epoch": 0
        }


# ------------------------------------------------- the output is never in the store
def _hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (symlinks as their target text)."""
    import hashlib
    import os

    out = {}
    for dirpath, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(dirpath) / name
            if p.is_symlink():
                out[str(p.relative_to(folder))] = "-> " + os.readlink(p)
            elif p.is_file():
                out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def small_store(tmp_path: Path) -> Path:
    path = tmp_path / "S"
    with spikestore.StoreWriter(path) as w:
        for i in range(3):
            w.append("m", "sn", (torch.arange(6) % (i + 2) == 0).float())
            w.append("v", "mem", torch.full((2,), float(i)))
    return path


def test_export_refuses_an_output_inside_the_store(small_store: Path, tmp_path: Path) -> None:
    """``spikestore export S S/zarr.json --overwrite`` wrote HDF5 over the store's root
    metadata and exited 0. Every spelling of a path inside the store (the folder itself,
    "..", a symlinked folder, a symlink to a file in it) is refused in one line with
    exit status 1, and the store is byte for byte as it was."""
    import os
    import subprocess

    pytest.importorskip("pynwb")
    s = small_store
    (tmp_path / "link").symlink_to(s)
    (tmp_path / "to-root.nwb").symlink_to(s / "zarr.json")
    outs = [
        s / "zarr.json",
        s,
        s / "m" / "zarr.json",
        s / "new.nwb",
        s / "no" / "such" / "folder.nwb",
        tmp_path / "S" / ".." / "S" / "zarr.json",
        tmp_path / "link" / "zarr.json",
        tmp_path / "to-root.nwb",
    ]
    before = _hashes(s)
    for out in outs:
        res = subprocess.run(
            [sys.executable, "-m", "spikestore", "export", str(s), str(out), "--overwrite"],
            capture_output=True, text=True, timeout=300,
            cwd=Path(__file__).parents[2], env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )  # fmt: skip
        assert res.returncode == 1, (out, res.stdout, res.stderr)
        err = res.stderr
        assert err.count("\n") == 1 and err.startswith("spikestore: error: "), (out, err)
        assert "inside the store" in err and str(out) in err, err
        assert _hashes(s) == before, out
    assert os.readlink(tmp_path / "to-root.nwb") == str(s / "zarr.json")


def test_to_nwb_refuses_an_output_inside_the_store(small_store: Path, tmp_path: Path) -> None:
    """The Python API refuses the same, from a path or a reader, and inside the ranked
    store around a rank's folder (its root zarr.json)."""
    import shutil

    pytest.importorskip("pynwb")
    s = small_store
    before = _hashes(s)
    for source in (s, spikestore.open(s), f"{s}/../S/."):
        for out in (s / "zarr.json", s / "v" / "mem" / "x.nwb"):
            with pytest.raises(ValueError, match="inside the store"):
                export.to_nwb(source, out, overwrite=True)
    assert _hashes(s) == before
    ranked = tmp_path / "ranked"
    shutil.copytree(Path(__file__).parents[1] / "fixtures" / "store_v1.4_ranked", ranked)
    before = _hashes(ranked)
    rank = spikestore.open(ranked).rank(0)
    with pytest.raises(ValueError, match="inside the store"):
        export.to_nwb(rank, ranked / "zarr.json", overwrite=True)
    assert _hashes(ranked) == before


def test_to_nwb_replaces_a_link_and_never_writes_through_it(
    small_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HDF5 truncates the file it creates: an output hard-linked to the store's
    zarr.json overwrote it, and a failed export left a truncated file where the old
    one was. The file is written beside the output and renamed over it."""
    import os

    pynwb = pytest.importorskip("pynwb")
    s = small_store
    before = _hashes(s)
    out = tmp_path / "out.nwb"
    os.link(s / "zarr.json", out)
    export.to_nwb(s, out, overwrite=True)
    assert _hashes(s) == before
    with pynwb.NWBHDF5IO(str(out), "r") as io:
        assert len(io.read().units) == 6
    kept = out.read_bytes()

    def fail(self: object, *args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(pynwb.NWBHDF5IO, "write", fail)
    with pytest.raises(RuntimeError, match="disk on fire"):
        export.to_nwb(s, out, overwrite=True)
    assert out.read_bytes() == kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["S", "out.nwb"]


def test_export_into_a_missing_folder_names_that_folder(
    small_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The output's missing folder is named, with what to do about it, not advice to
    give the folder of a store (the store was fine)."""
    from spikestore.cli import main

    pytest.importorskip("pynwb")
    missing = tmp_path / "nodir"
    assert main(["export", str(small_store), str(missing / "out.nwb")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"spikestore: error: {missing}: "), err
    assert "create that folder" in err and "spikestore store" not in err, err
    with pytest.raises(FileNotFoundError) as info:
        export.to_nwb(small_store, missing / "out.nwb")
    assert info.value.filename == str(missing)
    assert not missing.exists()
