"""The ranks of a ``torch.distributed`` job, and the ranked store they write.

When ``torch.distributed`` is initialised, a :class:`~spikestore.StoreWriter` (and
so every monitor) given one root writes one *ranked* store (format 1.4): each
recording rank a complete store of its own in ``<root>/rank00003/`` (see
:func:`spikestore.format.rank_key`), the root's metadata recording the world
size and the recorded ranks. Ranks do not coordinate while writing: each writes
its own folder, under its own lock (``flock`` locally, a lease on object storage),
so a rank that dies never damages another's records. The root's metadata is the
same for every rank of a run, so each recording rank writes it (one atomic write;
identical content, whichever lands last).

``mode="w"`` replaces a store at the root: each rank replaces its own folder, and
the lowest recorded rank removes what no rank of this run will write (the
monitors of a store of one process, folders of ranks not recorded now).
``mode="a"`` appends, rank by rank, to a ranked store of the same world size.

Thread ownership: stateless functions, called by the thread that opens a writer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .format import (
    FORMAT_NAME,
    LEASE_DIR,
    LOCK_FILE,
    TRASH_PREFIX,
    FormatError,
    check_root_attrs,
    rank_key,
    rank_of_key,
    ranked_root_attrs,
    root_ranks,
)

__all__ = ["RankPlan", "plan", "distributed_rank", "prepare_root"]


def distributed_rank() -> tuple[int, int] | None:
    """``(rank, world_size)`` of this process when ``torch.distributed`` is
    initialised, else None."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch without distributed support
        return None
    if not (dist.is_available() and dist.is_initialized()):
        return None
    return int(dist.get_rank()), int(dist.get_world_size())


@dataclass(frozen=True)
class RankPlan:
    """This process's part in a ranked store."""

    rank: int
    world_size: int
    #: The ranks that record (sorted).
    recorded: tuple[int, ...]

    @property
    def active(self) -> bool:
        """Whether this rank records."""
        return self.rank in self.recorded

    @property
    def key(self) -> str:
        """This rank's folder in the root."""
        return rank_key(self.rank)


def plan(ranks: str | int | Iterable[int] | None) -> RankPlan | None:
    """The plan for a writer's ``ranks`` argument, or None for a store of one process.

    ``"all"`` (the default): every rank records when ``torch.distributed`` is
    initialised; an int or ints: only those ranks record (the others' writers and
    monitors record nothing); None: ignore ``torch.distributed`` and write a store
    of one process at the path (each rank then needs a path of its own).
    """
    if ranks is None:
        return None
    if isinstance(ranks, str):
        if ranks != "all":
            raise ValueError(f"ranks must be 'all', an int, ints or None, got {ranks!r}")
        chosen = None
    elif isinstance(ranks, bool):
        raise TypeError(f"ranks must be 'all', an int, ints or None, got {ranks!r}")
    elif isinstance(ranks, int):
        chosen = [ranks]
    else:
        try:
            chosen = list(ranks)
        except TypeError:
            raise TypeError(f"ranks must be 'all', an int, ints or None, got {ranks!r}") from None
        if any(isinstance(r, bool) or not isinstance(r, int) for r in chosen):
            raise TypeError(f"ranks must be ints, got {ranks!r}")
        if not chosen:
            raise ValueError("ranks=[] records nothing; choose at least one rank")
    me = distributed_rank()
    if me is None:
        return None
    rank, world = me
    if chosen is None:
        chosen = list(range(world))
    bad = [r for r in chosen if not 0 <= r < world]
    if bad:
        raise ValueError(f"ranks {bad} are not ranks of this job (world size {world})")
    return RankPlan(rank, world, tuple(sorted(set(chosen))))


def _sync(coro: Any) -> Any:
    from zarr.core.sync import sync

    return sync(coro)


def _read_json(store: Any, key: str) -> dict[str, Any] | None:
    import json

    from zarr.core.buffer import default_buffer_prototype

    buf = _sync(store.get(key, prototype=default_buffer_prototype()))
    if buf is None:
        return None
    try:
        meta = json.loads(buf.to_bytes())
    except ValueError:
        return None
    return meta if isinstance(meta, dict) else None


def _is_monitor(store: Any, name: str) -> bool:
    meta = _read_json(store, f"{name}/zarr.json")
    attrs = meta.get("attributes") if meta else None
    entry = attrs.get(FORMAT_NAME) if isinstance(attrs, dict) else None
    return isinstance(entry, dict) and entry.get("node") == "monitor"


def prepare_root(store: Any, p: RankPlan, mode: str, created_by: str, where: str) -> None:
    """Check the root of a ranked store for ``mode`` and write its metadata.

    Refuses a root that holds anything but a spikestore store; ``mode="a"`` needs
    a ranked store of the same world size (or none yet). Called by every
    recording rank before it opens its own folder.
    """
    meta = _read_json(store, "zarr.json")
    names = list(_sync(_list_dir(store)))
    recorded = set(p.recorded)
    if meta is None:
        others = [
            n
            for n in names
            # zarr.json: written by another rank since this one read it.
            if rank_of_key(n) is None
            and n not in ("zarr.json", LOCK_FILE, LEASE_DIR)
            and not n.startswith(TRASH_PREFIX)
        ]
        if others:
            what = "write into it" if mode == "a" else "overwrite it"
            raise FileExistsError(
                f"{where} exists, is not empty and is not a spikestore store; refusing to {what}"
            )
    else:
        attrs = meta.get("attributes")
        if meta.get("node_type") != "group" or not isinstance(attrs, dict):
            raise FormatError(f"{where} is Zarr but not a spikestore store")
        entry = check_root_attrs(attrs, where)
        ranked = root_ranks(entry, where)
        if ranked is None:
            monitors = [n for n in names if _is_monitor(store, n)]
            if monitors and mode != "w":
                raise FormatError(
                    f"{where} holds a store recorded by one process (monitors {monitors}); "
                    f"this rank ({p.rank} of {p.world_size}) cannot "
                    f"{'append to' if mode == 'a' else 'write'} it as a ranked store: pass "
                    "mode='w' to replace it, another path, or ranks=None to write one "
                    "store per process at paths of your own"
                )
        else:
            world, before = ranked
            if mode == "a":
                if world != p.world_size:
                    raise FormatError(
                        f"{where} was recorded by {world} ranks; this job has "
                        f"{p.world_size}: append with the same world size, or write a new store"
                    )
                recorded |= set(before)
    if mode == "w" and p.rank == min(p.recorded):
        # Remove what no rank of this run writes: the monitors of a store of one
        # process, and the folders of ranks not recorded now.
        for n in names:
            r = rank_of_key(n)
            if (r is not None and r not in recorded) or (r is None and _is_monitor(store, n)):
                _sync(store.delete_dir(n))
    _write_group_meta(store, ranked_root_attrs(created_by, p.world_size, sorted(recorded)))


def _write_group_meta(store: Any, attrs: dict[str, Any]) -> None:
    """Write a group's ``zarr.json`` in one write, as Zarr writes it (whichever rank's
    write lands last, the content is the same)."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.group import GroupMetadata

    for key, buf in (
        GroupMetadata(attributes=attrs).to_buffer_dict(default_buffer_prototype()).items()
    ):
        _sync(store.set(key, buf))


async def _list_dir(store: Any) -> list[str]:
    return [n async for n in store.list_dir("")]
