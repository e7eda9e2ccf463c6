"""Overhead of monitoring a multi-step conv SNN on the CPU: spikestore vs SpikingJelly.

Configurations, all on the same network and inputs:

(a) no monitor;
(a') no monitor again, a second copy: its ratio to (a) is the noise floor of the run;
(b) spikestore ``OutputMonitor`` + ``AttributeMonitor("v_seq")`` on every LIF
    layer, streaming to a store in a temporary directory;
(c) SpikingJelly's in-memory ``OutputMonitor`` + ``AttributeMonitor("v_seq")``
    (skipped if SpikingJelly does not import).

Time per training step is the median over steps taken in turns by the
configurations (each on its own copy of the net), for forward only
(``torch.no_grad``) and forward + backward + SGD step. Each ratio to (a) is also
computed over 5 consecutive blocks of the steps; the table gives the median ratio and
the blocks' min-max, and (a') shows how far apart two identical configurations land.
Peak RSS growth is measured in a fresh process per configuration, sampled
every 10 steps, over long forward-only runs.

Run::

    python benchmarks/bench_monitor.py            # full (a few minutes on 2 cores)
    python benchmarks/bench_monitor.py --quick    # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from torch import nn

from spikestore.demo import LIF
from spikestore.demo import _SeqConv as SeqConv

T, BATCH = 8, 16
RSS_CAP = 3 << 30  # stop a long run whose memory grows past this


class Net(nn.Module):
    """Conv-BN-pool-LIF x2 + Linear-LIF on [T, B, 1, 28, 28]."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.sn1 = SeqConv(1, 16), LIF()
        self.c2, self.sn2 = SeqConv(16, 32), LIF()
        self.fc, self.sn3 = nn.Linear(32 * 7 * 7, 10), LIF()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.sn2(self.c2(self.sn1(self.c1(x))))
        return self.sn3(self.fc(x.flatten(2)))


def make_monitors(kind: str, net: nn.Module, path: str | None) -> list:
    if kind in ("a", "a2"):
        return []
    if kind == "b":
        import spikestore
        from spikestore.monitor import AttributeMonitor, OutputMonitor

        w = spikestore.StoreWriter(path)
        return [
            OutputMonitor(net, LIF, store=w),
            AttributeMonitor("v_seq", False, net, LIF, store=w),
            w,
        ]
    from spikingjelly.activation_based import monitor as sjm

    return [sjm.OutputMonitor(net, LIF), sjm.AttributeMonitor("v_seq", False, net, LIF)]


def close_monitors(mons: list) -> None:
    for m in mons:
        m.close()


def inputs(n: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.bernoulli(torch.full((T, BATCH, 1, 28, 28), 0.2), generator=g) for _ in range(n)]


def step_fn(net: nn.Module, backward: bool):
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    labels = torch.zeros(BATCH, dtype=torch.long)

    def step(x: torch.Tensor) -> None:
        if backward:
            loss = nn.functional.cross_entropy(net(x).mean(0), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        else:
            with torch.no_grad():
                net(x)

    return step


def time_steps(kinds: list[str], backward: bool, steps: int, tmp: str) -> dict:
    """Median per-step time of each configuration.

    The configurations take turns step by step (each on its own copy of the
    network), so load from other processes falls on all of them alike.
    SpikingJelly's records keep each step's autograd graph alive in training,
    so (c) is cleared every 50 steps to bound memory.
    """
    torch.manual_seed(0)
    xs = inputs(8)
    times: dict[str, list[float]] = {k: [] for k in kinds}
    runs = {}
    for k in kinds:
        torch.manual_seed(0)
        net = Net()
        mons = make_monitors(k, net, os.path.join(tmp, f"{k}{int(backward)}.spikes"))
        runs[k] = (step_fn(net, backward), mons)
    for i in range(-3, steps):  # 3 warm-up steps
        for k in kinds:
            step, mons = runs[k]
            t0 = time.perf_counter()
            step(xs[i % len(xs)])
            if i >= 0:
                times[k].append(time.perf_counter() - t0)
            if k == "c" and i % 50 == 49:
                for m in mons:
                    m.clear_recorded_data()
    for k in kinds:
        close_monitors(runs[k][1])
    return times


BLOCKS = 5


def ratio_stats(times: dict, k: str) -> tuple[float, float, float]:
    """Median over steps of (k) / median of (a), and the min-max of that over blocks."""
    a, b = times["a"], times[k]
    n = len(a) // BLOCKS
    blocks = [
        statistics.median(b[i * n : (i + 1) * n]) / statistics.median(a[i * n : (i + 1) * n])
        for i in range(BLOCKS)
        if n
    ] or [float("nan")]
    return statistics.median(b) / statistics.median(a), min(blocks), max(blocks)


def rss_child(kind: str, steps: int) -> None:
    """Run in a fresh process: forward-only steps, print peak RSS growth (bytes) as JSON."""
    import psutil

    proc = psutil.Process()
    torch.manual_seed(0)
    xs = inputs(8)
    net = Net()
    step = step_fn(net, backward=False)
    tmp = tempfile.mkdtemp()
    mons = make_monitors(kind, net, os.path.join(tmp, "s.spikes"))
    for i in range(3):
        step(xs[i])
    base = proc.memory_info().rss
    peak = base
    samples = []
    t0 = time.perf_counter()
    done = steps
    for i in range(steps):
        step(xs[i % len(xs)])
        if i % 10 == 9:
            rss = proc.memory_info().rss
            peak = max(peak, rss)
            samples.append(rss - base)
            if rss - base > RSS_CAP:
                done = i + 1
                break
    elapsed = time.perf_counter() - t0
    close_monitors(mons)
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({"peak": peak - base, "steps": done, "s": elapsed}))


def rss(kind: str, steps: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--_rss", kind, str(steps)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="few steps, for a smoke test")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per configuration")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--_rss", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args._rss:
        rss_child(args._rss[0], int(args._rss[1]))
        return
    steps = args.steps or (5 if args.quick else 150)
    long_runs = (20, 50) if args.quick else (200, 1000)

    kinds = ["a", "a2", "b"]
    try:
        import spikingjelly.activation_based.monitor  # noqa: F401

        kinds.append("c")
    except ImportError:
        print("SpikingJelly not importable: skipping (c)", file=sys.stderr)
    labels = {
        "a": "(a) no monitor",
        "a2": "(a') no monitor, second copy (noise floor)",
        "b": "(b) spikestore Output+Attribute(v_seq), to disk",
        "c": "(c) SpikingJelly Output+Attribute(v_seq), in memory",
    }
    tmp = tempfile.mkdtemp()
    try:
        fwd = time_steps(kinds, False, steps, tmp)
        bwd = time_steps(kinds, True, steps, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    mem = {k: {n: rss(k, n) for n in long_runs} for k in kinds if k != "a2"}

    cmd = "python benchmarks/bench_monitor.py" + (" --quick" if args.quick else "")
    print(
        f"\n`{cmd}`  (torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; T={T}, batch {BATCH}, "
        f"1x28x28; median of {steps} steps each)\n"
    )
    n1, n2 = long_runs
    print(
        f"| config | fwd ms/step | fwd ratio (blocks min-max) | fwd+bwd ms/step | "
        f"fwd+bwd ratio (blocks min-max) | peak RSS growth {n1} steps | "
        f"peak RSS growth {n2} steps |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for k in kinds:
        f, b = ratio_stats(fwd, k), ratio_stats(bwd, k)
        m1 = _mib(mem[k][n1], n1) if k in mem else "-"
        m2 = _mib(mem[k][n2], n2) if k in mem else "-"
        print(
            f"| {labels[k]} | {statistics.median(fwd[k]) * 1e3:.1f} | "
            f"{f[0]:.3f}x ({f[1]:.3f}-{f[2]:.3f}) | {statistics.median(bwd[k]) * 1e3:.1f} | "
            f"{b[0]:.3f}x ({b[1]:.3f}-{b[2]:.3f}) | {m1} | {m2} |"
        )


def _mib(r: dict, n: int) -> str:
    cut = "" if r["steps"] == n else f" (stopped at step {r['steps']})"
    return f"{r['peak'] / 2**20:.0f} MiB{cut}"


if __name__ == "__main__":
    main()
