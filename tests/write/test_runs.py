"""Runs as first-class (format 1.7): each opening of a writer keeps its own attrs and
marks, and a monitor's layers align by (run, call) after an interrupted run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import spikestore
from spikestore import analysis

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_a_later_run_never_overwrites_an_earlier_runs_attrs(tmp_path):
    path = tmp_path / "s"
    with spikestore.StoreWriter(path, attrs={"seed": 0, "eval_acc": []}) as w:
        w.append("out", "a", torch.zeros(2))
        w.set_attrs(eval_acc=[0.1, 0.2, 0.3, 0.4])
    with spikestore.StoreWriter(path, mode="a", attrs={"seed": 1}) as w:
        assert w.attrs == {"seed": 1}  # this run's own
        w.append("out", "a", torch.zeros(2))
        w.set_attrs(eval_acc=[0.5])
    store = spikestore.open(path)
    assert [r.attrs for r in store.runs] == [
        {"seed": 0, "eval_acc": [0.1, 0.2, 0.3, 0.4]},
        {"seed": 1, "eval_acc": [0.5]},
    ]
    # The merged view (what a format 1.6 reader shows): a later run's value wins.
    assert store.attrs == {"seed": 1, "eval_acc": [0.5]}
    assert [r.index for r in store.runs] == [0, 1]
    assert all(r.started and r.created_by.startswith("spikestore ") for r in store.runs)


def test_an_opening_that_records_nothing_is_still_a_run(tmp_path):
    path = tmp_path / "s"
    with spikestore.StoreWriter(path) as w:
        w.append("out", "a", torch.zeros(2))
    spikestore.StoreWriter(path, mode="a", attrs={"note": "looked only"}).close()
    with spikestore.StoreWriter(path, mode="a") as w:
        w.append("out", "a", torch.zeros(2))
    store = spikestore.open(path)
    assert [r.attrs for r in store.runs] == [{}, {"note": "looked only"}, {}]
    assert store.runs[1].start("out", "a") is None
    assert store["out"]["a"].runs().tolist() == [[0, 2], [0, 0]]


def test_appending_to_a_store_from_before_runs_makes_its_steps_run_0(tmp_path):
    path = tmp_path / "s"
    shutil.copytree(FIXTURES / "store_v1.6", path)
    old = spikestore.open(path)
    layer = old["output"].layers[0]
    n = len(old["output"][layer])
    assert [r.attrs for r in old.runs] == [old.attrs]  # one run, before it was a notion
    with spikestore.StoreWriter(path, mode="a", attrs={"lr": 1.0}) as w:
        w.append("output", layer, old["output"][layer][0])
    store = spikestore.open(path)
    assert store.version == "1.7"
    assert [r.attrs for r in store.runs] == [old.attrs, {"lr": 1.0}]
    assert store.runs[0].started is None and store.runs[1].start("output", layer) == n
    run, call = store["output"][layer].runs()
    assert run.tolist() == [0] * n + [1] and call.tolist() == [*range(n), 0]
    # Marks of the old run end where the new one begins.
    assert store["output"][layer].marks()["epoch"].tolist()[-2:] == [1, None]


def test_to_xarray_groups_by_run_and_epoch(tmp_path):
    xr = pytest.importorskip("xarray")
    path = tmp_path / "s"
    for run in range(2):
        with spikestore.StoreWriter(path, mode="a") as w:
            for epoch in range(2):
                w.mark(epoch=epoch)
                for _ in range(3):
                    w.append("out", "a", torch.full((2,), float(10 * run + epoch)))
    da = analysis.to_xarray(spikestore.open(path)["out"]["a"])
    assert da.coords["run"].values.tolist() == [0] * 6 + [1] * 6
    assert da.coords["call"].values.tolist() == [*range(6)] * 2
    means = da.groupby(["run", "epoch"]).mean(dim=["step", "dim_0"]).load()
    assert isinstance(means, xr.DataArray)
    assert means.values.tolist() == [[0.0, 1.0], [10.0, 11.0]]


def test_marks_of_an_unmarked_run_end_where_it_began(tmp_path):
    """Two runs without marks of their own after a marked one: both start unmarked
    (the earlier of their starts ends the marked run's values)."""
    path = tmp_path / "s"
    with spikestore.StoreWriter(path) as w:
        w.mark(phase="train")
        for _ in range(2):
            w.append("out", "a", torch.zeros(1))
    for _ in range(2):
        with spikestore.StoreWriter(path, mode="a") as w:
            w.append("out", "a", torch.zeros(1))
    layer = spikestore.open(path)["out"]["a"]
    assert layer.marks()["phase"].tolist() == ["train", "train", None, None]
    assert layer.runs().tolist() == [[0, 0, 1, 2], [0, 1, 0, 0]]


@pytest.mark.parametrize(
    "runs",
    [
        "not a list",
        [{"attrs": [], "marks_from": 0, "first": {}}],
        [{"attrs": {}, "marks_from": 5, "first": {}}],  # past the marks there are
        [{"attrs": {}, "marks_from": 0, "first": {"out": {"a": -1}}}],
        [{"attrs": {}, "marks_from": 0, "first": {"out": {"a": True}}}],
        [{"attrs": {}, "marks_from": 0, "first": {"out": []}}],
        [{"attrs": {}, "marks_from": 0, "first": {}, "started": 5}],
    ],
)
def test_a_malformed_runs_list_is_ignored_with_a_warning(tmp_path, runs):
    path = tmp_path / "s"
    with spikestore.StoreWriter(path, attrs={"seed": 3}) as w:
        w.append("out", "a", torch.ones(2))
    meta = path / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["spikestore_run"]["runs"] = runs
    meta.write_text(json.dumps(doc))
    with pytest.warns(UserWarning, match="run"):
        store = spikestore.open(path)
    assert [r.attrs for r in store.runs] == [{}]
    assert torch.equal(store["out"]["a"][0], torch.ones(2))
    # A writer refuses to append to it rather than drop what it cannot read.
    with pytest.raises(spikestore.FormatError, match="malformed run"):
        spikestore.StoreWriter(path, mode="a")


SIGINT_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, time
    import torch
    from spikestore.monitor import OutputMonitor

    path, first, calls, stop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])

    class Stamp(torch.nn.Module):
        def __init__(self, k):
            super().__init__()
            self.k = k

        def forward(self, x):
            return x + self.k

    class CtrlC(torch.nn.Module):
        calls = 0

        def forward(self, x):
            CtrlC.calls += 1
            if CtrlC.calls == stop:
                os.kill(os.getpid(), signal.SIGINT)  # as a user's Ctrl-C
                time.sleep(30)
            return x

    net = torch.nn.Sequential(Stamp(0.0), CtrlC(), Stamp(0.5))
    mon = OutputMonitor(net, Stamp, store=path, mode="a")
    print("recording", flush=True)
    for c in range(first, first + calls):
        net(torch.full((2,), float(c)))
    mon.close()
    """
)


def test_layers_align_by_run_and_call_after_a_real_sigint(tmp_path):
    """Ctrl-C in the middle of a forward call: the first layer recorded the call, the
    second never did. After an append, (run, call) pairs each layer's records of the
    same forward call, and the interrupted call's missing record is absent."""
    script = tmp_path / "rec.py"
    script.write_text(SIGINT_SCRIPT)
    path = tmp_path / "s"

    def run(first: int, calls: int, stop: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(script), str(path), str(first), str(calls), str(stop)],
            capture_output=True,
            text=True,
            timeout=120,
        )

    res = run(0, 10, 7)  # the 7th call (input 6) is interrupted between the layers
    assert res.returncode != 0 and "KeyboardInterrupt" in res.stderr, res.stderr[-2000:]
    res = run(100, 4, 0)
    assert res.returncode == 0, res.stderr[-2000:]

    store = spikestore.open(path)
    out = store["output"]
    first, second = (out[name] for name in out.layers)
    assert (len(first), len(second)) == (7 + 4, 6 + 4)
    assert [r.start("output", first.name) for r in store.runs] == [0, 7]
    assert [r.start("output", second.name) for r in store.runs] == [0, 6]
    pairs = {}
    for layer, offset in ((first, 0.0), (second, 0.5)):
        run, call = layer.runs()
        for s in range(len(layer)):
            value = float(layer[s][0]) - offset
            pairs.setdefault((int(run[s]), int(call[s])), []).append(value)
    # Every (run, call) names one forward call's input across layers.
    assert all(len(set(v)) == 1 for v in pairs.values()), pairs
    assert pairs[(0, 6)] == [6.0]  # the interrupted call: the second layer has none
    assert [pairs[(1, c)] for c in range(4)] == [[100.0 + c] * 2 for c in range(4)]
    # Without the runs, step 6 of the two layers would pair call 6 with call 100.
    assert float(first[6][0]) == 6.0 and float(second[6][0]) == 100.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        xr = pytest.importorskip("xarray")
    das = [analysis.to_xarray(layer).set_index(step=["run", "call"]) for layer in (first, second)]
    joined = xr.align(*das, join="inner")
    assert np.array_equal(joined[0].values[:, 0], joined[1].values[:, 0] - 0.5)


def test_info_lists_the_runs(tmp_path):
    from spikestore.cli import info, main

    path = tmp_path / "s"
    with spikestore.StoreWriter(path, attrs={"seed": 0}) as w:
        for _ in range(3):
            w.append("out", "a", torch.zeros(2))
    with spikestore.StoreWriter(path, mode="a", attrs={"seed": 1}) as w:
        w.append("out", "a", torch.zeros(2))
    runs = info(str(path))["run"]["runs"]
    assert [(r["index"], r["attrs"], r["steps"]) for r in runs] == [
        (0, {"seed": 0}, 3),
        (1, {"seed": 1}, 1),
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "spikestore", "info", str(path)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "runs: 2" in proc.stdout and 'run 1: 1 steps' in proc.stdout
    assert '{"seed": 1}' in proc.stdout and main is not None


def test_a_plain_process_cannot_append_to_a_ranked_store(tmp_path):
    """Appending to a ranked store without torch.distributed wrote an ordinary store into
    its root, numbered from 0, which no reader ever showed: the records were lost."""
    from spikestore.monitor import OutputMonitor

    path = tmp_path / "ranked"
    shutil.copytree(FIXTURES / "store_v1.4_ranked", path)
    before = {p: p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
    with pytest.raises(spikestore.FormatError, match="ranked store"):
        spikestore.StoreWriter(path, mode="a")
    net = torch.nn.Sequential(torch.nn.Identity())
    with pytest.raises(spikestore.FormatError, match="ranked store"):
        OutputMonitor(net, torch.nn.Identity, store=path, mode="a")
    after = {p: p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
    assert after == before
    # Replacing it on purpose is still allowed.
    with spikestore.StoreWriter(path, mode="w") as w:
        w.append("out", "a", torch.ones(1))
    assert len(spikestore.open(path)["out"]["a"]) == 1


def test_a_mark_named_run_does_not_replace_the_run_coordinate(tmp_path):
    """A user's mark ``run=...`` replaced to_xarray's run coordinate, so the README's
    groupby(["run", "epoch"]) merged runs again; it is now ``mark_run``."""
    pytest.importorskip("xarray")
    path = tmp_path / "s"
    for r in range(2):
        with spikestore.StoreWriter(path, mode="a") as w:
            w.mark(run="same", call=7, epoch=0)
            for _ in range(2):
                w.append("out", "a", torch.full((1,), float(r)))
    da = analysis.to_xarray(spikestore.open(path)["out"]["a"])
    assert da.coords["run"].values.tolist() == [0, 0, 1, 1]
    assert da.coords["call"].values.tolist() == [0, 1, 0, 1]
    assert da.coords["mark_run"].values.tolist() == ["same"] * 4
    assert da.coords["mark_call"].values.tolist() == [7] * 4
    assert da.groupby(["run", "epoch"]).mean(...).sizes == {"run": 2, "epoch": 1}


def test_a_large_int_mark_with_gaps_stays_exact_in_xarray(tmp_path):
    """Marks missing at some steps (a new run's steps before its first mark) made an int
    coordinate float64 with NaN there, which rounds ints past 2**53: a time_ns stamp came
    out 21 off. Such a coordinate stays exact (object dtype)."""
    pytest.importorskip("xarray")
    stamp = 1_764_943_200_123_456_789
    path = tmp_path / "s"
    with spikestore.StoreWriter(path) as w:
        w.mark(started_ns=stamp, epoch=3)
        w.append("out", "a", torch.zeros(1))
    with spikestore.StoreWriter(path, mode="a") as w:
        w.append("out", "a", torch.zeros(1))
    da = analysis.to_xarray(spikestore.open(path)["out"]["a"])
    assert da.coords["started_ns"].values.tolist() == [stamp, None]
    epoch = da.coords["epoch"].values  # small ints with a gap: float64 with NaN, as before
    assert epoch.dtype == np.float64 and epoch[0] == 3 and np.isnan(epoch[1])
