"""The disk-backed monitors against plain PyTorch hooks, on plain modules and the demo net."""

from __future__ import annotations

import gc
import re
import subprocess
import sys
import textwrap
import weakref

import pytest
import torch
from torch import nn

import spikestore
from spikestore import demo
from spikestore.monitor import (
    AttributeMonitor,
    GradInputMonitor,
    GradOutputMonitor,
    InputMonitor,
    OutputMonitor,
)
from spikestore.testing import same_record

_same = same_record


def _all_same(xs, ys) -> bool:
    return len(xs) == len(ys) and all(map(_same, xs, ys))


class Reference:
    """Plain hooks recording the same things as the five monitors, in memory."""

    def __init__(self, net, instance) -> None:
        self.out, self.inp, self.attr, self.gin, self.gout = [], [], [], [], []
        self.handles = []
        for name, m in net.named_modules():
            if not isinstance(m, instance):
                continue
            self.handles += [
                m.register_forward_hook(
                    lambda mod, i, o, n=name: self.out.append((n, o.detach().clone()))
                ),
                m.register_forward_pre_hook(
                    lambda mod, i, n=name: self.inp.append((n, i[0].detach().clone()))
                ),
                m.register_forward_hook(
                    lambda mod, i, o, n=name: self.attr.append((n, mod.v_seq.detach().clone()))
                ),
                m.register_full_backward_hook(
                    lambda mod, gi, go, n=name: self.gin.append((n, gi[0].clone()))
                ),
                m.register_full_backward_hook(
                    lambda mod, gi, go, n=name: self.gout.append((n, go[0].clone()))
                ),
            ]

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _train(net, steps, seed=0):
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(steps):
        x, y = demo.moving_bars(2, steps=4, generator=gen)
        x.requires_grad_(True)
        loss = nn.functional.cross_entropy(net(x).mean(0) * 5, y)
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.fixture
def net():
    torch.manual_seed(0)
    return demo.DemoNet()


# --------------------------------------------------------------- recording


def test_every_kind_matches_plain_hooks(net, tmp_path):
    with spikestore.StoreWriter(tmp_path / "s") as w:
        mons = {
            "out": OutputMonitor(net, demo.LIF, store=w),
            "inp": InputMonitor(net, demo.LIF, store=w),
            "attr": AttributeMonitor("v_seq", False, net, demo.LIF, store=w),
            "gin": GradInputMonitor(net, demo.LIF, store=w),
            "gout": GradOutputMonitor(net, demo.LIF, store=w),
        }
        ref = Reference(net, demo.LIF)
        _train(net, 3)
        for key, mon in mons.items():
            want = getattr(ref, key)
            assert mon.monitored_layers == ["sn1", "sn2", "sn3"]
            assert len(mon.records) == len(want) == 9
            assert _all_same(list(mon.records), [v for _, v in want]), key
            for layer in mon.monitored_layers:
                assert _all_same(mon[layer], [v for n, v in want if n == layer]), (key, layer)
        names = [m.name for m in mons.values()]
        assert names == ["output", "input", "v_seq", "grad_input", "grad_output"]
        for m in mons.values():
            m.close()
    # The same records in the store, under each monitor's name.
    r = spikestore.open(tmp_path / "s")
    assert sorted(r) == sorted(names)
    assert _all_same(r["output"]["sn2"].records(), [v for n, v in ref.out if n == "sn2"])


def test_default_store_is_temporary_and_bounded(net):
    mon = OutputMonitor(net, demo.LIF)
    path = mon.path
    assert path is not None and path.is_dir()
    _train(net, 2)
    assert len(mon["sn3"]) == 2
    mon.close()
    assert spikestore.open(path)["output"]["sn3"][-1].shape == (4, 2, demo.CLASSES)
    assert len(mon.records) == 6  # readable after close
    del mon
    gc.collect()
    assert not path.exists()  # the temporary store goes with the monitor


def test_function_on_output_values_and_numbers(tmp_path):
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3), nn.ReLU())
    rates = OutputMonitor(net, nn.ReLU, lambda x: x.mean(), store=tmp_path / "a")
    floats = OutputMonitor(net, nn.ReLU, lambda x: float(x.detach().sum()), store=tmp_path / "b")
    pairs = OutputMonitor(net, nn.ReLU, lambda x: (x, x > 0), store=tmp_path / "c")
    lists = OutputMonitor(net, nn.ReLU, lambda x: [x.max(), None], store=tmp_path / "d")
    nothing = OutputMonitor(net, nn.ReLU, lambda x: None, store=tmp_path / "e")
    outs = []
    hs = [m.register_forward_hook(lambda m, i, o: outs.append(o.detach().clone()))
          for m in net if isinstance(m, nn.ReLU)]
    for _ in range(3):
        net(torch.randn(2, 5))
    for h in hs:
        h.remove()
    assert _all_same(list(rates.records), [o.mean() for o in outs])
    assert _all_same(list(floats.records), [float(o.sum()) for o in outs])
    assert _all_same(list(pairs.records), [(o, o > 0) for o in outs])
    assert _all_same(list(lists.records), [[o.max(), None] for o in outs])
    assert list(nothing.records) == [None] * 6
    for m in (rates, floats, pairs, lists, nothing):
        m.close()


def test_attribute_number_then_tensor(tmp_path):
    """A neuron's ``v`` is the float 0.0 before its first step, then a tensor."""

    class Node(nn.Module):
        def __init__(self):
            super().__init__()
            self.v = 0.0

        def forward(self, x):
            self.v = self.v + x
            return self.v

    net = nn.Sequential(Node())
    with AttributeMonitor("v", True, net, Node, store=tmp_path / "s") as mon:
        xs = [torch.randn(3) for _ in range(3)]
        for x in xs:
            net(x)
        recs = list(mon.records)
    assert recs[0] == 0.0 and isinstance(recs[0], float)
    assert _same(recs[1], xs[0]) and _same(recs[2], xs[0] + xs[1])


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_grad_input_of_first_layer_is_none(tmp_path):
    net = nn.Sequential(nn.Linear(3, 2), nn.Identity())
    with GradInputMonitor(net, nn.Linear, store=tmp_path / "s") as mon:
        net(torch.randn(4, 3)).sum().backward()  # the input needs no gradient
        assert mon[0] is None and list(mon.records) == [None]


def test_every_k(net, tmp_path):
    ref = Reference(net, demo.LIF)
    mon = OutputMonitor(net, demo.LIF, store=tmp_path / "s", every=3)
    with pytest.raises(ValueError):
        OutputMonitor(net, demo.LIF, every=0, store=tmp_path / "t")
    _train(net, 7)
    mon.disable()
    _train(net, 2)  # calls while disabled do not count
    mon.enable()
    _train(net, 3)
    ref.remove()
    # training step s calls each of the 3 layers once; while enabled, call c = s (then s - 2)
    calls = {s: (s if s < 7 else s - 2) for s in range(12) if s not in (7, 8)}
    want = [ref.out[3 * s + i][1] for s, c in calls.items() if c % 3 == 0 for i in range(3)]
    assert len(mon.records) == len(want) == 12
    assert _all_same(list(mon.records), want)
    mon.close()


def test_pattern_selection(net, tmp_path):
    w = spikestore.StoreWriter(tmp_path / "s")
    cases = [
        ("block?.conv", ["block1.conv", "block2.conv"]),
        (re.compile(r"sn[12]"), ["sn1", "sn2"]),
        (("fc", nn.BatchNorm2d), ["block1.bn", "block2.bn", "fc"]),
        (["block1", re.compile(r"sn\d")], ["block1", "sn1", "sn2", "sn3"]),
        (nn.Linear, ["fc"]),
        ((nn.Linear, demo.LIF), ["sn1", "sn2", "fc", "sn3"]),
        (None, [""]),
    ]
    mons = []  # a monitor nobody references is collected and records nothing
    for i, (inst, layers) in enumerate(cases):
        mons.append(OutputMonitor(net, inst, store=w, name=f"m{i}"))
        assert mons[-1].monitored_layers == layers, inst
    with pytest.raises(TypeError, match="instance"):
        OutputMonitor(net, [3], store=w, name="bad")
    net(torch.zeros(4, 1, 1, 28, 28))
    w.close()
    r = spikestore.open(tmp_path / "s")
    assert r["m6"][""][0].shape == (4, 1, demo.CLASSES)
    assert sorted(r["m0"]) == ["block1.conv", "block2.conv"]


def test_shared_store_names_and_clash(net, tmp_path):
    w = spikestore.StoreWriter(tmp_path / "s")
    a = OutputMonitor(net, demo.LIF, store=w)
    with pytest.raises(ValueError, match="name="):
        OutputMonitor(net, demo.LIF, store=w)
    b = OutputMonitor(net, demo.LIF, lambda x: x.sum(), store=w, name="rate")
    _train(net, 2)
    a.close()
    b.close()
    assert not w._closed  # a shared writer stays open
    c = OutputMonitor(net, "sn3", store=w)  # the name is free again; steps continue
    _train(net, 1)
    assert len(c.records) == 1 and len(a.records) == 6
    w.close()
    r = spikestore.open(tmp_path / "s")
    assert len(r["output"]["sn3"]) == 3 and len(r["rate"]["sn1"]) == 2
    assert _same(r["output"]["sn3"][2], c[0])
    assert _same(r["rate"]["sn2"][1], b["sn2"][1])


def test_records_api(net, tmp_path):
    ref = Reference(net, demo.LIF)
    mon = OutputMonitor(net, demo.LIF, store=tmp_path / "s")
    _train(net, 4)
    want = [v for _, v in ref.out]
    recs = mon.records
    assert len(recs) == 12
    assert _same(recs[-1], want[-1]) and _same(recs[-12], want[0]) and _same(mon[5], want[5])
    assert _all_same(recs[2:9:3], want[2:9:3])
    assert _all_same(recs[::-1], want[::-1])
    assert recs[20:] == []
    with pytest.raises(IndexError):
        recs[12]
    with pytest.raises(IndexError):
        recs[-13]
    with pytest.raises(ValueError):
        mon[1.5]
    with pytest.raises(KeyError):
        mon["nope"]
    assert _all_same(list(recs), want)
    assert mon.name_records_index == {
        "sn1": [0, 3, 6, 9], "sn2": [1, 4, 7, 10], "sn3": [2, 5, 8, 11]
    }
    assert repr(recs) == repr(want)  # prints like SpikingJelly's list
    assert "records" in repr(mon)
    # clear: records and per-layer lists become empty; new records come after
    mon.clear_recorded_data()
    assert len(mon.records) == 0 and mon["sn1"] == [] and repr(mon.records) == "[]"
    _train(net, 1)
    assert _all_same(list(mon.records), [v for _, v in ref.out[12:]])
    assert _all_same(mon["sn2"], [ref.out[13][1]])
    mon.records.clear()
    assert len(mon.records) == 0
    mon.close()
    # the store keeps every step (clearing only hides them)
    assert len(spikestore.open(tmp_path / "s")["output"]["sn1"]) == 5


def test_long_records_print_shortened(tmp_path):
    net = nn.Sequential(nn.Identity())
    with OutputMonitor(net, nn.Identity, float, store=tmp_path / "s") as mon:
        for i in range(20):
            net(torch.tensor(i / 4))
        assert repr(mon.records) == "[0.0, 0.25, 0.5, ..., 4.25, 4.5, 4.75] (20 records)"


def test_enable_disable_remove_hooks_close(net, tmp_path):
    mon = OutputMonitor(net, demo.LIF, store=tmp_path / "s")
    assert mon.is_enable()
    mon.disable()
    assert not mon.is_enable()
    _train(net, 1)
    assert len(mon.records) == 0
    mon.enable()
    _train(net, 1)
    assert len(mon.records) == 3
    mon.remove_hooks()
    assert mon.hooks == []
    _train(net, 1)
    assert len(mon.records) == 3
    first = mon[0]
    mon.close()
    mon.close()  # idempotent
    assert _same(mon[0], first) and len(mon["sn1"]) == 1
    with OutputMonitor(net, demo.LIF, store=tmp_path / "t") as m2:
        _train(net, 1)
    assert not m2.hooks and len(m2.records) == 3


def test_reopen_in_new_process(net, tmp_path):
    path = tmp_path / "s"
    with spikestore.StoreWriter(path) as w:
        mons = [
            OutputMonitor(net, demo.LIF, store=w),
            AttributeMonitor("v_seq", False, net, demo.LIF, store=w),
            GradOutputMonitor(net, "sn*", store=w),
        ]
        _train(net, 2)
        expect = {m.name: {layer: m[layer] for layer in m.monitored_layers} for m in mons}
        for m in mons:
            m.close()
    torch.save(expect, tmp_path / "expect.pt")
    code = textwrap.dedent(
        f"""
        import torch, spikestore
        expect = torch.load({str(tmp_path / "expect.pt")!r})
        r = spikestore.open({str(path)!r})
        for mon, layers in expect.items():
            for layer, recs in layers.items():
                got = r[mon][layer].records()
                assert len(got) == len(recs), (mon, layer)
                for a, b in zip(got, recs):
                    assert a.dtype == b.dtype and torch.equal(a, b), (mon, layer)
        print("ok")
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


@pytest.mark.parametrize(
    "cls, kw",
    [
        (OutputMonitor, "function_on_output"),
        (InputMonitor, "function_on_input"),
        (GradInputMonitor, "function_on_grad_input"),
        (GradOutputMonitor, "function_on_grad_output"),
    ],
)
def test_bad_function_output_raises_type_error(cls, kw, tmp_path):
    net = nn.Sequential(nn.Linear(3, 3), nn.Tanh())
    mon = cls(net, nn.Tanh, **{kw: lambda x: {x.sum().item()}}, store=tmp_path / "s", name="mymon")
    x = torch.randn(2, 3, requires_grad=True)
    with pytest.raises(TypeError) as exc:
        net(x).sum().backward()
    msg = str(exc.value)
    assert "'mymon'" in msg and "'1'" in msg and "set" in msg, msg
    assert len(mon.records) == 0
    mon.close()


def test_bad_attribute_raises_type_error(tmp_path):
    net = nn.Sequential(nn.Linear(3, 3))
    mon = AttributeMonitor("weight", False, net, nn.Linear, lambda w: "text", store=tmp_path / "s")
    with pytest.raises(TypeError, match=r"'weight'.*layer '0'.*str"):
        net(torch.randn(2, 3))
    mon.close()


# ------------------------------------------------------------------- leaks


def _collected(ref) -> bool:
    gc.collect()
    return ref() is None


def test_monitor_lives_as_long_as_the_network():
    torch.manual_seed(0)
    net = demo.DemoNet()
    mon = OutputMonitor(net, demo.LIF)
    gmon = GradOutputMonitor(net, demo.LIF)
    _train(net, 1)
    path, refs = mon.path, [weakref.ref(mon), weakref.ref(gmon)]
    del mon, gmon
    # Unreferenced but still hooked: the network keeps both recording.
    assert not any(_collected(r) for r in refs)
    _train(net, 1)
    counts = [len(r().records) for r in refs]  # no monitor left in this frame
    assert counts == [6, 6]
    # The monitors never keep the network alive: dropping it collects all of them,
    # and the temporary store goes with them.
    net_ref = weakref.ref(net)
    del net
    assert _collected(net_ref)
    assert all(_collected(r) for r in refs)
    assert not path.exists()


def test_remove_hooks_or_close_lets_an_unreferenced_monitor_go(net, tmp_path):
    mon = OutputMonitor(net, demo.LIF, store=tmp_path / "a")
    gmon = GradOutputMonitor(net, demo.LIF)
    _train(net, 1)
    refs = [weakref.ref(mon), weakref.ref(gmon)]
    mon.remove_hooks()
    gmon.close()
    del mon, gmon
    assert all(_collected(r) for r in refs)
    assert not any(m._forward_hooks or m._backward_hooks for m in net.modules())
    # Collected after remove_hooks() without close(): its store was committed and closed.
    assert len(spikestore.open(tmp_path / "a")["output"]["sn1"]) == 1
    spikestore.StoreWriter(tmp_path / "a", mode="a").close()  # not locked any more
    _train(net, 1)


def test_monitor_created_as_a_statement_records_and_commits_at_exit(tmp_path):
    # SpikingJelly code often never keeps the monitor in a variable.
    script = textwrap.dedent(
        """
        import sys, torch
        from torch import nn
        from spikestore import monitor
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
        monitor.OutputMonitor(net, nn.ReLU, store=sys.argv[1])
        monitor.AttributeMonitor("weight", True, net, nn.Linear, store=sys.argv[2])
        for i in range(7):
            net(torch.full((2, 4), float(i)))
        print(net(torch.ones(2, 4)).sum().item())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "a"), str(tmp_path / "b")],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert "Traceback" not in out.stderr
    check = textwrap.dedent(
        """
        import sys, spikestore
        a = spikestore.open(sys.argv[1])["output"]["1"]
        b = spikestore.open(sys.argv[2])["weight"]["0"]
        print(len(a), len(b), float(a[-1].sum()), *a[0].shape, *b[0].shape)
        """
    )
    got = subprocess.run(
        [sys.executable, "-c", check, str(tmp_path / "a"), str(tmp_path / "b")],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout.split()  # fmt: skip
    assert got[:2] == ["8", "8"]
    assert float(got[2]) == pytest.approx(float(out.stdout))
    assert got[3:] == ["2", "3", "3", "4"]


def test_monitor_created_as_a_statement_is_closed_with_the_network(tmp_path):
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    OutputMonitor(net, nn.ReLU, store=tmp_path / "s")
    gc.collect()
    for _ in range(3):
        net(torch.ones(2, 4))
    del net
    gc.collect()
    with spikestore.StoreWriter(tmp_path / "s", mode="a") as w:  # released and committed
        assert w.steps("output", "1") == 3


def test_nothing_alive_after_close(tmp_path):
    torch.manual_seed(0)
    net = demo.DemoNet()
    mons = [
        OutputMonitor(net, demo.LIF, store=tmp_path / "a"),
        AttributeMonitor("v_seq", False, net, demo.LIF, store=tmp_path / "b"),
        GradInputMonitor(net, demo.LIF, store=tmp_path / "c"),
    ]
    _train(net, 2)
    for m in mons:
        m.close()
    # Records stay readable, without holding the net or the autograd graph.
    recs = [m[0] for m in mons]
    assert all(r is None or (not r.requires_grad and r.grad_fn is None) for r in recs)
    net_ref = weakref.ref(net)
    mon_refs = [weakref.ref(m) for m in mons]
    del net, mons, recs, m
    assert _collected(net_ref)
    assert all(_collected(r) for r in mon_refs)


def test_records_do_not_hold_the_graph(tmp_path):
    lin = nn.Linear(100, 100)
    net = nn.Sequential(lin, nn.Tanh())
    mon = OutputMonitor(net, nn.Tanh, store=tmp_path / "s")
    x = torch.randn(10, 100, requires_grad=True)
    out = net(x)  # the graph saves x (for the weight's gradient) and tanh's output
    refs = [weakref.ref(out), weakref.ref(x)]
    del out, x
    assert all(_collected(r) for r in refs)
    assert not mon[0].requires_grad
    mon.close()


# -------------------------------------------------------------------- demo


def test_demo_run(tmp_path):
    info = demo.run(tmp_path / "demo.spikes", steps=6, progress=False)
    assert info["steps"] == 6 and info["path"] == str(tmp_path / "demo.spikes")
    assert info["records"] == {
        "output": 18, "v_seq": 6, "input": 6, "grad_output": 6, "grad_input": 2
    }
    r = spikestore.open(tmp_path / "demo.spikes")
    assert sorted(r) == ["grad_input", "grad_output", "input", "output", "v_seq"]
    assert len(r["output"]["sn1"]) == 6 and r["output"]["sn1"].encodings == ["bitpack"]
    assert r["grad_input"]["block1"][0].shape == (demo.T, demo.BATCH, 1, 28, 28)


def test_demo_progress_counter_without_tqdm(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    demo.run(tmp_path / "d", steps=2, progress=True)
    assert "\rdemo: step 2/2" in capsys.readouterr().err


# -------------------------------------------------------------------- cuda


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_records_match(tmp_path):
    torch.manual_seed(0)
    net = demo.DemoNet().cuda()
    ref = Reference(net, demo.LIF)
    with spikestore.StoreWriter(tmp_path / "s") as w:
        out = OutputMonitor(net, demo.LIF, store=w)
        gout = GradOutputMonitor(net, demo.LIF, store=w)
        x, y = demo.moving_bars(4)
        loss = nn.functional.cross_entropy(net(x.cuda()).mean(0), y.cuda())
        loss.backward()
        assert _all_same(list(out.records), [v.cpu() for _, v in ref.out])
        assert _all_same(list(gout.records), [v.cpu() for _, v in ref.gout])
        out.close()
        gout.close()


def test_records_take_the_same_keys_as_a_layer() -> None:
    """Records index like a layer (spikestore.reader.step_indices): ints, slices, lists."""
    net = nn.Sequential(nn.Linear(3, 2))
    xs = [torch.full((1, 3), float(i)) for i in range(5)]
    last = net(xs[4]).detach()
    with OutputMonitor(net, nn.Linear) as mon:
        for x in xs:
            net(x)
        recs = mon.records
        assert _same(recs[-1], last)
        assert _all_same(recs[[4, 0, 4]], [recs[4], recs[0], recs[4]])
        assert _all_same(recs[1:3], [recs[1], recs[2]])
        with pytest.raises(IndexError, match=r"record 5 is out of range for monitor 'output'"):
            recs[5]
        with pytest.raises(TypeError):
            recs[1.0]


# ------------------------------------------------------------ safe by default


@pytest.mark.parametrize("kind", ["output", "input", "attribute", "grad_input", "grad_output"])
def test_monitor_given_a_path_refuses_an_existing_store(tmp_path, kind):
    from spikestore import StoreExistsError

    def make(**kw):
        net = nn.Sequential(nn.Linear(4, 3), nn.Tanh())
        args = (net, nn.Tanh)
        mon = {
            "output": lambda: OutputMonitor(*args, **kw),
            "input": lambda: InputMonitor(*args, **kw),
            "attribute": lambda: AttributeMonitor("weight", False, net, nn.Linear, **kw),
            "grad_input": lambda: GradInputMonitor(*args, **kw),
            "grad_output": lambda: GradOutputMonitor(*args, **kw),
        }[kind]()
        net(torch.ones(2, 4, requires_grad=True)).sum().backward()
        mon.close()
        return mon

    path = tmp_path / "s"
    mon = make(store=path)
    name, layer = mon.name, mon.monitored_layers[0]
    with pytest.raises(StoreExistsError, match=r"mode='a'.*mode='w' \(overwrite=True\)"):
        make(store=path)
    assert len(spikestore.open(path)[name][layer]) == 1  # untouched
    make(store=path, mode="a")
    assert len(spikestore.open(path)[name][layer]) == 2
    make(store=path, overwrite=True)
    assert len(spikestore.open(path)[name][layer]) == 1
    make(store=path, mode="w")
    with spikestore.StoreWriter(tmp_path / "w") as w, pytest.raises(ValueError, match="mode="):
        OutputMonitor(nn.ReLU(), store=w, mode="a")


# -------------------------------------------------- SpikingJelly idioms on records


def test_records_work_with_torch_cat_stack_and_list_addition(tmp_path):
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    mon = OutputMonitor(net, nn.ReLU, store=tmp_path / "s")
    want = []
    for i in range(4):
        x = torch.randn(2, 4, generator=torch.Generator().manual_seed(i))
        want.append(net(x).detach())
    recs = mon.records
    assert torch.equal(torch.cat(recs, 0), torch.cat(want, 0))
    assert torch.equal(torch.cat(tensors=recs, dim=0), torch.cat(want, 0))
    assert torch.equal(torch.stack(recs), torch.stack(want))
    assert torch.equal(torch.vstack(recs), torch.cat(want))
    assert torch.equal(torch.stack(recs[1:3]), torch.stack(want[1:3]))
    both = recs + [torch.zeros(2, 3)]  # noqa: RUF005 (Records.__add__ is under test)
    assert isinstance(both, list) and len(both) == 5 and torch.equal(both[0], want[0])
    left = [torch.zeros(2, 3)] + recs  # noqa: RUF005
    assert isinstance(left, list) and len(left) == 5 and torch.equal(left[1], want[0])
    assert all(map(torch.equal, recs + recs, want + want))
    assert torch.equal(recs[-1], want[-1]) and len(list(iter(recs))) == len(recs) == 4
    recs.clear()
    assert len(mon.records) == 0 and torch.cat(mon.records + [torch.ones(1)]).shape  # noqa: RUF005 == (1,)
    mon.close()


def test_many_small_records_are_decoded_in_batches(tmp_path, monkeypatch):
    from zarr.storage import LocalStore

    import spikestore.monitor._base as sm  # where StoreReader is looked up
    from spikestore.testing import CountingStore

    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
    mon = OutputMonitor(net, nn.ReLU, lambda x: (x > 0.2).float(), store=tmp_path / "s")
    mon.recent_bytes = 0  # every record from the store (see the next test for the copies)
    for i in range(600):
        net(torch.full((1, 4), (i % 7) / 7.0))
    mon.flush()
    counting = CountingStore(LocalStore(tmp_path / "s", read_only=True))
    real = sm.StoreReader
    monkeypatch.setattr(sm, "StoreReader", lambda *a, **k: real(store=counting))
    mon._reader = None  # read through the counting store from now on
    def chunk_reads() -> list[str]:
        return [k for k in counting.reads if "/c/" in k or k.endswith("/c")]

    all_at_once = torch.cat(mon.records, 0)
    assert all_at_once.shape == (600, 8)
    reads = chunk_reads()
    assert 0 < len(reads) <= 8, reads  # a few chunks, not one read per record
    counting.reads.clear()
    assert torch.equal(torch.stack(list(mon.records)).squeeze(1), all_at_once)
    assert len(chunk_reads()) <= 3 * 8  # iteration: about 256 records a batch
    mon.close()


def test_recent_records_read_back_without_a_commit(tmp_path, monkeypatch):
    """SpikingJelly's spiking_dqn_state example runs torch.cat(monitor.records, 0) at every
    step: the latest small records come from the monitor's copies (no flush, no decoding),
    older ones from the store, and both are what was recorded."""
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
    mon = OutputMonitor(net, nn.ReLU, store=tmp_path / "s")
    mon.recent_bytes = 40 * 32  # 40 records of [1, 8] float32
    flushes = []
    real_flush = mon.writer.flush
    monkeypatch.setattr(mon.writer, "flush", lambda: (flushes.append(1), real_flush())[1])
    outs = []
    for i in range(100):
        outs.append(net(torch.full((1, 4), i / 100.0)).detach().clone())
        got = torch.cat(mon.records[-10:], 0)  # the latest records: copies
        assert torch.equal(got, torch.cat(outs[-10:], 0))
    assert flushes == []
    everything = torch.cat(mon.records, 0)  # older records need a commit first
    assert torch.equal(everything, torch.cat(outs, 0)) and len(flushes) == 1
    assert torch.equal(torch.cat(mon["1"], 0), everything) and len(flushes) == 1
    assert mon._recent_nbytes <= mon.recent_bytes
    mon.clear_recorded_data()
    assert len(mon.records) == 0 and not mon._recent
    mon.close()


def test_recent_copies_skip_large_and_nested_records(tmp_path):
    big = torch.ones(1 << 17)  # 512 KiB: over a quarter of the default budget
    ident = nn.Identity()
    with OutputMonitor(ident, store=tmp_path / "t") as mon:
        ident(big)
        ident(torch.ones(3))
        assert list(mon._recent) == [(0, 1)]
        assert torch.equal(mon.records[0], big) and torch.equal(mon.records[1], torch.ones(3))
