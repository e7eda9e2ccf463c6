"""Large time-last spike records packed as recorded by the caller and put in the stored
order on the writer thread (``codecs.rows.repack_later``, ``repack_rows`` and the
compiled ``codecs._interleave`` kernel): the same bytes, the same store, whichever
order each record came in."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch

import spikestore
from spikestore._staging import stage
from spikestore.codecs import motion, rows
from spikestore.codecs.rows import repack_later, repack_rows

HAVE_NUMBA = importlib.util.find_spec("numba") is not None
needs_numba = pytest.mark.skipif(not HAVE_NUMBA, reason="the compiled reordering needs numba")


@pytest.fixture
def compiled(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled spike test and reordering ready, as once numba is loaded."""
    monkeypatch.setattr(motion, "USE_NUMBA", True)
    monkeypatch.setattr(rows, "_ONES", [rows._compiled_ones()])
    monkeypatch.setattr(rows, "_REPACK", [rows._compiled_repack()])
    assert rows._REPACK[0] is not None


def time_last(ndim: int, axis: int) -> tuple[int, ...]:
    return (*[i for i in range(ndim) if i != axis], axis)


def reference(ones: np.ndarray, permute: tuple[int, ...] | None) -> np.ndarray:
    return np.packbits((ones if permute is None else ones.transpose(permute)).reshape(-1))


SHAPES = [
    ((4, 8, 16, 28, 28), 0),  # SpikingJelly's [T, B, C, H, W]
    ((2, 16, 32, 64), 0),
    ((8, 4, 1024), 0),
    ((16, 2, 1024), 0),
    ((24, 2048), 0),
    ((3, 4, 8, 512), 1),  # time not first: three planes' leading index
    ((2, 2, 16, 1024), 2),
]


@pytest.mark.parametrize("kernel", [pytest.param(True, marks=needs_numba), False])
@pytest.mark.parametrize(("shape", "axis"), SHAPES)
def test_repack_rows_gives_the_bytes_of_packing_time_last(
    shape: tuple[int, ...], axis: int, kernel: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rows, "_REPACK", [rows._compiled_repack() if kernel else None])
    perm = time_last(len(shape), axis)
    rng = np.random.default_rng(math.prod(shape) + axis)
    for n in (1, 3):
        ones = rng.random((n, *shape)) < 0.3
        flat = np.stack([reference(o, None) for o in ones])
        want = np.stack([reference(o, perm) for o in ones])
        got = repack_rows(flat, shape, perm)
        assert got.dtype == np.uint8 and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
        # Rows of a block that is not contiguous (a column slice) read the same.
        wide = np.concatenate([flat, flat], axis=1)[:, : flat.shape[1]]
        np.testing.assert_array_equal(repack_rows(wide, shape, perm), want)


@needs_numba
@pytest.mark.usefixtures("compiled")
def test_repack_later_only_where_the_kernel_reorders() -> None:
    conv = (4, 8, 16, 28, 28)
    assert repack_later(conv, time_last(5, 0))
    assert repack_later((16, 4096), (1, 0))
    assert not repack_later(conv, None)  # stored as recorded anyway
    assert not repack_later((4, 64, 8), (1, 2, 0))  # small: packed time-last at once
    assert not repack_later((3, 8, 2048), (1, 2, 0))  # 3 steps cross bytes
    assert not repack_later((4, 8, 1023), (1, 2, 0))  # planes not whole bytes
    assert not repack_later((1, 8, 8192), (1, 2, 0))  # one step: nothing moves
    assert not repack_later((4, 64, 512), (2, 0, 1))  # not one axis moved last
    rows._REPACK[0] = None  # no compiled kernel: the caller packs time-last
    assert not repack_later(conv, time_last(5, 0))


def spikes(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) < 0.1).float()


@needs_numba
@pytest.mark.usefixtures("compiled")
def test_staged_as_recorded_reads_back_in_order() -> None:
    t = spikes((4, 2, 8, 32, 32), 0)
    s = stage(t, False, time_last(5, 0))
    assert s.as_recorded
    np.testing.assert_array_equal(s.packed, reference(t.numpy() == 1, None))
    np.testing.assert_array_equal(s.bits(), reference(t.numpy() == 1, time_last(5, 0)))


@needs_numba
@pytest.mark.usefixtures("compiled")
def test_a_layer_with_rows_in_both_orders_reads_back(tmp_path) -> None:
    """Records packed as recorded and records packed in order (a GPU's, or the CPU's
    while the kernel compiles) in one segment, in every mix: each step reads back as
    recorded. Both ways a pending block changes order are taken."""
    shape = (4, 2, 8, 32, 32)
    recs = [spikes(shape, i) for i in range(40)]
    # True: the kernel ready (packed as recorded); False: not (packed in order).
    plan = [True] * 5 + [False] * 3 + [True] * 4 + [False, True] * 6 + [True] * 16
    kernel = rows._REPACK[0]
    seen = []
    with spikestore.StoreWriter(tmp_path / "r.spikes", flush_interval=None) as w:
        for i, (t, ready) in enumerate(zip(recs, plan, strict=True)):
            rows._REPACK[0] = kernel if ready else None
            seen.append(repack_later(shape, time_last(5, 0)))
            w.append("output", "sn", t, time_axis=0)
            if i in (10, 25):
                w.flush()
    rows._REPACK[0] = kernel
    assert seen == plan
    layer = spikestore.open(tmp_path / "r.spikes")["output"]["sn"]
    assert len(layer) == len(recs)
    for i, t in enumerate(recs):
        assert torch.equal(layer[i], t), i
    assert torch.equal(layer[:], torch.stack(recs))


@needs_numba
@pytest.mark.usefixtures("compiled")
def test_a_monitor_reads_back_its_records_packed_as_recorded(tmp_path) -> None:
    from spikestore.monitor import OutputMonitor

    net = torch.nn.Sequential(torch.nn.Identity())
    recs = [spikes((4, 2, 8, 32, 32), i) for i in range(5)]
    with OutputMonitor(net, torch.nn.Identity, store=tmp_path / "m.spikes", time_axis=0) as mon:
        for t in recs:
            net(t)
        for i, t in enumerate(recs):  # the monitor's kept records, before any commit
            assert torch.equal(mon.records[i], t), i
    layer = spikestore.open(tmp_path / "m.spikes")["output"]["0"]
    assert torch.equal(layer[:], torch.stack(recs))
