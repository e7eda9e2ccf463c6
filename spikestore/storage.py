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
    Any Zarr store passed in (memory, a wrapper in tests). One writer per store
    object within a process; no lock across processes.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
import socket
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar, Literal

from zarr.storage import LocalStore

from .errors import StoreLockedError
from .format import FORMAT_NAME, LOCK_FILE, TRASH_PREFIX, FormatError, check_root_attrs

__all__ = [
    "Storage",
    "LocalStorage",
    "ZarrStorage",
    "DurableLocalStore",
    "storage_for",
    "write_parts",
]

Mode = Literal["w", "w-", "a"]


class Storage:
    """The interface: a location, its lock, and the Zarr store to write there."""

    #: How errors name the store.
    where: str
    #: The local directory, or None for other backends.
    path: Path | None = None
    #: Whether writes are ``fsync``-ed (see :class:`LocalStorage`).
    durable: bool = False

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

    @property
    def owned(self) -> bool:
        """Whether this process opened the storage (False in a forked child)."""
        raise NotImplementedError

    #: The process that opened the storage.
    owner_pid: int | None = None


def storage_for(path: str | os.PathLike[str] | None, store: Any, *, durable: bool) -> Storage:
    """The storage for a writer's ``path`` or ``store`` argument."""
    if (path is None) == (store is None):
        raise ValueError("pass exactly one of path and store")
    if path is not None:
        return LocalStorage(Path(path), durable=durable)
    if durable:
        raise ValueError("durable=True needs a local path (a store passed in writes as it does)")
    return ZarrStorage(store)


# ------------------------------------------------------------------ local files
def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _makedirs_durable(path: Path) -> None:
    """``mkdir -p``, then ``fsync`` the parent of every directory it created."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    path.mkdir(parents=True, exist_ok=True)
    for d in reversed(missing):
        _fsync_dir(d.parent)


def _write_file(
    path: Path, parts: Iterable[bytes], *, durable: bool, exclusive: bool = False
) -> int:
    """Write ``parts`` to ``path`` through a temporary name and a rename (atomic).

    ``durable``: the file is ``fsync``-ed before the rename and its directory after.
    """
    if durable:
        _makedirs_durable(path.parent)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")
    n = 0
    try:
        with open(tmp, "wb") as f:
            for part in parts:
                n += f.write(part)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        if exclusive:
            os.link(tmp, path)  # fails if the path exists
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        _fsync_dir(path.parent)
    return n


class DurableLocalStore(LocalStore):
    """A Zarr ``LocalStore`` whose every write is ``fsync``-ed (file, then directory).

    Writes happen in the order the writer makes them, each one durable before the
    next starts, so the commit (the field's ``zarr.json``) reaches the disk after
    the chunks and index it points to.
    """

    durable = True

    async def _set(self, key: str, value: Any, exclusive: bool = False) -> None:
        if not self._is_open:
            await self._open()
        self._check_writable()
        view = value.as_buffer_like()
        await asyncio.to_thread(
            _write_file, self.root / key, [view], durable=True, exclusive=exclusive
        )


def write_parts(store: Any, key: str, parts: Iterable[bytes]) -> None:
    """Write the concatenation of ``parts`` as ``key`` of ``store``, atomically.

    A local store gets the parts streamed into a file (one part in memory at a
    time), ``fsync``-ed if the store is durable; other stores get one ``set``.
    """
    if isinstance(store, LocalStore):
        _write_file(Path(str(store.root)) / key, parts, durable=getattr(store, "durable", False))
        return
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    proto = default_buffer_prototype()
    sync(store.set(key, proto.buffer.from_bytes(b"".join(parts))))


def _node_meta(path: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """A folder's parsed ``zarr.json`` and its spikestore entry (each None if absent or
    unreadable)."""
    try:
        meta = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError):
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


def _is_store_node(path: Path) -> bool:
    """Whether ``path`` is a group a spikestore writer made in a store's root (a monitor)."""
    entry = _node_meta(path)[1]
    return path.is_dir() and entry is not None and entry.get("node") == "monitor"


class LocalStorage(Storage):
    """A store in a local directory (see the module docstring)."""

    def __init__(self, path: Path, *, durable: bool = False) -> None:
        self.root = Path(path)
        self.path = self.root
        self.where = str(self.root)
        self.durable = bool(durable)
        self._fd: int | None = None
        self._pid: int | None = None
        self._made_lock_file = False

    @property
    def owned(self) -> bool:
        return self._pid == os.getpid()

    def open(self, mode: Mode) -> tuple[Any, Literal["w", "w-", "a"]]:
        p = self.root
        if p.exists() and not p.is_dir():
            raise FileExistsError(f"{p} exists and is not a directory")
        if mode == "w-" and p.exists() and any(p.iterdir()):
            raise FileExistsError(f"{p} already exists")
        p.mkdir(parents=True, exist_ok=True)
        had_lock_file = (p / LOCK_FILE).exists()
        self._lock()
        self._made_lock_file = not had_lock_file
        try:
            self._prepare(mode, had_lock_file)
        except BaseException:
            self.abort()  # refused: leave the folder as it was found
            raise
        cls = DurableLocalStore if self.durable else LocalStore
        # The directory is prepared (cleared for "w"): Zarr only adds to it.
        return cls(p), "a"

    def _prepare(self, mode: Mode, had_lock_file: bool) -> None:
        p = self.root
        entries = [x for x in p.iterdir() if x.name != LOCK_FILE]
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
            trash = [x for x in entries if x.name.startswith(TRASH_PREFIX) and x.is_dir()]
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
            check_root_attrs(meta.get("attributes"), str(p))
        if mode == "w":
            if kind != "store" and (p / "zarr.json").exists():
                nodes.append(p / "zarr.json")  # damaged: the writer makes a new one
            self._clear(nodes)
        # Trash left by a writer killed while replacing this store (only in a store).
        for x in entries:
            if x.name.startswith(TRASH_PREFIX) and x.is_dir():
                shutil.rmtree(x, ignore_errors=True)

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
            _fsync_dir(self.root)
        shutil.rmtree(trash, ignore_errors=True)

    def _lock(self) -> None:
        import fcntl

        fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.read(fd, 200).decode(errors="replace").strip() or "unknown"
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
        return self._pid == os.getpid()

    def open(self, mode: Mode) -> tuple[Any, Literal["w", "w-", "a"]]:
        key = id(self.store)
        if ZarrStorage._open.get(key) == os.getpid():
            raise StoreLockedError(f"{self.where} is open for writing by another writer")
        ZarrStorage._open[key] = os.getpid()
        self._pid = self.owner_pid = os.getpid()
        return self.store, mode

    def release(self) -> None:
        if self._pid == os.getpid() and ZarrStorage._open.get(id(self.store)) == self._pid:
            del ZarrStorage._open[id(self.store)]
