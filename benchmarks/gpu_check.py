"""The GPU check: spikestore's CUDA path on a real GPU, in one prepared run.

``bash benchmarks/gpu_check.sh`` runs each part below in a process of its own (with a
timeout), then ``--summarize`` merges their results into ``$OUT/results.json``,
``$OUT/overhead.json`` and a human-readable ``$OUT/summary.md``. Parts:

- ``compare``: a multi-step conv SNN (SpikingJelly, ``step_mode="m"``, its torch
  implementation of LIF: ``SJ_LIF_CUDA_IMPLEMENTATION=torch``, no cupy, no triton) runs
  forward + backward with spikestore's and SpikingJelly's OutputMonitor, InputMonitor,
  AttributeMonitor(``v``) and GradOutputMonitor on it; every record (the monitors'
  ``records``, ``m[layer]``, and the store reopened with ``spikestore.open``) must be
  equal bit for bit.
- ``sync``: monitored forward + backward under ``torch.cuda.set_sync_debug_mode``.
  The mode is switched on by hooks registered just before the monitors' and off by
  hooks registered just after, so that exactly the monitors' hooks run under it;
  ``"warn"`` lists every synchronising call (with the Python line and thread), then
  ``"error"`` gives the exception text. The whole step under ``"error"`` (with and
  without monitors) is reported beside it: SpikingJelly's own code may synchronise.
  The mode is process-wide, so the writer thread's copies can show up too: they are
  told apart by thread and reported, not counted against the hook.
- ``memcpy``: device -> host bytes per step, from ``torch.profiler``'s CUDA memcpy
  events (or, where the profiler sees no CUDA activity, by wrapping ``Tensor.copy_``,
  ``.cpu`` and ``.to``), for a spike layer (only packed bits should cross: about
  1/32 of its float32 size) and for a dense one (its values: about 1x).
- ``devices``: records from ``cuda:0`` and ``cpu`` in one layer of one store, and a
  tensor on a device other than the current one (skipped with one GPU), read back.
- ``overhead``: time per step (median of repeats, ``torch.cuda.synchronize()`` around
  each) for no monitor, spikestore's monitors and SpikingJelly's in-memory monitors,
  forward and forward + backward, at T=4, batch 64 on a CIFAR-sized conv SNN
  (conv 3->128->256 with LIF and pooling, a linear head); peak host RSS (VmHWM), RSS
  and GPU memory over steps, ``torch.cuda.max_memory_allocated``.

``--device cpu`` (the dry run) runs the same code on the CPU; ``--quick`` at a tiny
size. Parts that need a GPU (the sync check, device->host bytes, the second device)
are reported SKIPPED there with the reason, after running what they can.

Run::

    bash benchmarks/gpu_check.sh                                  # on a GPU machine
    GPU_CHECK_DEVICE=cpu GPU_CHECK_QUICK=1 bash benchmarks/gpu_check.sh   # dry run
    python benchmarks/gpu_check.py --device cpu --quick --out /tmp/gc --part all
"""

from __future__ import annotations

import os

# SpikingJelly reads it on import: its pure-torch LIF on CUDA (not its compiled or
# Triton kernels), as SpikingJelly's "torch backend".
os.environ.setdefault("SJ_LIF_CUDA_IMPLEMENTATION", "torch")

import argparse
import contextlib
import copy
import json
import platform
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

PARTS = ("devices", "compare", "sync", "memcpy", "overhead")
PASS, FAIL, SKIPPED = "PASS", "FAIL", "SKIPPED"


# ---------------------------------------------------------------- sizes and the net


def sizes(quick: bool) -> dict[str, int]:
    """The net and step counts. ``small_B``: the batch of the compare and sync parts,
    whose records are decoded and compared several times (the net is the same)."""
    if quick:
        return dict(
            T=4,
            B=2,
            c1=4,
            c2=8,
            hw=16,
            compare_steps=2,
            sync_steps=2,
            memcpy_steps=2,
            warm=1,
            steps=3,
            devices_records=6,
            sj_clear=2,
            small_B=2,
        )
    return dict(
        T=4,
        B=64,
        c1=128,
        c2=256,
        hw=32,
        compare_steps=3,
        sync_steps=3,
        memcpy_steps=3,
        warm=3,
        steps=20,
        devices_records=12,
        sj_clear=4,
        small_B=8,
    )


def build_net(sz: dict[str, int], device: Any, seed: int = 0) -> Any:
    """conv-BN-LIF-pool x2, then a linear head with LIF, multi-step, on [T, B, 3, hw, hw].

    The LIF layers are modules ``2``, ``6`` and ``10``.
    """
    import torch
    from spikingjelly.activation_based import functional, layer, neuron
    from torch import nn

    torch.manual_seed(seed)
    c1, c2, side = sz["c1"], sz["c2"], sz["hw"] // 4
    net = nn.Sequential(
        layer.Conv2d(3, c1, 3, padding=1, bias=False),
        layer.BatchNorm2d(c1),
        neuron.LIFNode(tau=2.0, detach_reset=True),
        layer.MaxPool2d(2),
        layer.Conv2d(c1, c2, 3, padding=1, bias=False),
        layer.BatchNorm2d(c2),
        neuron.LIFNode(tau=2.0, detach_reset=True),
        layer.MaxPool2d(2),
        layer.Flatten(),
        layer.Linear(c2 * side * side, 10),
        neuron.LIFNode(tau=2.0, detach_reset=True),
    )
    functional.set_step_mode(net, "m")
    return net.to(device)


def inputs(sz: dict[str, int], device: Any, seed: int) -> tuple[Any, Any]:
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.rand(sz["T"], sz["B"], 3, sz["hw"], sz["hw"], generator=g) * 2
    y = torch.randint(0, 10, (sz["B"],), generator=g)
    return x.to(device), y.to(device)


def train_step(net: Any, x: Any, y: Any, opt: Any) -> None:
    import torch
    from spikingjelly.activation_based import functional

    out = net(x)
    loss = torch.nn.functional.cross_entropy(out.mean(0), y)
    loss.backward()
    if opt is not None:
        opt.step()
        opt.zero_grad(set_to_none=True)
    functional.reset_net(net)


def forward_step(net: Any, x: Any, y: Any, opt: Any) -> None:
    import torch
    from spikingjelly.activation_based import functional

    with torch.no_grad():
        net(x)
    functional.reset_net(net)


def lif_class() -> type:
    from spikingjelly.activation_based import neuron

    return neuron.LIFNode


# ---------------------------------------------------------------- helpers


def same(a: Any, b: Any) -> bool:
    """Equal bit for bit: dtype, shape and every byte of tensors; structure of tuples."""
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return False
        if a.dtype != b.dtype or tuple(a.shape) != tuple(b.shape):
            return False
        a = a.detach().cpu().contiguous().reshape(-1)
        b = b.detach().cpu().contiguous().reshape(-1)
        if a.numel() == 0:
            return True
        return torch.equal(a.view(torch.uint8), b.view(torch.uint8))
    if isinstance(a, tuple | list) or isinstance(b, tuple | list):
        return (
            isinstance(a, tuple | list)
            and isinstance(b, tuple | list)
            and len(a) == len(b)
            and all(same(x, y) for x, y in zip(a, b, strict=True))
        )
    if a is None or b is None:
        return a is b
    return type(a) is type(b) and (a == b or (a != a and b != b))


def proc_status(key: str) -> float | None:
    """A ``/proc/self/status`` figure (VmRSS, VmHWM) in MiB, or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def quietly(fn: Callable[[], Any]) -> None:
    """Call ``fn``, ignoring its exception (closing after a failure already reported)."""
    with contextlib.suppress(Exception):
        fn()


def sync(dev: Any) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def gpu_mib(dev: Any, peak: bool = False) -> float | None:
    import torch

    if dev.type != "cuda":
        return None
    f = torch.cuda.max_memory_allocated if peak else torch.cuda.memory_allocated
    return f(dev) / 2**20


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def thin(xs: list[Any], n: int = 60) -> list[Any]:
    """At most ``n`` evenly spaced items of ``xs`` (the last one kept)."""
    if len(xs) <= n:
        return list(xs)
    step = len(xs) / n
    out = [xs[int(i * step)] for i in range(n)]
    out[-1] = xs[-1]
    return out


def rnd(x: float | None, k: int = 3) -> float | None:
    return None if x is None else round(float(x), k)


def environment(dev: Any) -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "executable": sys.executable,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "device": str(dev),
        "SJ_LIF_CUDA_IMPLEMENTATION": os.environ.get("SJ_LIF_CUDA_IMPLEMENTATION"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
    }
    if torch.cuda.is_available():
        env["device_count"] = torch.cuda.device_count()
        env["device_name"] = torch.cuda.get_device_name(0)
        env["capability"] = list(torch.cuda.get_device_capability(0))
    with contextlib.suppress(Exception):
        import spikestore

        env["spikestore"] = spikestore.__version__
    with contextlib.suppress(Exception):
        import spikingjelly

        env["spikingjelly"] = getattr(spikingjelly, "__version__", None) or _dist_version(
            "spikingjelly"
        )
    with contextlib.suppress(Exception):
        import zarr

        env["zarr"] = zarr.__version__
    return env


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


# ---------------------------------------------------------------- part: compare


def part_compare(dev: Any, sz: dict[str, int], tmp: Path) -> dict[str, Any]:
    """spikestore's monitors against SpikingJelly's, bit for bit, on the conv SNN."""
    sz = sz | {"B": sz["small_B"]}
    import spikingjelly.activation_based.monitor as sjm
    import torch

    import spikestore
    import spikestore.monitor as ssm

    LIF = lif_class()
    net = build_net(sz, dev)
    kinds: list[tuple[str, tuple[Any, ...]]] = [
        ("OutputMonitor", (net, LIF)),
        ("InputMonitor", (net, LIF)),
        ("AttributeMonitor", ("v", False, net, LIF)),
        ("GradOutputMonitor", (net, LIF)),
    ]
    path = tmp / "compare.spikes"
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    figures: dict[str, Any] = {}
    failures: list[str] = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        with spikestore.StoreWriter(path) as w:
            pairs = [(k, getattr(ssm, k)(*a, store=w), getattr(sjm, k)(*a)) for k, a in kinds]
            for i in range(sz["compare_steps"]):
                x, y = inputs(sz, dev, 100 + i)
                train_step(net, x, y, opt)
            x, y = inputs(sz, dev, 99)
            forward_step(net, x, y, None)  # a forward without backward, too
            sync(dev)
            spike_rates = {}
            for kind, ours, theirs in pairs:
                checked, bad = 0, []
                if ours.monitored_layers != theirs.monitored_layers:
                    bad.append(f"layers {ours.monitored_layers} != {theirs.monitored_layers}")
                if len(ours.records) != len(theirs.records):
                    bad.append(f"{len(ours.records)} records != {len(theirs.records)}")
                for j, (a, b) in enumerate(zip(ours.records, theirs.records, strict=False)):
                    checked += 1
                    if not same(a, b):
                        bad.append(f"records[{j}]")
                for name in theirs.monitored_layers:
                    mine, sj = ours[name], theirs[name]
                    if len(mine) != len(sj) or not all(map(same, mine, sj)):
                        bad.append(f"m[{name!r}]")
                    if kind == "OutputMonitor" and sj:
                        rates = [r.detach().float().mean() for r in sj]
                        spike_rates[name] = rnd(float(torch.stack(rates).mean()))
                figures[kind] = {
                    "records": len(theirs.records),
                    "checked": checked,
                    "mismatches": bad[:10],
                }
                failures += [f"{kind}: {b}" for b in bad[:10]]
            names = {kind: ours.name for kind, ours, _ in pairs}
            for _, ours, _ in pairs:
                ours.close()
    # The store reopened: every layer's steps decoded from disk.
    store = spikestore.open(path)
    disk_checked = 0
    for kind, _, theirs in pairs:
        for name in theirs.monitored_layers:
            reader = store[names[kind]][name]
            recs = theirs[name]
            if len(reader) != len(recs):
                failures.append(
                    f"{kind}: store {names[kind]}/{name} has {len(reader)} steps, not {len(recs)}"
                )
                continue
            for j, rec in enumerate(recs):
                disk_checked += 1
                if not same(reader[j], rec):
                    failures.append(f"{kind}: store {names[kind]}/{name}[{j}]")
    for _, _, theirs in pairs:
        theirs.remove_hooks()
    n = sum(f["records"] for f in figures.values() if isinstance(f, dict))
    figures["spike_rate_per_layer"] = spike_rates
    figures["store_bytes"] = dir_bytes(path)
    figures["reopened_records_checked"] = disk_checked
    figures["net"] = {k: sz[k] for k in ("T", "B", "c1", "c2", "hw")}
    figures["steps"] = sz["compare_steps"] + 1
    status = FAIL if failures or n == 0 else PASS
    return {
        "status": status,
        "figures": figures,
        "failures": failures[:20],
        "summary": (
            f"{n} records of 4 monitor kinds on 3 LIF layers, {disk_checked} re-read "
            f"from the store: "
            + (
                "all bit-identical to SpikingJelly's"
                if status == PASS
                else f"{len(failures)} mismatches"
            )
        ),
    }


# ---------------------------------------------------------------- part: sync


class SyncProbe:
    """Switches ``torch.cuda.set_sync_debug_mode`` on around the monitors' hooks only.

    On the CPU the switch is a no-op that counts windows, so the bracketing runs.
    """

    def __init__(self, dev: Any) -> None:
        self.cuda = dev.type == "cuda"
        self.mode: str | int = 0
        self.armed = False
        self.opened = 0
        self.closed = 0
        self.hook_threads: set[int] = set()

    def _set(self, mode: str | int) -> None:
        import torch

        if self.cuda:
            torch.cuda.set_sync_debug_mode(mode)

    def on(self, *_: Any) -> None:
        if self.armed:
            # Backward hooks of CUDA tensors run in autograd's device thread, not the main one.
            self.hook_threads.add(threading.get_ident())
            self.opened += 1
            self._set(self.mode)

    def off(self, *_: Any) -> None:
        if self.armed:
            self.closed += 1
            self._set(0)

    def install(self, modules: list[Any], make_monitors: Callable[[], list[Any]]) -> list[Any]:
        """'on' hooks, then the monitors, then 'off' hooks: hooks run in that order."""
        handles = []
        for m in modules:
            handles += [
                m.register_forward_pre_hook(self.on),
                m.register_forward_hook(self.on),
                m.register_full_backward_hook(self.on),
            ]
        monitors = make_monitors()
        for m in modules:
            handles += [
                m.register_forward_pre_hook(self.off),
                m.register_forward_hook(self.off),
                m.register_full_backward_hook(self.off),
            ]
        self.handles = handles
        return monitors

    @contextlib.contextmanager
    def armed_with(self, mode: str) -> Iterator[None]:
        self.mode, self.armed = mode, True
        try:
            yield
        finally:
            self.armed = False
            self._set(0)


@contextlib.contextmanager
def collect_warnings() -> Iterator[list[dict[str, Any]]]:
    """Every warning, from any thread, with its thread, place and text."""
    got: list[dict[str, Any]] = []

    def show(message: Any, category: Any, filename: str, lineno: int, *_: Any) -> None:
        got.append(
            {
                "thread": threading.current_thread().name,
                "ident": threading.get_ident(),
                "category": category.__name__,
                "where": f"{filename}:{lineno}",
                "message": str(message)[:300],
            }
        )

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        warnings.showwarning = show
        yield got


def _dedupe(ws: list[dict[str, Any]], keep: int = 20) -> list[dict[str, Any]]:
    """One entry per thread, place and message, with how often it came."""
    seen: dict[tuple[str, str, str], dict[str, Any]] = {}
    for w in ws:
        key = (w["thread"], w["where"], w["message"][:120])
        if key in seen:
            seen[key]["count"] += 1
        else:
            seen[key] = {**w, "count": 1}
    return list(seen.values())[:keep]


def _sync_warnings(got: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [w for w in got if "synchroniz" in w["message"].lower()]


def _whole_step_error(dev: Any, sz: dict[str, int], tmp: Path, monitors: bool) -> str | None:
    """One forward + backward with the debug mode ``error`` on throughout."""
    import torch

    import spikestore
    import spikestore.monitor as ssm

    LIF = lif_class()
    net = build_net(sz, dev, seed=1)
    x, y = inputs(sz, dev, 7)
    path = tmp / f"whole-{monitors}.spikes"
    err = None
    w = spikestore.StoreWriter(path)
    try:
        mons = []
        if monitors:
            mons = [
                ssm.OutputMonitor(net, LIF, store=w),
                ssm.InputMonitor(net, LIF, store=w),
                ssm.AttributeMonitor("v", False, net, LIF, store=w),
                ssm.GradOutputMonitor(net, LIF, store=w),
            ]
        train_step(net, x, y, None)  # warm: first-use allocations and caches
        sync(dev)
        w.flush()
        try:
            if dev.type == "cuda":
                torch.cuda.set_sync_debug_mode("error")
            train_step(net, x, y, None)
        except Exception as e:
            err = f"{type(e).__name__}: {e}\n" + "".join(traceback.format_tb(e.__traceback__)[-4:])
        finally:
            if dev.type == "cuda":
                torch.cuda.set_sync_debug_mode(0)
        sync(dev)
        for m in mons:
            m.close()
    except Exception as e:  # a writer thread that hit the (process-wide) mode, say
        err = (err or "") + f"\nafterwards: {type(e).__name__}: {e}"
    finally:
        with contextlib.suppress(Exception):
            w.close()
    return err


def part_sync(dev: Any, sz: dict[str, int], tmp: Path) -> dict[str, Any]:
    """No host synchronisation in the monitors' hooks (forward and backward)."""
    sz = sz | {"B": sz["small_B"]}
    import spikestore
    import spikestore.monitor as ssm

    LIF = lif_class()
    net = build_net(sz, dev)
    lifs = [m for m in net.modules() if isinstance(m, LIF)]
    probe = SyncProbe(dev)
    x, y = inputs(sz, dev, 3)
    figures: dict[str, Any] = {}
    errors: dict[str, str | None] = {}
    w = spikestore.StoreWriter(tmp / "sync.spikes")
    with contextlib.ExitStack() as stack:
        stack.callback(quietly, w.close)
        mons = probe.install(
            lifs,
            lambda: [
                ssm.OutputMonitor(net, LIF, store=w),
                ssm.InputMonitor(net, LIF, store=w),
                ssm.AttributeMonitor("v", False, net, LIF, store=w),
                ssm.GradOutputMonitor(net, LIF, store=w),
            ],
        )

        def bracketed(mode: str, steps: int) -> tuple[list[dict[str, Any]], str | None]:
            err = None
            with collect_warnings() as got:
                for _ in range(steps):
                    sync(dev)
                    w.flush()  # the writer thread idle when the windows open
                    try:
                        with probe.armed_with(mode):
                            train_step(net, x, y, None)
                    except Exception as e:
                        err = f"{type(e).__name__}: {e}\n" + "".join(
                            traceback.format_tb(e.__traceback__)[-6:]
                        )
                        if isinstance(e, spikestore.WriteError):
                            # The writer thread synchronised while the (process-wide) mode
                            # was on: its copy, not the hook's; the writer is dead now.
                            err = "writer thread: " + err
                        with contextlib.suppress(Exception):
                            from spikingjelly.activation_based import functional

                            functional.reset_net(net)
                        break
                sync(dev)
                with contextlib.suppress(Exception):
                    w.flush()
            return _sync_warnings(got), err

        cold, cold_err = bracketed("warn", 1)  # first use: allocations, cached constants
        steady, steady_err = bracketed("warn", sz["sync_steps"])
        # Again without the monitors' CPU copies of small records (recent_bytes): tells
        # the staging's syncs from those copies'.
        kept = [m.recent_bytes for m in mons]
        for m in mons:
            m.recent_bytes = 0
        no_recent, no_recent_err = bracketed("warn", sz["sync_steps"])
        for m, k in zip(mons, kept, strict=True):
            m.recent_bytes = k
        _, error_err = bracketed("error", 1)
        writer_error = None
        for m in mons:
            try:
                m.close()
            except Exception as e:  # a writer thread that hit the (process-wide) mode
                writer_error = f"{type(e).__name__}: {e}"
    for h in probe.handles:
        h.remove()

    def split(ws: list[dict[str, Any]]) -> dict[str, Any]:
        # The threads that ran the hooks (main, autograd's); the writer thread never does.
        hook = [x for x in ws if x["ident"] in probe.hook_threads]
        other = [x for x in ws if x["ident"] not in probe.hook_threads]
        return {
            "hook": _dedupe(hook),
            "hook_syncs": len(hook),
            "other_threads": _dedupe(other),
            "other_syncs": len(other),
        }

    figures["hook_windows"] = {
        "opened": probe.opened,
        "closed": probe.closed,
        "threads": len(probe.hook_threads),
    }
    figures["cold_first_step"] = split(cold) | {"exception": cold_err}
    figures["steady_warn"] = split(steady) | {"exception": steady_err}
    figures["steady_warn_recent_bytes_0"] = split(no_recent) | {"exception": no_recent_err}
    figures["steady_error_mode_exception"] = error_err
    figures["writer_error_at_close"] = writer_error
    errors["whole_step_with_monitors"] = _whole_step_error(dev, sz, tmp, True)
    errors["whole_step_without_monitors"] = _whole_step_error(dev, sz, tmp, False)
    figures |= errors
    balanced = probe.opened == probe.closed and probe.opened > 0
    if not balanced:
        return {
            "status": FAIL,
            "figures": figures,
            "summary": f"hook windows unbalanced: {figures['hook_windows']}",
        }
    if dev.type != "cuda":
        return {
            "status": SKIPPED,
            "figures": figures,
            "reason": "SKIPPED-on-CPU: torch.cuda.set_sync_debug_mode needs CUDA",
            "summary": (
                f"CPU dry run: {probe.opened} hook windows bracketed and balanced "
                "over forward + backward; no sync check without a GPU"
            ),
        }
    hook_syncs = figures["steady_warn"]["hook_syncs"]
    hook_error = error_err is not None and not error_err.startswith("writer thread: ")
    ok = hook_syncs == 0 and not hook_error and steady_err is None
    cold_n = figures["cold_first_step"]["hook_syncs"]
    whole = errors["whole_step_with_monitors"]
    whole_base = errors["whole_step_without_monitors"]
    summary = (
        f"{probe.opened} hook windows; steady steps: {hook_syncs} syncs in hooks, mode 'error': "
        + ("no exception" if error_err is None else error_err.splitlines()[0][:300])
        + f"; with recent_bytes=0: {figures['steady_warn_recent_bytes_0']['hook_syncs']} syncs"
        + f"; first step: {cold_n} syncs in hooks"
        + "; whole step under 'error': "
        + ("clean" if whole is None else whole.splitlines()[0][:300])
        + (" (same without monitors: the network's own)" if whole and whole_base else "")
    )
    return {"status": PASS if ok else FAIL, "figures": figures, "summary": summary}


# ---------------------------------------------------------------- part: memcpy


def profile_copies(dev: Any, fn: Callable[[], None], tmp: Path) -> dict[str, Any]:
    """Device -> host bytes moved while ``fn`` runs, from torch.profiler's trace."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU]
    if dev.type == "cuda":
        acts.append(ProfilerActivity.CUDA)
    with profile(activities=acts) as prof:
        fn()
        sync(dev)
    trace = tmp / f"trace-{time.monotonic_ns()}.json"
    prof.export_chrome_trace(str(trace))
    events = json.loads(trace.read_text()).get("traceEvents", [])
    trace.unlink()
    out = {
        "method": "torch.profiler",
        "dtoh_bytes": 0,
        "dtoh_copies": 0,
        "htod_bytes": 0,
        "kinds": {},
        "gpu_events": 0,
    }
    for e in events:
        cat = str(e.get("cat", "")).lower()
        if cat in ("kernel", "gpu_memcpy", "gpu_memset"):
            out["gpu_events"] += 1
        if cat != "gpu_memcpy":
            continue
        name = str(e.get("name", ""))
        nbytes = int((e.get("args") or {}).get("bytes", 0) or 0)
        out["kinds"][name] = out["kinds"].get(name, 0) + nbytes
        if "DtoH" in name:
            out["dtoh_bytes"] += nbytes
            out["dtoh_copies"] += 1
        elif "HtoD" in name:
            out["htod_bytes"] += nbytes
    return out


def wrapped_copies(dev: Any, fn: Callable[[], None]) -> dict[str, Any]:
    """The fallback: device -> host bytes through ``Tensor.copy_``, ``.cpu`` and ``.to``.

    Patches the methods process-wide (the writer thread's copies count too); copies made
    inside C++ (``.item()``, ``torch.tensor``) are not seen.
    """
    import torch

    counted = {"dtoh_bytes": 0, "dtoh_copies": 0}
    lock = threading.Lock()

    def count(src: Any, dst: Any) -> None:
        if (
            isinstance(src, torch.Tensor)
            and isinstance(dst, torch.Tensor)
            and src.device.type != "cpu"
            and dst.device.type == "cpu"
        ):
            with lock:
                counted["dtoh_bytes"] += src.numel() * src.element_size()
                counted["dtoh_copies"] += 1

    orig = {k: getattr(torch.Tensor, k) for k in ("copy_", "cpu", "to")}

    def copy_(self: Any, src: Any, *a: Any, **k: Any) -> Any:
        count(src, self)
        return orig["copy_"](self, src, *a, **k)

    def cpu(self: Any, *a: Any, **k: Any) -> Any:
        out = orig["cpu"](self, *a, **k)
        count(self, out)
        return out

    def to(self: Any, *a: Any, **k: Any) -> Any:
        out = orig["to"](self, *a, **k)
        if out is not self:
            count(self, out)
        return out

    torch.Tensor.copy_, torch.Tensor.cpu, torch.Tensor.to = copy_, cpu, to  # type: ignore[method-assign]
    try:
        fn()
        sync(dev)
    finally:
        for k, v in orig.items():
            setattr(torch.Tensor, k, v)
    return {"method": "wrapping Tensor.copy_/cpu/to", **counted}


def part_memcpy(dev: Any, sz: dict[str, int], tmp: Path) -> dict[str, Any]:
    """Bytes crossing device -> host per step: a spike layer and a dense one."""
    import spikestore
    import spikestore.monitor as ssm

    n = sz["memcpy_steps"]
    layer = "2"  # the first LIF: output [T, B, c1, hw, hw] spikes, input the same shape, dense
    f32 = 4 * sz["T"] * sz["B"] * sz["c1"] * sz["hw"] * sz["hw"]
    x, y = inputs(sz, dev, 5)
    figures: dict[str, Any] = {"layer": layer, "float32_bytes_per_step": f32, "steps": n}

    def measure(kind: str | None, counter: str) -> dict[str, Any]:
        net = build_net(sz, dev)
        path = tmp / f"memcpy-{kind}-{counter}.spikes"
        with spikestore.StoreWriter(path) as w:
            mon = None
            if kind == "spikes":
                mon = ssm.OutputMonitor(net, layer, store=w)
            elif kind == "dense":
                mon = ssm.InputMonitor(net, layer, store=w)
            for _ in range(2):  # warm: pinned buffers, kernels, the writer's first segment
                forward_step(net, x, y, None)
            sync(dev)
            w.flush()

            def run() -> None:
                for _ in range(n):
                    forward_step(net, x, y, None)
                sync(dev)
                w.flush()  # the writer thread's copies (dense values) inside the window

            if counter == "profiler":
                got = profile_copies(dev, run, tmp)
            else:
                got = wrapped_copies(dev, run)
            if mon is not None:
                mon.close()
        return got

    counter = "profiler"
    base = measure(None, counter)
    if dev.type == "cuda" and base["gpu_events"] == 0:
        counter = "wrap"  # the profiler saw no CUDA activity (no CUPTI): count by wrapping
        base = measure(None, counter)
    spikes, dense = measure("spikes", counter), measure("dense", counter)
    for name, got in (("baseline", base), ("spikes", spikes), ("dense", dense)):
        figures[name] = got
    per_step = {k: (figures[k]["dtoh_bytes"] - base["dtoh_bytes"]) / n for k in ("spikes", "dense")}
    ratio = {k: per_step[k] / f32 for k in per_step}
    figures["dtoh_bytes_per_step"] = per_step
    figures["ratio_to_float32"] = {k: rnd(v, 5) for k, v in ratio.items()}
    figures["expected_ratio"] = {"spikes": rnd(1 / 32, 5), "dense": 1.0}
    if dev.type != "cuda":
        if counter == "profiler":  # the wrapping fallback runs too, so both paths are exercised
            figures["wrap_check"] = measure("spikes", "wrap")
        return {
            "status": SKIPPED,
            "figures": figures,
            "reason": "SKIPPED-on-CPU: no device -> host copies exist on the CPU",
            "summary": (
                f"CPU dry run: profiler and wrapping ran, {spikes['dtoh_copies']} "
                "DtoH copies (none expected)"
            ),
        }
    ok = 0 < ratio["spikes"] <= 1 / 32 * 1.1 + 64 / f32 and ratio["dense"] >= 0.99
    return {
        "status": PASS if ok else FAIL,
        "figures": figures,
        "summary": (
            f"per step, layer {layer} ({f32 / 1e6:.1f} MB as float32), by {counter}: "
            f"spikes {per_step['spikes'] / 1e6:.3f} MB = {ratio['spikes']:.4f}x "
            f"(packed bits: 0.0312x), dense {per_step['dense'] / 1e6:.2f} MB = "
            f"{ratio['dense']:.3f}x"
        ),
    }


# ---------------------------------------------------------------- part: devices


def part_devices(dev: Any, sz: dict[str, int], tmp: Path) -> dict[str, Any]:
    """Records from cuda:0 and cpu in one store, and from a device other than the current."""
    import torch

    import spikestore

    subs: dict[str, dict[str, Any]] = {}

    def roundtrip(name: str, devices: list[str], current: int | None) -> dict[str, Any]:
        g = torch.Generator().manual_seed(3)
        recs = [
            (torch.rand(4, 257, generator=g) < 0.2).float() for _ in range(sz["devices_records"])
        ]
        path = tmp / f"{name}.spikes"
        ctx = torch.cuda.device(current) if current is not None else contextlib.nullcontext()
        with ctx, spikestore.StoreWriter(path) as w:
            for i, r in enumerate(recs):
                d = devices[i % len(devices)]
                w.append("m", "s", r.to(d))
                w.append("m", "v", (r * 0.5 - 0.25).to(d))
                w.append("m", "multi", torch.stack([r, 1 - r]).to(d), time_axis=0)
        s = spikestore.open(path)
        bad = [
            i
            for i, r in enumerate(recs)
            if not (
                same(s["m"]["s"][i], r)
                and same(s["m"]["v"][i], r * 0.5 - 0.25)
                and same(s["m"]["multi"][i], torch.stack([r, 1 - r]))
            )
        ]
        enc = s["m"]["s"].encodings
        return {
            "status": FAIL if bad or "bitpack" not in str(enc) else PASS,
            "devices": devices,
            "records": len(recs),
            "mismatched_steps": bad,
            "spike_encodings": [str(e) for e in enc],
        }

    if dev.type == "cuda":
        subs["cpu+cuda:0 in one store"] = roundtrip("mixed", ["cpu", "cuda:0"], 0)
        if torch.cuda.device_count() > 1:
            subs["tensor on cuda:1, current cuda:0"] = roundtrip(
                "other", ["cuda:1", "cpu", "cuda:0"], 0
            )
        else:
            subs["tensor on cuda:1, current cuda:0"] = {
                "status": SKIPPED,
                "reason": f"only {torch.cuda.device_count()} GPU: no device other than the "
                "current one",
            }
    else:
        subs["cpu records in one store"] = roundtrip("mixed", ["cpu"], None)
        subs["cpu+cuda:0 in one store"] = {
            "status": SKIPPED,
            "reason": "SKIPPED-on-CPU: no CUDA device",
        }
        subs["tensor on cuda:1, current cuda:0"] = {
            "status": SKIPPED,
            "reason": "SKIPPED-on-CPU: no CUDA device",
        }
    statuses = [s["status"] for s in subs.values()]
    status = FAIL if FAIL in statuses else PASS if PASS in statuses else SKIPPED
    return {
        "status": status,
        "figures": subs,
        "summary": "; ".join(
            f"{k}: {v['status']}" + (f" ({v['reason']})" if "reason" in v else "")
            for k, v in subs.items()
        ),
    }


# ---------------------------------------------------------------- part: overhead


def part_overhead(dev: Any, sz: dict[str, int], tmp: Path, budget: float) -> dict[str, Any]:
    """Time per step and memory: no monitor, spikestore's, SpikingJelly's in-memory."""
    import spikingjelly.activation_based.monitor as sjm
    import torch

    import spikestore
    import spikestore.monitor as ssm

    LIF = lif_class()
    base = build_net(sz, dev)
    state = copy.deepcopy(base.state_dict())
    data = [inputs(sz, dev, 200 + i) for i in range(4)]
    for i in range(2):  # warm the kernels (cudnn's choices) before any block
        train_step(base, *data[i], None)
        forward_step(base, *data[i], None)
    sync(dev)
    base.load_state_dict(state)
    mode_steps = {"forward": forward_step, "forward+backward": train_step}
    configs = [
        "none",
        "spikestore:spikes",
        "spikingjelly:spikes",
        "spikestore:all",
        "spikingjelly:all",
        "none (again)",
    ]
    n_blocks = len(mode_steps) * len(configs)
    t_start = time.perf_counter()
    blocks: dict[str, dict[str, Any]] = {}

    def monitors(lib: str, which: str, net: Any, w: Any) -> list[Any]:
        mod = ssm if lib == "spikestore" else sjm
        kw = {"store": w} if lib == "spikestore" else {}
        mons = [mod.OutputMonitor(net, LIF, **kw)]
        if which == "all":
            mons += [
                mod.AttributeMonitor("v", False, net, LIF, **kw),
                mod.GradOutputMonitor(net, LIF, **kw),
            ]
        return mons

    def run_block(mode: str, step: Callable[..., None], cfg: str, cap: float) -> dict[str, Any]:
        net = copy.deepcopy(base)
        opt = torch.optim.SGD(net.parameters(), lr=0.01) if mode != "forward" else None
        lib, _, which = cfg.partition(":")
        path = tmp / f"overhead-{len(blocks)}.spikes"
        w = spikestore.StoreWriter(path) if lib == "spikestore" else None
        mons = monitors(lib, which, net, w) if lib in ("spikestore", "spikingjelly") else []
        times: list[float] = []
        rss: list[float | None] = []
        gmem: list[float | None] = []
        try:
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            sync(dev)
            t0 = time.perf_counter()
            t_measured = t0
            i = 0
            while True:
                if lib == "spikingjelly" and i % sz["sj_clear"] == 0:
                    for m in mons:  # in memory: cleared every few steps, as users must
                        m.clear_recorded_data()
                if i == sz["warm"]:
                    t_measured = time.perf_counter()
                x, y = data[i % len(data)]
                sync(dev)
                ts = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="Full backward hook is firing")
                    step(net, x, y, opt)
                sync(dev)
                dt = time.perf_counter() - ts
                if i >= sz["warm"]:
                    times.append(dt)
                rss.append(rnd(proc_status("VmRSS"), 1))
                gmem.append(rnd(gpu_mib(dev), 1))
                i += 1
                spent = time.perf_counter() - t0
                if len(times) >= sz["steps"] or (len(times) >= 3 and spent > cap):
                    break
            tc = time.perf_counter()
            for m in mons:
                if lib == "spikestore":
                    m.close()
                else:
                    m.clear_recorded_data()
                    m.remove_hooks()
            if w is not None:
                w.close()
            sync(dev)
            t_end = time.perf_counter()
        finally:
            for m in mons:
                quietly(m.remove_hooks)
            if w is not None:
                quietly(w.close)
        blk: dict[str, Any] = {
            "steps_measured": len(times),
            "warmup_steps": sz["warm"],
            "median_ms": rnd(statistics.median(times) * 1e3),
            "min_ms": rnd(min(times) * 1e3),
            "max_ms": rnd(max(times) * 1e3),
            "close_s": rnd(t_end - tc),
            "sustained_ms": rnd((t_end - t_measured) / len(times) * 1e3),
            "rss_mib": thin(rss),
            "gpu_mib": thin(gmem) if dev.type == "cuda" else None,
            "peak_gpu_mib": rnd(gpu_mib(dev, peak=True), 1),
            "vmhwm_mib": rnd(proc_status("VmHWM"), 1),
        }
        if w is not None:
            blk["store_bytes"] = dir_bytes(path)
            shutil.rmtree(path, ignore_errors=True)
        return blk

    for mode, step in mode_steps.items():
        for cfg in configs:
            left = budget - (time.perf_counter() - t_start)
            cap = max(left / (n_blocks - len(blocks)), 0.5)  # seconds this block may take
            try:
                blk = run_block(mode, step, cfg, cap)
            except Exception as e:  # one block's failure (out of memory, say) leaves the rest
                blk = {"error": f"{type(e).__name__}: {e}"[:500]}
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
            blocks[f"{mode} | {cfg}"] = blk

    # Ratios to no monitor, per mode.
    def ratio(mode: str, cfg: str, key: str = "median_ms") -> float | None:
        ref = blocks[f"{mode} | none"].get("median_ms")
        got = blocks[f"{mode} | {cfg}"].get(key)
        return rnd(got / ref) if ref and got else None

    ratios: dict[str, dict[str, float | None]] = {}
    for mode in mode_steps:
        ratios[mode] = {cfg: ratio(mode, cfg) for cfg in configs[1:]}
        ratios[mode] |= {
            f"{cfg} sustained": ratio(mode, cfg, "sustained_ms")
            for cfg in configs[1:-1]
            if cfg.startswith("spikestore")
        }
    figures = {
        "net": {k: sz[k] for k in ("T", "B", "c1", "c2", "hw")},
        "lif_backend": os.environ.get("SJ_LIF_CUDA_IMPLEMENTATION"),
        "monitors": {
            "spikes": "OutputMonitor on the 3 LIF layers",
            "all": "OutputMonitor + AttributeMonitor('v') + GradOutputMonitor on them",
        },
        "sj_clear_every": sz["sj_clear"],
        "blocks": blocks,
        "ratio_to_none": ratios,
        "peak_host_rss_mib": rnd(proc_status("VmHWM"), 1),
        "noise_floor": {m: ratios[m]["none (again)"] for m in mode_steps},
        "seconds": rnd(time.perf_counter() - t_start, 1),
    }
    fb, fw = ratios["forward+backward"], ratios["forward"]
    summary = (
        f"x of no monitor (median step; spikes / all): forward spikestore "
        f"{fw['spikestore:spikes']} / {fw['spikestore:all']}, SpikingJelly "
        f"{fw['spikingjelly:spikes']} / {fw['spikingjelly:all']}; forward+backward spikestore "
        f"{fb['spikestore:spikes']} / {fb['spikestore:all']}, SpikingJelly "
        f"{fb['spikingjelly:spikes']} / {fb['spikingjelly:all']}; noise {fw['none (again)']}, "
        f"{fb['none (again)']}; peak RSS {figures['peak_host_rss_mib']} MiB"
    )
    ok = all(isinstance(b.get("median_ms"), float) and b["median_ms"] > 0 for b in blocks.values())
    failed = {k: b["error"] for k, b in blocks.items() if "error" in b}
    if failed:
        summary = f"{len(failed)} blocks failed: {failed}; " + summary
    return {"status": PASS if ok else FAIL, "figures": figures, "summary": summary}


# ---------------------------------------------------------------- driver


def run_part(name: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    t0 = time.perf_counter()
    res: dict[str, Any]
    dev = torch.device("cuda:0" if args.device == "cuda" else "cpu")
    env: dict[str, Any] = {}
    try:
        env = environment(dev)
        if args.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                f"CUDA is not available to {sys.executable} (torch {torch.__version__}, "
                f"built for CUDA {torch.version.cuda}): the check needs a CUDA build of torch"
            )
        sz = sizes(args.quick)
        tmp = Path(tempfile.mkdtemp(prefix=f"gpu_check_{name}_"))
        try:
            if name == "overhead":
                res = part_overhead(dev, sz, tmp, args.budget)
            else:
                res = globals()[f"part_{name}"](dev, sz, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except Exception as e:
        res = {
            "status": FAIL,
            "summary": f"{type(e).__name__}: {e}"[:500],
            "error": traceback.format_exc()[-4000:],
        }
    res["part"] = name
    res["seconds"] = rnd(time.perf_counter() - t0, 2)
    res["env"] = env
    res["peak_host_rss_mib"] = rnd(proc_status("VmHWM"), 1)
    if dev.type == "cuda" and torch.cuda.is_available():
        res["peak_gpu_mib"] = rnd(gpu_mib(dev, peak=True), 1)
    return res


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    tmp.replace(path)


# ---------------------------------------------------------------- summary


def _pytest_result(out: Path, device: str) -> dict[str, Any]:
    log = out / "pytest_cuda.txt"
    rc_file = out / "parts" / "pytest.rc"
    rc = rc_file.read_text().strip() if rc_file.exists() else None
    if not log.exists():
        return {"part": "pytest", "status": FAIL, "summary": f"no output (rc {rc})"}
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    cmd = lines[0].lstrip("$ ") if lines and lines[0].startswith("$") else "pytest -m cuda"
    summary = f"`{cmd.strip()}`: {last.strip('= ')} (rc {rc})"
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)\b", last)}
    errors = counts.get("error", 0) + counts.get("errors", 0)
    if rc is None or not last or rc in ("124", "137") or counts.get("failed"):
        status = FAIL
    elif counts.get("passed"):
        # Collection errors of other files (a package this interpreter lacks) do not
        # hide the CUDA tests that ran; they are in the summary line.
        status = PASS
    elif rc in ("0", "5") or (errors and counts.get("skipped")):
        status = SKIPPED
    else:
        status = FAIL
    res: dict[str, Any] = {"part": "pytest", "status": status, "summary": summary, "rc": rc}
    if status == SKIPPED and device == "cpu":
        res["reason"] = "SKIPPED-on-CPU: the CUDA tests skip without a GPU"
    elif status == SKIPPED:  # asked for a GPU, yet no CUDA test ran
        res["status"] = FAIL
        res["reason"] = "no CUDA test ran: pytest's interpreter sees no GPU"
    return res


def summarize(args: argparse.Namespace) -> int:
    out = Path(args.out)
    parts_dir = out / "parts"
    results: dict[str, Any] = {
        "device_requested": args.device,
        "quick": args.quick,
        "python": args.python,
        "parts": {},
    }
    env: dict[str, Any] = {}
    for name in PARTS:
        f = parts_dir / f"{name}.json"
        rc_file = parts_dir / f"{name}.rc"
        rc = rc_file.read_text().strip() if rc_file.exists() else None
        if f.exists():
            res = json.loads(f.read_text())
            if rc not in (None, "0"):
                res["rc"] = rc
        else:
            why = (
                "timed out"
                if rc in ("124", "137")
                else "no time left"
                if rc and "time" in rc
                else f"exited with {rc}"
                if rc
                else "did not run"
            )
            res = {
                "part": name,
                "status": FAIL,
                "summary": f"no result: the part {why}; see gpu_check.log",
                "rc": rc,
            }
        env = env or res.get("env") or {}
        results["parts"][name] = res
    results["parts"]["pytest"] = _pytest_result(out, args.device)
    results["env"] = env
    overhead = results["parts"]["overhead"].get("figures")
    if overhead:
        write_json(out / "overhead.json", overhead)
    order = ["pytest", *PARTS]
    statuses = {k: results["parts"][k]["status"] for k in order}
    results["statuses"] = statuses
    write_json(out / "results.json", results)

    dev_name = env.get("device_name") or ("CPU (dry run)" if args.device == "cpu" else "?")
    lines = [
        "# spikestore GPU check",
        "",
        f"- device: **{dev_name}** ({env.get('device', args.device)}, "
        f"{env.get('device_count', 0)} GPU(s)); requested `--device {args.device}`"
        + (", quick size" if args.quick else ", full size"),
        f"- python {env.get('python')} at `{args.python or env.get('executable')}`; torch "
        f"{env.get('torch')} (CUDA {env.get('torch_cuda')}); spikingjelly "
        f"{env.get('spikingjelly')} (LIF on CUDA: {env.get('SJ_LIF_CUDA_IMPLEMENTATION')}); "
        f"spikestore {env.get('spikestore')}; zarr {env.get('zarr')}; {env.get('cpus')} CPUs",
        f"- {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}",
        "",
        "| part | status | figures |",
        "|---|---|---|",
    ]
    for k in order:
        r = results["parts"][k]
        text = str(r.get("summary", "")).replace("|", "/").replace("\n", " ")
        if r.get("reason"):
            text += f" [{r['reason']}]"
        lines.append(f"| {k} | {r['status']} | {text} |")
    lines += ["", "## Details", ""]
    for k in order:
        r = results["parts"][k]
        lines.append(
            f"### {k}: {r['status']}"
            + (f" ({r.get('seconds')} s)" if r.get("seconds") is not None else "")
        )
        if r.get("error"):
            lines += ["```", r["error"].strip(), "```"]
        if r.get("failures"):
            lines += [f"- {x}" for x in r["failures"]]
        if k == "overhead" and overhead:
            lines += _overhead_table(overhead)
        elif k == "memcpy" and r.get("figures"):
            f = r["figures"]
            lines.append(
                f"- float32 size of layer {f.get('layer')} per step: "
                f"{f.get('float32_bytes_per_step')} B; DtoH per step: "
                f"{f.get('dtoh_bytes_per_step')}; ratio {f.get('ratio_to_float32')}"
            )
            for name in ("baseline", "spikes", "dense"):
                if name in f:
                    lines.append(f"- {name}: {json.dumps(f[name])}")
        elif k == "sync" and r.get("figures"):
            f = r["figures"]
            lines.append(f"- hook windows: {f.get('hook_windows')}")
            for key in ("cold_first_step", "steady_warn", "steady_warn_recent_bytes_0"):
                v = f.get(key) or {}
                lines.append(
                    f"- {key}: {v.get('hook_syncs')} syncs in hooks, "
                    f"{v.get('other_syncs')} in other threads"
                )
                for w in (v.get("hook", []) + v.get("other_threads", []))[:8]:
                    lines.append(
                        f"  - [{w['thread']}] x{w['count']} {w['where']}: {w['message'][:160]}"
                    )
            for key in (
                "steady_error_mode_exception",
                "whole_step_with_monitors",
                "whole_step_without_monitors",
                "writer_error_at_close",
            ):
                v = f.get(key)
                lines.append(f"- {key}: " + ("none" if v is None else ""))
                if v is not None:
                    lines += ["```", str(v).strip(), "```"]
        elif r.get("figures"):
            lines.append("```json")
            lines.append(json.dumps(r["figures"], indent=1, default=str)[:3000])
            lines.append("```")
        lines.append("")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    shutil.rmtree(parts_dir, ignore_errors=True)
    print("\n".join(lines[: 9 + len(order)]))
    return 0 if all(s in (PASS, SKIPPED) for s in statuses.values()) else 1


def _overhead_table(f: dict[str, Any]) -> list[str]:
    lines = [
        f"- net: {f['net']}, LIF on CUDA: {f['lif_backend']}; monitors: {f['monitors']}; "
        f"SpikingJelly's records cleared every {f['sj_clear_every']} steps (outside the "
        "timed steps)",
        "",
        "| mode / config | steps | median ms | min-max ms | x none | sustained ms (with "
        "drain) | peak GPU MiB | VmHWM MiB | store MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, b in f["blocks"].items():
        mode, cfg = key.split(" | ")
        ratio = f["ratio_to_none"].get(mode, {}).get(cfg, 1.0 if cfg == "none" else None)
        store = b.get("store_bytes")
        if "error" in b:
            lines.append(f"| {mode} / {cfg} | failed: {b['error'].replace('|', '/')} |")
            continue
        lines.append(
            f"| {mode} / {cfg} | {b['steps_measured']} | {b['median_ms']} | "
            f"{b['min_ms']}-{b['max_ms']} | "
            f"{ratio} | {b['sustained_ms']} | {b['peak_gpu_mib']} | {b['vmhwm_mib']} | "
            f"{'' if store is None else round(store / 1e6, 2)} |"
        )
    lines.append("")
    lines.append(
        f"- RSS MiB over steps (spikestore:all, forward+backward): "
        f"{f['blocks'].get('forward+backward | spikestore:all', {}).get('rss_mib')}"
    )
    lines.append(
        f"- GPU MiB over steps (same): "
        f"{f['blocks'].get('forward+backward | spikestore:all', {}).get('gpu_mib')}"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--out", default=os.environ.get("OUT", "gpu_check_out"))
    p.add_argument("--quick", action="store_true", help="tiny sizes (the dry run)")
    p.add_argument(
        "--part",
        action="append",
        choices=(*PARTS, "all"),
        help="run these parts (repeatable); each writes OUT/parts/<part>.json",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=180.0,
        help="seconds the overhead part may spend on its blocks",
    )
    p.add_argument(
        "--summarize",
        action="store_true",
        help="merge OUT/parts into results.json, overhead.json and summary.md",
    )
    p.add_argument("--python", default=None, help="the interpreter, for the summary")
    args = p.parse_args(argv)
    out = Path(args.out)
    (out / "parts").mkdir(parents=True, exist_ok=True)
    if args.summarize:
        return summarize(args)
    names = PARTS if not args.part or "all" in args.part else tuple(args.part)
    worst = 0
    for name in names:
        res = run_part(name, args)
        write_json(out / "parts" / f"{name}.json", res)
        print(f"{name}: {res['status']} ({res['seconds']} s): {res.get('summary', '')}", flush=True)
        if res["status"] == FAIL:
            print(res.get("error", ""), flush=True)
            worst = 1
    return worst


if __name__ == "__main__":
    sys.exit(main())
