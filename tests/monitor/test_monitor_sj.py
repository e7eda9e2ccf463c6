"""spikestore's monitors against SpikingJelly's own, bit for bit, on its monitor tutorial's nets.

Both monitors hang on the same network and see the same forward and backward
passes, so every record must be identical: same count, same order, same values.
"""

from __future__ import annotations

import pytest

sj_monitor = pytest.importorskip("spikingjelly.activation_based.monitor")

import torch  # noqa: E402
from spikingjelly.activation_based import functional, layer, neuron, surrogate  # noqa: E402
from torch import nn  # noqa: E402

import spikestore.monitor as ss  # noqa: E402
from spikestore.testing import same_record as _same  # noqa: E402

pytestmark = pytest.mark.sj


def _check(ours, theirs) -> None:
    assert ours.monitored_layers == theirs.monitored_layers
    assert len(ours.records) == len(theirs.records)
    for i, (a, b) in enumerate(zip(ours.records, theirs.records, strict=True)):
        assert _same(a, b), i
    for name in theirs.monitored_layers:
        mine, sj = ours[name], theirs[name]
        assert len(mine) == len(sj) and all(map(_same, mine, sj)), name
    assert _same(ours[-1], theirs.records[-1]) and _same(ours[0], theirs[0])


def _both(cls_name, *args, tmp_path, **kw):
    sj = getattr(sj_monitor, cls_name)(*args, **kw)
    ours = getattr(ss, cls_name)(*args, **kw, store=tmp_path / cls_name)
    return ours, sj


def _tutorial_net(store_v_seq: bool = False) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        layer.Linear(8, 4),
        neuron.IFNode(store_v_seq=store_v_seq),
        layer.Linear(4, 2),
        neuron.IFNode(store_v_seq=store_v_seq),
    )
    for p in net.parameters():
        p.data.abs_()
    functional.set_step_mode(net, "m")
    return net


def test_output_and_v_seq_multi_step(tmp_path):
    net = _tutorial_net(store_v_seq=True)
    out = _both("OutputMonitor", net, neuron.IFNode, tmp_path=tmp_path)
    v_seq = _both(
        "AttributeMonitor", "v_seq", False, net, neuron.IFNode, tmp_path=tmp_path
    )
    rate = _both(
        "OutputMonitor", net, neuron.IFNode, lambda x: x.mean(), tmp_path=tmp_path / "r"
    )
    torch.manual_seed(1)
    for _ in range(3):
        with torch.no_grad():
            net(torch.rand([4, 1, 8]))
        functional.reset_net(net)
    for ours, sj in (out, v_seq, rate):
        _check(ours, sj)
    assert v_seq[0].name == "v_seq" and v_seq[0][0].shape == (4, 1, 4)

    # disable / enable, and clearing
    for ours, sj in (out, rate):
        ours.disable()
        sj.disable()
    with torch.no_grad():
        net(torch.rand([4, 1, 8]))
    functional.reset_net(net)
    for ours, sj in (out, rate):
        assert not ours.is_enable() and not sj.is_enable()
        _check(ours, sj)
        ours.enable()
        sj.enable()
        ours.clear_recorded_data()
        sj.clear_recorded_data()
    with torch.no_grad():
        net(torch.rand([4, 1, 8]))
    for ours, sj in (out, v_seq, rate):
        _check(ours, sj)
        ours.close()
        sj.close()
        _check(ours, sj)  # still readable after close


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_input_and_grad_output(tmp_path):
    net = _tutorial_net()
    inp = _both("InputMonitor", net, neuron.IFNode, tmp_path=tmp_path)
    gout = _both("GradOutputMonitor", net, neuron.IFNode, tmp_path=tmp_path)
    gin = _both("GradInputMonitor", net, layer.Linear, tmp_path=tmp_path)
    torch.manual_seed(2)
    for _ in range(3):
        net(torch.rand([4, 2, 8])).sum().backward()
        functional.reset_net(net)
    for ours, sj in (inp, gout, gin):
        _check(ours, sj)
    # The first Linear's input needs no gradient: both record None there.
    assert gin[0]["0"] == [None] * 3 and gin[1]["0"] == [None] * 3
    for ours, _ in (inp, gout, gin):
        ours.close()


def test_ten_layers_grad_input_norm_over_alpha(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(*[m for _ in range(10) for m in (layer.Linear(8, 8), neuron.IFNode())])
    functional.set_step_mode(net, "m")
    ours, sj = _both(
        "GradInputMonitor", net, neuron.IFNode, torch.norm, tmp_path=tmp_path
    )
    x_seq = torch.rand([4, 1, 8])
    for alpha in (0.5, 1.0, 2.0, 4.0, 8.0):
        for m in net.modules():
            if isinstance(m, neuron.IFNode):
                m.surrogate_function = surrogate.Sigmoid(alpha=alpha)
        net(x_seq).sum().backward()
        _check(ours, sj)
        assert len(ours.records) == 10
        norms = [float(g) for g in ours.records]
        assert norms == [float(g) for g in sj.records]
        functional.reset_net(net)
        ours.clear_recorded_data()
        sj.clear_recorded_data()
    ours.close()
    sj.close()


def test_single_step_mode_with_pre_forward_v(tmp_path):
    net = _tutorial_net()
    functional.set_step_mode(net, "s")
    out = _both("OutputMonitor", net, neuron.IFNode, tmp_path=tmp_path)
    # Before the first step of a run, v is the float 0.0; then a tensor.
    v_pre = _both("AttributeMonitor", "v", True, net, neuron.IFNode, tmp_path=tmp_path)
    v_post = _both(
        "AttributeMonitor", "v", False, net, neuron.IFNode, tmp_path=tmp_path / "post"
    )
    torch.manual_seed(3)
    for _ in range(2):
        for x in torch.rand([4, 1, 8]):
            with torch.no_grad():
                net(x)
        functional.reset_net(net)
    for ours, sj in (out, v_pre, v_post):
        _check(ours, sj)
    first_neuron = v_pre[0]["1"]
    assert first_neuron[0] == 0.0 and isinstance(first_neuron[0], float)
    assert isinstance(first_neuron[1], torch.Tensor) and first_neuron[4] == 0.0
    for ours, _ in (out, v_pre, v_post):
        ours.close()


def test_every_against_subsampled_sj(tmp_path):
    net = _tutorial_net()
    sj = sj_monitor.OutputMonitor(net, neuron.IFNode)
    ours = ss.OutputMonitor(net, neuron.IFNode, store=tmp_path / "s", every=2)
    torch.manual_seed(4)
    with torch.no_grad():
        for _ in range(5):
            net(torch.rand([4, 1, 8]))
            functional.reset_net(net)
    want = [sj.records[i] for i in range(len(sj.records)) if (i // 2) % 2 == 0]
    assert len(ours.records) == len(want) == 6
    assert all(map(_same, ours.records, want))
    ours.close()
