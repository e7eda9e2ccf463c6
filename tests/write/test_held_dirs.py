"""A writer thread holds its store's folders while it writes (``Sink._hold_dirs``) and
lets them go when the writer closes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import spikestore
from spikestore.storage import _dirs


def test_writer_holds_folders_and_releases_them(tmp_path: Path, monkeypatch) -> None:
    made: list[_dirs.DirCache] = []
    real = _dirs.hold_dirs

    def spy(root: Path) -> _dirs.DirCache:
        made.append(real(root))
        return made[-1]

    monkeypatch.setattr("spikestore._commit.hold_dirs", spy)
    xs = [torch.randn(2, 3, 4) for _ in range(9)]
    with spikestore.StoreWriter(tmp_path / "s.spikes") as w:
        for x in xs:
            w.append("output", "sn", x, time_axis=0)
    assert len(made) == 1 and made[0].closed and not made[0].fds
    got = spikestore.open(tmp_path / "s.spikes")["output"]["sn"]
    for i, x in enumerate(xs):
        np.testing.assert_array_equal(np.asarray(got[i]), x.numpy())
