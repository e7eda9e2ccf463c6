"""Where a store lives, and the right to write it: the storage interface, its backends,
and the Zarr stores the writer and the reader are given.

One module per job; the names stay importable from ``spikestore.storage``:

``_backends``
    The :class:`Storage` interface and its backends (:class:`LocalStorage` with its
    ``flock``, :class:`ZarrStorage` in memory, :class:`ObjectStorage` with a lease),
    crash-safe clearing, and :func:`storage_for`, which picks one.
``_urls``
    URL -> Zarr store (:func:`url_store`, :func:`is_url`), per-rank sub-stores
    (:func:`prefixed`), :func:`confined` local stores, and :func:`unreachable`.
``_files``
    The writer's writes and deletes (a local store's keys as files, fsync-ed if it is
    durable) and :func:`member_keys`.
``_cache``
    :class:`CachingStore`, the commit cache.

Thread ownership is in each module's docstring: a storage object belongs to the thread
that opens the writer, its lock to that thread's process; the cache to the writer thread.
"""

from __future__ import annotations

from ..errors import StoreExistsError
from ._backends import LocalStorage, Mode, ObjectStorage, Storage, ZarrStorage, storage_for
from ._cache import CachingStore
from ._files import delete_prefix, file_writer, local_root, member_keys, set_many, write_parts
from ._localfs import ConfinedLocalStore, DurableLocalStore
from ._urls import PrefixStore, confined, is_url, prefixed, unreachable, url_store

__all__ = [
    "Mode",
    "Storage",
    "StoreExistsError",
    "LocalStorage",
    "ZarrStorage",
    "ObjectStorage",
    "ConfinedLocalStore",
    "DurableLocalStore",
    "CachingStore",
    "PrefixStore",
    "storage_for",
    "confined",
    "write_parts",
    "file_writer",
    "delete_prefix",
    "local_root",
    "set_many",
    "unreachable",
    "is_url",
    "url_store",
    "prefixed",
    "member_keys",
]
