"""What recording costs a training run: a new user's SpikingJelly conv SNN on the CPU.

The workload is the one a new user starts with: a multi-step (``step_mode="m"``)
SpikingJelly network, Conv-BN-LIF-pool x2, Flatten, Linear-LIF, Linear-LIF (4 LIF
layers, the first also keeping ``v_seq``), T=4, batch 32, synthetic Bernoulli inputs
``[T, B, 1, 28, 28]``; each iteration is forward, cross-entropy on the mean output,
backward, an SGD step and ``functional.reset_net``.

Configurations, each on its own copy of the network (same seed, same inputs, so the
copies stay identical and their records can be compared):

(a)  no monitor;
(b)  SpikingJelly's in-memory monitors: ``OutputMonitor`` on the 4 LIF layers,
     ``AttributeMonitor("v_seq")`` on the first LIF, ``GradOutputMonitor`` on the 4 LIF
     layers (records as SpikingJelly keeps them: outputs not detached);
(c)  spikestore's same three monitors, sharing one ``StoreWriter`` in a temporary folder;
(d)  spikes only: spikestore's ``OutputMonitor`` on the 4 LIF layers;
(a') no monitor again, a second copy: (a')/(a) is the run's noise floor.

Each repeat runs every configuration for one block of iterations, in an order that
rotates from repeat to repeat (so load from other processes falls on all alike); a
block's figure is its median ms per iteration, the table gives the median over repeats
and the (min-max) over repeats, and each ratio is taken within a repeat (blocks run
back to back) before its median. CPU time is measured too, per block: of the whole
process (the writer's threads included, and the block's commit) and of the training
loop's thread alone; on shared cores these ratios are steadier than wall time's.
Between blocks, outside the timers, the monitors' records are cleared
(``clear_recorded_data()``, as a user saves or clears per epoch: SpikingJelly's records
keep every step's tensors, and the autograd graph of the outputs, in memory) and
spikestore's writers commit (``flush()``, as at an epoch's end), so that no
configuration's background work falls into another's block. One torch thread
(``torch.set_num_threads(1)``) for stable figures on shared cores.

After the last repeat, the records of (c) are read back from its store and compared
with those of (b), record by record: a mismatch stops the script with an error.

    python benchmarks/bench_training.py                 # 5 repeats of 20 iterations
    python benchmarks/bench_training.py --quick         # 3 repeats of 8
    python benchmarks/bench_training.py --smoke --json /tmp/training.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import spikestore

pc = time.perf_counter
T = 4
LABELS = {
    "a": "(a) no monitor",
    "b": "(b) SpikingJelly Output (4 LIF) + Attribute v_seq (1) + GradOutput (4), in memory",
    "c": "(c) spikestore, the same monitors, to a store",
    "d": "(d) spikestore OutputMonitor (4 LIF) only, to a store",
    "a2": "(a') no monitor, second copy (noise floor)",
}
#: (name, numerator, denominator, target): ratios of block medians within a repeat.
RATIOS = (
    ("c/b: spikestore vs SpikingJelly, same monitors", "c", "b", 1.15),
    ("d/a: spikes only vs no monitor", "d", "a", 1.10),
    ("(a')/(a): noise floor", "a2", "a", None),
)


class Mismatch(AssertionError):
    """spikestore read back something other than SpikingJelly's records."""


def make_net(seed: int) -> tuple[nn.Module, type]:
    """The network, and the type of its first LIF (the one whose ``v_seq`` is kept)."""
    from spikingjelly.activation_based import functional, layer, neuron, surrogate

    class VLIF(neuron.LIFNode):
        """The first LIF layer: the one AttributeMonitor("v_seq") watches."""

    def lif(cls: type = neuron.LIFNode, **kw: Any) -> nn.Module:
        return cls(tau=2.0, detach_reset=True, surrogate_function=surrogate.ATan(), **kw)

    torch.manual_seed(seed)
    net = nn.Sequential(
        layer.Conv2d(1, 16, 3, padding=1, bias=False),
        layer.BatchNorm2d(16),
        lif(VLIF, store_v_seq=True),
        layer.MaxPool2d(2),
        layer.Conv2d(16, 32, 3, padding=1, bias=False),
        layer.BatchNorm2d(32),
        lif(),
        layer.MaxPool2d(2),
        layer.Flatten(),
        layer.Linear(32 * 7 * 7, 128),
        lif(),
        layer.Linear(128, 10),
        lif(),
    )
    functional.set_step_mode(net, "m")
    return net, VLIF


class Run:
    """One configuration: its network, optimizer, monitors and writer."""

    def __init__(self, kind: str, seed: int, folder: Path) -> None:
        from spikingjelly.activation_based import functional, neuron

        self.kind = kind
        self.net, vlif = make_net(seed)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=0.1, momentum=0.9)
        self.reset = functional.reset_net
        self.writer: spikestore.StoreWriter | None = None
        self.monitors: list[Any] = []
        lif = neuron.LIFNode
        if kind == "b":
            from spikingjelly.activation_based import monitor as sjm

            self.monitors = [
                sjm.OutputMonitor(self.net, lif),
                sjm.AttributeMonitor("v_seq", False, self.net, vlif),
                sjm.GradOutputMonitor(self.net, lif),
            ]
        elif kind in ("c", "d"):
            from spikestore.monitor import AttributeMonitor, GradOutputMonitor, OutputMonitor

            self.writer = w = spikestore.StoreWriter(folder / f"{kind}.spikes")
            self.monitors = [OutputMonitor(self.net, lif, store=w)]
            if kind == "c":
                self.monitors += [
                    AttributeMonitor("v_seq", False, self.net, vlif, store=w),
                    GradOutputMonitor(self.net, lif, store=w),
                ]

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        out = self.net(x).mean(0)
        loss = nn.functional.cross_entropy(out, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.reset(self.net)

    def end_block(self, clear: bool = True) -> float:
        """Untimed: clear the records, commit the store; the commit's seconds."""
        if clear:
            for m in self.monitors:
                m.clear_recorded_data()
        t0 = pc()
        if self.writer is not None:
            self.writer.flush()
        return pc() - t0

    def close(self) -> None:
        for m in self.monitors:
            m.close()
        if self.writer is not None:
            self.writer.close()


def batches(n: int, batch: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (
            torch.bernoulli(torch.full((T, batch, 1, 28, 28), 0.2), generator=g),
            torch.randint(0, 10, (batch,), generator=g),
        )
        for _ in range(n)
    ]


def same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a.detach(), b.detach())
    return a is None and b is None


def verify(b: Run, c: Run) -> int:
    """Compare (c)'s records (read back from its store) with (b)'s; records compared."""
    n = 0
    for sj, ours in zip(b.monitors, c.monitors, strict=True):
        want, got = list(sj.records), list(ours.records)
        if len(want) != len(got):
            raise Mismatch(f"{type(ours).__name__}: {len(got)} records, SpikingJelly {len(want)}")
        for i, (x, y) in enumerate(zip(got, want, strict=True)):
            if not same(x, y):
                raise Mismatch(f"{type(ours).__name__}: record {i} differs from SpikingJelly's")
        if ours.monitored_layers != sj.monitored_layers:
            raise Mismatch(f"{type(ours).__name__}: layers {ours.monitored_layers}")
        n += len(got)
    return n


T0 = pc()


def progress(msg: str) -> None:
    print(f"[{pc() - T0:7.1f} s] {msg}", file=sys.stderr, flush=True)


def cpu() -> float:
    """CPU seconds of the whole process so far (every thread: the writer's too)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measure(kinds: list[str], repeats: int, iters: int, warm: int, batch: int,
            folder: Path) -> tuple[dict[str, dict[str, list[float]]], int]:
    data = batches(max(4, min(iters, 16)), batch, seed=1)
    runs = {k: Run(k, 0, folder) for k in kinds}
    res: dict[str, dict[str, list[float]]] = {
        k: {"ms": [], "flush_ms": [], "cpu_ms": [], "main_cpu_ms": []} for k in kinds
    }
    for k in kinds:  # warm-up: first-use costs, the stores' layers made
        for i in range(warm):
            runs[k].step(*data[i % len(data)])
        runs[k].end_block()
    gc.collect()
    gc.freeze()
    pos = 0
    for rep in range(repeats):
        r = rep % len(kinds)
        for k in kinds[r:] + kinds[:r]:
            progress(f"repeat {rep + 1}/{repeats}: {LABELS[k]}")
            run, times = runs[k], []
            cpu0, main0 = cpu(), time.thread_time()
            for i in range(iters):
                x, y = data[(pos + i) % len(data)]
                t0 = pc()
                run.step(x, y)
                times.append(pc() - t0)
            main1 = time.thread_time()
            # The last block's records stay, to be compared.
            flush = run.end_block(clear=rep < repeats - 1)
            r = res[k]
            r["ms"].append(statistics.median(times) * 1e3)
            r["flush_ms"].append(flush * 1e3)
            r["cpu_ms"].append((cpu() - cpu0) / iters * 1e3)  # the block's commit too
            r["main_cpu_ms"].append((main1 - main0) / iters * 1e3)
        pos += iters
    checked = -1
    if "b" in runs and "c" in runs:
        progress("reading (c)'s records back and comparing them with (b)'s")
        runs["c"].writer.flush()  # type: ignore[union-attr]
        checked = verify(runs["b"], runs["c"])
    for run in runs.values():
        run.close()
    return res, checked


def spread(v: list[float], fmt: str = ".1f") -> str:
    if len(v) < 2:
        return f"{statistics.median(v):{fmt}}"
    return f"{statistics.median(v):{fmt}} ({min(v):{fmt}}-{max(v):{fmt}})"


def ratio_rows(res: dict[str, dict[str, list[float]]]) -> list[dict[str, Any]]:
    """Each ratio of wall time (the target's), and of CPU time (all threads; the
    caller's thread alone), within each repeat."""
    rows = []
    for name, num, den, target in RATIOS:
        per = {key: [a / b for a, b in zip(res[num][key], res[den][key], strict=True)]
               for key in ("ms", "cpu_ms", "main_cpu_ms")}
        med = statistics.median(per["ms"])
        rows.append({
            "ratio": name, "median": med, "per_repeat": per["ms"], "target": target,
            "reached": None if target is None else med <= target,
            "cpu_per_repeat": per["cpu_ms"], "main_cpu_per_repeat": per["main_cpu_ms"],
        })
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="3 repeats of 8 iterations")
    ap.add_argument("--smoke", action="store_true",
                    help="1 repeat of 2 iterations, batch 8, for the tests")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--iters", type=int, default=None, help="iterations per block")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    if args.smoke:
        repeats, iters, warm, batch = 1, 2, 1, 8
    elif args.quick:
        repeats, iters, warm, batch = 3, 8, 2, 32
    else:
        repeats, iters, warm, batch = 5, 20, 3, 32
    repeats = args.repeats or repeats
    iters = args.iters or iters
    batch = args.batch or batch
    if repeats < 1 or iters < 1:
        ap.error("--repeats and --iters must be at least 1")
    torch.set_num_threads(1)
    cmd = "python benchmarks/bench_training.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    try:
        import spikingjelly.activation_based  # noqa: F401
    except Exception as exc:
        print(f"SpikingJelly is needed for the network ({type(exc).__name__}: {exc})",
              file=sys.stderr)
        return 2
    kinds = ["a", "b", "c", "d", "a2"]
    load0 = os.getloadavg()[0]
    t_run = pc()
    folder = Path(tempfile.mkdtemp(prefix="bench_training_", dir="/tmp"))
    try:
        res, checked = measure(kinds, repeats, iters, warm, batch, folder)
        stored = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    rows = ratio_rows(res)
    base = res["a"]["ms"]
    out = [
        f"`{cmd.strip()}`",
        "",
        f"(torch {torch.__version__}, spikestore {spikestore.__version__}; "
        f"{os.cpu_count()} CPUs, load average {load0:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end; 1 torch thread; T={T}, batch {batch}, "
        f"1x28x28; {repeats} repeats of {iters} iterations a configuration, interleaved, "
        f"median (min-max) over repeats; {pc() - t_run:.0f} s in all; "
        f"{checked} records of (c) read back and equal to (b)'s)",
        "",
        "CPU: ms of CPU time an iteration, of every thread of the process (the block's",
        "commit included: the writer's work too), and of the training loop's thread alone.",
        "",
        "| configuration | ms / iteration | vs (a) | CPU ms, all threads | CPU ms, loop's "
        "thread | commit between blocks, ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for k in kinds:
        r = res[k]
        rel = [a / b for a, b in zip(r["ms"], base, strict=True)]
        fl = spread(r["flush_ms"]) if k in ("c", "d") else "-"
        out.append(f"| {LABELS[k]} | {spread(r['ms'])} | {spread(rel, '.3f')}x | "
                   f"{spread(r['cpu_ms'])} | {spread(r['main_cpu_ms'])} | {fl} |")
    out += ["", "| ratio (within each repeat) | wall: median (min-max) | target | reached | "
            "CPU, all threads | CPU, loop's thread |", "|---|---:|---:|---|---:|---:|"]
    for r in rows:
        tgt = "-" if r["target"] is None else f"<= {r['target']:.2f}"
        reached = "-" if r["reached"] is None else ("yes" if r["reached"] else "no")
        out.append(f"| {r['ratio']} | {spread(r['per_repeat'], '.3f')} | {tgt} | {reached} | "
                   f"{spread(r['cpu_per_repeat'], '.3f')} | "
                   f"{spread(r['main_cpu_per_repeat'], '.3f')} |")
    print("\n".join(out))
    if args.json is not None:
        doc = {"command": cmd.strip(), "torch": torch.__version__,
               "spikestore": spikestore.__version__, "repeats": repeats, "iters": iters,
               "batch": batch, "T": T, "results": res, "ratios": rows,
               "verified_records": checked, "stored_bytes": stored}
        args.json.write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
