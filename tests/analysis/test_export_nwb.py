"""NWB exports that validate and are complete (issue 24, item 1): every layer exported
or named in a warning, mixed batch sizes exported per shape, records of more than 3
axes per time point flattened, and memory that does not grow with the run."""

from __future__ import annotations

import json
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import spikestore
from spikestore import _nwb
from spikestore.cli import main
from spikestore.export import ExportWarning, to_nwb

pynwb = pytest.importorskip("pynwb")


def _validate(path: Path) -> None:
    errors = pynwb.validate(path=str(path))
    assert errors == [], errors


def _read(path: Path) -> tuple[dict, dict, object]:
    """The series (name -> (data, rate, starting_time, timestamps, description)), the
    notes and the units dataframe (None without units) of an NWB file."""
    with pynwb.NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        out = {}
        if "spikestore" in nwb.processing:
            for name, ts in nwb.processing["spikestore"].data_interfaces.items():
                stamps = None if ts.timestamps is None else np.asarray(ts.timestamps[:])
                out[name] = (ts.data[:], ts.rate, ts.starting_time, stamps, ts.description)
        units = None if nwb.units is None else nwb.units.to_dataframe()
        return out, json.loads(nwb.notes), units


# ------------------------------------------------------- >4-D series are invalid NWB
def test_five_dimensional_series_are_flattened_and_validate(tmp_path: Path) -> None:
    """A float layer of a multi-step conv net ([T, B, C, H, W]) was written as a 5-D
    TimeSeries, which pynwb's validator rejects (at most 4 dimensions): it is now
    ``(rows, B * C * H * W)``, its description naming the shape and dims."""
    path = tmp_path / "conv.spikes"
    gen = torch.Generator().manual_seed(0)
    recs = []
    with spikestore.StoreWriter(path) as w:
        for _ in range(4):
            v = torch.randn(3, 2, 4, 5, 5, generator=gen)
            w.append("grad", "conv", v, time_axis=0, dims=("time", "batch", "channel", "y", "x"))
            w.append("v", "fc", torch.randn(3, 2, 7, generator=gen), time_axis=0)
            recs.append(v.numpy())
    out = tmp_path / "conv.nwb"
    to_nwb(path, out, dt=1e-3)
    _validate(out)
    series, notes, _ = _read(out)
    data, rate, start, stamps, desc = series["grad.conv"]
    assert data.shape == (4 * 3, 2 * 4 * 5 * 5)
    np.testing.assert_array_equal(data, np.stack(recs).reshape(12, -1))
    assert rate == 1000.0 and start == 0.0 and stamps is None
    assert "record shape [3, 2, 4, 5, 5]" in desc and "time axis 0" in desc
    assert "dims time, batch, channel, y, x" in desc and "flattened" in desc
    assert series["v.fc"][0].shape == (12, 2, 7)  # 3-D: as it was
    (grad,) = [e for e in notes["layers"] if e["monitor"] == "grad"]
    assert grad["flattened"] and grad["record_shape"] == [3, 2, 4, 5, 5]


# ------------------------------------------------------------ mixed batch sizes
def test_mixed_batch_sizes_are_exported_per_shape(tmp_path: Path) -> None:
    """A float layer whose eval steps had another batch size was left out of the file
    (named only in its notes): each shape is now a series of its own (``.shape<k>``),
    with its steps' times (timestamps where they are not contiguous), and spike
    layers get units per shape."""
    path = tmp_path / "mixed.spikes"
    gen = torch.Generator().manual_seed(1)
    batches = [4, 4, 2, 2, 4, 2]
    vs, spikes = [], []
    with spikestore.StoreWriter(path) as w:
        for b in batches:
            v = torch.randn(3, b, 5, generator=gen)
            s = (torch.rand(b, 6, generator=gen) < 0.4).float()
            w.append("v_seq", "sn", v, time_axis=0)
            w.append("output", "sn", s)
            vs.append(v.numpy())
            spikes.append(s.numpy())
    out = tmp_path / "mixed.nwb"
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExportWarning)
        to_nwb(path, out, dt=0.5)
    _validate(out)
    series, notes, units = _read(out)
    assert sorted(series) == ["v_seq.sn.shape0", "v_seq.sn.shape1"]
    assert notes["skipped"] == []
    for name, b, steps in (("v_seq.sn.shape0", 4, [0, 1, 4]), ("v_seq.sn.shape1", 2, [2, 3, 5])):
        data, _, _, stamps, desc = series[name]
        want = np.concatenate([vs[s] for s in steps])  # [T, b, 5] per step, rows s * T + t
        np.testing.assert_array_equal(data, want)
        np.testing.assert_array_equal(stamps, [(s * 3 + t) * 0.5 for s in steps for t in range(3)])
        assert f"record shape [3, {b}, 5]" in desc and "steps" in desc
    # units: neurons of each shape, spike times of that shape's steps
    assert len(units) == 4 * 6 + 2 * 6
    for shape, steps in (("(4, 6)", [0, 1, 4]), ("(2, 6)", [2, 3, 5])):
        rows = units[units["record_shape"] == shape]
        assert len(rows) == int(shape[1]) * 6
        for n, times in zip(rows["neuron"], rows["spike_times"], strict=True):
            want = [s * 0.5 for s in steps if spikes[s].reshape(-1)[n]]
            np.testing.assert_array_equal(np.asarray(times), want)


# ----------------------------------------------------- left out: warned, not hidden
def _awkward_store(path: Path) -> None:
    with spikestore.StoreWriter(path) as w:
        for _ in range(3):
            w.append("v", "ok", torch.randn(2))
            w.append("v", "nothing", None)
            w.append("v", "empty", torch.zeros(0, 3))


def test_layers_left_out_are_warned_about(tmp_path: Path) -> None:
    """Layers that cannot be exported were listed only inside the file's notes; each
    is now an ExportWarning naming the layer and the reason."""
    path = tmp_path / "awkward.spikes"
    _awkward_store(path)
    out = tmp_path / "awkward.nwb"
    with pytest.warns(ExportWarning) as caught:
        to_nwb(path, out)
    text = sorted(str(w.message) for w in caught if w.category is ExportWarning)
    assert len(text) == 2, text
    assert "v/empty" in text[0] and "[0, 3]" in text[0] and "hold no values" in text[0]
    assert "v/nothing" in text[1] and "recorded None" in text[1]
    assert all(str(out) in t for t in text)
    _validate(out)
    series, notes, _ = _read(out)
    assert list(series) == ["v.ok"]
    assert sorted(s["layer"] for s in notes["skipped"]) == ["empty", "nothing"]
    assert all(s["reason"] for s in notes["skipped"])


def test_the_command_line_prints_each_layer_left_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``spikestore export`` printed only ``wrote OUT``: it now prints a warning line
    per layer left out on stderr, and says how many in its last line."""
    path = tmp_path / "awkward.spikes"
    _awkward_store(path)
    out = tmp_path / "awkward.nwb"
    assert main(["export", str(path), str(out)]) == 0
    cap = capsys.readouterr()
    lines = cap.err.splitlines()
    assert len(lines) == 2 and all(x.startswith("spikestore: warning: v/") for x in lines), lines
    assert cap.out == f"wrote {out} (2 left out: see the warnings above)\n"


# --------------------------------------------------------------- bounded memory
def _export_peak(path: Path, out: Path) -> int:
    """The most memory (bytes) Python and NumPy held at once during an export, from
    tracemalloc (NumPy reports its arrays' data to it)."""
    tracemalloc.start()
    try:
        to_nwb(path, out, dt=1e-3)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_export_memory_does_not_grow_with_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Export gathered every spike time of every layer in memory (2.37 GB for the
    spikes of a 2,040-step run): four times the steps now take about the same peak
    memory, as spike times go through bucket files a block at a time and series are
    written a few chunks at a time."""
    monkeypatch.setattr(_nwb, "SPIKE_BLOCK", 1 << 16)
    monkeypatch.setattr(_nwb, "CHUNK_BYTES", 1 << 16)
    monkeypatch.setattr(_nwb, "BUFFER_BYTES", 1 << 18)
    gen = torch.Generator().manual_seed(2)
    for steps in (100, 400):
        with spikestore.StoreWriter(tmp_path / f"run{steps}.spikes") as w:
            for _ in range(steps):
                w.append("output", "sn", (torch.rand(4, 8, 256, generator=gen) < 0.3).float(),
                         time_axis=0)  # fmt: skip
                w.append("v", "sn", torch.randn(4, 8, 64, generator=gen), time_axis=0)
    to_nwb(tmp_path / "run100.spikes", tmp_path / "warm.nwb")  # pynwb's one-time setup
    peak = {n: _export_peak(tmp_path / f"run{n}.spikes", tmp_path / f"{n}.nwb") for n in (100, 400)}
    assert not list(tmp_path.glob(".spikestore-export-*"))  # the scratch files are gone
    # 300 more steps hold about 740k more spikes (17 MiB as the events spike_trains
    # gathered: the old export's peak went from 23 to 77 MiB); what still grows here
    # is the reader's read of the one shard these steps share (2048 steps a shard).
    assert peak[400] < 1.5 * peak[100], peak


# ---------------------------------------- the whole job: SpikingJelly conv training
def _conv_run(path: Path) -> None:
    """A multi-step conv SNN (SpikingJelly LIF, step_mode 'm') trained on batches of 5
    and evaluated on batches of 3, recording spikes, v_seq and output gradients."""
    pytest.importorskip("spikingjelly")
    from spikingjelly.activation_based import functional, layer, neuron, surrogate
    from torch import nn

    from spikestore.monitor import AttributeMonitor, GradOutputMonitor, OutputMonitor

    torch.manual_seed(0)
    net = nn.Sequential(
        layer.Conv2d(1, 4, 3, padding=1),
        neuron.LIFNode(store_v_seq=True, surrogate_function=surrogate.ATan()),
        layer.Conv2d(4, 4, 3, padding=1),
        neuron.LIFNode(store_v_seq=True, surrogate_function=surrogate.ATan()),
        layer.Flatten(),
        layer.Linear(4 * 6 * 6, 3),
        neuron.LIFNode(store_v_seq=True, surrogate_function=surrogate.ATan()),
    )
    functional.set_step_mode(net, "m")
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with spikestore.StoreWriter(path, dt=1e-3, time_unit="s") as w:
        mons = [
            OutputMonitor(net, neuron.LIFNode, store=w),
            AttributeMonitor("v_seq", False, net, neuron.LIFNode, store=w),
            GradOutputMonitor(net, neuron.LIFNode, store=w),
        ]
        for _ in range(3):
            out = net((torch.rand(4, 5, 1, 6, 6) < 0.5).float())
            (out * torch.randn(out.shape)).sum().backward()  # float gradients everywhere
            opt.step()
            opt.zero_grad()
            functional.reset_net(net)
        with torch.no_grad():
            for _ in range(2):
                net((torch.rand(4, 3, 1, 6, 6) < 0.5).float())
                functional.reset_net(net)
        for m in mons:
            m.close()


def test_a_spikingjelly_conv_run_exports_complete_and_valid(tmp_path: Path) -> None:
    """Spikes, v_seq and gradients of a multi-step conv run with eval batches of
    another size: every layer is in the file, nothing is left out, and pynwb's
    validator accepts it."""
    path = tmp_path / "train.spikes"
    _conv_run(path)
    out = tmp_path / "train.nwb"
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExportWarning)
        to_nwb(path, out)
    _validate(out)
    series, notes, units = _read(out)
    assert notes["skipped"] == []
    store = spikestore.open(path)
    exported = {(e["monitor"], e["layer"]) for e in notes["layers"]}
    assert exported == {(m, name) for m in store for name in store[m]}
    for name in ("1", "3", "6"):  # v_seq: train and eval shapes
        train, evals = series[f"v_seq.{name}.shape0"][0], series[f"v_seq.{name}.shape1"][0]
        assert len(train) == 3 * 4 and len(evals) == 2 * 4
        assert series[f"v_seq.{name}.shape1"][2] == 3 * 4 * 1e-3  # starts at step 3
    v = spikestore.open(path)["v_seq"]["3"]
    np.testing.assert_array_equal(
        series["v_seq.3.shape1"][0], v[3:5].numpy().reshape(2 * 4, 3 * 4 * 6 * 6)
    )
    assert series["v_seq.3.shape0"][0].shape == (12, 5 * 4 * 6 * 6)  # flattened 5-D
    for name in ("1", "3", "6"):  # gradients: train steps only, 5-D ones flattened
        grad = series[f"grad_output.{name}"][0]
        assert grad.shape[0] == 3 * 4 and grad.ndim <= 4
    spiking = units[units["monitor"] == "output"]
    assert set(spiking["record_shape"]) == {"(5, 4, 6, 6)", "(3, 4, 6, 6)", "(5, 3)", "(3, 3)"}
    assert len(spiking) == (5 + 3) * (4 * 6 * 6 * 2 + 3)


def test_scratch_rows_are_read_back_in_order(tmp_path: Path) -> None:
    """The Units table's spike times come back in unit order, across several hdmf
    chunks, bucket files, and sorting passes over a bucket larger than a sort."""
    path = tmp_path / "s.spikes"
    gen = torch.Generator().manual_seed(4)
    recs = []
    with spikestore.StoreWriter(path) as w:
        for _ in range(50):
            x = (torch.rand(40, generator=gen) < 0.5).float()
            w.append("output", "sn", x)
            recs.append(x.numpy())
    out = tmp_path / "s.nwb"
    mp = pytest.MonkeyPatch()
    with mp.context() as m:
        m.setattr(_nwb, "CHUNK_BYTES", 64)
        m.setattr(_nwb, "BUFFER_BYTES", 256)
        m.setattr(_nwb, "SPIKE_BLOCK", 300)  # blocks of 7 steps, sorts of <= 300 events
        m.setattr(_nwb, "BUCKETS", 3)  # buckets of 14 neurons, about 350 events each
        to_nwb(path, out, dt=1.0)
    _validate(out)
    _, _, units = _read(out)
    x = np.stack(recs)
    for n, times in zip(units["neuron"], units["spike_times"], strict=True):
        np.testing.assert_array_equal(np.asarray(times), np.nonzero(x[:, n])[0])


# ------------------------------------------------------------------------- runs
def test_each_runs_own_attrs_go_into_the_notes(tmp_path: Path) -> None:
    """Two runs (mode="a") with attrs of their own: the notes keep both apart, with
    where each began; the session starts when the first run did."""
    from datetime import datetime

    path = tmp_path / "runs.spikes"
    with spikestore.StoreWriter(path, attrs={"seed": 0}) as w:
        for _ in range(3):
            w.append("out", "a", torch.ones(4))
    with spikestore.StoreWriter(path, mode="a", attrs={"seed": 1}) as w:
        w.append("out", "a", torch.zeros(4))
    out = tmp_path / "runs.nwb"
    to_nwb(path, out, dt=1e-3)
    _validate(out)
    _, notes, _ = _read(out)
    assert [(r["index"], r["attrs"], r["first"], r["marks_from"]) for r in notes["runs"]] == [
        (0, {"seed": 0}, {"out": {"a": 0}}, 0),
        (1, {"seed": 1}, {"out": {"a": 3}}, 0),
    ]
    started = spikestore.open(path).runs[0].started
    with pynwb.NWBHDF5IO(str(out), "r") as io:
        assert io.read().session_start_time == datetime.fromisoformat(started)


# ------------------------------------------------------------------------ names
def test_names_nwb_refuses_and_names_that_meet_are_all_exported(tmp_path: Path) -> None:
    """A ``:`` or ``/`` in a name made the whole export fail (pynwb refuses both), and
    monitor ``a.b`` layer ``c`` met monitor ``a`` layer ``b.c`` ("already exists"): every
    layer is now exported, under a name NWB takes, and the notes say which is which."""
    path = tmp_path / "names.spikes"
    with spikestore.StoreWriter(path) as w:
        for i in range(3):
            w.append("probe", "lif:v", torch.full((4,), float(i)))
            w.append("probe", "blk/lif", torch.full((4,), 10.0 + i))
            w.append("a.b", "c", torch.full((4,), 20.0 + i))
            w.append("a", "b.c", torch.full((4,), 30.0 + i))
    out = tmp_path / "names.nwb"
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExportWarning)
        to_nwb(path, out, dt=1e-3)
    _validate(out)
    series, notes, _ = _read(out)
    by_layer = {(e["monitor"], e["layer"]): e["name"] for e in notes["layers"]}
    assert len(set(by_layer.values())) == 4
    for (mon, lay), name in by_layer.items():
        np.testing.assert_array_equal(series[name][0], spikestore.open(path)[mon][lay][:].numpy())
