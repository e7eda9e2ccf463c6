"""The commit cache: :class:`CachingStore`, a store wrapper that answers the writer's
reads of what it has just written from memory.

Zarr reads an open chunk back before it rewrites it; a commit rewrites a field's tail,
index and summary chunks, so on object storage each commit would pay one GET per chunk.
The storage backends (``spikestore.storage._backends``) wrap the Zarr store they give the
one writer of a store (in-memory and object-storage stores) in a :class:`CachingStore`;
``spikestore._commit`` and ``spikestore._segments`` write through it.

Thread ownership: the writer thread, the one writer of the store. The cache's dict is
under a lock all the same, because the encoder threads of a commit write files past it
and make it forget those keys (see ``spikestore.storage._files.file_writer``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from zarr.storage import WrapperStore

__all__ = ["CachingStore"]


class CachingStore(WrapperStore):  # type: ignore[type-arg]
    """Keeps what was last written to each key (up to ``max_bytes``, least recently
    used first out) and answers whole-object reads of those keys from memory.

    Only for the one writer of a store: nobody else changes the objects, so the copy
    is the object. A commit rewrites the open chunks of a field's tail, index and
    summaries, which Zarr would otherwise read back first (one GET each, the cost
    that dominates on object storage). Writes go through at once, in order: the
    commit protocol is unchanged.
    """

    def __init__(self, store: Any, max_bytes: int = 32 << 20) -> None:
        super().__init__(store)
        self.max_bytes = max_bytes
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def _with_store(self, store: Any) -> CachingStore:
        return type(self)(store, self.max_bytes)

    def __repr__(self) -> str:
        return repr(self._store)

    def __str__(self) -> str:
        return str(self._store)

    def forget(self, key: str) -> None:
        with self._lock:
            old = self._cache.pop(key, None)
            if old is not None:
                self._bytes -= len(old)

    def _forget_prefix(self, prefix: str) -> None:
        prefix = prefix.rstrip("/") + "/" if prefix else ""
        with self._lock:
            for key in [k for k in self._cache if k.startswith(prefix)]:
                self._bytes -= len(self._cache.pop(key))

    def _keep(self, key: str, value: Any) -> None:
        self.forget(key)
        n = len(value)
        if n > self.max_bytes // 8:
            return
        with self._lock:
            self._cache[key] = value
            self._bytes += n
            while self._bytes > self.max_bytes:
                self._bytes -= len(self._cache.popitem(last=False)[1])

    async def get(self, key: str, prototype: Any, byte_range: Any = None) -> Any:
        if byte_range is None:
            with self._lock:
                hit = self._cache.get(key)
                if hit is not None:
                    self._cache.move_to_end(key)
            if hit is not None:
                if isinstance(hit, prototype.buffer):
                    return hit
                return prototype.buffer.from_bytes(hit.to_bytes())
        return await self._store.get(key, prototype, byte_range)

    async def _get_many(self, requests: Iterable[Any]) -> Any:
        for key, prototype, byte_range in requests:
            yield key, await self.get(key, prototype, byte_range)

    async def set(self, key: str, value: Any) -> None:
        self.forget(key)
        await self._store.set(key, value)
        self._keep(key, value)

    async def set_if_not_exists(self, key: str, value: Any) -> None:
        self.forget(key)
        await self._store.set_if_not_exists(key, value)

    async def _set_many(self, values: Iterable[Any]) -> None:
        for key, value in values:
            await self.set(key, value)

    async def delete(self, key: str) -> None:
        self.forget(key)
        await self._store.delete(key)

    async def delete_dir(self, prefix: str) -> None:
        self._forget_prefix(prefix)
        await self._store.delete_dir(prefix)

    async def clear(self) -> None:
        self._forget_prefix("")
        await self._store.clear()
