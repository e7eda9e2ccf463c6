"""``layer.neuron()`` numbers neurons as analysis and the plots do: on a multi-step layer
without the time axis, ``T`` values per step (``time_axis=False``: the per-step view);
``layer.shape``, ``layer.dtype`` and ``layer.shapes`` for layers of mixed records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import spikestore
from spikestore import analysis as A

T, C, H = 4, 6, 4
BATCHES = [3, 3, 2, 3]  # a smaller (eval) batch at step 2


@pytest.fixture
def multi_step(
    tmp_path: Path,
) -> tuple[spikestore.StoreReader, list[torch.Tensor], list[torch.Tensor]]:
    torch.manual_seed(0)
    spikes, volts = [], []
    with spikestore.StoreWriter(tmp_path / "s") as w:
        for b in BATCHES:
            x = (torch.rand(T, b, C, H, H) < 0.3).float()
            v = torch.randn(T, b, C, H, H)
            spikes.append(x)
            volts.append(v)
            w.append("output", "sn", x, time_axis=0)
            w.append("v_seq", "sn", v, time_axis=0)
    return spikestore.open(tmp_path / "s"), spikes, volts


@pytest.mark.parametrize("monitor", ["output", "v_seq"])
def test_neuron_is_numbered_without_the_time_axis(multi_step, monitor: str) -> None:
    store, spikes, volts = multi_step
    recs = spikes if monitor == "output" else volts
    lay = store[monitor]["sn"]
    nd = (0, 5, 3, 3)  # (batch, channel, y, x): the failing call
    got = lay.neuron(nd)
    want = torch.cat([r[:, 0, 5, 3, 3] for r in recs])  # step * T + t
    assert got.shape == (len(BATCHES) * T,) and torch.equal(got, want)
    # the same column analysis.traces and to_numpy give for that neuron
    assert np.array_equal(got.numpy(), A.traces(lay, [nd])[:, 0])
    flat = int(np.ravel_multi_index(nd, (3, C, H, H)))
    assert torch.equal(lay.neuron(flat), got)
    assert np.array_equal(A.traces(lay, [flat])[:, 0], got.numpy())
    full = A.to_numpy(lay, pad=True)  # (steps, T, B, C, H, W)
    assert np.array_equal(full[:, :, 0, 5, 3, 3].reshape(-1), got.numpy())
    # steps= picks steps, each still T values
    assert torch.equal(
        lay.neuron(nd, steps=[3, 1]), torch.cat([recs[3][:, 0, 5, 3, 3], recs[1][:, 0, 5, 3, 3]])
    )


def test_time_axis_false_keeps_the_per_step_view(multi_step) -> None:
    store, spikes, volts = multi_step
    for lay, recs in ((store["output"]["sn"], spikes), (store["v_seq"]["sn"], volts)):
        got = lay.neuron((2, 1, 5, 3, 3), time_axis=False)
        assert torch.equal(got, torch.stack([r[2, 1, 5, 3, 3] for r in recs]))
        # a batch axis as time: numbered without axis 1
        per_batch = lay.neuron((3, 5, 0, 1), steps=[0, 1], time_axis=1)
        assert torch.equal(per_batch, torch.cat([r[3, :, 5, 0, 1] for r in recs[:2]]))


def test_a_whole_record_index_names_the_time_axis(multi_step) -> None:
    store, _, _ = multi_step
    lay = store["output"]["sn"]
    with pytest.raises(
        IndexError,
        match=r"monitor 'output', layer 'sn' \(records \[4, 3, 6, 4, 4\], time axis 0: neurons "
        r"number the rest\): neuron \(0, 0, 5, 3, 3\) has 5 indices.*time_axis=False",
    ):
        lay.neuron((0, 0, 5, 3, 3))
    with pytest.raises(IndexError, match=r"index 2 on axis 0 .* range 0\.\.1"):
        lay.neuron((2, 5, 3, 3))  # batch 2 does not exist at step 2 (batch of 2)
    assert lay.neuron((2, 5, 3, 3), steps=[0, 1, 3]).shape == (3 * T,)


def test_a_number_before_the_first_step_fills_every_time_point(tmp_path: Path) -> None:
    # SpikingJelly's v is the float 0.0 before a neuron's first multi-step call
    v = torch.randn(T, 2, 3)
    with spikestore.StoreWriter(tmp_path / "s") as w:
        w.append("v", "sn", 0.0, time_axis=0)
        w.append("v", "sn", v, time_axis=0)
    lay = spikestore.open(tmp_path / "s")["v"]["sn"]
    got = lay.neuron((1, 2))
    assert torch.equal(got, torch.cat([torch.zeros(T), v[:, 1, 2]]))
    assert np.array_equal(A.traces(lay, [(1, 2)])[:, 0], got.numpy())
    assert lay.shape == (T, 2, 3) and lay.dtype == torch.float32  # the number left out
    assert [(g.shape, g.steps.tolist()) for g in lay.shapes] == [((T, 2, 3), [0, 1])]


def test_a_field_of_another_rank_has_no_time_axis(tmp_path: Path) -> None:
    # Norse's (z, state): z is [T, B, N], the state [B, N] has no time axis
    recs = [(torch.rand(T, 2, 5), torch.rand(2, 5)) for _ in range(3)]
    with spikestore.StoreWriter(tmp_path / "s") as w:
        for r in recs:
            w.append("norse", "lif", r, time_axis=0)
    lay = spikestore.open(tmp_path / "s")["norse"]["lif"]
    state = lay.neuron((1, 2), field=1)
    assert torch.equal(state, torch.stack([r[1][1, 2] for r in recs]))
    assert np.array_equal(A.traces(lay, [(1, 2)], field=1)[:, 0], state.numpy())
    z = lay.neuron((1, 2))
    assert torch.equal(z, torch.cat([r[0][:, 1, 2] for r in recs]))
    assert np.array_equal(A.traces(lay, [(1, 2)])[:, 0], z.numpy())
