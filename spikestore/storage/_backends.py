"""Where a store lives, and the right to write it: the storage interface and its backends.

A :class:`Storage` hands the writer a Zarr store that it may write, after taking
the writer's lock and preparing the location for the open mode (creating it,
refusing a folder that is not a store, replacing an old store crash-safely). It
is the only part of the writer that knows what a directory or a lock is, so
other backends (object stores, per-rank sub-stores) plug in here.

Thread ownership: a storage object belongs to the thread that constructs the
writer; it is opened once and released once. The lock belongs to the *process*
that took it: a forked child neither uses nor releases it (releasing an
inherited ``flock`` would unlock the parent).

Backends
--------
:class:`LocalStorage`
    A directory, locked with ``flock`` on ``<path>/.spikestore.lock``; the kernel
    drops the lock when its holder dies, however it dies. ``durable=True``
    makes every file write ``fsync`` the file and then its directory, so that a
    commit (the last write) is on disk after the data it points to.
:class:`ZarrStorage`
    A Zarr store in this process's memory (a ``MemoryStore``, or a wrapper of one in
    tests). One writer per store object within a process; nothing else can see it.
:class:`ObjectStorage`
    Object storage (``s3://bucket/prefix``, any fsspec URL) or any other Zarr store
    passed in (``ObjectStore``, ``FsspecStore``, ``LocalStore``), locked with a lease
    (``spikestore.storage._lease``): there is no ``flock`` on a bucket. Replacing a store
    (``mode="w"``) deletes its monitors' objects, journaled so that a writer killed
    meanwhile leaves a store that opens and that the next writer finishes clearing.

:func:`storage_for` picks the backend for a writer's ``path`` or ``store`` argument; the
Zarr store for a URL is made in ``spikestore.storage._urls``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

from zarr.abc.store import Store
from zarr.storage import WrapperStore

from ..errors import StoreExistsError, StoreLockedError
from ..format import (
    FORMAT_NAME,
    LOCK_FILE,
    TRASH_PREFIX,
    FormatError,
    check_root_attrs,
    root_ranks,
)
from . import _lease
from ._cache import CachingStore
from ._files import _sync
from ._localfs import (
    ConfinedLocalStore,
    DurableLocalStore,
    check_entry,
    fsync_dir,
    is_real_dir,
    open_lock_file,
    read_file,
    remove,
)
from ._urls import _file_url_path, _safe_url, confined, is_url, unreachable, url_store

__all__ = [
    "Mode",
    "Storage",
    "LocalStorage",
    "ZarrStorage",
    "ObjectStorage",
    "storage_for",
]

Mode = Literal["w", "w-", "a"]


#: This process's id, kept current across ``fork`` (``owned`` is asked at every append).
_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)



def _refuse_ranked(entry: dict[str, Any], where: str) -> None:
    """Refuse appending to a ranked store as one process: its root holds rank folders,
    not monitors, so records written there would never be read (and lost)."""
    if root_ranks(entry, where) is not None:
        raise FormatError(
            f"{where} is a ranked store (written by the ranks of a torch.distributed job): "
            "append to it from the same job's ranks (each rank's StoreWriter under "
            "torch.distributed), write a new store, or replace it with mode='w'"
        )

class Storage:
    """The interface: a location, its lock, and the Zarr store to write there."""

    #: How errors name the store.
    where: str
    #: The local directory, or None for other backends.
    path: Path | None = None
    #: Whether writes are ``fsync``-ed (see :class:`LocalStorage`).
    durable: bool = False
    #: The writer's ``flush_interval`` unless the caller gives one: how often a commit
    #: is worth its requests on this backend.
    default_flush_interval: float = 1.0

    def open(self, mode: Mode) -> tuple[Any, Literal["w", "w-", "a"]]:
        """Take the lock and prepare the location; return ``(zarr store, zarr mode)``.

        On failure nothing is held: the lock is released before the error is raised.
        """
        raise NotImplementedError

    def release(self) -> None:
        """Give the lock back (idempotent; a no-op in a forked child)."""
        raise NotImplementedError

    def abort(self) -> None:
        """Give the lock back after the writer failed to open: leave no lock file that
        :meth:`open` created."""
        self.release()

    def _take(self) -> None:
        """Take the lock (or lease) only, preparing nothing (see :meth:`hold`)."""
        raise NotImplementedError

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Hold the lock (or lease) for a while without opening the store for writing:
        :class:`~spikestore.errors.StoreLockedError` if a writer holds it."""
        self._take()
        try:
            yield
        finally:
            self.release()

    def discard(self) -> None:
        """Remove the lock file (or lease objects), and the folder if nothing else is
        in it: after its store was emptied and the lock released."""

    def check_fence(self) -> None:
        """Raise :class:`StoreLockedError` if this writer may no longer write (its lease
        was taken over); called before each field's writes of a commit. A no-op where the lock
        cannot be lost."""

    @property
    def owned(self) -> bool:
        """Whether this process opened the storage (False in a forked child)."""
        raise NotImplementedError

    #: The process that opened the storage.
    owner_pid: int | None = None


def storage_for(
    path: str | os.PathLike[str] | None,
    store: Any,
    *,
    durable: bool,
    storage_options: dict[str, Any] | None = None,
    lease_timeout: float | None = None,
) -> Storage:
    """The storage for a writer's ``path`` or ``store`` argument.

    A ``path`` that is a URL (:func:`is_url`) is object storage, opened with
    :func:`url_store` and ``storage_options``; ``file://`` URLs are local paths. A
    ``store`` in this process's memory gets :class:`ZarrStorage`, any other Zarr store
    :class:`ObjectStorage`. ``lease_timeout`` (seconds) is the lease's, for object
    storage; checked for every storage, so that a bad one is refused the same way
    wherever the store is.
    """
    if (path is None) == (store is None):
        raise ValueError("pass exactly one of path and store")
    if lease_timeout is not None:
        lease_timeout = _lease.check_timeout(lease_timeout)
    if path is not None:
        if isinstance(path, str) and is_url(path):
            local = _file_url_path(path)
            if local is None:
                if durable:
                    raise ValueError(
                        "durable=True needs a local path (object storage writes "
                        "each object whole, or not at all)"
                    )
                zstore = url_store(path, storage_options=storage_options)
                return ObjectStorage(zstore, where=_safe_url(path), lease_timeout=lease_timeout)
            path = local
        if storage_options:
            raise ValueError("storage_options are for URL paths (s3://bucket/prefix)")
        return LocalStorage(Path(path), durable=durable)
    if durable:
        raise ValueError("durable=True needs a local path (a store passed in writes as it does)")
    if storage_options:
        raise ValueError("storage_options are for URL paths; a store passed in has its own")
    if _in_process(store):
        return ZarrStorage(store)
    return ObjectStorage(confined(store), lease_timeout=lease_timeout)


def _innermost(store: Any) -> Any:
    while isinstance(store, WrapperStore):
        store = store._store
    return store


def _in_process(store: Any) -> bool:
    """Whether ``store`` lives in this process only (no other process can write it), or
    cannot hold a lease (a zip file cannot delete or overwrite)."""
    from zarr.storage import MemoryStore, ZipStore

    inner = _innermost(store)
    return not isinstance(inner, Store) or isinstance(inner, (MemoryStore, ZipStore))


def _node_meta(path: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """A folder's parsed ``zarr.json`` and its spikestore entry (each None if absent,
    unreadable, a link or a special file: read confined to ``path``)."""
    try:
        data = read_file(path, "zarr.json")
        meta = None if data is None else json.loads(data)
    except (OSError, ValueError, RecursionError):
        return None, None
    if not isinstance(meta, dict):
        return None, None
    attrs = meta.get("attributes")
    entry = attrs.get(FORMAT_NAME) if isinstance(attrs, dict) else None
    return meta, entry if isinstance(entry, dict) else None


def _root_kind(meta: dict[str, Any] | None, entry: dict[str, Any] | None) -> str:
    """``"store"``, ``"zarr"`` (a Zarr group of something else) or ``"other"``."""
    if entry is not None and entry.get("format") == FORMAT_NAME:
        return "store"
    return "zarr" if meta is not None and meta.get("node_type") == "group" else "other"


def _holds_store(path: Path) -> bool:
    """Whether the folder ``path`` holds a spikestore store (or a damaged one's monitors)."""
    if _root_kind(*_node_meta(path)) == "store":
        return True
    return any(_is_store_node(x) for x in path.iterdir() if is_real_dir(x))


def _is_store_node(path: Path) -> bool:
    """Whether ``path`` is a group a spikestore writer made in a store's root (a monitor)."""
    entry = _node_meta(path)[1]
    return is_real_dir(path) and entry is not None and entry.get("node") == "monitor"


class LocalStorage(Storage):
    """A store in a local directory (see the module docstring).

    ``within``: the folder of a store that holds this one (a ranked store's root for a
    rank's folder): then this folder is a node of an untrusted store, and a link or
    special file in its place is refused, never followed.
    """

    def __init__(self, path: Path, *, durable: bool = False, within: Path | None = None) -> None:
        self.root = Path(path)
        self.within = within
        self.path = self.root
        self.where = str(self.root)
        self.durable = bool(durable)
        self._fd: int | None = None
        self._pid: int | None = None
        self._made_lock_file = False

    @property
    def owned(self) -> bool:
        return self._pid == _pid

    def _check_node(self) -> None:
        if self.within is not None:
            check_entry(self.root, file_ok=False)

    def open(self, mode: Mode) -> tuple[Any, Literal["w", "w-", "a"]]:
        p = self.root
        self._check_node()
        if p.exists() and not p.is_dir():
            raise FileExistsError(f"{p} exists and is not a directory")
        if mode == "w-" and p.exists() and _holds_store(p):
            raise StoreExistsError(str(p))  # before the lock: a store being written too
        p.mkdir(parents=True, exist_ok=True)
        had_lock_file = os.path.lexists(p / LOCK_FILE)
        self._lock()
        self._made_lock_file = not had_lock_file
        try:
            self._prepare(mode, had_lock_file)
        except BaseException:
            self.abort()  # refused: leave the folder as it was found
            raise
        cls = DurableLocalStore if self.durable else ConfinedLocalStore
        # The directory is prepared (cleared for "w"): Zarr only adds to it.
        return cls(p), "a"

    def _prepare(self, mode: Mode, had_lock_file: bool) -> None:
        p = self.root
        entries = [x for x in p.iterdir() if x.name != LOCK_FILE]
        for x in entries:
            # A store folder is untrusted: a link or special file in its root (where
            # monitors and the root metadata live) is refused before anything changes.
            check_entry(x, file_ok=True)
        if not entries:
            return
        meta, entry = _node_meta(p)
        kind = _root_kind(meta, entry)
        if kind == "zarr":
            raise FormatError(f"{p} is a Zarr group but not a spikestore store")
        nodes = [x for x in entries if _is_store_node(x)]
        if kind != "store":
            # No valid root metadata: a store only if all there is are a lock file and
            # monitor groups (its zarr.json lost by a spikestore 0.2 writer killed while
            # replacing it, or damaged), never anything of the user's.
            trash = [x for x in entries if x.name.startswith(TRASH_PREFIX) and is_real_dir(x)]
            known = {"zarr.json", *(x.name for x in nodes + trash)}
            others = [x for x in entries if x.name not in known]
            if others or not (nodes or trash) or not had_lock_file:
                what = "overwrite it" if mode == "w" else "write into it"
                raise FileExistsError(
                    f"{p} exists, is not empty and is not a spikestore store; refusing to {what}"
                )
            if mode == "a":
                raise FormatError(
                    f"{p}: the store's root metadata (zarr.json) is missing or damaged; "
                    "replace the store with mode='w', or restore that file"
                )
        elif mode == "a":
            assert meta is not None
            _refuse_ranked(check_root_attrs(meta.get("attributes"), str(p)), str(p))
        if mode == "w":
            if kind != "store" and os.path.lexists(p / "zarr.json"):
                nodes.append(p / "zarr.json")  # damaged: the writer makes a new one
            self._clear(nodes)
        # Trash left by a writer killed while replacing this store (only in a store).
        for x in entries:
            if x.name.startswith(TRASH_PREFIX) and is_real_dir(x):
                with contextlib.suppress(OSError):
                    remove(p, x.name)

    def _clear(self, nodes: list[Path]) -> None:
        """Replace an old store crash-safely.

        Its monitor groups, and nothing else (files of the user's in the root stay; a
        damaged root ``zarr.json`` goes too), are moved (renamed, atomic each) into a
        trash folder that is then deleted; a valid root ``zarr.json`` stays until the
        writer replaces it in one write. Killed at any point, the path is a store (the
        old one, partly moved away, or an empty one) that opens, or a folder of trash
        and a lock file, and the next writer accepts either.
        """
        if not nodes:
            return
        trash = self.root / f"{TRASH_PREFIX}{uuid.uuid4().hex}"
        trash.mkdir()
        for x in nodes:
            os.rename(x, trash / x.name)
        if self.durable:
            fsync_dir(self.root)
        with contextlib.suppress(OSError):
            remove(self.root, trash.name)

    def _lock(self) -> None:
        import fcntl

        fd = open_lock_file(self.root / LOCK_FILE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = " ".join(os.read(fd, 200).decode(errors="replace").split()) or "unknown"
            finally:
                os.close(fd)
            raise StoreLockedError(
                f"{self.root} is open for writing by another writer ({holder}); "
                "close it first (the lock is released when that process exits)"
            ) from None
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP):
                raise OSError(
                    exc.errno,
                    f"{self.root}: this filesystem refuses file locks ({os.strerror(exc.errno)}), "
                    "so spikestore cannot guarantee one writer; write to a local disk and "
                    "copy the store afterwards, or give each process its own directory on a "
                    "filesystem with locks",
                ) from exc
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self._fd = fd
        self._pid = self.owner_pid = os.getpid()

    def _take(self) -> None:
        self._check_node()
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock()

    def discard(self) -> None:
        (self.root / LOCK_FILE).unlink(missing_ok=True)
        try:
            self.root.rmdir()
        except OSError:
            pass  # not empty: the user's files stay

    def abort(self) -> None:
        if self._made_lock_file and self._fd is not None and self.owned:
            (self.root / LOCK_FILE).unlink(missing_ok=True)
        self.release()

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if self._pid == os.getpid():
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_UN)
        # In a forked child the descriptor is a copy: closing it leaves the parent's
        # lock in place (an explicit LOCK_UN would have dropped it).
        os.close(fd)


class ZarrStorage(Storage):
    """A Zarr store passed in by the caller (see the module docstring)."""

    #: id(store) -> pid, for stores with a writer in this process.
    _open: ClassVar[dict[int, int]] = {}

    def __init__(self, store: Any) -> None:
        self.store = store
        self.where = repr(store)
        self._pid: int | None = None

    @property
    def owned(self) -> bool:
        return self._pid == _pid

    def open(self, mode: Mode) -> tuple[Any, Literal["w", "w-", "a"]]:
        key = id(self.store)
        if ZarrStorage._open.get(key) == os.getpid():
            raise StoreLockedError(f"{self.where} is open for writing by another writer")
        if mode == "w-":
            meta = _lease.read_json(self.store, "zarr.json")
            attrs = meta.get("attributes") if isinstance(meta, dict) else None
            if isinstance(attrs, dict) and FORMAT_NAME in attrs:
                raise StoreExistsError(self.where)
        ZarrStorage._open[key] = os.getpid()
        self._pid = self.owner_pid = os.getpid()
        # The one writer of the store: what it wrote need not be read back (see CachingStore).
        return CachingStore(self.store), mode

    def _take(self) -> None:
        self.open("a")

    def release(self) -> None:
        if self._pid == os.getpid() and ZarrStorage._open.get(id(self.store)) == self._pid:
            del ZarrStorage._open[id(self.store)]


# ------------------------------------------------------------------ object storage
async def _list_dir(store: Any, prefix: str) -> list[str]:
    # Called in the coroutine: some stores start the listing when list_dir is called.
    return [k async for k in store.list_dir(prefix)]


class ObjectStorage(Storage):
    """A store in object storage, or any Zarr store another process could write: a
    lease instead of a lock (see the module docstring and ``spikestore.storage._lease``).

    ``default_flush_interval`` is 10 s: a commit costs about 5 requests per field
    (each tens of ms on a real service, and billed), so committing every second
    would cost a model with tens of fields more time than the training step.
    """

    default_flush_interval = 10.0

    def __init__(
        self, store: Any, *, where: str | None = None, lease_timeout: float | None = None
    ) -> None:
        self.store = store
        self.where = where or str(store)
        timeout = _lease.DEFAULT_LEASE_TIMEOUT if lease_timeout is None else lease_timeout
        self.lease = _lease.Lease(store, self.where, timeout=float(timeout))
        self._pid: int | None = None

    @property
    def owned(self) -> bool:
        return self._pid == _pid

    def open(self, mode: Mode) -> tuple[Any, Literal["w", "w-", "a"]]:
        try:
            self.lease.acquire()
        except (StoreLockedError, OSError, ValueError):
            raise
        except Exception as exc:  # the backend's own errors (obstore, botocore, ...)
            raise unreachable(self.where, exc) from exc
        self._pid = self.owner_pid = os.getpid()
        try:
            self._prepare(mode)
        except BaseException:
            self.abort()
            raise
        # Prepared (cleared for "w", never by Zarr: the lease objects stay).
        return CachingStore(self.store), "a"

    def check_fence(self) -> None:
        self.lease.check()

    def _take(self) -> None:
        self.lease.acquire()
        self._pid = self.owner_pid = os.getpid()

    def discard(self) -> None:
        _sync(self.store.delete_dir(_lease.LEASE_DIR))

    def release(self) -> None:
        self.lease.release()

    # ------------------------------------------------------------- preparing
    def _json(self, key: str) -> Any:
        return _lease.read_json(self.store, key)

    def _entries(self) -> list[str]:
        try:
            keys = _sync(_list_dir(self.store, ""))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted({k.rstrip("/") for k in keys} - {_lease.LEASE_DIR, ""})

    def _prepare(self, mode: Mode) -> None:
        self._finish_clearing(mode)
        entries = self._entries()
        if not entries:
            return
        meta = self._json("zarr.json")
        attrs = meta.get("attributes") if isinstance(meta, dict) else None
        entry = attrs.get(FORMAT_NAME) if isinstance(attrs, dict) else None
        kind = _root_kind(
            meta if isinstance(meta, dict) else None, entry if isinstance(entry, dict) else None
        )
        if kind == "zarr":
            raise FormatError(f"{self.where} is a Zarr group but not a spikestore store")
        nodes = [e for e in entries if e != "zarr.json" and self._is_monitor(e)]
        if mode == "w-" and (kind == "store" or nodes):
            raise StoreExistsError(self.where)
        if kind != "store":
            others = [e for e in entries if e not in {"zarr.json", *nodes}]
            if others or not nodes or not self.lease.previous:
                what = "overwrite it" if mode == "w" else "write into it"
                raise FileExistsError(
                    f"{self.where} exists, is not empty and is not a spikestore store; "
                    f"refusing to {what}"
                )
            if mode == "a":
                raise FormatError(
                    f"{self.where}: the store's root metadata (zarr.json) is missing or "
                    "damaged; replace the store with mode='w', or restore that object"
                )
        elif mode == "a":
            assert isinstance(meta, dict)
            _refuse_ranked(check_root_attrs(meta.get("attributes"), self.where), self.where)
        if mode == "w":
            if kind != "store" and "zarr.json" in entries:
                nodes.append("zarr.json")  # damaged: the writer makes a new one
            self._clear(nodes)

    def _is_monitor(self, key: str) -> bool:
        meta = self._json(f"{key}/zarr.json")
        attrs = meta.get("attributes") if isinstance(meta, dict) else None
        entry = attrs.get(FORMAT_NAME) if isinstance(attrs, dict) else None
        return isinstance(entry, dict) and entry.get("node") == "monitor"

    def _clear(self, keys: list[str]) -> None:
        """Replace an old store: delete its monitors (and a damaged root ``zarr.json``).

        Object storage has no rename, so this cannot be one atomic step per monitor as
        locally. It is journaled instead: the keys go to ``.spikestore-lease/clearing.json``
        first; each monitor's ``zarr.json`` is deleted before its other objects, so a
        reader never opens a half-deleted monitor; the journal goes last. A writer killed
        meanwhile leaves a store that opens (with fewer monitors) and a journal that the
        next writer finishes before it looks at the store (see :meth:`_finish_clearing`
        for what a writer that does not replace the store does). A valid root
        ``zarr.json`` stays until the writer replaces it in one write.
        """
        if not keys:
            return
        _lease.write(self.store, _lease.CLEARING_KEY, json.dumps({"keys": keys}).encode())
        self._finish_clearing("w")

    def _finish_clearing(self, mode: Mode) -> None:
        """Carry out the journal of a replacement that a killed writer left.

        The journal is untrusted (a store may be copied, or planted): only a writer
        that replaces the store (``mode="w"``) deletes monitors the journal lists that
        readers still see; any other mode deletes only what the killed writer had
        already hidden (a monitor whose ``zarr.json`` is gone), and refuses to open a
        store where listed monitors are still there.
        """
        data = _lease.read_bytes(self.store, _lease.CLEARING_KEY)
        if data is None:
            return
        try:
            journal = json.loads(data)
        except (ValueError, RecursionError):
            journal = None  # damaged: nothing to replay
        keys = journal.get("keys") if isinstance(journal, dict) else None
        keys = [
            k for k in (keys if isinstance(keys, list) else [])
            # never a monitor key (see format.node_key): not ours to delete
            if isinstance(k, str) and k and "/" not in k and not k.startswith(".")
        ]
        if mode != "w":
            seen = [
                k for k in keys
                if _sync(self.store.exists(k if k == "zarr.json" else f"{k}/zarr.json"))
            ]
            if seen:
                shown = ", ".join(repr(k[:40]) for k in seen[:5])
                raise FormatError(
                    f"{self.where}: a replacement of this store (mode='w') was interrupted "
                    f"before it removed {shown}; open it with mode='w' to finish "
                    f"replacing it, or delete {_lease.CLEARING_KEY} to keep them"
                )
        for key in keys:
            if key == "zarr.json":
                _sync(self.store.delete(key))
                continue
            _sync(self.store.delete(f"{key}/zarr.json"))
            _sync(self.store.delete_dir(key))
        _sync(self.store.delete(_lease.CLEARING_KEY))
