"""Self-describing runs (format 1.5): layer order, dims, units, dt, run attributes,
marks, nested records (Norse's namedtuple states) and monitors' time_axis=/dims=."""

from __future__ import annotations

import collections
import dataclasses
import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import spikestore
from spikestore import RecordError
from spikestore.monitor import AttributeMonitor, OutputMonitor, default_dims, module_time_axis
from spikestore.testing import bits_equal

State = collections.namedtuple("LIFFeedForwardState", ["v", "i"])


class SNN(nn.Module):
    """Stands in for ``norse.torch.module.snn.SNN`` (Norse is not installed in CI)."""


SNN.__module__ = "norse.torch.module.snn"


class SNNCell(nn.Module):
    pass


SNNCell.__module__ = "norse.torch.module.snn"


class LIF(SNN):
    """Norse's ``LIF``: ``[T, B, ...]`` in, ``(spikes, LIFFeedForwardState(v, i))`` out."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, State]:
        # As Norse's: spikes of every time step, the state after the last one.
        return (x > 0.5).float(), State(x[-1] * 0.5, x[-1] * 2)


class LIFCell(SNNCell):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, State]:
        return (x > 0.5).float(), State(x, x)


def test_norse_namedtuple_outputs_are_recorded_field_by_field(tmp_path):
    net = nn.Sequential(nn.Linear(4, 6), LIF())
    xs = [torch.rand(5, 2, 4) for _ in range(3)]
    with OutputMonitor(net, LIF, store=tmp_path / "s") as mon:
        outs = [net(x) for x in xs]
        rec = mon.records[1]
    assert type(rec[1]).__name__ == "LIFFeedForwardState" and rec[1]._fields == ("v", "i")
    layer = spikestore.open(tmp_path / "s")["output"]["1"]
    assert layer.time_axis == 0 and layer.dims == ("time", "batch", "neuron")
    assert layer.field_names == ["0", "1.v", "1.i"]
    assert layer.field_index("v") == 1 and layer.field_index("1.i") == 2
    for got, want in zip(layer, outs, strict=True):
        assert bits_equal(got[0], want[0])
        assert bits_equal(got[1].v, want[1].v) and bits_equal(got[1].i, want[1].i)
    # The state is [B, N]: its own dims, and no time axis in analysis.
    assert layer.field_dims("v") == ("batch", "neuron") and layer.field_dims(0) == layer.dims
    from spikestore import analysis

    assert analysis.to_xarray(layer, field="v").dims == ("step", "batch", "neuron")
    v = analysis.traces(layer, [(1, 5)], field="1.v")
    assert v.shape == (3, 1) and v[:, 0].tolist() == [float(o[1].v[1, 5].detach()) for o in outs]
    assert analysis.to_xarray(layer).dims == ("step", "time", "batch", "neuron")
    with pytest.raises(KeyError, match=r"layer '1': 'w' is not a field; fields: \['0', '1.v'"):
        layer.field_index("w")
    with pytest.raises(IndexError, match=r"layer '1' has 3 field\(s\) \(0, 1.v, 1.i\)"):
        layer.field(3)


def test_norse_time_axis_and_cells():
    assert module_time_axis(LIF()) == 0 and module_time_axis(LIFCell()) is None
    assert module_time_axis(nn.Linear(2, 2)) is None
    assert default_dims(5, 0) == ("time", "batch", "channel", "y", "x")
    assert default_dims(4, None) == ("batch", "channel", "y", "x")
    assert default_dims(2, None) == ("batch", "neuron") and default_dims(1, None) is None
    assert default_dims(3, 1) is None


@dataclasses.dataclass
class Out:
    spikes: torch.Tensor
    extra: dict


def test_dataclasses_dicts_and_nested_tuples_read_back_as_recorded(tmp_path):
    path = tmp_path / "s"
    recs = [Out(torch.ones(2), {"a": torch.zeros(3), "b": 1.5}) for _ in range(2)]
    with spikestore.StoreWriter(path) as w:
        for r in recs:
            w.append("m", "dc", r)
            w.append("m", "nest", (torch.ones(1), [torch.zeros(2), None]))
        with pytest.raises(RecordError, match=r"layer 'nest', step 2: this layer records"):
            w.append("m", "nest", (torch.ones(1), torch.zeros(2), None))
    store = spikestore.open(path)
    got = store["m"]["dc"][1]
    assert type(got).__name__ == "Out" and got._fields == ("spikes", "extra")
    assert bits_equal(got.spikes, torch.ones(2)) and got.extra["b"] == 1.5
    assert store["m"]["dc"].field_names == ["spikes", "extra.a", "extra.b"]
    nest = store["m"]["nest"][0]
    assert isinstance(nest, tuple) and isinstance(nest[1], list) and nest[1][1] is None
    assert len(store["m"]["nest"]) == 2  # the refused record left the layer as it was


def test_flat_tuples_have_no_tree(tmp_path):
    """snnTorch's (spk, mem) stays a plain 1.4 tuple layer (no tree key)."""
    with spikestore.StoreWriter(tmp_path / "s") as w:
        w.append("m", "lif", (torch.ones(2), torch.zeros(2)))
    meta = json.loads((tmp_path / "s" / "m" / "lif" / "zarr.json").read_text())
    assert "tree" not in meta["attributes"]["spikestore"]


def test_layers_come_back_in_call_order_not_by_name(tmp_path):
    net = nn.Sequential(*[nn.Identity() for _ in range(12)])
    with OutputMonitor(net, nn.Identity, store=tmp_path / "s") as mon:
        net(torch.ones(2, 3))
        assert mon.monitored_layers[:3] == ["0", "1", "2"]
    names = spikestore.open(tmp_path / "s")["output"].layers
    assert names == [str(i) for i in range(12)]  # not "0, 1, 10, 11, 2, ..."
    assert [lay.order for lay in spikestore.open(tmp_path / "s")["output"].values()] == list(
        range(12)
    )


def test_run_attributes_dt_and_units_are_stored(tmp_path):
    path = tmp_path / "s"
    with spikestore.StoreWriter(path, attrs={"lr": 0.01, "net": {"T": 4}}, dt=0.5) as w:
        w.append("v", "lif", torch.zeros(2, 3), units="mV", dims=("batch", "neuron"))
        w.set_attrs(epochs=3)
        assert w.attrs == {"lr": 0.01, "net": {"T": 4}, "epochs": 3}
        with pytest.raises(TypeError, match="JSON"):
            w.set_attrs(model=nn.Linear(1, 1))
        with pytest.raises(RecordError, match=r"layer 'x', step 0: dims \['a'\] name 1 axes"):
            w.append("v", "x", torch.zeros(2, 3), dims=("a",))
    store = spikestore.open(path)
    assert store.attrs == {"lr": 0.01, "net": {"T": 4}, "epochs": 3}
    assert store.dt == 0.5 and store.time_unit == "s"  # the unit dt defaults to
    layer = store["v"]["lif"]
    assert layer.units == "mV" and layer.dims == ("batch", "neuron") and layer.store is store
    # Plain Zarr (and any JSON reader) sees the same run description.
    root = json.loads((path / "zarr.json").read_text())["attributes"]
    assert root["spikestore_run"]["attrs"]["epochs"] == 3
    # Appending keeps them; another dt would mislabel the steps and is refused.
    with pytest.raises(ValueError, match=r"recorded with dt=0\.5"):
        spikestore.StoreWriter(path, mode="a", dt=1.0)
    with spikestore.StoreWriter(path, mode="a", attrs={"resumed": True}) as w:
        w.append("v", "lif", torch.ones(2, 3))
    store = spikestore.open(path)
    assert store.attrs["resumed"] is True and store.attrs["lr"] == 0.01 and store.dt == 0.5
    assert store["v"]["lif"].units == "mV" and len(store["v"]["lif"]) == 2


def test_marks_apply_per_layer_from_the_next_step(tmp_path):
    path = tmp_path / "s"
    with spikestore.StoreWriter(path) as w:
        w.append("out", "a", torch.zeros(2))  # before any mark
        w.mark(epoch=0, phase="train")
        for s in range(4):
            if s == 2:
                w.mark(phase="eval")
            w.append("out", "a", torch.zeros(2))
            w.append("out", "b", torch.zeros(2))
        w.mark(epoch=torch.tensor(1))  # 0-d tensors are converted
        w.append("out", "c", torch.zeros(2))
        with pytest.raises(TypeError, match="str, int, float, bool or None"):
            w.mark(label=[1, 2])
        with pytest.raises(ValueError, match="finite"):
            w.mark(loss=float("nan"))
    out = spikestore.open(path)["out"]
    a, b, c = (out[n].marks() for n in "abc")
    assert a["epoch"].tolist() == [None, 0, 0, 0, 0]
    assert a["phase"].tolist() == [None, "train", "train", "eval", "eval"]
    assert b["epoch"].tolist() == [0, 0, 0, 0] and b["phase"].tolist()[1:3] == ["train", "eval"]
    assert c["epoch"].tolist() == [1] and c["phase"].tolist() == ["eval"]  # first recorded later


def test_marks_are_a_runs_own(tmp_path):
    """Each opening of a writer is a run whose steps start with no mark values: a mark
    of one run never labels another's steps (format 1.7)."""
    path = tmp_path / "s"
    with spikestore.StoreWriter(path) as w:
        w.mark(epoch=0)
        for _ in range(3):
            w.append("out", "a", torch.zeros(2))
            w.append("out", "b", torch.zeros(2))
    with spikestore.StoreWriter(path, mode="a") as w:
        w.mark(epoch=1)  # b is not recorded in this run
        w.append("out", "a", torch.zeros(2))
    with spikestore.StoreWriter(path, mode="a") as w:
        w.append("out", "b", torch.zeros(2))
        w.append("out", "a", torch.zeros(2))
    out = spikestore.open(path)["out"]
    assert out["a"].marks()["epoch"].tolist() == [0, 0, 0, 1, None]
    assert out["b"].marks()["epoch"].tolist() == [0, 0, 0, None]
    assert out["a"].runs().tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 0, 0]]
    assert out["b"].runs().tolist() == [[0, 0, 0, 2], [0, 1, 2, 0]]


def test_a_mark_per_step_is_written_with_the_commits(tmp_path):
    """Marks are posted to the writer thread, not waited for: a mark per step costs no
    round trip, and a reader sees them once the steps they name are committed."""
    path = tmp_path / "s"
    with spikestore.StoreWriter(path, flush_interval=3600) as w:
        for s in range(300):
            w.mark(label=s % 10)
            w.append("out", "a", torch.zeros(8))
        w.flush()
        assert spikestore.open(path)["out"]["a"].marks()["label"].tolist() == [
            s % 10 for s in range(300)
        ]


def test_monitor_time_axis_and_dims_for_any_module(tmp_path):
    class Seq(nn.Module):  # a user's own multi-step module, [T, B, N]
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x > 0.5).float()

    net = nn.Sequential(nn.Linear(3, 4), Seq())
    with OutputMonitor(net, Seq, store=tmp_path / "a", time_axis=0) as mon:
        net(torch.rand(6, 2, 3))
        mon.mark(epoch=2)
        assert mon.writer.steps("output", "1") == 1
    layer = spikestore.open(tmp_path / "a")["output"]["1"]
    assert layer.time_axis == 0 and layer.dims == ("time", "batch", "neuron")
    with OutputMonitor(net, Seq, store=tmp_path / "b", dims=("t", "b", "n")) as mon:
        net(torch.rand(6, 2, 3))
    layer = spikestore.open(tmp_path / "b")["output"]["1"]
    assert layer.time_axis is None and layer.dims == ("t", "b", "n")
    with OutputMonitor(net, nn.Linear, store=tmp_path / "c", dims=None) as mon:
        net(torch.rand(2, 3))
    assert spikestore.open(tmp_path / "c")["output"]["0"].dims is None
    with pytest.raises(ValueError, match="time_axis must be"):
        OutputMonitor(net, Seq, time_axis="first")


def test_attribute_monitor_names_dims_of_neuron_state_only(tmp_path):
    class Neuron(nn.Module):
        step_mode = "s"

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.v = x * 0.5
            return x

    net = nn.Sequential(nn.BatchNorm1d(3), Neuron())
    a = AttributeMonitor("v", False, net, Neuron, store=tmp_path / "v")
    b = AttributeMonitor("running_mean", False, net, nn.BatchNorm1d, store=tmp_path / "bn")
    net(torch.rand(4, 3))
    a.close()
    b.close()
    assert spikestore.open(tmp_path / "v")["v"]["1"].dims == ("batch", "neuron")
    assert spikestore.open(tmp_path / "bn")["running_mean"]["0"].dims is None


def test_an_instance_that_matches_nothing_warns(tmp_path):
    net = nn.Sequential(nn.Linear(2, 2))
    with pytest.warns(UserWarning, match=r"no module of Sequential matches instance='fc\*'"):
        OutputMonitor(net, "fc*", store=tmp_path / "s").close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        OutputMonitor(net, nn.Linear, store=tmp_path / "t").close()


def test_a_mark_hands_the_writer_thread_only_what_changed(tmp_path):
    """Each mark used to hand the writer thread a copy of the whole run description:
    O(marks) per mark, so a mark per step was quadratic (bench_records ran for minutes
    and grew to 1.9 GB at 20,000 marks). Now a mark posts only its own entry."""
    sizes = []
    with spikestore.StoreWriter(tmp_path / "s", flush_interval=3600) as w:
        real = w._sink.change_run

        def spy(attrs=None, mark=None):
            sizes.append(len(json.dumps([attrs, mark])))
            real(attrs=attrs, mark=mark)

        w._sink.change_run = spy
        for s in range(500):
            w.append("out", "a", torch.zeros(2))
            w.mark(label=s % 10)
    assert len(sizes) == 500 and max(sizes) <= 2 * sizes[1]
    assert spikestore.open(tmp_path / "s")["out"]["a"].marks()["label"].tolist() == [None] + [
        s % 10 for s in range(499)
    ]


def test_marks_between_queued_records_do_not_split_the_commit(tmp_path):
    """A writer that has fallen behind takes every queued record and commits once; a
    mark per step used to stop that drain at every mark, so it committed after every
    step, fell further behind, and closing took minutes (bench_records: 55x slower
    with a mark per step at 2,000 steps of 10 layers)."""
    import threading

    with spikestore.StoreWriter(tmp_path / "s", flush_interval=0) as w:
        # Step 0 first: the first mark waits for the writer thread (it lists the layers).
        w.mark(step=0)
        for k in range(3):
            w.append("out", f"l{k}", torch.zeros(4))
        w.flush()
        calls = []
        real = w._sink.write_all

        def spy(*a, **k):
            calls.append(1)
            real(*a, **k)

        w._sink.write_all = spy
        gate = threading.Event()
        # The writer thread is busy until every record is queued: it has fallen behind.
        w._worker.post(lambda: gate.wait(60))
        for s in range(1, 200):
            w.mark(step=s)
            for k in range(3):
                w.append("out", f"l{k}", torch.zeros(4))
        gate.set()
        w.flush()
        assert len(calls) <= 2, len(calls)
    assert spikestore.open(tmp_path / "s")["out"]["l2"].marks()["step"].tolist() == list(
        range(200)
    )


def test_committed_steps_never_carry_an_older_marks_values(tmp_path, monkeypatch):
    """The run description was written after the steps it names: killed in between, a
    store had committed steps read back with the previous mark's values (a whole
    appended epoch labelled with the last epoch of the run before). At every commit
    point on disk, every committed step must carry the mark made just before it."""
    from spikestore import _commit

    path = tmp_path / "s"
    checked = []
    real = _commit.FieldWriter.commit

    def commit_then_check(self, *args, **kwargs):
        real(self, *args, **kwargs)
        store = spikestore.open(path)
        for name in ("a", "b"):
            if "out" in store and name in store["out"]:
                layer = store["out"][name]
                n = len(layer)
                got = layer.marks().get("label", np.full(n, None, dtype=object))
                assert got.tolist() == list(range(n)), (name, n)  # step s marked label=s
                checked.append(n)

    monkeypatch.setattr(_commit.FieldWriter, "commit", commit_then_check)
    for mode in (None, "a"):  # a first run, then an appended one
        with spikestore.StoreWriter(path, mode=mode, flush_interval=0.01) as w:
            first = w.steps("out", "a")
            for s in range(first, first + 150):
                w.mark(label=s)
                w.append("out", "a", torch.zeros(64))
                w.append("out", "b", torch.zeros(2, 8))
    assert max(checked) == 300


@dataclasses.dataclass
class Hidden:
    spikes: torch.Tensor
    _hidden: torch.Tensor


def test_names_a_namedtuple_cannot_hold_read_back_as_a_dict(tmp_path):
    """namedtuple(rename=True) turned a dataclass field "_hidden" into "_1", so the record
    disagreed with field_names; such records come back as dicts with the names kept."""
    with spikestore.StoreWriter(tmp_path / "s") as w:
        w.append("m", "h", Hidden(torch.ones(2), torch.zeros(2)))
        w.append("m", "dup", {"a.b": torch.ones(1), "a": {"b": torch.zeros(1)}})
        w.append("m", "kw", {"class": torch.ones(1), "ok": torch.ones(1)})
    store = spikestore.open(tmp_path / "s")
    got = store["m"]["h"][0]
    assert isinstance(got, dict) and list(got) == ["spikes", "_hidden"]
    assert store["m"]["h"].field_names == ["spikes", "_hidden"]
    assert list(store["m"]["kw"][0]) == ["class", "ok"]
    dup = store["m"]["dup"]
    assert dup.field_names == ["a.b", "a.b"]
    with pytest.raises(KeyError, match=r"'a.b' names fields \[0, 1\]; pass the field's number"):
        dup.field_index("a.b")


def test_metadata_nested_deeper_than_python_parses_is_a_read_error(tmp_path):
    """A layer whose metadata is nested past what Python parses is damaged: left out of
    its monitor, and a clear error when asked for (it raised RecursionError once)."""
    path = tmp_path / "s"
    with spikestore.StoreWriter(path) as w:
        w.append("m", "l", torch.ones(1))
    meta = path / "m" / "l" / "zarr.json"
    doc = json.loads(meta.read_text())
    text = json.dumps(doc)[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    meta.write_text(text)
    with pytest.warns(UserWarning, match="malformed metadata"):
        monitor = spikestore.open(path)["m"]
        assert monitor.layers == []
    with pytest.raises(spikestore.ReadError, match=r"damaged.*malformed metadata"):
        monitor["l"]


def test_recent_copies_are_not_kept_when_the_store_rounds_floats(tmp_path):
    """With precision=, the store holds rounded floats: a record read first from the
    monitor's exact copy and later (once evicted) from the store changed value."""
    net = nn.Sequential(nn.Identity(), nn.Flatten(0))
    writer = spikestore.StoreWriter(tmp_path / "s", precision=3)
    with OutputMonitor(net, nn.Identity, store=writer, name="f") as mon, OutputMonitor(
        net, nn.Flatten, lambda x: x.long(), store=writer, name="i"
    ) as ints:
        x = torch.tensor([1.2345678])
        net(x)
        assert not mon._recent and list(ints._recent) == [(0, 0)]  # integers are exact
        assert mon.records[0].item() != x.item()  # what the store holds, every time
    writer.close()


def test_a_mark_lists_only_the_layers_recorded_since_the_previous_one(tmp_path):
    """Each mark held one integer for every layer the store ever had: 200 layers of an
    earlier run, never touched again, added 3.6 KB to the root's zarr.json a mark."""
    path = tmp_path / "s"
    with spikestore.StoreWriter(path) as w:
        w.mark(run=0)
        for k in range(50):
            w.append("out", f"old{k}", torch.zeros(2))
    with spikestore.StoreWriter(path, mode="a") as w:
        for s in range(100):
            w.mark(run=1, step=s)
            w.append("out", "new", torch.zeros(2))
    root = json.loads((path / "zarr.json").read_text())["attributes"]["spikestore_run"]
    marks = root["marks"]["marks"]
    assert len(marks) == 101 and len(marks[1]["at"]) == 50  # the old layers, once
    assert all(len(m["at"]) <= 1 for m in marks[2:])
    out = spikestore.open(path)["out"]
    assert out["old7"].marks()["run"].tolist() == [0]
    assert out["new"].marks()["step"].tolist() == list(range(100))
    assert out["new"].marks()["run"].tolist() == [1] * 100


def test_a_damaged_run_description_does_not_hide_the_records(tmp_path):
    path = tmp_path / "s"
    with spikestore.StoreWriter(path, dt=1.0) as w:
        w.mark(epoch=1)
        w.append("m", "l", torch.ones(2))
    doc = json.loads((path / "zarr.json").read_text())
    doc["attributes"]["spikestore_run"]["marks"]["marks"][0]["values"] = {"x": [1, 2]}
    (path / "zarr.json").write_text(json.dumps(doc))
    with pytest.warns(UserWarning, match=r"malformed mark.*attrs, dt and marks are ignored"):
        store = spikestore.open(path)
    assert bits_equal(store["m"]["l"][0], torch.ones(2)) and store.dt is None
    with pytest.raises(spikestore.FormatError, match="malformed mark"):
        spikestore.StoreWriter(path, mode="a")  # never rewritten from a guess


def test_appending_to_a_layer_without_dims_adds_them(tmp_path):
    """Regression: dims= and units= given when appending to a layer that an older
    writer made without them were dropped silently; they are added, and dims that
    differ from a layer's stored ones warn (the stored ones are kept)."""
    import shutil
    from pathlib import Path

    path = tmp_path / "s"
    shutil.copytree(Path(__file__).parents[1] / "fixtures" / "store_v1.3", path)
    before = spikestore.open(path)["output"]["ms.sn"][:]
    with spikestore.StoreWriter(path, mode="a") as w:
        x = (torch.rand(4, 2, 3, 5) > 0.5).float()
        w.append("output", "ms.sn", x, dims=("time", "batch", "channel", "x"), units="spikes")
        w.append("v", "features.0.sn", torch.rand(4, 10, dtype=torch.float64), units="mV")
    s = spikestore.open(path)
    layer = s["output"]["ms.sn"]
    assert layer.dims == ("time", "batch", "channel", "x") and layer.units == "spikes"
    assert layer.time_axis == 0 and len(layer) == 7
    assert bits_equal(layer[:6], before) and bits_equal(layer[6], x)
    v = s["v"]["features.0.sn"]
    assert v.units == "mV" and v.dims is None and len(v) == 6
    with spikestore.StoreWriter(path, mode="a") as w:
        with pytest.warns(UserWarning, match=r"keeps its stored dims .*'time', 'batch'"):
            w.append("output", "ms.sn", x, dims=("t", "b", "c", "x"))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            w.append("output", "ms.sn", x, dims=("t", "b", "c", "x"))  # once per layer
            w.append("v", "features.0.sn", torch.rand(4, 10, dtype=torch.float64), units="mV")
    layer = spikestore.open(path)["output"]["ms.sn"]
    assert layer.dims == ("time", "batch", "channel", "x") and len(layer) == 9


def test_dims_added_to_an_old_multistep_layer_must_name_its_time_axis(tmp_path):
    """A monitor that takes a module as single-step names axis 0 "batch": added to an
    old layer whose stored time axis is 0, those dims contradicted it (to_xarray
    labelled time "batch"). They are left out, with a warning."""
    import shutil
    from pathlib import Path

    path = tmp_path / "s"
    shutil.copytree(Path(__file__).parents[1] / "fixtures" / "store_v1.3", path)

    class SN(nn.Module):
        def forward(self, x):
            return (x > 0.5).float()

    net = nn.Module()
    net.ms = nn.Module()
    net.ms.sn = SN()
    with spikestore.StoreWriter(path, mode="a") as w:
        with pytest.warns(UserWarning, match="do not name the layer's time axis 0 'time'"):
            with OutputMonitor(net, SN, store=w):
                net.ms.sn(torch.rand(4, 2, 3, 5))
    layer = spikestore.open(path)["output"]["ms.sn"]
    assert layer.time_axis == 0 and layer.dims is None and len(layer) == 7


def test_to_xarray_of_a_field_uses_that_field_s_dims(tmp_path):
    """Regression: to_xarray(layer, field=1) named a field's axes by the first field
    of the same rank, not by the field's own dims."""
    pytest.importorskip("xarray")
    from spikestore import analysis

    with spikestore.StoreWriter(tmp_path / "s") as w:
        for _ in range(3):
            w.append("m", "pair", (torch.zeros(4), torch.ones(5)), dims=[("neuron",), ("cell",)])
    layer = spikestore.open(tmp_path / "s")["m"]["pair"]
    assert layer.field_dims(1) == ("cell",)
    assert analysis.to_xarray(layer, field=1).dims == ("step", "cell")
    assert analysis.to_xarray(layer, field=0).dims == ("step", "neuron")
