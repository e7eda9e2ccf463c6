"""A ranked layer's slice follows the single reader's rule: one tensor ``[ranks, steps,
...]`` for one-value layers, or a ValueError naming the rank and the steps; neuron()
numbers neurons without the time axis on every rank."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import spikestore

FIXTURE = Path(__file__).parent.parent / "fixtures" / "store_v1.4_ranked"


def test_a_ranked_slice_is_one_tensor_or_names_the_rank() -> None:
    store = spikestore.open(FIXTURE)
    ms = store["output"]["ms.sn"]
    got = ms[0:2]
    assert got.shape == (2, 2, 4, 2, 3, 5)
    assert torch.equal(got[1], ms.layer(1)[0:2])
    assert store["rate"]["sn"][:].shape == (2, 3)  # Python numbers: one tensor
    with pytest.raises(
        ValueError,
        match=r"rank 0: monitor 'grad_input', layer 'sn': steps 0\.\.1 do not stack.*None at "
        r"step 0.*layer\.layer\(0\)\.records\(key\)",
    ):
        store["grad_input"]["sn"][0:2]
    assert isinstance(store["snntorch"]["lif1"][0:2], list)  # tuple records: lists


def test_a_ranked_neuron_is_numbered_without_the_time_axis() -> None:
    ms = spikestore.open(FIXTURE)["output"]["ms.sn"]  # [T=4, B=2, 3, 5] records
    got = ms.neuron((1, 2, 4))
    assert got.shape == (2, len(ms) * 4)
    for i, r in enumerate(ms.ranks):
        want = torch.stack(ms.layer(r).records())[:, :, 1, 2, 4].reshape(-1)
        assert torch.equal(got[i], want)
    per_step = ms.neuron((3, 1, 2, 4), time_axis=False)
    assert torch.equal(per_step, got[:, 3::4])
