"""What recording costs the training loop beyond the hook itself: its allocations."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch import nn

from spikestore.monitor import OutputMonitor
from spikestore.writer import _at_most_every


def test_trims_run_at_most_once_an_interval() -> None:
    now = [100.0]
    calls: list[float] = []
    limited = _at_most_every(lambda: calls.append(now[0]), 1.0, clock=lambda: now[0])
    for t in (100.0, 100.1, 100.9, 101.0, 101.5, 102.2, 102.3):
        now[0] = t
        limited()
    assert calls == [100.0, 101.0, 102.2]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_recording_dense_layers_leaves_the_loops_large_allocations_fast(tmp_path) -> None:
    """Regression: the writer thread trimmed glibc's heaps (``malloc_trim``) after every
    write, which also handed the training loop's freed blocks back to the system, so
    each iteration's tensors faulted their pages in again (about 27,000 page faults an
    iteration of a SpikingJelly conv net, 80 ms of system time). Now it trims at most
    once a second: a 1 MiB block freed and allocated again between writes reuses its
    pages."""
    import resource

    lin = nn.Linear(8, 4096)
    mon = OutputMonitor(lin, nn.Linear, store=tmp_path / "s")
    x = torch.randn(64, 8)
    faults = 0
    with torch.no_grad():
        for _ in range(30):
            lin(x)  # a dense 1 MiB record
            mon.flush()  # written now (a write: the writer may trim)
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            a = np.ones(1 << 18, np.float32)  # 1 MiB: 256 pages if freshly mapped
            del a
            faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    mon.close()
    assert faults / 30 < 64, faults / 30
