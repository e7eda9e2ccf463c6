"""Where a store is: a path, URL or Zarr store resolved (:class:`Source`,
:func:`open`), its root group opened, its child groups listed.

Thread ownership: the caller.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..format import FormatError, check_root_attrs, root_ranks

__all__ = [
    "Source",
    "open",
]


@dataclass(frozen=True)
class Source:
    """Where a store lives, as a small picklable value: a local path or a URL, and the
    ``storage_options`` of a URL. :meth:`open` opens it; ``to_dask`` ships this to
    workers instead of an opened store."""

    location: str
    storage_options: dict[str, Any] | None = None

    def __hash__(self) -> int:
        import json

        return hash((self.location, json.dumps(self.storage_options, sort_keys=True, default=str)))

    def open(self, device: torch.device | str | None = None) -> Any:
        """The store's reader (:class:`StoreReader`, or :class:`RankedStoreReader`)."""
        return open(self.location, storage_options=self.storage_options, device=device)


def open(
    path: str | os.PathLike[str] | None = None,
    *,
    store: Any = None,
    device: torch.device | str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Any:
    """Open a spikestore store read-only.

    Parameters
    ----------
    path : str or Path
        The store's directory, or a URL of object storage (``"s3://bucket/run"``).
    store : zarr Store, optional
        Read from this Zarr store instead.
    device : torch device, optional
        Where decoded tensors are put (default: CPU).
    storage_options : dict, optional
        For a URL: endpoint and credentials (see ``spikestore.storage.url_store``).

    Returns
    -------
    A :class:`StoreReader`, or for a store written by the ranks of a
    ``torch.distributed`` job a :class:`RankedStoreReader`, whose layers give the
    ranks side by side.

    Examples
    --------
    >>> s = spikestore.open("demo.spikes")          # doctest: +SKIP
    >>> s["output"]["sn1"][-1].shape                 # doctest: +SKIP
    """
    loc = _Location(path, store, storage_options)
    try:
        meta = check_root_attrs(dict(_open_group(loc.path, loc.store).attrs), loc.where)
    except (OSError, FormatError, ValueError):
        raise
    except Exception as exc:  # an object store's own error (obstore, s3fs)
        from ..storage import unreachable

        raise unreachable(loc.where, exc) from exc
    from ._nodes import StoreReader
    from ._ranked import RankedStoreReader

    if root_ranks(meta, loc.where) is not None:
        return RankedStoreReader(path, store=store, device=device, storage_options=storage_options)
    return StoreReader(path, store=store, device=device, storage_options=storage_options)


class _Location:
    """A reader's ``path``/``store``/``storage_options`` arguments, resolved."""

    def __init__(self, path: Any, store: Any, storage_options: dict[str, Any] | None) -> None:
        if (path is None) == (store is None):
            raise ValueError("pass exactly one of path and store")
        self.path: Path | None = None
        self.store = store
        self.source: Source | None = None
        if path is not None:
            if not isinstance(path, (str, os.PathLike)):
                raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
            from ..storage import is_url

            if isinstance(path, str) and is_url(path):
                from ..storage import url_store

                self.store = url_store(path, storage_options=storage_options, read_only=True)
                self.source = Source(path, storage_options)
                self.where = path
                return
            if storage_options is not None:
                raise ValueError("storage_options are for URLs; a local path takes none")
            self.path = Path(path)
            self.source = Source(str(self.path))
            self.where = str(self.path)
        else:
            if storage_options is not None:
                raise ValueError("storage_options are for URLs; a store passed in takes none")
            self.where = repr(store)

    def child(self, key: str) -> tuple[Any, Any]:
        """``(path, store)`` arguments of a reader of the store in folder ``key``."""
        if self.source is not None and self.path is None:
            return f"{self.source.location.rstrip('/')}/{key}", None
        if self.path is not None:
            return self.path / key, None
        from ..storage import prefixed

        return None, prefixed(self.store, key)


def _open_group(path: Path | None, store: Any) -> Any:
    import zarr

    from ..storage import confined
    from ..storage._localfs import ConfinedLocalStore

    if store is None:
        assert path is not None
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file or directory")
        if not os.path.lexists(path / "zarr.json"):
            raise FormatError(f"{path} is not a spikestore store (no zarr.json)")
        store = ConfinedLocalStore(path, read_only=True)
    else:
        store = confined(store)
    try:
        return zarr.open_group(store=store, mode="r", zarr_format=3)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{path or store}: no spikestore store there ({exc})") from exc
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        # RecursionError: JSON nested deeper than Python parses (hostile metadata).
        raise FormatError(f"{path or store} is not a readable Zarr v3 group: {exc}") from None


def _child(group: Any, key: str, where: str) -> Any:
    """``group[key]``, or None if there is no such node."""
    try:
        return group[key]
    except KeyError:
        return None
    except (ValueError, TypeError, RecursionError) as exc:  # an unparseable zarr.json
        raise FormatError(f"{where}: malformed metadata of {key}: {exc}") from None


def _child_groups(
    group: Any, where: str, damaged: dict[str, str] | None = None
) -> list[tuple[str, Any]]:
    """(key, group) of each child group, in key order, opened one at a time.

    Other entries are skipped: the writer's lock file, its temporary files, and
    directories a live (or killed) writer has not finished creating. A child
    whose ``zarr.json`` cannot be parsed raises FormatError, or, given ``damaged``,
    is entered there (key: why) and left out. (Zarr's own ``groups()`` opens the
    children concurrently and, when one fails, leaves the others' exceptions
    unretrieved, which asyncio prints later as tracebacks.)
    """
    import zarr

    from ..storage import member_keys

    try:
        keys = member_keys(group)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise FormatError(f"{where}: cannot list its members: {exc}") from exc
    out = []
    for key in keys:
        try:
            child = _child(group, key, where)
        except FormatError as exc:
            if damaged is None:
                raise
            damaged[key] = str(exc)
            continue
        if isinstance(child, zarr.Group):
            out.append((key, child))
    return out
