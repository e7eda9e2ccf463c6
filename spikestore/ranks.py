"""The ranks of a ``torch.distributed`` job, and the ranked store they write.

When ``torch.distributed`` is initialised, a :class:`~spikestore.StoreWriter` (and
so every monitor) given one root writes one *ranked* store (format 1.4): each
recording rank a complete store of its own in ``<root>/rank00003/`` (see
:func:`spikestore.format.rank_key`), the root's metadata recording the world
size and the recorded ranks. Ranks do not coordinate while writing: each writes
its own folder, under its own lock (``flock`` locally, a lease on object storage),
so a rank that dies never damages another's records.

Opening (:func:`open_ranked`), each recording rank checks the root (reading only: a
folder of the user's, or a store of one process in any mode but ``"w"``, is refused),
then takes its own folder's lock, then (:func:`finish_root`) the lowest recorded rank
rewrites the root's metadata under the root's lock while the others only create it if
it is missing.
``mode="w"`` replaces a store at the root: each rank replaces its own folder, and the
lowest recorded rank removes what no rank of this run will write (the monitors of a
store of one process, the stores in folders of ranks not recorded now), each under
its own lock, so the live writers of another job make it fail before it deletes
anything of theirs. ``mode="a"`` appends, rank by rank, to a ranked store of the
same world size.

Thread ownership: stateless functions, called by the thread that opens a writer.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._version import __version__
from ._zarr import buffer_prototype, group_metadata_files, sync
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

if TYPE_CHECKING:
    from .storage import Mode, Storage

__all__ = [
    "RankPlan",
    "plan",
    "distributed_rank",
    "check_root",
    "finish_root",
    "open_ranked",
]


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


def _read_json(store: Any, key: str) -> dict[str, Any] | None:
    import json

    buf = sync(store.get(key, prototype=buffer_prototype()))
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


def check_root(store: Any, p: RankPlan, mode: str, where: str) -> set[int]:
    """Check the root of a ranked store for ``mode`` (reading only); return the ranks
    its metadata will record.

    Refuses a root that holds anything but a spikestore store; ``mode="a"`` needs a
    ranked store of the same world size (or none yet), and only ``mode="w"`` may
    replace a store of one process. Every recording rank calls it before it creates
    its own folder, so a refused root is left as it was.
    """
    meta = _read_json(store, "zarr.json")
    names = list(sync(_list_dir(store)))
    recorded = set(p.recorded)
    if meta is None:
        others = [
            n
            for n in names
            # zarr.json: written by another rank since this one read it (and its
            # temporary file, *.partial, while that write is under way).
            if rank_of_key(n) is None
            and n not in ("zarr.json", LOCK_FILE, LEASE_DIR)
            and not n.startswith(TRASH_PREFIX)
            and not n.endswith(".partial")
        ]
        if others:
            what = "write into it" if mode == "a" else "overwrite it"
            raise FileExistsError(
                f"{where} exists, is not empty and is not a spikestore store (it holds "
                f"{', '.join(sorted(others)[:5])}); refusing to {what}"
            )
        return recorded
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
    return recorded


def finish_root(
    store: Any,
    p: RankPlan,
    mode: str,
    created_by: str,
    where: str,
    storage_at: Callable[[str | None], Any],
) -> None:
    """Write the root's metadata, and for ``mode="w"`` remove what no rank of this run
    writes. Called after this rank holds its own folder's lock.

    The lowest recorded rank does it under the root's own lock (``storage_at(None)``;
    a live writer of a store of one process there makes it fail before anything
    changes). For ``mode="w"``, the folders of ranks not recorded now must be stores
    (a user's folder named like a rank is refused, never deleted), and each is
    emptied under its own lock (a live writer of another job there makes it fail);
    then the metadata is rewritten, those folders stop being stores (the user's files
    in them stay), and the monitors of a store of one process at the root go. The
    other ranks only create the root's metadata if it is missing.
    """
    if p.rank != min(p.recorded):
        _create_group_meta(store, ranked_root_attrs(created_by, p.world_size, sorted(p.recorded)))
        # A store of one process at the root: the lowest rank replaces it (or fails,
        # if its writer is live). Wait for that, so that no rank records into the
        # folder of a store that stays what it was.
        deadline = time.monotonic() + ROOT_WAIT
        while True:
            meta = _read_json(store, "zarr.json")
            attrs = meta.get("attributes") if meta else None
            entry = attrs.get(FORMAT_NAME) if isinstance(attrs, dict) else None
            if isinstance(entry, dict) and entry.get("ranks") is not None:
                return
            if time.monotonic() > deadline:
                raise FormatError(
                    f"{where} is still a store of one process after {ROOT_WAIT:.0f} s: "
                    f"rank {min(p.recorded)}, which replaces it, failed or has not started"
                )
            time.sleep(0.05)
    with storage_at(None).hold(), contextlib.ExitStack() as held:
        recorded = check_root(store, p, mode, where)  # again, under the root's lock
        names = list(sync(_list_dir(store)))
        stale = [n for n in names if (r := rank_of_key(n)) is not None and r not in recorded]
        if mode != "w":
            stale = []
        for n in stale:  # all refused before anything changes
            if _store_entry(store, n) is None:
                raise FileExistsError(
                    f"{where}: {n} is named like a rank's folder but is not a spikestore "
                    "store; refusing to delete it"
                )
        opened = []
        for n in stale:  # each under its own lock: a live writer there stops this here
            sub = storage_at(n)
            zsub, _ = sub.open("w")  # its monitors go, crash-safely
            held.callback(sub.discard)
            held.callback(sub.release)
            opened.append(zsub)
        _write_group_meta(store, ranked_root_attrs(created_by, p.world_size, sorted(recorded)))
        for zsub in opened:  # no longer a store; the user's files in it stay
            sync(zsub.delete("zarr.json"))
        if mode == "w":
            for n in names:
                if rank_of_key(n) is None and _is_monitor(store, n):
                    sync(store.delete_dir(n))


def open_ranked(
    p: RankPlan,
    mode: Mode,
    path: Any,
    store: Any,
    durable: bool,
    storage_options: dict[str, Any] | None,
    lease_timeout: float | None,
) -> tuple[str, tuple[Storage, Any, Mode] | None]:
    """Open this rank's store in a ranked store: check the root, take this rank's
    folder, then write the root's metadata. Returns how messages name the root, and
    ``(storage, zarr store, zarr mode)``, or None on a rank that does not record."""
    from . import storage as st
    from .storage import storage_for

    if (path is None) == (store is None):
        raise ValueError("pass exactly one of path and store")

    def storage_at(key: str | None) -> Storage:
        """The storage of the root's folder ``key`` (None: the root itself)."""
        if path is not None and st.is_url(str(path)):
            url = str(path).rstrip("/") + (f"/{key}" if key else "")
            return storage_for(
                url, None, durable=False, storage_options=storage_options,
                lease_timeout=lease_timeout,
            )  # fmt: skip
        if path is not None and key:
            # A rank's folder is a node of the ranked store: never a link followed.
            return st.LocalStorage(Path(path) / key, durable=durable, within=Path(path))
        if path is not None:
            return storage_for(Path(path), None, durable=durable)
        sub = st.prefixed(store, key) if key else store
        return storage_for(None, sub, durable=False, lease_timeout=lease_timeout)

    if path is not None and st.is_url(str(path)):
        root_store = st.url_store(str(path), storage_options=storage_options)
        where = str(path)
    elif path is not None:
        root = Path(path)
        if root.exists() and not root.is_dir():
            raise FileExistsError(f"{root} exists and is not a directory")
        root.mkdir(parents=True, exist_ok=True)
        root_store, where = st.ConfinedLocalStore(root), str(root)
    else:
        root_store, where = st.confined(store), repr(store)
    if not p.active:
        return where, None
    check_root(root_store, p, mode, where)
    storage = storage_at(p.key)
    zstore, zmode = storage.open(mode)  # this rank's lock from here on
    try:
        finish_root(root_store, p, mode, f"spikestore {__version__}", where, storage_at)
    except BaseException:
        storage.abort()
        raise
    return where, (storage, zstore, zmode)


#: Seconds a rank waits for the lowest recorded rank to replace a store of one process.
ROOT_WAIT = 60.0


def _store_entry(store: Any, key: str) -> dict[str, Any] | None:
    """The spikestore root entry of the store in folder ``key``, or None."""
    meta = _read_json(store, f"{key}/zarr.json")
    attrs = meta.get("attributes") if meta else None
    entry = attrs.get(FORMAT_NAME) if isinstance(attrs, dict) else None
    return entry if isinstance(entry, dict) and entry.get("format") == FORMAT_NAME else None


def _create_group_meta(store: Any, attrs: dict[str, Any]) -> None:
    """Write a group's ``zarr.json`` unless there is one (an atomic create)."""
    for key, buf in group_metadata_files(attrs).items():
        sync(store.set_if_not_exists(key, buf))


def _write_group_meta(store: Any, attrs: dict[str, Any]) -> None:
    """Write a group's ``zarr.json`` in one write, as Zarr writes it."""
    for key, buf in group_metadata_files(attrs).items():
        sync(store.set(key, buf))


async def _list_dir(store: Any) -> list[str]:
    return [n async for n in store.list_dir("")]
