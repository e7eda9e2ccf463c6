"""Monitors on snnTorch networks, whose neurons return ``(spk, mem)`` tuples."""

from __future__ import annotations

import pytest

snn = pytest.importorskip("snntorch")

import torch  # noqa: E402
from torch import nn  # noqa: E402

import spikestore  # noqa: E402
from spikestore.monitor import AttributeMonitor, GradOutputMonitor, OutputMonitor  # noqa: E402
from spikestore.testing import same_record  # noqa: E402

_same = same_record


def _hooks(net, cls, out):
    def grab(o):
        if isinstance(o, tuple):
            return tuple(t.detach().clone() for t in o)
        return o.detach().clone()

    return [
        m.register_forward_hook(lambda mod, i, o: out.append(grab(o)))
        for m in net.modules()
        if isinstance(m, cls)
    ]


class TwoLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(10, 6)
        self.lif1 = snn.Leaky(beta=0.9)
        self.fc2 = nn.Linear(6, 3)
        self.lif2 = snn.Leaky(beta=0.8)

    def forward(self, x):
        mem1 = self.lif1.init_leaky()
        mem2 = self.lif2.init_leaky()
        spk = []
        for t in range(x.shape[0]):
            s1, mem1 = self.lif1(self.fc1(x[t]), mem1)
            s2, mem2 = self.lif2(self.fc2(s1), mem2)
            spk.append(s2)
        return torch.stack(spk)


def test_leaky_tuples_round_trip(tmp_path):
    torch.manual_seed(0)
    net = TwoLayer()
    want: list = []
    hs = _hooks(net, snn.Leaky, want)
    mon = OutputMonitor(net, snn.Leaky, store=tmp_path / "s")
    grads = GradOutputMonitor(net, snn.Leaky, store=tmp_path / "g")
    want_g: list = []
    hs += [
        m.register_full_backward_hook(
            lambda mod, gi, go: want_g.append(tuple(g if g is None else g.clone() for g in go))
        )
        for m in (net.lif1, net.lif2)
    ]
    net(torch.rand(5, 4, 10) * 3).sum().backward()
    for h in hs:
        h.remove()
    assert mon.monitored_layers == ["lif1", "lif2"]
    assert len(mon.records) == len(want) == 10
    recs = list(mon.records)
    assert all(isinstance(r, tuple) and len(r) == 2 for r in recs)
    assert all(map(_same, recs, want))
    assert _same(mon["lif2"], want[1::2])
    # (d spk, d mem): the last step's mem is unused, so its gradient is None
    assert len(grads.records) == len(want_g) == 10
    assert all(map(_same, grads.records, want_g))
    assert grads[0][1] is None and isinstance(grads[-1][1], torch.Tensor)
    mon.close()
    grads.close()
    # the tuples come back from the store too; spikes bit-packed, membranes raw
    lay = spikestore.open(tmp_path / "s")["output"]["lif1"]
    assert lay.structure == "tuple"
    assert all(map(_same, lay.records(), want[0::2]))


def test_init_hidden_sequential(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(10, 6),
        snn.Leaky(beta=0.9, init_hidden=True),
        nn.Linear(6, 3),
        snn.Leaky(beta=0.9, init_hidden=True, output=True),
    )
    want: list = []
    hs = _hooks(net, snn.Leaky, want)
    out = OutputMonitor(net, snn.Leaky, store=tmp_path / "out")
    mem = AttributeMonitor("mem", False, net, "[13]", store=tmp_path / "mem")
    from snntorch import utils

    utils.reset(net)
    mems = []
    for x in torch.rand(6, 4, 10) * 3:
        net(x)
        mems += [net[1].mem.detach().clone(), net[3].mem.detach().clone()]
    for h in hs:
        h.remove()
    # hidden layers return spikes only; the output layer (spk, mem)
    recs = list(out.records)
    assert all(isinstance(r, torch.Tensor) for r in recs[0::2])
    assert all(isinstance(r, tuple) for r in recs[1::2])
    assert all(map(_same, recs, want))
    assert mem.monitored_layers == ["1", "3"]
    assert all(map(_same, mem.records, mems))
    out.close()
    mem.close()
