"""A dtype change mid-run (an eval pass under ``torch.autocast``, ``net.double()``) is
recorded like a shape change: a segment of its own, read back in the dtype recorded,
listed by ``analysis.shapes(dtypes=True)`` and ``layer.shapes``, read by analyses in the
common dtype. Records match SpikingJelly's own monitors bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import spikestore
import spikestore.monitor as ss
from spikestore import analysis as A
from spikestore.errors import RecordError
from spikestore.testing import same_record

sj_monitor = pytest.importorskip("spikingjelly.activation_based.monitor")
from spikingjelly.activation_based import functional, layer, neuron  # noqa: E402
from torch import nn  # noqa: E402

T, C, HW = 4, 3, 5


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        layer.Conv2d(1, C, 3, padding=1),
        neuron.LIFNode(store_v_seq=True),
        layer.Flatten(),
        layer.Linear(C * HW * HW, 4),
        neuron.LIFNode(store_v_seq=True),
    )
    functional.set_step_mode(net, "m")
    return net


def _pass(net: nn.Module, batch: int, dtype: torch.dtype = torch.float32) -> None:
    with torch.no_grad():
        net(torch.rand(T, batch, 1, HW, HW, dtype=dtype) * 3)
    functional.reset_net(net)


# (phase, dtype each record has): train float32, eval under bf16 autocast with another
# batch size, a float64 phase after net.double(), float32 again.
PHASES = ["float32", "bfloat16", "float64", "float32"]


def _run(tmp_path: Path) -> tuple[list[object], list[object]]:
    net = _net()
    ours = [
        ss.OutputMonitor(net, neuron.LIFNode, store=tmp_path / "out"),
        ss.AttributeMonitor("v_seq", False, net, neuron.LIFNode, store=tmp_path / "v"),
    ]
    theirs = [
        sj_monitor.OutputMonitor(net, neuron.LIFNode),
        sj_monitor.AttributeMonitor("v_seq", False, net, neuron.LIFNode),
    ]
    torch.manual_seed(1)
    _pass(net, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _pass(net, 7)  # the hook used to raise RecordError here
    net.double()
    _pass(net, 2, torch.float64)
    net.float()
    _pass(net, 2)
    return ours, theirs


def test_autocast_and_double_record_like_spikingjelly(tmp_path: Path) -> None:
    ours, theirs = _run(tmp_path)
    for mine, sj in zip(ours, theirs, strict=True):
        assert len(mine.records) == len(sj.records) == 2 * len(PHASES)
        assert all(map(same_record, mine.records, sj.records))
        assert [str(r.dtype)[6:] for r in sj.records[::2]] == PHASES
        mine.close()
    for path, name in ((tmp_path / "out", "output"), (tmp_path / "v", "v_seq")):
        store = spikestore.open(path)
        sj = theirs[0] if name == "output" else theirs[1]
        for li, lname in enumerate(sj.monitored_layers):
            lay = store[name][lname]
            assert len(lay) == len(PHASES)
            # each step reads back in the dtype it was recorded in, bit for bit
            for step in range(len(lay)):
                assert same_record(lay[step], sj.records[2 * step + li]), (name, lname, step)
            got = [(g.dtype, g.steps.tolist()) for g in lay.shapes]
            assert got == [(torch.float32, [0, 3]), (torch.bfloat16, [1]), (torch.float64, [2])]
            # an analysis reads them in the common dtype: float64 here
            assert lay.dtype == torch.float64
            arr = A.to_numpy(lay, steps=[0, 2, 3])
            assert arr.dtype == np.float64
            want = torch.stack([sj.records[2 * s + li] for s in (0, 2, 3)]).double().numpy()
            assert np.array_equal(arr, want)


def test_shapes_splits_by_dtype_and_shape(tmp_path: Path) -> None:
    ours, _ = _run(tmp_path)
    for m in ours:
        m.close()
    lay = spikestore.open(tmp_path / "out")["output"]["1"]
    listed = [(g.shape, g.dtype, g.steps.tolist()) for g in lay.shapes]
    assert listed == [
        ((T, 2, C, HW, HW), torch.float32, [0, 3]),
        ((T, 7, C, HW, HW), torch.bfloat16, [1]),
        ((T, 2, C, HW, HW), torch.float64, [2]),
    ]
    same = [(g.shape, g.dtype, g.steps.tolist()) for g in A.shapes(lay, dtypes=True)]
    assert same == listed
    # by shape alone, as before
    assert [(s, st.tolist()) for s, st in A.shapes(lay)] == [
        ((T, 2, C, HW, HW), [0, 2, 3]),
        ((T, 7, C, HW, HW), [1]),
    ]
    assert lay.shape is None and lay.dtype == torch.float64


def test_bf16_eval_in_a_float32_run_reads_as_float32(tmp_path: Path) -> None:
    with spikestore.StoreWriter(tmp_path / "s") as w:
        w.append("m", "v", torch.full((3,), 0.1))
        w.append("m", "v", torch.full((3,), 0.1, dtype=torch.bfloat16))
        w.append("m", "v", torch.tensor([1.0, 0.0, 1.0], dtype=torch.bfloat16))  # spikes
    lay = spikestore.open(tmp_path / "s")["m"]["v"]
    assert [lay[i].dtype for i in range(3)] == [torch.float32, torch.bfloat16, torch.bfloat16]
    assert lay.encodings == ["bitpack", "raw"]
    assert lay.dtype == torch.float32 and lay.shape == (3,)
    arr = A.to_numpy(lay)
    assert arr.dtype == np.float32
    want = np.array([[0.1] * 3, [float(torch.tensor(0.1).bfloat16())] * 3, [1, 0, 1]], np.float32)
    assert np.array_equal(arr, want)
    assert np.array_equal(A.traces(lay, [1])[:, 0], want[:, 1].astype(np.float64))


def test_what_stays_refused_names_monitor_layer_and_step(tmp_path: Path) -> None:
    with spikestore.StoreWriter(tmp_path / "s") as w:
        w.append("m", "a", torch.ones(3))
        w.append("m", "a", torch.ones(3, dtype=torch.int64))  # a dtype change: accepted
        with pytest.raises(RecordError, match=r"monitor 'm', layer 'a', step 2.*rank 1.*rank 2"):
            w.append("m", "a", torch.ones(3, 1))
        w.append("m", "t", (torch.ones(2), 1.0))
        with pytest.raises(RecordError, match=r"layer 't', step 1.*tensors.*got a number"):
            w.append("m", "t", (2.0, 1.0))
        w.append("m", "t", (torch.ones(2, dtype=torch.float16), 2))  # dtypes of both change
    store = spikestore.open(tmp_path / "s")
    assert store["m"]["a"][1].dtype == torch.int64 and len(store["m"]["a"]) == 2
    assert store["m"]["t"][1][0].dtype == torch.float16 and store["m"]["t"][1][1] == 2


def test_each_dtype_counts_as_a_segment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from spikestore import format as fmt

    monkeypatch.setattr(fmt, "MAX_SEGMENTS", 2)
    with spikestore.StoreWriter(tmp_path / "s") as w:
        w.append("m", "a", torch.rand(3))
        w.append("m", "a", torch.rand(3).double())
        with pytest.raises(RecordError, match=r"step 2 \(field 0\).*2 segments.*\(bfloat16\)"):
            w.append("m", "a", torch.rand(3).bfloat16())


FIXTURES = Path(__file__).parent.parent / "fixtures"


@pytest.mark.parametrize("version", ["1.0", "1.3", "1.6"])
def test_stores_written_before_read_and_take_another_dtype(tmp_path: Path, version: str) -> None:
    import shutil

    old = spikestore.open(FIXTURES / f"store_v{version}")
    lay = old["output"]["features.0.sn"]
    assert lay.shape is None and lay.dtype == torch.float32
    assert [(g.shape, g.dtype, len(g.steps)) for g in lay.shapes] == [
        ((4, 3, 10), torch.float32, 40),
        ((2, 3, 10), torch.float32, 1),
    ]
    assert old["v"]["bf16"].shapes[0].dtype == torch.bfloat16
    copy = tmp_path / "s"
    shutil.copytree(FIXTURES / f"store_v{version}", copy)
    before = spikestore.open(copy)["output"]["features.0.sn"][:40]
    with spikestore.StoreWriter(copy, mode="a") as w:
        w.append("output", "features.0.sn", torch.ones(4, 3, 10, dtype=torch.bfloat16))
    lay = spikestore.open(copy)["output"]["features.0.sn"]
    assert lay[-1].dtype == torch.bfloat16 and torch.equal(lay[:40], before)
    assert [g.dtype for g in lay.shapes] == [torch.float32, torch.float32, torch.bfloat16]


def test_nwb_export_of_a_run_with_dtype_changes_validates(tmp_path: Path) -> None:
    pynwb = pytest.importorskip("pynwb")
    from spikestore import export

    ours, theirs = _run(tmp_path)
    for m in ours:
        m.close()
    export.to_nwb(spikestore.open(tmp_path / "v"), tmp_path / "v.nwb")
    assert pynwb.validate(path=str(tmp_path / "v.nwb")) == []
    with pynwb.NWBHDF5IO(str(tmp_path / "v.nwb"), "r") as io:
        series = io.read().processing["spikestore"].data_interfaces["v_seq.4.shape0"]
        data = np.asarray(series.data)
    # steps 0, 2, 3 (batch 2) in the common dtype, float64; step 2 is the float64 phase
    assert data.dtype == np.float64 and data.shape == (3 * T, 2, 4)
    want = torch.cat([theirs[1].records[2 * s + 1] for s in (0, 2, 3)]).double().numpy()
    assert np.array_equal(data, want)
