"""A data-parallel job for the multi-rank tests (run as a script, never imported).

Each rank records ``--steps`` steps of a spike layer and a float layer into one
ranked store, through an ``OutputMonitor`` on a tiny network or a ``StoreWriter``,
and after every append writes how many steps it has appended to
``<out>/appended<rank>`` (so a test knows what a killed rank had taken).

Run under ``torchrun`` (RANK, WORLD_SIZE and MASTER_ADDR in the environment) or
started by hand with ``--rank``, ``--world`` and ``--init`` (a file for gloo's
``file://`` rendezvous).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from pathlib import Path

import torch
import torch.distributed as dist


def spikes(rank: int, step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 * rank + step)
    return (torch.rand(4, 3, 16, generator=g) < 0.2).float()  # [T, B, N]


def values(rank: int, step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(7 + 1000 * rank + step)
    return torch.randn(3, 5, generator=g)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--out", required=True)
    ap.add_argument("--rank", type=int)
    ap.add_argument("--world", type=int)
    ap.add_argument("--init")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--mode", default="w")
    ap.add_argument("--ranks", default="all", help="'all', 'none' or comma-separated ranks")
    ap.add_argument("--flush-interval", type=float, default=None)
    ap.add_argument("--options", help="storage_options as JSON (object storage)")
    ap.add_argument("--flush-each", action="store_true", help="flush after every step")
    ap.add_argument("--monitor", action="store_true", help="record through an OutputMonitor")
    ap.add_argument("--collective", action="store_true", help="all_reduce at every step")
    ap.add_argument("--die-rank", type=int, default=-1)
    ap.add_argument("--die-at", type=int, default=-1)
    ap.add_argument("--die-how", choices=["kill", "exit"], default="kill")
    ap.add_argument("--forever", action="store_true", help="survivors keep recording")
    args = ap.parse_args()

    if args.init:
        dist.init_process_group(
            "gloo", init_method=f"file://{args.init}", rank=args.rank, world_size=args.world
        )
    else:
        dist.init_process_group("gloo")
    rank = dist.get_rank()

    import spikestore
    from spikestore.monitor import OutputMonitor

    ranks: str | list[int] | None = args.ranks
    if args.ranks == "none":
        ranks = None
    elif args.ranks != "all":
        ranks = [int(r) for r in args.ranks.split(",")]
    writer = spikestore.StoreWriter(
        args.root,
        args.mode,
        ranks=ranks,
        flush_interval=args.flush_interval,
        storage_options=json.loads(args.options) if args.options else None,
    )
    out = Path(args.out)

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.sn = torch.nn.Identity()
            self.fc = torch.nn.Identity()

        def forward(self, s: torch.Tensor, v: torch.Tensor) -> None:
            self.sn(s)
            self.fc(v)

    net = Net()
    mon = OutputMonitor(net, torch.nn.Identity, store=writer) if args.monitor else None
    step = 0
    while step < args.steps or args.forever:
        if rank == args.die_rank and step == args.die_at:
            if args.die_how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            os._exit(3)
        if args.collective:
            dist.all_reduce(torch.ones(1))
        s, v = spikes(rank, step), values(rank, step)
        if mon is not None:
            net(s, v)
        else:
            writer.append("output", "sn", s, time_axis=0)
            writer.append("output", "fc", v)
        if args.flush_each:
            writer.flush()
        step += 1
        (out / f"appended{rank}.tmp").write_text(str(step))
        os.replace(out / f"appended{rank}.tmp", out / f"appended{rank}")  # never half-written
        if args.forever:
            time.sleep(0.02)  # a training step's pace, until the job is ended
    if mon is not None:
        (out / f"records{rank}").write_text(str(len(mon.records)))
        mon.close()
    writer.close()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
