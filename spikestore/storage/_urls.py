"""The Zarr store for a location: a URL, a sub-store under a prefix, a local folder kept
confined; and an object store's own errors said in words.

:func:`url_store` makes the Zarr store for a URL: ``s3://`` through Zarr's
``ObjectStore`` (obstore), anything else (or ``s3://`` without obstore) through
``FsspecStore``. ``storage_options`` follow fsspec's (s3fs's) names, mapped to
obstore's: ``endpoint_url``, ``key``, ``secret``, ``token``, ``anon``,
``client_kwargs={"region_name": ...}`` (``region`` also accepted). Options obstore has
no name for send the URL to ``FsspecStore``. :func:`prefixed` gives the same store
with every key under a prefix (per-rank sub-stores). :func:`confined` gives a plain
``LocalStore``'s folder as a store that follows no link. :func:`unreachable` turns an
object store's own error into an ``OSError`` that says what to check.

Thread ownership: none; these functions keep no state. A store they make belongs to
whoever asked for it: the thread that opens the writer, or the reader's caller.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

from zarr.storage import LocalStore, WrapperStore

from ._localfs import ConfinedLocalStore

__all__ = [
    "is_url",
    "url_store",
    "prefixed",
    "PrefixStore",
    "confined",
    "unreachable",
]


def unreachable(where: str, exc: BaseException) -> OSError:
    """An object store's own error (obstore's, s3fs's), as an ``OSError`` that says
    where and what to check."""
    text = " ".join(str(exc).split())[:500]
    return OSError(
        f"{where}: the object store did not answer as expected ({type(exc).__name__}: "
        f"{text}); check storage_options (endpoint_url, credentials, region) and that the "
        "bucket exists"
    )


def confined(store: Any) -> Any:
    """``store``, or for a plain Zarr ``LocalStore`` the same folder as a
    :class:`~spikestore.storage._localfs.ConfinedLocalStore` (links and special files refused).
    A subclass of ``LocalStore`` is the caller's own store, used as it is given."""
    if type(store) is LocalStore:
        return ConfinedLocalStore(store.root, read_only=store.read_only)
    return store


_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://")


def is_url(s: Any) -> bool:
    """Whether ``s`` is a URL string (``scheme://...``) rather than a local path.

    >>> is_url("s3://bucket/run"), is_url("runs/a.spikes"), is_url("C:/x")
    (True, False, False)
    """
    return isinstance(s, str) and _SCHEME.match(s) is not None


def _file_url_path(url: str) -> Path | None:
    """The local path of a ``file://`` URL, None for other schemes."""
    if not url.lower().startswith("file://"):
        return None
    from urllib.parse import unquote, urlparse

    parsed = urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise ValueError(f"{url}: only local file:// URLs are supported")
    return Path(unquote(parsed.path))


def _safe_url(url: str) -> str:
    """``url`` without credentials written into it (``s3://key:secret@bucket``)."""
    return re.sub(r"://[^/@]*@", "://", url)


#: fsspec (s3fs) option names accepted for the same thing under another name.
_S3_ALIASES = {
    "aws_access_key_id": "key",
    "aws_secret_access_key": "secret",
    "aws_session_token": "token",
    "region_name": "region",
}


def _s3_options(options: dict[str, Any]) -> dict[str, Any]:
    """``storage_options`` in s3fs's names (aliases mapped, the region into client_kwargs)."""
    out = dict(options)
    for alias, name in _S3_ALIASES.items():
        if alias in out:
            out.setdefault(name, out.pop(alias))
    region = out.pop("region", None)
    if region is not None:
        out["client_kwargs"] = {"region_name": region, **out.get("client_kwargs", {})}
    return out


def _obstore_s3_kwargs(options: dict[str, Any]) -> dict[str, Any] | None:
    """s3fs-style options as obstore ``S3Store`` arguments; None if one has no match."""
    options = dict(options)
    client = dict(options.pop("client_kwargs", {}) or {})
    config: dict[str, Any] = {}
    names = {"key": "access_key_id", "secret": "secret_access_key", "token": "session_token"}
    for name, target in names.items():
        if options.get(name) is not None:
            config[target] = options.pop(name)
        options.pop(name, None)
    endpoint = options.pop("endpoint_url", None) or client.pop("endpoint_url", None)
    region = client.pop("region_name", None)
    if options.pop("anon", False):
        config["skip_signature"] = True
    if options or client:
        return None
    kwargs: dict[str, Any] = {"config": config}
    if region is not None:
        config["region"] = region
    if endpoint is not None:
        config["endpoint"] = endpoint
        if str(endpoint).startswith("http://"):
            kwargs["client_options"] = {"allow_http": True}
    return kwargs


def url_store(
    url: str, *, storage_options: dict[str, Any] | None = None, read_only: bool = False
) -> Any:
    """The Zarr store for a URL (see the module docstring).

    ``s3://bucket/prefix`` gives Zarr's ``ObjectStore`` over obstore's ``S3Store`` when
    obstore is installed and every option has an obstore name; other URLs, and S3
    otherwise, ``FsspecStore``; ``file://`` URLs a ``LocalStore``.

    Examples
    --------
    >>> opts = {"endpoint_url": "http://127.0.0.1:9000", "key": "k", "secret": "s"}
    >>> url_store("s3://bucket/run", storage_options=opts)  # doctest: +SKIP
    ObjectStore(object_store://S3Store(bucket="bucket", prefix="run"))
    """
    if not is_url(url):
        raise ValueError(f"{url!r} is not a URL (scheme://...)")
    local = _file_url_path(url)
    if local is not None:
        return ConfinedLocalStore(local, read_only=read_only)
    scheme, rest = url.split("://", 1)
    options = dict(storage_options or {})
    if scheme.lower() in ("s3", "s3a"):
        options = _s3_options(options)
        kwargs = _obstore_s3_kwargs(options)
        if kwargs is not None and "@" not in rest.split("/", 1)[0]:
            try:
                from obstore.store import S3Store
            except ImportError:
                pass
            else:
                from zarr.storage import ObjectStore

                bucket, _, prefix = rest.partition("/")
                inner = S3Store(bucket, prefix=prefix.strip("/") or None, **kwargs)
                return ObjectStore(inner, read_only=read_only)
        url = f"s3://{rest}"
    from zarr.storage import FsspecStore

    return FsspecStore.from_url(url, storage_options=options, read_only=read_only)


def prefixed(store: Any, prefix: str) -> Any:
    """``store`` with every key under ``prefix/`` (a sub-store, e.g. per rank).

    Stores that have a root of their own (``LocalStore``, ``FsspecStore``, Zarr's
    ``ObjectStore`` over obstore's cloud and local stores) are rebuilt with the longer
    root, wrappers around their wrapped store; others are wrapped in a store that
    prefixes keys.

    >>> from zarr.storage import MemoryStore
    >>> prefixed(MemoryStore(), "rank00003")  # doctest: +ELLIPSIS
    PrefixStore(MemoryStore, 'rank00003')
    """
    from zarr.storage import FsspecStore, ObjectStore

    parts = [p for p in str(prefix).split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise ValueError(f"bad store prefix {prefix!r}")
    prefix = "/".join(parts)
    if not prefix:
        return store
    if isinstance(store, PrefixStore):
        return PrefixStore(store._store, f"{store.prefix}/{prefix}")
    if isinstance(store, WrapperStore):
        try:
            return store._with_store(prefixed(store._store, prefix))
        except TypeError:  # a wrapper that cannot be rebuilt around another store
            return PrefixStore(store, prefix)
    if isinstance(store, LocalStore):
        return type(store)(Path(store.root) / prefix, read_only=store.read_only)
    if isinstance(store, FsspecStore):
        return FsspecStore(
            store.fs,
            read_only=store.read_only,
            path=f"{store.path.rstrip('/')}/{prefix}",
            allowed_exceptions=store.allowed_exceptions,
        )
    if isinstance(store, ObjectStore):
        inner = _obstore_prefixed(store.store, prefix)
        if inner is not None:
            return ObjectStore(inner, read_only=store.read_only)
    return PrefixStore(store, prefix)


def _obstore_prefixed(inner: Any, prefix: str) -> Any:
    """obstore store ``inner`` rebuilt with ``prefix`` under its own; None if it cannot be."""
    from obstore.store import AzureStore, GCSStore, S3Store
    from obstore.store import LocalStore as ObsLocalStore

    try:
        if isinstance(inner, (S3Store, GCSStore, AzureStore)):
            old = str(inner.prefix or "").strip("/")
            cls: Any = type(inner)
            return cls(
                prefix=f"{old}/{prefix}" if old else prefix,
                config=inner.config,
                client_options=inner.client_options,
                retry_config=inner.retry_config,
                credential_provider=inner.credential_provider,
            )
        if isinstance(inner, ObsLocalStore) and inner.prefix is not None:
            return ObsLocalStore(Path(inner.prefix) / prefix, mkdir=True)
    except BaseException as exc:
        # obstore raises a Rust panic (a BaseException) for some configurations it
        # cannot give back; the generic prefix wrapper does the job then.
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
    return None


class PrefixStore(WrapperStore):  # type: ignore[type-arg]
    """A store whose keys are those of the wrapped store under ``prefix/``."""

    def __init__(self, store: Any, prefix: str) -> None:
        super().__init__(store)
        self.prefix = prefix.strip("/")

    def _with_store(self, store: Any) -> PrefixStore:
        return type(self)(store, self.prefix)

    def _k(self, key: str) -> str:
        return f"{self.prefix}/{key}" if key else self.prefix

    def _strip(self, key: str) -> str:
        return key[len(self.prefix) + 1 :] if key.startswith(self.prefix + "/") else key

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, PrefixStore)
            and other.prefix == self.prefix
            and other._store == self._store
        )

    def __hash__(self) -> int:
        return id(self)

    def __str__(self) -> str:
        return f"{self._store}/{self.prefix}"

    def __repr__(self) -> str:
        return f"PrefixStore({type(self._store).__name__}, {self.prefix!r})"

    async def get(self, key: str, prototype: Any, byte_range: Any = None) -> Any:
        return await self._store.get(self._k(key), prototype, byte_range)

    async def get_partial_values(self, prototype: Any, key_ranges: Iterable[Any]) -> Any:
        ranges = [(self._k(k), r) for k, r in key_ranges]
        return await self._store.get_partial_values(prototype, ranges)

    async def _get_many(self, requests: Iterable[Any]) -> Any:
        for key, prototype, byte_range in requests:
            yield key, await self.get(key, prototype, byte_range)

    async def exists(self, key: str) -> bool:
        return bool(await self._store.exists(self._k(key)))

    async def set(self, key: str, value: Any) -> None:
        await self._store.set(self._k(key), value)

    async def set_if_not_exists(self, key: str, value: Any) -> None:
        await self._store.set_if_not_exists(self._k(key), value)

    async def _set_many(self, values: Iterable[Any]) -> None:
        await self._store._set_many([(self._k(k), v) for k, v in values])

    async def delete(self, key: str) -> None:
        await self._store.delete(self._k(key))

    async def delete_dir(self, prefix: str) -> None:
        await self._store.delete_dir(self._k(prefix))

    async def clear(self) -> None:
        await self._store.delete_dir(self.prefix)

    async def is_empty(self, prefix: str) -> bool:
        return bool(await self._store.is_empty(self._k(prefix)))

    async def list(self) -> AsyncIterator[str]:  # type: ignore[override]
        async for key in self._store.list_prefix(self.prefix + "/"):
            yield self._strip(key)

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:  # type: ignore[override]
        async for key in self._store.list_prefix(f"{self.prefix}/{prefix}"):
            yield self._strip(key)

    def list_dir(self, prefix: str) -> AsyncIterator[str]:
        return self._store.list_dir(self._k(prefix.rstrip("/")))

    async def getsize(self, key: str) -> int:
        return int(await self._store.getsize(self._k(key)))

    async def getsize_prefix(self, prefix: str) -> int:
        return int(await self._store.getsize_prefix(self._k(prefix)))
