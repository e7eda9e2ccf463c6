"""A small end-to-end run: train a multi-step convolutional SNN and record it.

The network is plain PyTorch (no SpikingJelly): Conv-BN-pool-LIF twice, then
Linear-LIF, over ``T`` time steps, on synthetic moving bars encoded as Poisson
spikes. Every training iteration runs forward, backward and an SGD step, so all
five monitor kinds fire; they all write into one store.

>>> from spikestore import demo
>>> info = demo.run("demo.spikes", steps=5, progress=False)   # doctest: +SKIP
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import torch
from torch import nn

from .monitor import (
    AttributeMonitor,
    GradInputMonitor,
    GradOutputMonitor,
    InputMonitor,
    OutputMonitor,
)
from .writer import StoreWriter

__all__ = ["run", "DemoNet", "LIF", "moving_bars"]

T = 6
BATCH = 8
CLASSES = 8
#: Training iterations the demo marks as one epoch (its data is generated afresh each
#: iteration and has no epochs of its own; the mark shows how marks look in a store).
EPOCH = 50
#: The nominal duration of one LIF time step.
DT_MS = 1.0


class _SpikeFn(torch.autograd.Function):
    """Heaviside forward, sigmoid-derivative surrogate backward (alpha = 4)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(4.0 * x)
        return grad * 4.0 * s * (1 - s)


class LIF(nn.Module):
    """Multi-step leaky integrate-and-fire neurons with hard reset.

    Input and output are ``[T, ...]``; after each forward ``v_seq`` holds the
    membrane potential after each step's reset.
    """

    #: As in SpikingJelly: multi-step, ``[T, ...]`` in and out. Monitors read this and
    #: have the writer pack spikes with T last, which compresses them better.
    step_mode = "m"

    def __init__(self, tau: float = 2.0, v_threshold: float = 1.0) -> None:
        super().__init__()
        self.tau = tau
        self.v_threshold = v_threshold
        self.v_seq: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = torch.zeros_like(x[0])
        spikes, vs = [], []
        for t in range(x.shape[0]):
            v = v + (x[t] - v) / self.tau
            s = _SpikeFn.apply(v - self.v_threshold)
            v = v * (1 - s)
            spikes.append(s)
            vs.append(v)
        self.v_seq = torch.stack(vs)
        return torch.stack(spikes)


class _SeqConv(nn.Module):
    """Conv-BN-pool applied to every time step at once (``[T, B, ...]`` in and out)."""

    #: Multi-step like :class:`LIF`: monitors record its tensors with time first
    #: (``time_axis=0``, dims ``time, batch, channel, y, x``), not as batch-first.
    step_mode = "m"

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, b = x.shape[:2]
        y = self.pool(self.bn(self.conv(x.flatten(0, 1))))
        return y.reshape(t, b, *y.shape[1:])


class DemoNet(nn.Module):
    """``[T, B, 1, 28, 28]`` spikes in, ``[T, B, classes]`` spikes out."""

    def __init__(self, classes: int = CLASSES) -> None:
        super().__init__()
        self.block1 = _SeqConv(1, 8)
        self.sn1 = LIF()
        self.block2 = _SeqConv(8, 16)
        self.sn2 = LIF()
        self.fc = nn.Linear(16 * 7 * 7, classes)
        self.sn3 = LIF()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.sn1(self.block1(x))
        x = self.sn2(self.block2(x))
        return self.sn3(self.fc(x.flatten(2)))


def moving_bars(
    batch: int, steps: int = T, classes: int = CLASSES, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Poisson spikes of a bar moving across a 28x28 frame; the label is its direction.

    Returns spikes ``[steps, batch, 1, 28, 28]`` (float 0/1) and labels ``[batch]``.
    """
    labels = torch.randint(classes, (batch,), generator=generator)
    angle = labels.float() * (2 * torch.pi / classes)
    ys, xs = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    frames = []
    for t in range(steps):
        shift = (t - steps / 2) * 2.0
        cx = 13.5 + shift * torch.cos(angle)
        cy = 13.5 + shift * torch.sin(angle)
        # Distance of each pixel from the bar through (cx, cy), perpendicular to the motion.
        d = (xs - cx[:, None, None]) * torch.cos(angle)[:, None, None] + (
            ys - cy[:, None, None]
        ) * torch.sin(angle)[:, None, None]
        frames.append(torch.exp(-(d**2) / 4.0))
    rate = torch.stack(frames)[:, :, None] * 0.9 + 0.02
    return torch.bernoulli(rate, generator=generator), labels


class _Counter:
    """A one-line ``\\r`` counter on stderr, for when tqdm is not installed."""

    def __init__(self, total: int) -> None:
        self.total, self.n = total, 0

    def update(self, k: int = 1) -> None:
        self.n += k
        sys.stderr.write(f"\rdemo: step {self.n}/{self.total}")
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return _Counter(total)
    return tqdm(total=total, desc="demo", unit="step")


def run(
    path: str | os.PathLike[str] = "demo.spikes",
    steps: int = 300,
    seed: int = 0,
    progress: bool = True,
    mode: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train :class:`DemoNet` for ``steps`` iterations with all five monitors on.

    Records go to a new store at ``path``; a store already there is refused unless
    ``mode="a"`` (append) or ``mode="w"`` / ``overwrite=True`` (replace) says what to
    do with it (as for :class:`~spikestore.StoreWriter`). ``steps`` must be >= 1 and
    ``seed`` an int from 0 to ``2**63 - 1``.
    The monitors record:
    ``output`` (spikes of every LIF layer, every step), ``v_seq`` (membrane
    potentials) and ``input`` (input currents) of every LIF layer every 5th
    step, ``grad_output`` of every LIF layer every 5th step, and ``grad_input``
    of the first conv block every 5th step. The store describes the run: its
    ``attrs`` (network, sizes, optimizer, seed), ``dt`` (:data:`DT_MS` ms per time
    step) and an ``epoch`` mark every :data:`EPOCH` iterations.

    Returns
    -------
    dict
        ``path``, ``steps``, ``seconds`` (whole run), ``seconds_per_step``
        (training loop, monitors included), ``close_seconds`` (final flush),
        ``records`` (records per monitor) and ``final_loss``.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be an int from 0 to 2**63 - 1, got {seed!r}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = DemoNet()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    t0 = time.perf_counter()
    attrs = {
        "network": "DemoNet",
        "time_steps": T,
        "batch": BATCH,
        "classes": CLASSES,
        "optimizer": {"name": "SGD", "lr": 0.1, "momentum": 0.9},
        "seed": seed,
        "steps": steps,
    }
    writer = StoreWriter(
        path, mode, overwrite=overwrite, attrs={"demo": attrs}, dt=DT_MS, time_unit="ms"
    )
    monitors = [
        OutputMonitor(net, LIF, store=writer),
        AttributeMonitor("v_seq", False, net, LIF, store=writer, every=5),
        InputMonitor(net, LIF, store=writer, every=5),
        GradOutputMonitor(net, LIF, store=writer, every=5),
        GradInputMonitor(net, "block1", store=writer, every=5),
    ]
    bar = _progress(steps, progress)
    loss = torch.tensor(float("nan"))
    try:
        t1 = time.perf_counter()
        for i in range(steps):
            if i % EPOCH == 0:
                writer.mark(epoch=i // EPOCH)
            x, y = moving_bars(BATCH, generator=gen)
            x.requires_grad_(True)  # so the first block has an input gradient to record
            out = net(x)
            loss = nn.functional.cross_entropy(out.mean(0) * 5, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if bar is not None:
                bar.update(1)
        t2 = time.perf_counter()
    finally:
        if bar is not None:
            bar.close()
        counts = {m.name: len(m.records) for m in monitors}
        for m in monitors:
            m.close()
        writer.close()
    t3 = time.perf_counter()
    return {
        "path": str(path),
        "steps": steps,
        "seconds": t3 - t0,
        "seconds_per_step": (t2 - t1) / max(1, steps),
        "close_seconds": t3 - t2,
        "records": counts,
        "final_loss": float(loss.detach()),
    }
