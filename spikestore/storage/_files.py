"""Writing, deleting and listing a store's keys for the writer: a local store's keys as
files, any other store's through Zarr.

Every file of a local store is reached through ``spikestore.storage._localfs``: no link below
the root is followed, no special file read (a store folder is untrusted input).
``spikestore._segments`` writes shard files with :func:`write_parts` and
:func:`file_writer`, deletes segments with :func:`delete_prefix` and writes many small
objects with :func:`set_many`; :func:`member_keys` lists a group's nodes (for
``spikestore._commit`` and the reader); :func:`local_root` tells whether a store's keys
are local files.

Thread ownership: none; these functions keep no state. They run in the writer thread
(the reader calls :func:`local_root` and :func:`member_keys` in its caller's); the
function that :func:`file_writer` returns runs in the encoder threads of a commit too,
each thread writing keys of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from zarr.storage import LocalStore

from .._zarr import from_bytes
from .._zarr import sync as _sync
from ._cache import CachingStore
from ._localfs import remove, write_file

__all__ = [
    "write_parts",
    "file_writer",
    "delete_prefix",
    "local_root",
    "set_many",
    "member_keys",
]


def write_parts(store: Any, key: str, parts: Iterable[bytes]) -> None:
    """Write the concatenation of ``parts`` as ``key`` of ``store``, atomically.

    A local store gets the parts streamed into a file (one part in memory at a
    time), ``fsync``-ed if the store is durable; other stores get one ``set``.
    """
    if isinstance(store, CachingStore):
        store.forget(key)
        store = store._store
    if isinstance(store, LocalStore):
        write_file(Path(str(store.root)), key, parts, durable=getattr(store, "durable", False))
        return
    _sync(store.set(key, from_bytes(b"".join(parts))))


def local_root(store: Any) -> Path | None:
    """The folder whose files are the keys of ``store`` (a ``LocalStore``, perhaps in a
    :class:`CachingStore`), or None for any other store."""
    inner = store._store if isinstance(store, CachingStore) else store
    return Path(str(inner.root)) if isinstance(inner, LocalStore) else None


def file_writer(store: Any) -> Callable[[str, Sequence[Any]], None] | None:
    """A function writing one key of ``store`` as a file made of the given parts
    (bytes-like), atomically (and ``fsync``-ed if the store is durable), or None if
    ``store`` does not keep its keys in local files.

    The function may be called from any thread, for different keys at the same time:
    the encoder threads of a commit write the chunks they encode (see
    ``spikestore._segments``). Each call forgets what a :class:`CachingStore` held of
    the key.
    """
    cache = store if isinstance(store, CachingStore) else None
    inner = store._store if cache is not None else store
    root = local_root(store)
    if root is None:
        return None
    durable = getattr(inner, "durable", False)

    def write(key: str, parts: Sequence[Any]) -> None:
        if cache is not None:
            cache.forget(key)
        write_file(root, key, parts, durable=durable)

    return write


def delete_prefix(store: Any, prefix: str) -> None:
    """Delete every key under ``prefix`` (a node and what it holds): a local store's
    folder is removed in one go (its parent ``fsync``-ed if the store is durable)."""
    if isinstance(store, CachingStore):
        store._forget_prefix(prefix)
    root = local_root(store)
    if root is None:
        _sync(store.delete_dir(prefix))
        return
    inner = store._store if isinstance(store, CachingStore) else store
    remove(root, prefix, durable=getattr(inner, "durable", False))


def set_many(store: Any, items: Iterable[tuple[str, bytes]]) -> None:
    """Write every ``(key, data)`` of ``items`` in one round trip to Zarr's event loop
    (the writes run concurrently; all have finished when this returns)."""
    async def put_all() -> None:
        await asyncio.gather(*(store.set(k, from_bytes(v)) for k, v in items))

    _sync(put_all())


def member_keys(group: Any) -> list[str]:
    """Keys of a Zarr group's members that may be nodes, sorted: not its ``zarr.json``,
    not the writer's lock or temporary files (node keys never start with ``.``; see
    ``spikestore.format.node_key``). Raises what the store's listing raises
    (``FileNotFoundError`` for a folder gone)."""

    async def names() -> list[str]:
        return [k async for k in group.store.list_dir(group.path)]

    return sorted(k for k in _sync(names()) if k != "zarr.json" and not k.startswith("."))
