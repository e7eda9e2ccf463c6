"""The folders of a local store that one thread keeps open while it writes.

A writer thread holds the descriptors of the folders it reaches for the writer's life
(:func:`hold_dirs`); ``storage._localfs`` reaches every folder through them where it
can, and its module docstring says why this keeps a store's files confined.

Thread ownership: a :class:`DirCache` is its thread's own (thread-local: used, trimmed
and closed by that thread only); the count of removals is bumped by any thread.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

__all__ = ["DirCache", "cache_for", "hold_dirs", "removing"]


class DirCache:
    """Descriptors of a store's folders, held by the one thread that made it (see
    :func:`hold_dirs` and the module docstring): at most :attr:`SIZE`, the least
    recently used closed first, all of them when any thread removes something
    from a local store (``_localfs.remove``) and on :meth:`close`. A descriptor that
    ``_localfs._dir`` handed out is pinned until its block ends: a walk nested in the
    block (a tail chunk read while a shard file is written) never closes it."""

    SIZE = 64

    def __init__(self, root: Path) -> None:
        self.root = os.fspath(root)
        self.fds: OrderedDict[tuple[str, ...], int] = OrderedDict()
        self.removals = _removals[0]
        self.closed = False
        self._pins: dict[int, int] = {}  # descriptor -> blocks using it
        self._orphans: set[int] = set()  # forgotten while pinned: closed when unpinned

    def _drop(self, fd: int) -> None:
        if fd in self._pins:
            self._orphans.add(fd)
        else:
            os.close(fd)

    def flush(self) -> None:
        """Forget every descriptor held (closed now, or when its block ends)."""
        fds, self.fds = self.fds, OrderedDict()
        for fd in fds.values():
            self._drop(fd)

    def close(self) -> None:
        """Close every descriptor and stop holding any (the owning thread's call,
        outside any block of :func:`_dir`)."""
        self.closed = True
        self.flush()
        for fd in self._orphans:
            os.close(fd)
        self._orphans.clear()
        if getattr(_held, "cache", None) is self:
            _held.cache = None

    def pin(self, fd: int) -> None:
        """Keep ``fd`` open while a block of ``_localfs._dir`` uses it."""
        self._pins[fd] = self._pins.get(fd, 0) + 1

    def unpin(self, fd: int) -> None:
        """End one use of ``fd`` (closed now if it was forgotten meanwhile)."""
        n = self._pins.pop(fd) - 1
        if n:
            self._pins[fd] = n
        elif fd in self._orphans:
            self._orphans.discard(fd)
            os.close(fd)

    def trim(self, keep: tuple[str, ...]) -> None:
        """Close the least recently used unpinned descriptors past :attr:`SIZE`, but
        not that of folder ``keep``."""
        for key in list(self.fds):
            if len(self.fds) <= self.SIZE:
                break
            if key != keep and self.fds[key] not in self._pins:
                os.close(self.fds.pop(key))


#: The DirCache of this thread (one writer thread's), if it holds one.
_held = threading.local()
#: Removals by any thread: bumped before and after each, so that a DirCache made
#: before a removal ended forgets what it held.
_removals = [0]


def hold_dirs(root: Path) -> DirCache:
    """Make the calling thread keep the descriptors of the folders of ``root`` it
    reaches (:class:`DirCache`) until the returned cache is closed, by that thread.
    The writer thread holds one for a writer's life: a shard file ten folders deep
    then costs one ``openat`` per new folder instead of one per path component."""
    old = getattr(_held, "cache", None)
    if old is not None:
        old.close()
    cache = _held.cache = DirCache(root)
    return cache


def cache_for(root: Path) -> DirCache | None:
    """This thread's :class:`DirCache` of ``root``, emptied if any thread removed
    something since it was last used; None if this thread holds none."""
    cache = getattr(_held, "cache", None)
    if cache is None or cache.closed or cache.root != os.fspath(root):
        return None
    if cache.removals != _removals[0]:
        cache.flush()
        cache.removals = _removals[0]
    return cache


@contextlib.contextmanager
def removing() -> Iterator[None]:
    """Around a removal from a local store: every DirCache forgets what it held (the
    folders removed may be among them), counted before and after, so that one made or
    refilled meanwhile is forgotten too. This thread's own is set aside meanwhile (no
    walk inside holds, or trims, a descriptor)."""
    held = getattr(_held, "cache", None)
    _removals[0] += 1
    _held.cache = None
    try:
        yield
    finally:
        _removals[0] += 1
        _held.cache = held
