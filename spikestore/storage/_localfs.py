"""A store's local files, reached without ever leaving its folder.

A store is a folder that people copy, download and share, so what lies in it is
untrusted: a ``.spikestore.lock`` may be a link to a user's file, a monitor folder a
link to somewhere else, a ``zarr.json`` a FIFO or a link to ``/dev/zero``. Every file
under a store's root is therefore reached one path component at a time, each
directory opened with ``openat(2)`` and ``O_NOFOLLOW | O_DIRECTORY`` relative to the
one before, and the file itself with ``O_NOFOLLOW | O_NONBLOCK``:

* a symbolic link anywhere below the root (a folder or a file) is refused with
  :class:`UnsafeStoreError`, never followed, whether spikestore reads, writes or
  deletes there (the root itself is the user's own choice and may be a link);
* only regular files are read, and a ``zarr.json`` at most
  :data:`~spikestore.format.MAX_METADATA_BYTES` long (no writer writes more); any
  other special file (FIFO, device, socket) is refused without blocking;
* writes go to a temporary file in the same folder and are renamed into place, so
  a link planted where a file is due is replaced, not written through; removal
  unlinks links and removes folders without following what they hold.

:class:`ConfinedLocalStore` is Zarr's ``LocalStore`` with every file access
through these functions; the writer and the reader both use it for local paths.
``durable=True`` makes each write ``fsync`` the file, then its folder (and the
parent of every folder it creates).

A writer thread holds the descriptors of the folders it reaches for the writer's life
(``_dirs.hold_dirs``, ``_dirs.DirCache``): a shard file ``.../s0/c/<j>/0/0/0/0/0`` then
costs an ``openat`` per folder that is new, not one per path component from the
root. This keeps the rules above. Each held descriptor was opened by the walk just
described (``O_NOFOLLOW | O_DIRECTORY``, from a held or freshly walked parent), so it
is a folder of the store that was verified when it was opened. A descriptor names
an inode, not a path: if that folder is later renamed, removed, or replaced by a
link (by another process, say), writes through it still go into the folder that
was verified (or fail, once it is removed), never to where a link now points;
nothing is ever resolved through the path again. Writing into an inode that was
verified is not following a link, and whoever can move a store's folders could
write their files anyway. Files are still opened one by one with ``O_NOFOLLOW``
and made by rename, as above. What the cache changes is only which folder a path
means when the store's folders change under a live writer: a removal through this
module (:func:`remove`, by any thread) makes every cache forget all it holds, and a
file whose held folder was removed meanwhile is made in a folder walked afresh.

A thread that holds no ``DirCache`` (a reader, an encoder thread) opens a folder, or
a file to read, by one ``openat2`` call that makes this walk in the kernel, refusing
any link on the way (:mod:`._beneath`); where it fails (a folder to make, a link, no
``openat2``), the walk above runs, makes what is missing and says what is wrong.

Thread ownership: nothing here keeps state between calls but a ``_dirs.DirCache``,
which is its thread's own (thread-local: used, trimmed and closed by that thread
only; other threads walk from the root), and the count of removals it checks;
any thread may call any function.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import stat
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any

from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.storage import LocalStore

from .._zarr import buffer_prototype
from ..errors import UnsafeStoreError
from ..format import (
    MAX_CHUNK_BYTES,
    MAX_METADATA_BYTES,
    MAX_NODE_METADATA_BYTES,
)
from ._beneath import open_beneath
from ._dirs import DirCache, cache_for, removing

__all__ = [
    "UnsafeStoreError",
    "ConfinedLocalStore",
    "DurableLocalStore",
    "MAX_FILE_BYTES",
    "MAX_READ_BYTES",
    "metadata_limit",
    "ConfinedFile",
    "open_file",
    "read_file",
    "write_file",
    "remove",
    "is_file",
    "is_real_dir",
    "check_entry",
    "list_dir",
    "walk_files",
    "fsync_dir",
    "open_lock_file",
]

#: The most bytes a shard file of a segment (``.../s<k>/c/...``) is read whole: a
#: writer's shard holds at most 1 GiB (``codecs.layout.MAX_SHARD_BYTES``).
MAX_FILE_BYTES = 1 << 31
#: The most bytes of any other read: a chunk file, or a byte range of a shard, holds
#: one chunk (at most ``format.MAX_CHUNK_BYTES`` decoded; compressed data that did not
#: shrink is a little longer) or a shard's index.
MAX_READ_BYTES = MAX_CHUNK_BYTES + (1 << 20)

# Metadata that grows with a run: the root's (marks) and a field group's (segments).
_GROWING = re.compile(r"^(rank\d+/)?zarr\.json$|(^|/)f\d+/zarr\.json$")
_SHARD = re.compile(r"(^|/)s\d+/c/")

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def _parts(key: str) -> list[str]:
    key = str(key)
    if "\x00" in key:  # C strings end there: the key would name another file
        raise ValueError(f"{key!r} is not a key of a store (it has a NUL character)")
    parts = [p for p in key.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise ValueError(f"{key!r} is not a key of a store (it has a '.' or '..' component)")
    return parts


def _unsafe(root: Path, parts: list[str], what: str) -> UnsafeStoreError:
    return UnsafeStoreError(
        f"{Path(root, *parts)} is {what}; spikestore never follows a link or reads a special "
        "file inside a store: remove it, or replace a link with a copy of what it points "
        "to (cp -rL copies a store with its links resolved)"
    )


def _kind(st: os.stat_result) -> str:
    if stat.S_ISLNK(st.st_mode):
        return "a symbolic link"
    if stat.S_ISFIFO(st.st_mode):
        return "a FIFO"
    if stat.S_ISSOCK(st.st_mode):
        return "a socket"
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        return "a device file"
    return "not a regular file"


def check_entry(path: Path, *, file_ok: bool) -> None:
    """Refuse (:class:`UnsafeStoreError`) an entry of a store that is a link or a special
    file, or a regular file unless ``file_ok``, without following it; nothing if it is
    a folder or missing."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode) or (file_ok and stat.S_ISREG(st.st_mode)):
        return
    what = "a file where a folder is due" if stat.S_ISREG(st.st_mode) else _kind(st)
    raise _unsafe(path.parent, [path.name], what)


def fsync_dir(fd_or_path: int | Path) -> None:
    """``fsync`` a folder (by descriptor or path), so entries made in it are on disk."""
    if isinstance(fd_or_path, int):
        os.fsync(fd_or_path)
        return
    fd = os.open(fd_or_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _walk(
    root: Path, parts: list[str], create: bool, durable: bool, cache: DirCache | None
) -> tuple[int, bool]:
    """The descriptor of folder ``root/parts...`` (see :func:`_dir`) and whether it
    came from ``cache`` (then the cache owns it, and every folder opened on the way)."""
    start, fd = 0, -1
    if cache is not None:
        for i in range(len(parts), -1, -1):
            got = cache.fds.get(tuple(parts[:i]))
            if got is not None:
                cache.fds.move_to_end(tuple(parts[:i]))
                start, fd = i, got
                break
        if start == len(parts) and fd >= 0:
            return fd, True
    if fd < 0:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        if cache is not None:
            cache.fds[()] = fd
    owned = cache is None  # whether fd is to be closed here once the next is open
    made = False  # a folder made on the way: the ones below it are new too
    try:
        for i in range(start, len(parts)):
            name = parts[i]
            try:
                if made:
                    # Made first (its parent is new): one failed ``openat`` the less.
                    # mkdir never follows a link; what is there is opened just below.
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(name, 0o777, dir_fd=fd)
                        if durable:
                            os.fsync(fd)
                nfd = os.open(name, _DIR, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o777, dir_fd=fd)
                    made = True
                    if durable:
                        os.fsync(fd)
                nfd = os.open(name, _DIR, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISREG(st.st_mode):
                    raise NotADirectoryError(
                        errno.ENOTDIR, "not a directory", str(Path(root, *parts[: i + 1]))
                    ) from None
                raise _unsafe(root, parts[: i + 1], _kind(st)) from None
            if owned:
                os.close(fd)
            elif cache is not None:
                cache.fds[tuple(parts[: i + 1])] = nfd
            fd = nfd
    except BaseException:
        if owned:
            os.close(fd)
        raise
    if cache is not None:
        # Trimmed once the walk is done: only the folder returned must stay open.
        cache.fds.move_to_end(tuple(parts))
        cache.trim(tuple(parts))
    return fd, not owned


@contextlib.contextmanager
def _dir(
    root: Path, parts: list[str], *, create: bool = False, durable: bool = False
) -> Iterator[int]:
    """A descriptor of the folder ``root/parts...``, reached without following links
    (or held by this thread's :class:`DirCache`, reached so when it was first opened).

    ``create``: missing folders are made (their parents ``fsync``-ed if ``durable``).
    A missing folder otherwise raises ``FileNotFoundError``; a path component that is
    a regular file ``NotADirectoryError``; a link or special file
    :class:`UnsafeStoreError`.
    """
    cache = cache_for(root)
    if cache is None and parts:
        fd = _beneath(root, parts, _DIR)
        if fd is not None:  # there already, reached without a link: nothing to make
            try:
                yield fd
            finally:
                os.close(fd)
            return
    fd, cached = _walk(root, parts, create, durable, cache)
    if cached:
        assert cache is not None
        cache.pin(fd)
    try:
        yield fd
    finally:
        if not cached:
            os.close(fd)
        elif cache is not None:
            cache.unpin(fd)


def _open_file(root: Path, parts: list[str], dfd: int) -> int | None:
    """A read descriptor of regular file ``parts[-1]`` in folder ``dfd``; None if it is
    missing or a folder."""
    try:
        fd = os.open(parts[-1], _FILE, dir_fd=dfd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _unsafe(root, parts, "a symbolic link") from None
        raise
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode):
        return fd
    os.close(fd)
    if stat.S_ISDIR(st.st_mode):
        return None
    raise _unsafe(root, parts, _kind(st))


def _beneath(root: Path, parts: list[str], flags: int) -> int | None:
    """``root/parts...`` opened with ``flags`` by one ``openat2`` (:mod:`._beneath`),
    or None where that fails: then walk, which makes what is missing or names what is
    wrong."""
    try:
        rfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:  # no root (yet): the walk says so as it always has
        return None
    try:
        return open_beneath(rfd, "/".join(parts), flags)
    finally:
        os.close(rfd)


def _open_beneath(root: Path, parts: list[str]) -> int | None:
    """:func:`_open_file`'s descriptor by :func:`_beneath`, or None for anything but
    a regular file reached without a link."""
    fd = _beneath(root, parts, _FILE)
    if fd is not None and not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        fd = None
    return fd


def metadata_limit(key: str) -> int:
    """The most bytes the ``zarr.json`` at ``key`` may have: the root's and a field
    group's grow with a run (:data:`~spikestore.format.MAX_METADATA_BYTES`), every
    other node's is small (:data:`~spikestore.format.MAX_NODE_METADATA_BYTES`)."""
    key = key.strip("/")
    return MAX_METADATA_BYTES if _GROWING.search(key) else MAX_NODE_METADATA_BYTES


def _limit(key: str, whole: bool) -> int:
    if key.rsplit("/", 1)[-1] == "zarr.json":
        return metadata_limit(key)
    return MAX_FILE_BYTES if whole and _SHARD.search(key) else MAX_READ_BYTES


class ConfinedFile:
    """A regular file of a store opened for reading by :func:`open_file` (reached
    without following links): its size when opened, and reads of byte ranges, each
    refused before reading when it is longer than a writer writes there (see
    :func:`read_file`). A writer replaces files by renaming new ones over them, so
    every read of one :class:`ConfinedFile` sees the same file."""

    def __init__(self, root: Path, key: str, fd: int) -> None:
        self.root, self.key, self.fd = root, key, fd
        st = os.fstat(fd)
        self.size = st.st_size
        #: Which file this is, as it is now: device, inode, size, modification and
        #: change times (a file changed in place, or another renamed over it, differs).
        self.ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def _refuse(self, start: int, end: int, whole: bool) -> None:
        limit = _limit(self.key, whole)
        if end - start > limit:
            what = "is" if whole else f"would give {end - start} of its"
            raise UnsafeStoreError(
                f"{Path(self.root, *_parts(self.key))} {what} {self.size} bytes, more than a "
                f"spikestore writer ever writes there ({limit}); refusing to read it"
            )

    def read(self, byte_range: Any = None) -> bytes:
        """The file's bytes, or a byte range of them as Zarr asks (``RangeByteRequest``,
        ``OffsetByteRequest``, ``SuffixByteRequest``); shorter at the end of the file."""
        size = self.size
        if byte_range is None:
            start, end = 0, size
        elif isinstance(byte_range, RangeByteRequest):
            start, end = byte_range.start, min(byte_range.end, size)
        elif isinstance(byte_range, OffsetByteRequest):
            start, end = byte_range.offset, size
        elif isinstance(byte_range, SuffixByteRequest):
            start, end = max(0, size - byte_range.suffix), size
        else:
            raise TypeError(f"unexpected byte range {byte_range!r}")
        self._refuse(start, end, byte_range is None)
        chunks = []
        pos, want = start, max(0, end - start)
        while want > 0:
            b = os.pread(self.fd, min(want, 1 << 26), pos)
            if not b:
                break
            chunks.append(b)
            pos += len(b)
            want -= len(b)
        return b"".join(chunks)

    def read_into(self, start: int, buf: Any) -> int:
        """Read the bytes at ``start`` into ``buf`` (a writable buffer, filled as far as
        the file goes); returns how many were read."""
        view = memoryview(buf).cast("B")
        self._refuse(start, start + len(view), False)
        got = 0
        while got < len(view):
            k = os.preadv(self.fd, [view[got:]], start + got)
            if not k:
                break
            got += k
        return got

    @property
    def max_read(self) -> int:
        """The longest byte range of this file :meth:`read_into` and :meth:`readv_into`
        take (longer ones are refused: see :func:`read_file`)."""
        return _limit(self.key, False)

    def readv_into(self, start: int, bufs: list[Any]) -> int:
        """Read the bytes at ``start`` into ``bufs`` one after the other (writable
        buffers, one ``preadv``); returns how many were read (fewer at the end of the
        file, or where the system call read less: the caller then reads otherwise)."""
        total = sum(memoryview(b).nbytes for b in bufs)
        self._refuse(start, start + total, False)
        return os.preadv(self.fd, bufs, start)


@contextlib.contextmanager
def open_file(root: Path, key: str) -> Iterator[ConfinedFile | None]:
    """``key`` under ``root`` opened for reading (:class:`ConfinedFile`), or None if
    there is no such file; links and special files refused as :func:`read_file` does.
    Closed on leaving the block."""
    parts = _parts(key)
    fd = _open_beneath(root, parts) if parts and cache_for(root) is None else None
    if fd is None and parts:
        try:
            with _dir(root, parts[:-1]) as dfd:
                fd = _open_file(root, parts, dfd)
        except (FileNotFoundError, NotADirectoryError):
            fd = None
    if fd is None:
        yield None
        return
    try:
        yield ConfinedFile(root, key, fd)
    finally:
        os.close(fd)


def read_file(root: Path, key: str, byte_range: Any = None) -> bytes | None:
    """The bytes of ``key`` under ``root`` (a byte range of them, as Zarr asks), or None
    if there is no such file. Refuses links, special files, and a read longer than a
    writer writes there (:func:`metadata_limit` for ``zarr.json``, :data:`MAX_FILE_BYTES`
    for a whole shard file, :data:`MAX_READ_BYTES` for the rest), before reading."""
    with open_file(root, key) as f:
        return None if f is None else f.read(byte_range)


def write_file(
    root: Path,
    key: str,
    parts: Iterable[Any],
    *,
    durable: bool = False,
    exclusive: bool = False,
) -> int:
    """Write the concatenation of ``parts`` as ``key`` under ``root``, atomically: into a
    temporary file of the same folder, renamed into place (a link planted at ``key``
    is replaced, never written through; ``exclusive``: ``FileExistsError`` if
    ``key`` exists). Missing folders are made. ``durable``: the file is ``fsync``-ed
    before the rename, its folder after. Returns the bytes written."""
    names = _parts(key)
    if not names:
        raise ValueError("cannot write the store's root folder as a file")
    name = names[-1]
    limit = metadata_limit(key) if name == "zarr.json" else None
    tmp = f"{name}.{uuid.uuid4().hex}.partial"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with contextlib.ExitStack() as stack:
        try:
            dfd = stack.enter_context(_dir(root, names[:-1], create=True, durable=durable))
            fd = os.open(tmp, flags, 0o644, dir_fd=dfd)
        except FileNotFoundError:
            # A held folder removed meanwhile (another thread's removal not over yet):
            # reached again from the root, as it is without a DirCache.
            cache = cache_for(root)
            if cache is None:
                raise
            stack.close()
            cache.flush()
            dfd = stack.enter_context(_dir(root, names[:-1], create=True, durable=durable))
            fd = os.open(tmp, flags, 0o644, dir_fd=dfd)
        n = 0
        try:
            try:
                n = _write_all(fd, parts)
                if limit is not None and n > limit:
                    raise ValueError(
                        f"{Path(root, *names)}: metadata of {n} bytes is more than a store may "
                        f"hold ({limit}); readers refuse such a file, so it is not written"
                    )
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            if exclusive:
                os.link(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
                os.unlink(tmp, dir_fd=dfd)
            else:
                os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dfd)
            raise
        if durable:
            os.fsync(dfd)
    return n


#: Parts gathered into one ``writev``: at most this many (Linux's ``IOV_MAX`` is 1024)
#: and this many bytes. Not more: a shard's parts in one call (6.4 MB) made the writer
#: 3-4x slower on Linux 6.18 (system time: the page cache then takes larger pages,
#: 2 MB writes already do), while 1 MiB batches beat a ``write`` per part (0.6 of its
#: system time; parts may also be encoded as they are asked for, so the bytes held at
#: once stay bounded). A part longer than this is written alone, as before.
_WRITEV_PARTS = 512
_WRITEV_BYTES = 1 << 20


def _write_all(fd: int, parts: Iterable[Any]) -> int:
    """Write the concatenation of ``parts`` to ``fd``, parts gathered into ``writev``
    calls (one system call, and one release of the GIL, for many rows and their
    CRCs); returns the bytes written."""
    n = 0
    batch: list[memoryview] = []
    size = 0
    for part in parts:
        view = memoryview(part).cast("B")
        if not view:
            continue
        if batch and (size + len(view) > _WRITEV_BYTES or len(batch) >= _WRITEV_PARTS):
            n += _writev(fd, batch)
            batch, size = [], 0
        batch.append(view)
        size += len(view)
    if batch:
        n += _writev(fd, batch)
    return n


def _writev(fd: int, views: list[memoryview]) -> int:
    """``writev`` all of ``views``, again from where a short write stopped."""
    done, i = 0, 0
    while i < len(views):
        k = os.writev(fd, views[i:] if i else views)
        done += k
        while i < len(views) and k >= len(views[i]):
            k -= len(views[i])
            i += 1
        if k:
            views[i] = views[i][k:]
    return done


def _remove_folder(root: Path, parts: list[str]) -> None:
    """Remove folder ``root/parts...`` with everything in it: files and links unlinked
    (never followed), folders removed deepest first. Iterative, each folder reached
    again from the root: no recursion and no descriptor per level, however deep a
    (hostile) store nests its folders."""
    todo, order = [parts], []
    while todo:
        here = todo.pop()
        order.append(here)
        with contextlib.suppress(FileNotFoundError), _dir(root, here) as fd:
            for name in os.listdir(fd):
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    if stat.S_ISDIR(st.st_mode):
                        todo.append([*here, name])
                    else:
                        os.unlink(name, dir_fd=fd)
                except FileNotFoundError:
                    continue
    for here in reversed(order):
        with contextlib.suppress(FileNotFoundError), _dir(root, here[:-1]) as fd:
            os.rmdir(here[-1], dir_fd=fd)


def remove(root: Path, key: str, *, durable: bool = False) -> None:
    """Delete ``key`` under ``root`` (a file, or a folder and what it holds); nothing
    if it is missing. Links are removed, never followed; a link on the way to ``key``
    raises :class:`UnsafeStoreError` and removes nothing."""
    parts = _parts(key)
    if not parts:
        raise ValueError("cannot remove the store's root folder")
    with removing():  # every DirCache forgets what it held
        _remove(root, parts, durable)


def _remove(root: Path, parts: list[str], durable: bool) -> None:
    try:
        with _dir(root, parts[:-1]) as dfd:
            try:
                st = os.stat(parts[-1], dir_fd=dfd, follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):
                    os.unlink(parts[-1], dir_fd=dfd)
            except FileNotFoundError:
                return
            if stat.S_ISDIR(st.st_mode):
                _remove_folder(root, parts)
            if durable:
                os.fsync(dfd)
    except (FileNotFoundError, NotADirectoryError):
        return


def is_file(root: Path, key: str) -> bool:
    """Whether ``key`` is a regular file under ``root`` (links and special files are not)."""
    parts = _parts(key)
    if not parts:
        return False
    try:
        with _dir(root, parts[:-1]) as dfd:
            st = os.stat(parts[-1], dir_fd=dfd, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError, UnsafeStoreError):
        return False
    return stat.S_ISREG(st.st_mode)


def is_real_dir(path: Path) -> bool:
    """Whether ``path`` is a folder and not a link to one."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def list_dir(root: Path, prefix: str) -> list[str]:
    """The names in folder ``prefix`` under ``root`` ([] if it is missing)."""
    try:
        with _dir(root, _parts(prefix)) as dfd:
            return os.listdir(dfd)
    except (FileNotFoundError, NotADirectoryError):
        return []


def walk_files(root: Path, prefix: str = "") -> Iterator[tuple[str, int]]:
    """``(key, size)`` of every regular file under folder ``prefix`` of ``root``, without
    entering links; files that vanish meanwhile (a live writer renames and drops files)
    are skipped."""
    base = _parts(prefix)
    todo = [base]
    while todo:
        parts = todo.pop()
        try:
            with _dir(root, parts) as dfd:
                names = os.listdir(dfd)
                for name in names:
                    try:
                        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        todo.append([*parts, name])
                    elif stat.S_ISREG(st.st_mode):
                        yield "/".join([*parts, name]), st.st_size
        except (FileNotFoundError, NotADirectoryError):
            continue


def open_lock_file(path: Path) -> int:
    """A read-write descriptor of the lock file ``path``, created if missing; refused
    (:class:`UnsafeStoreError`) if it is a link, not a regular file, or a hard link
    shared with another name (truncating it would truncate a user's file)."""
    try:
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise _unsafe(path.parent, [path.name], "a symbolic link") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        what = _kind(st) if not stat.S_ISREG(st.st_mode) else "a hard link to another file"
        raise _unsafe(path.parent, [path.name], what)
    return fd


class ConfinedLocalStore(LocalStore):
    """Zarr's ``LocalStore``, every file reached through this module's functions: no
    link below the root followed, no special file read, metadata size bounded (see
    the module docstring)."""

    durable = False

    def with_read_only(self, read_only: bool = False) -> ConfinedLocalStore:
        return type(self)(root=self.root, read_only=read_only)

    def get_sync(self, key: str, *, prototype: Any = None, byte_range: Any = None) -> Any:
        self._ensure_open_sync()
        data = read_file(self.root, key, byte_range)
        proto = prototype or buffer_prototype()
        return None if data is None else proto.buffer.from_bytes(data)

    async def get(self, key: str, prototype: Any = None, byte_range: Any = None) -> Any:
        if not self._is_open:
            await self._open()
        data = await asyncio.to_thread(read_file, self.root, key, byte_range)
        proto = prototype or buffer_prototype()
        return None if data is None else proto.buffer.from_bytes(data)

    async def get_partial_values(
        self, prototype: Any, key_ranges: Iterable[tuple[str, Any]]
    ) -> list[Any]:
        return list(await asyncio.gather(*(self.get(k, prototype, r) for k, r in key_ranges)))

    def set_sync(self, key: str, value: Any) -> None:
        self._ensure_open_sync()
        self._check_writable()
        write_file(self.root, key, [value.as_buffer_like()], durable=self.durable)

    async def _set(self, key: str, value: Any, exclusive: bool = False) -> None:
        if not self._is_open:
            await self._open()
        self._check_writable()
        await asyncio.to_thread(
            write_file,
            self.root,
            key,
            [value.as_buffer_like()],
            durable=self.durable,
            exclusive=exclusive,
        )

    def delete_sync(self, key: str) -> None:
        self._ensure_open_sync()
        self._check_writable()
        remove(self.root, key, durable=self.durable)

    async def delete(self, key: str) -> None:
        self._check_writable()
        await asyncio.to_thread(remove, self.root, key, durable=self.durable)

    async def delete_dir(self, prefix: str) -> None:
        self._check_writable()
        if is_file(self.root, prefix):
            raise ValueError(f"delete_dir was passed a {prefix=!r} that is a file")
        await asyncio.to_thread(remove, self.root, prefix, durable=self.durable)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(is_file, self.root, key)

    async def getsize(self, key: str) -> int:
        parts = _parts(key)
        with _dir(self.root, parts[:-1]) as dfd:
            st = os.stat(parts[-1], dir_fd=dfd, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode):
            raise _unsafe(self.root, parts, _kind(st))
        return st.st_size

    async def list(self) -> AsyncIterator[str]:
        for key, _ in walk_files(self.root):
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        for key, _ in walk_files(self.root, prefix):
            yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        for name in list_dir(self.root, prefix):
            yield name

    async def move(self, dest_root: Path | str) -> None:
        raise NotImplementedError("a spikestore store is not moved through Zarr")


class DurableLocalStore(ConfinedLocalStore):
    """A :class:`ConfinedLocalStore` whose every write is ``fsync``-ed (file, then folder).

    Writes happen in the order the writer makes them, each one durable before the
    next starts, so the commit (the field's ``zarr.json``) reaches the disk after
    the chunks and index it points to.
    """

    durable = True
