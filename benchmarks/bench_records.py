"""SpikingJelly's ``torch.cat(monitor.records, 0)`` at every step, and per-step marks.

SpikingJelly's ``spiking_dqn_state.py`` example concatenates its monitor's records at
every step of an episode (a one-row layer: ``[1, 8]`` spikes). Issue 11 measured about
90 us a record with spikestore (27 ms at 300 records, read again at every step). This
runs the same loop three ways, taking turns repeat by repeat:

- ``list``: SpikingJelly's monitor, a Python list of the records (the baseline);
- ``spikestore``: an ``OutputMonitor`` with its default copies of the latest records
  (``recent_bytes``, 1 MiB);
- ``spikestore, recent_bytes=0``: every read from the store (a commit, then decoding).

and reports the median ms per step at the end of an episode of ``--steps`` records
(``torch.cat`` of all of them), with the spread over repeats.

Then the cost of ``writer.mark(label=...)`` at every step of a 10-layer recording,
against the same recording without marks (ratio of medians, same run).

Run::

    python benchmarks/bench_records.py            # about 40 s
    python benchmarks/bench_records.py --quick
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

import spikestore
from spikestore.monitor import OutputMonitor


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 8)
        self.sn = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.sn(self.fc(x)) > 0.1).float()


def episode(kind: str, steps: int, tmp: Path) -> float:
    """Seconds per step over the last 20 steps of an episode of ``steps`` records."""
    torch.manual_seed(0)
    net = Net()
    records: list[torch.Tensor] = []
    mon = None
    if kind == "list":
        net.sn.register_forward_hook(lambda m, a, y: records.append(y))
    else:
        mon = OutputMonitor(net, nn.ReLU, store=tmp / f"{kind}-{time.monotonic_ns()}")
        if kind == "recent0":
            mon.recent_bytes = 0
    times = []
    x = torch.rand(1, 4)
    with torch.no_grad():
        for i in range(steps):
            net(x)
            t0 = time.perf_counter()
            got = torch.cat(records if mon is None else mon.records, 0)  # type: ignore[arg-type]
            if i >= steps - 20:
                times.append(time.perf_counter() - t0)
            assert got.shape == (i + 1, 8)
    if mon is not None:
        mon.close()
    return statistics.median(times)


def marks(steps: int, tmp: Path, mark: bool) -> float:
    """Seconds per step of appending to 10 small layers, with a mark per step or not."""
    t0 = time.perf_counter()
    with spikestore.StoreWriter(tmp / f"m-{mark}-{time.monotonic_ns()}") as w:
        x = torch.zeros(16, 64)
        for s in range(steps):
            if mark:
                w.mark(label=s % 10, phase="train")
            for k in range(10):
                w.append("output", f"layer{k}", x)
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.repeats = 2
    torch.set_num_threads(1)
    kinds = {"list": [], "spikestore": [], "recent0": []}
    mk: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for _ in range(args.repeats):
            for k, v in kinds.items():
                v.append(episode(k, args.steps, tmp))
            for m in (False, True):
                mk[m].append(marks(2000 if not args.quick else 500, tmp, m))
    print(f"torch.cat(records, 0) at step {args.steps} (ms per step; median, min-max of "
          f"{args.repeats} repeats)")
    names = {"list": "list (SpikingJelly)", "spikestore": "spikestore",
             "recent0": "spikestore, recent_bytes=0"}
    base = statistics.median(kinds["list"])
    for k, v in kinds.items():
        med = statistics.median(v)
        print(f"  {names[k]:28s} {med * 1e3:8.3f}  ({min(v) * 1e3:.3f}-{max(v) * 1e3:.3f})"
              f"  {med / base:6.1f}x list")
    a, b = statistics.median(mk[False]), statistics.median(mk[True])
    print(f"10 layers of [16, 64] float32 a step: {a * 1e6:.0f} us a step without marks, "
          f"{b * 1e6:.0f} us with a mark every step ({b / a:.2f}x)")


if __name__ == "__main__":
    main()
