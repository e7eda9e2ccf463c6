"""Issue 24's walkthrough, small: a SpikingJelly multi-step conv SNN trained with
monitors on every LIF (spikes, ``v_seq``, output gradients), evaluated with another
batch size under bf16 autocast, marked by epoch and phase, recorded as two runs (the
second appended with attrs of its own); then valid NWB with every layer, per-run attrs
and marks, and layers aligned by run and call."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import spikestore
from spikestore import analysis

pytest.importorskip("spikingjelly")
from spikingjelly.activation_based import functional, layer, neuron, surrogate
from torch import nn

from spikestore.monitor import AttributeMonitor, GradOutputMonitor, OutputMonitor

T, TRAIN_BATCH, EVAL_BATCH = 4, 5, 3


def _net() -> nn.Module:
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
    return net


def _run(path: Path, net: nn.Module, seed: int, epochs: int, mode: str) -> None:
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with spikestore.StoreWriter(path, mode=mode, dt=1e-3, attrs={"seed": seed}) as w:
        mons = [
            OutputMonitor(net, neuron.LIFNode, store=w),
            AttributeMonitor("v_seq", False, net, neuron.LIFNode, store=w),
            GradOutputMonitor(net, neuron.LIFNode, store=w),
        ]
        for epoch in range(epochs):
            w.mark(epoch=epoch, phase="train")
            for _ in range(2):
                out = net((torch.rand(T, TRAIN_BATCH, 1, 6, 6) < 0.5).float())
                (out * torch.randn(out.shape)).sum().backward()
                opt.step()
                opt.zero_grad()
                functional.reset_net(net)
            w.mark(phase="eval")
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                net((torch.rand(T, EVAL_BATCH, 1, 6, 6) < 0.5).float())
                functional.reset_net(net)
            w.set_attrs(last_epoch=epoch)
        for m in mons:
            m.close()


def test_the_walkthrough(tmp_path: Path) -> None:
    pynwb = pytest.importorskip("pynwb")
    from spikestore.export import ExportWarning, to_nwb

    path = tmp_path / "train.spikes"
    net = _net()
    _run(path, net, seed=0, epochs=2, mode="w")
    _run(path, net, seed=1, epochs=1, mode="a")
    store = spikestore.open(path)

    # Runs: each keeps its own attrs; marks restart with each run.
    assert [r.attrs for r in store.runs] == [
        {"seed": 0, "last_epoch": 1},
        {"seed": 1, "last_epoch": 0},
    ]
    v = store["v_seq"]["3"]
    assert len(v) == 2 * 3 + 1 * 3
    assert v.marks()["epoch"].tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 0]
    assert v.marks()["phase"].tolist() == ["train", "train", "eval"] * 3
    # The eval steps were recorded in bfloat16, the train steps in float32.
    assert {str(s["dtype"]) for s in v.segments} >= {"float32", "bfloat16"}
    da = analysis.to_xarray(store["output"]["3"], chunks=None, pad=True)
    means = da.groupby(["run", "epoch"]).mean(...)
    assert means.sizes == {"run": 2, "epoch": 2}
    assert np.isnan(means.sel(run=1, epoch=1).item())  # run 1 had one epoch only
    # Layers aligned by run and call: every layer of a monitor has the same pairs.
    out = store["output"]
    pairs = {tuple(map(tuple, out[name].runs().T.tolist())) for name in out.layers}
    assert len(pairs) == 1

    # NWB: every layer, nothing left out, valid; the notes keep each run's attrs.
    nwb_path = tmp_path / "train.nwb"
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExportWarning)
        to_nwb(path, nwb_path)
    assert pynwb.validate(path=str(nwb_path)) == []
    with pynwb.NWBHDF5IO(str(nwb_path), "r") as io:
        notes = json.loads(io.read().notes)
    assert notes["skipped"] == []
    assert {(e["monitor"], e["layer"]) for e in notes["layers"]} == {
        (m, name) for m in store for name in store[m]
    }
    assert [r["attrs"]["seed"] for r in notes["runs"]] == [0, 1]
