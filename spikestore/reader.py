"""Lazy, read-only access to a spikestore store.

Opening reads only group metadata. Indexing a layer reads the index chunk and
the data chunks that hold the requested steps, and decodes them to tensors of
the original dtype and shape.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import operator
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from ._localfs import walk_files
from .codecs import bit_positions, decode_rows
from .errors import ReadError, StoreReplacedError
from .format import (
    DTYPES,
    FORMAT_NAME,
    INDEX_CHUNK,
    INDEX_HEADS_KEY,
    MAX_CHUNK_BYTES,
    MAX_CHUNKS_PER_SHARD,
    SEGMENT_ID_KEY,
    SPIKE_ENCODING,
    FormatError,
    check_field_attrs,
    check_id,
    check_layer_attrs,
    check_root_attrs,
    check_run_attrs,
    field_key,
    is_tail_name,
    node_key,
    parse_shard_header,
    rank_key,
    root_ranks,
    shard_header_size,
    store_id,
    tail_name,
    tree_field_names,
)
from .summary import COLUMNS, SUMMARY, SUMMARY_AXIS0

__all__ = [
    "open",
    "StoreReader",
    "MonitorReader",
    "LayerReader",
    "FieldReader",
    "ReadError",
    "StoreReplacedError",
    "RankedStoreReader",
    "RankedMonitorReader",
    "RankedLayerReader",
    "Source",
    "step_indices",
]


def read_retrying(read: Callable[..., Any], *args: Any) -> np.ndarray:
    """``np.asarray(read(*args))`` for a Zarr read, tried again a few times if it fails.

    A shard that a live writer rewrites (atomically, by renaming a new file over it)
    between Zarr's read of the shard index and its read of a chunk's bytes gives bytes
    of the new file at the old offsets; the chunk's checksum or its codec's header
    then fails, and reading again sees one consistent file. Damage on disk fails
    every time and is raised after the last try (about 0.3 s).
    """
    for attempt in range(5):
        try:
            return np.asarray(read(*args))
        except Exception:
            if attempt == 4:
                raise
            time.sleep(0.01 * 2**attempt)
    raise AssertionError("unreachable")


def step_indices(
    key: Any, n: int, what: str = "step", *, where: str = ""
) -> tuple[np.ndarray, bool]:
    """Positions in ``range(n)`` that an index ``key`` selects, and whether it selects many.

    The one place where spikestore turns a user's index over steps (or records)
    into positions, so that every sequence of steps accepts the same keys and
    says the same thing about bad ones.

    Parameters
    ----------
    key : int, slice, or list, range, NumPy array or torch tensor of ints
        Negative integers count from the end, as in Python. An int selects one
        position (``many`` is False); everything else selects zero or more, in
        the order given, repeats allowed (``many`` is True). Tuples are refused:
        ``layer[3, 0]`` reads like indexing two axes, which a step index is not.
    n : int
        How many items there are.
    what : str
        The items' name in error messages (``"step"``, ``"record"``).
    where : str, optional
        Whose items they are in error messages (``"monitor 'output', layer 'sn1'"``).

    Returns
    -------
    positions : ndarray of int64, 1-D, each in ``[0, n)``
    many : bool

    Raises
    ------
    IndexError
        A position outside ``-n .. n - 1``; the message names ``what``, ``where``,
        ``n`` and the valid range.
    TypeError
        Any other key: bool, float, str, None, tuple, boolean masks, arrays of
        non-integer values.

    Examples
    --------
    >>> step_indices(-1, 5)
    (array([4]), False)
    >>> step_indices(slice(1, None, 2), 5)
    (array([1, 3]), True)
    >>> step_indices([0, -2], 5)
    (array([0, 3]), True)
    """
    if isinstance(key, slice):
        return np.arange(*key.indices(n), dtype=np.int64), True
    if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
        i = int(key)
        if not -n <= i < n:
            raise IndexError(f"{what} {i} is out of range{_range_text(what, where, n)}")
        return np.array([i + n if i < 0 else i], dtype=np.int64), False
    if isinstance(key, torch.Tensor):
        arr = key.detach().cpu().numpy()
    elif isinstance(key, (list, range, np.ndarray)):
        arr = np.asarray(key)
    else:
        raise TypeError(
            f"{what} indices must be an int, a slice, or a list, range, array or tensor "
            f"of ints, not {type(key).__name__}"
        )
    arr = arr.reshape(-1)
    if not arr.size:  # np.asarray([]) is float64
        return np.zeros(0, dtype=np.int64), True
    if arr.dtype.kind == "O":  # e.g. Python ints beyond int64, 0-d tensors
        for v in arr:
            if isinstance(v, (bool, np.bool_)) or not hasattr(v, "__index__"):
                raise TypeError(f"{what} indices must be integers, not {type(v).__name__}")
        arr = np.array([operator.index(v) for v in arr], dtype=object)
        bad = np.array([not -n <= v < n for v in arr])
    elif arr.dtype.kind in "iu":
        bad = arr >= n if arr.dtype.kind == "u" else (arr < -n) | (arr >= n)
    else:
        raise TypeError(f"{what} indices must be integers, not {arr.dtype} values")
    if bad.any():
        vals = [int(v) for v in arr[bad][:5]]
        more = ", ..." if int(bad.sum()) > 5 else ""
        listed = ", ".join(map(str, vals))
        raise IndexError(f"{what}s [{listed}{more}] are out of range{_range_text(what, where, n)}")
    arr = arr.astype(np.int64)
    return np.where(arr < 0, arr + n, arr), True


def _range_text(what: str, where: str, n: int) -> str:
    whose = f" for {where}" if where else ""
    if not n:
        return f"{whose}: there are no {what}s"
    return f"{whose}: {n} {what}{'s' if n != 1 else ''}, valid indices {-n} to {n - 1}"


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
        from .storage import unreachable

        raise unreachable(loc.where, exc) from exc
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
            from .storage import is_url

            if isinstance(path, str) and is_url(path):
                from .storage import url_store

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
        from .storage import prefixed

        return None, prefixed(self.store, key)


def _open_group(path: Path | None, store: Any) -> Any:
    import zarr

    from ._localfs import ConfinedLocalStore
    from .storage import confined

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


def _damage_of(damaged: dict[str, str], name: Any) -> str | None:
    """Why the node ``name`` (listed by its name, or by its key where the name could
    not be read) is damaged, or None."""
    if not isinstance(name, str):
        return None
    if name in damaged:
        return damaged[name]
    return damaged.get(node_key(name))


def _warn_damaged(where: str, what: str, damaged: dict[str, str]) -> None:
    if damaged:
        listed = "; ".join(f"{k!r}: {why}" for k, why in damaged.items())
        warnings.warn(
            f"{where}: {len(damaged)} {what}{'s' if len(damaged) != 1 else ''} cannot be "
            f"read and {'are' if len(damaged) != 1 else 'is'} left out ({listed}); the "
            "others read as ever",
            stacklevel=3,
        )


_M = TypeVar("_M", bound=Mapping[str, Any])
_L = TypeVar("_L")


class _Monitors(Mapping[str, _M]):
    """What a store reader is as a mapping (monitor name to its reader), for
    :class:`StoreReader` and :class:`RankedStoreReader`."""

    _monitors: dict[str, _M]
    _where: str
    meta: dict[str, Any]
    _damaged: dict[str, str]

    @property
    def monitors(self) -> list[str]:
        return list(self._monitors)

    @property
    def damaged(self) -> dict[str, str]:
        """Monitors whose metadata cannot be read, by node key (or name where it could
        be read): why. They are left out of the mapping; the others read as ever."""
        return dict(getattr(self, "_damaged", {}))

    @property
    def version(self) -> str:
        return str(self.meta["version"])

    def __getitem__(self, name: str) -> _M:
        try:
            return self._monitors[name]
        except KeyError:
            why = _damage_of(getattr(self, "_damaged", {}), name)
            if why is not None:
                raise ReadError(
                    f"{self._where}: monitor {name!r} is damaged and cannot be read: {why}"
                ) from None
            raise KeyError(
                f"no monitor {name!r} in {self._where}; monitors: {self.monitors}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._monitors

    def __iter__(self) -> Iterator[str]:
        return iter(self._monitors)

    def __len__(self) -> int:
        return len(self._monitors)

    def layers(self) -> Iterator[Any]:
        """Every layer of every monitor."""
        for mon in self._monitors.values():
            yield from mon.values()


class _Layers(Mapping[str, _L]):
    """What a monitor reader is as a mapping (layer name to its reader, loaded on
    first use by ``_load``), for :class:`MonitorReader` and
    :class:`RankedMonitorReader`."""

    name: str
    _damaged: dict[str, str]

    def _load(self) -> dict[str, _L]:
        raise NotImplementedError

    @property
    def layers(self) -> list[str]:
        return list(self._load())

    @property
    def damaged(self) -> dict[str, str]:
        """Layers whose metadata cannot be read (by name, or node key where the name
        cannot be read): why. They are left out of the mapping; their siblings read
        as ever."""
        self._load()
        return dict(getattr(self, "_damaged", {}))

    def __getitem__(self, name: str) -> _L:
        try:
            return self._load()[name]
        except KeyError:
            why = _damage_of(getattr(self, "_damaged", {}), name)
            if why is not None:
                raise ReadError(
                    f"monitor {self.name!r}: layer {name!r} is damaged and cannot be read: {why}"
                ) from None
            raise KeyError(
                f"monitor {self.name!r} has no layer {name!r}; layers: {self.layers}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._load()

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


class StoreReader(_Monitors["MonitorReader"]):
    """A read-only view of a store: a mapping from monitor name to :class:`MonitorReader`.

    ``source`` is the store's :class:`Source` (None when opened from a store object).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        store: Any = None,
        device: torch.device | str | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        loc = _Location(path, store, storage_options)
        self.path = loc.path
        self._store = loc.store
        self.source = loc.source
        self.device = device
        self._where = loc.where
        self.refresh()

    def refresh(self) -> StoreReader:
        """Re-read the metadata so that steps committed since opening become visible,
        or the store that replaced the one opened (see :class:`StoreReplacedError`);
        readers of its monitors and layers taken before describe the old one."""
        self._root = _open_group(self.path, self._store)
        self.meta = check_root_attrs(dict(self._root.attrs), self._where)
        if root_ranks(self.meta, self._where) is not None:
            raise FormatError(
                f"{self._where} is a ranked store (written by the ranks of a "
                "torch.distributed job): open it with spikestore.open(), and one rank's "
                "records with .rank(r)"
            )
        try:
            self.run = check_run_attrs(dict(self._root.attrs), self._where)
        except FormatError as exc:
            # The run description is optional: damage there must not hide the records.
            warnings.warn(f"{exc}; the store's attrs, dt and marks are ignored", stacklevel=2)
            self.run = check_run_attrs({}, self._where)
        monitors: dict[str, MonitorReader] = {}
        damaged: dict[str, str] = {}
        for key, grp in _child_groups(self._root, self._where, damaged):
            attrs = dict(grp.attrs).get(FORMAT_NAME)
            if attrs is None:
                continue  # a Zarr group that is not spikestore's
            if not isinstance(attrs, dict) or attrs.get("node") != "monitor":
                damaged[key] = f"{self._where}/{key}: malformed monitor metadata"
                continue
            name = attrs.get("name")
            if not isinstance(name, str):
                damaged[key] = f"{self._where}/{key}: bad monitor name"
                continue
            monitors[name] = MonitorReader(self, name, grp)
        # A damaged monitor must not hide the others: they open, it is named.
        _warn_damaged(self._where, "monitor", damaged)
        self._monitors = monitors
        self._damaged = damaged
        return self

    @property
    def attrs(self) -> dict[str, Any]:
        """The run's attributes (``StoreWriter(attrs=...)``, ``writer.set_attrs``; format
        1.5): free JSON, empty for older stores."""
        return self.run["attrs"]

    @property
    def dt(self) -> float | None:
        """The duration of one time step (``StoreWriter(dt=...)``), or None: of one step
        for single-step layers, of one element along the time axis for multi-step ones."""
        return self.run["dt"]

    @property
    def time_unit(self) -> str | None:
        """The unit of :attr:`dt` (``"s"``, ``"ms"``, ...), or None."""
        return self.run["time_unit"]

    def marks(self, monitor: str, layer: str, steps: int) -> dict[str, np.ndarray]:
        """Per step of ``monitor``/``layer`` (its first ``steps``), the value of each
        mark key (``writer.mark(epoch=3)``), None before the key's first mark: one
        object array per key. See :meth:`LayerReader.marks`."""
        marks = self.run["marks"]
        try:
            j = marks["layers"].index([monitor, layer])
        except ValueError:
            j = None
        # Per key, where each of its marks starts on this layer (non-decreasing: a
        # layer's step count only grows from mark to mark); each value then fills its
        # run up to the next start, once (marks x steps would be quadratic).
        starts: dict[str, list[tuple[int, Any]]] = {}
        key, where = str(j), 0
        for m in marks["marks"]:
            # A layer the mark leaves out starts where it did for the previous mark
            # (step 0 before any): it recorded nothing in between.
            where = int(m["at"].get(key, where))
            start = min(where, steps)
            for k, v in m["values"].items():
                starts.setdefault(k, []).append((start, v))
        out: dict[str, np.ndarray] = {}
        for k, runs in starts.items():
            arr = out[k] = np.full(steps, None, dtype=object)
            for i, (a, v) in enumerate(runs):
                b = runs[i + 1][0] if i + 1 < len(runs) else steps
                if b > a:
                    arr[a:b] = v
        return out

    def __repr__(self) -> str:
        parts = ", ".join(f"{m}: {len(v)} layers" for m, v in self._monitors.items())
        return f"<spikestore {self._where} (format {self.version}) {{{parts}}}>"


class MonitorReader(_Layers["LayerReader"]):
    """The layers one monitor recorded: a mapping from layer name to :class:`LayerReader`."""

    def __init__(self, store: StoreReader, name: str, group: Any) -> None:
        self.store = store
        self.name = name
        self._group = group
        self._layers: dict[str, LayerReader] | None = None

    def _load(self) -> dict[str, LayerReader]:
        if self._layers is None:
            layers = {}
            damaged: dict[str, str] = {}
            mwhere = f"{self.store._where} monitor {self.name!r}"
            for key, grp in _child_groups(self._group, mwhere, damaged):
                where = f"{mwhere} node {key!r}"
                own = dict(grp.attrs).get(FORMAT_NAME)
                name = own.get("name") if isinstance(own, dict) else None
                try:
                    meta = check_layer_attrs(dict(grp.attrs), where)
                    layers[meta["name"]] = LayerReader(self, meta, grp)
                except (FormatError, ReadError) as exc:
                    # A layer that cannot be read must not hide its siblings.
                    damaged[name if isinstance(name, str) else key] = str(exc)
            _warn_damaged(mwhere, "layer", damaged)
            self._damaged = damaged
            # Call order (format 1.5), then layers of older stores by name.
            ordered = sorted(layers.values(), key=lambda lay: (lay.order is None, lay.order or 0))
            self._layers = {lay.name: lay for lay in ordered}
        return self._layers

    def __repr__(self) -> str:
        return f"<spikestore monitor {self.name!r}: {self.layers}>"


#: Bounds on what hostile array metadata can make a read allocate (the chunk bounds
#: are the format's, :data:`~spikestore.format.MAX_CHUNK_BYTES` and
#: :data:`~spikestore.format.MAX_CHUNKS_PER_SHARD`, which the writer keeps).
MAX_STEPS = 1 << 53


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

    from .storage import member_keys

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


def _check_array(arr: Any, where: str, name: str) -> None:
    """Refuse, before reading any of its data, an array whose chunks are larger than a
    writer ever makes them (:data:`~spikestore.format.MAX_CHUNK_BYTES` decoded,
    :data:`~spikestore.format.MAX_CHUNKS_PER_SHARD` to a shard): ReadError naming its
    ``zarr.json``. A crafted 78 KB store could otherwise make one read decode a 2 GiB
    chunk."""
    inner = arr.chunks
    outer = arr.shards or inner
    itemsize = np.dtype(arr.dtype).itemsize if arr.dtype.kind != "O" else 8
    nbytes = int(np.prod(inner, dtype=object)) * itemsize
    count = int(np.prod([-(-o // i) for o, i in zip(outer, inner, strict=True)], dtype=object))
    file = f"{arr.path}/zarr.json" if arr.path else "zarr.json"
    if len(inner) != arr.ndim or nbytes > MAX_CHUNK_BYTES or count > MAX_CHUNKS_PER_SHARD:
        raise ReadError(
            f"{where}: {file} declares chunks of {list(inner)} {arr.dtype} ({nbytes} bytes "
            f"decoded) in shards of {list(outer)} ({count} chunks), more than a writer "
            f"makes ({MAX_CHUNK_BYTES} bytes a chunk, {MAX_CHUNKS_PER_SHARD} chunks a "
            f"shard): array {name} is refused unread"
        )


def _shard_keys(arr: Any, r0: int, r1: int) -> list[tuple[int, str, tuple[int, ...]]]:
    """(first row, store key, coordinates) of every shard (or chunk) holding rows
    [r0, r1)."""
    outer = arr.shards or arr.chunks
    rest = [range(-(-d // o)) for d, o in zip(arr.shape[1:], outer[1:], strict=True)]
    out = []
    for s0 in range(r0 // outer[0], (r1 - 1) // outer[0] + 1):
        for tail in itertools.product(*rest):
            key = arr.metadata.encode_chunk_key((s0, *tail))
            out.append((s0 * outer[0], f"{arr.path}/{key}" if arr.path else key, (s0, *tail)))
    return out


def _shard_problem(
    arr: Any, key: str, coords: tuple[int, ...], rows: int, seg_id: str
) -> str | None:
    """What is wrong with shard file ``key`` (at ``coords``) of a segment with an id
    (format 1.6), read through Zarr, or None when its shard header names the segment
    and the shard and its index lists every chunk of the segment's first ``rows`` rows
    (Zarr would read an absent chunk as zeros)."""
    import google_crc32c
    from zarr.abc.store import SuffixByteRequest
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    inner, outer = arr.chunks, arr.shards
    grid = tuple(o // i for o, i in zip(outer, inner, strict=True))
    n = math.prod(grid)
    nbytes_index = 16 * n + 4
    nbytes_end = nbytes_index + shard_header_size(arr.ndim, n)
    buf = sync(
        arr.store_path.store.get(key, default_buffer_prototype(), SuffixByteRequest(nbytes_end))
    )
    if buf is None:
        return f"shard {key} is missing from the store"
    data = buf.to_bytes()
    if len(data) < nbytes_end:
        return f"shard {key}: {len(data)} bytes cannot hold its shard header and index"
    raw = data[len(data) - nbytes_index : -4]
    if google_crc32c.value(raw) != int.from_bytes(data[-4:], "little"):
        return f"shard {key}: the index's CRC-32C does not match (damaged)"
    try:
        got_id, got, _ = parse_shard_header(data[: len(data) - nbytes_index], arr.ndim, n)
    except ValueError as exc:
        return f"shard {key}: {exc}; its segment's files have shard headers"
    if got_id != seg_id:
        return f"shard {key} names segment {got_id}, not {seg_id}: a file of another array"
    if got != coords:
        return (
            f"shard {key} holds shard {got} of its array, not {coords}: shard files were "
            "moved or swapped"
        )
    index = np.frombuffer(raw, "<u8").reshape(*grid, 2)
    wanted = -(-(min(rows, (coords[0] + 1) * outer[0]) - coords[0] * outer[0]) // inner[0])
    absent = (index[:wanted, ..., 0] == _ABSENT) & (index[:wanted, ..., 1] == _ABSENT)
    if absent.any():
        at = tuple(int(v) for v in np.argwhere(absent)[0])
        return f"shard {key}: inner chunk {at} of committed rows is absent"
    return None


def _spike_shards(arr: Any) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """``(inner chunk, shard)`` shapes of a segment array whose codec chain is exactly
    the one spikestore writes for default spike segments (:func:`~spikestore.format.\
sharding_codec` around ``spikestore.spikes`` and ``crc32c``), else None.

    Such arrays are read by :func:`_read_spike_rows` instead of Zarr; anything else
    (another codec or index layout, another dtype or rank) goes through Zarr.
    """
    from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec
    from zarr.codecs.sharding import ShardingCodecIndexLocation

    from .codecs.spikes import SpikeCodec

    codecs = tuple(getattr(arr.metadata, "codecs", ()))
    if arr.ndim != 2 or arr.dtype != np.uint8 or len(codecs) != 1:
        return None
    sc = codecs[0]
    if (
        type(sc) is not ShardingCodec
        or sc.index_location != ShardingCodecIndexLocation.end
        or tuple(sc.index_codecs) != (BytesCodec(endian="little"), Crc32cCodec())
        or len(sc.codecs) != 2
        or type(sc.codecs[0]) is not SpikeCodec
        or type(sc.codecs[1]) is not Crc32cCodec
        or arr.metadata.fill_value != 0
    ):
        return None
    inner = tuple(int(c) for c in sc.chunk_shape)
    shard = tuple(int(s) for s in arr.shards)
    if len(inner) != 2 or min(inner) < 1 or any(s % c for s, c in zip(shard, inner, strict=True)):
        return None
    return (inner[0], inner[1]), (shard[0], shard[1])


class _DamagedRows(ValueError):
    """Rows ``[lo, hi)`` of a segment cannot be read: their shard or chunk is damaged."""

    def __init__(self, message: str, lo: int, hi: int) -> None:
        super().__init__(message)
        self.lo, self.hi = lo, hi


def _read_failure(exc: BaseException, rows: np.ndarray, steps: np.ndarray, name: str) -> str:
    """``"steps a..b (name): why"`` for a failed read of ``steps`` (stored in ``rows``):
    for a :class:`_DamagedRows`, only the steps it names."""
    hit = np.asarray(steps)
    why = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, _DamagedRows):
        why = str(exc)
        inside = hit[(rows >= exc.lo) & (rows < exc.hi)]
        hit = inside if inside.size else hit
    return f"steps {int(hit.min())}..{int(hit.max())} ({name}): {why}"


#: A shard is read whole when at least this share of its inner chunk rows is wanted,
#: else its index and then each wanted chunk row by byte ranges.
_WHOLE_SHARD_SHARE = 0.5
_ABSENT = 2**64 - 1


#: ``place(a, b, block, col0, width)``: rows ``a:b`` of the result, packed columns
#: ``col0:col0 + width``, are ``block[:, :width]`` (None: all zero).
Place = Callable[[int, int, "np.ndarray | None", int, int], None]


def _read_spike_rows(
    arr: Any,
    shapes: tuple[tuple[int, int], tuple[int, int]],
    rows: np.ndarray,
    place: Place | None = None,
    seg_id: str | None = None,
) -> np.ndarray | None:
    """Rows ``rows`` (sorted, unique) of a sharded spike segment (see
    :func:`_spike_shards`), read through its store and decoded with
    :func:`spikestore.codecs.spikes.decode_chunk`, as Zarr would decode them.

    Returns the packed rows, or, given ``place``, hands each decoded chunk's part to
    it instead (on the reader's threads, when there is much to decode) and returns
    None: the caller can unpack each chunk while it is in cache.

    Each shard file is read whole (one ``get``) when most of it is wanted, else its
    index (a suffix range) and the wanted chunk rows (one byte range each). The
    index's and every chunk's CRC-32C are checked; a damaged or truncated shard, or an
    absent chunk of a wanted row (every committed row's chunk is written), raises
    :class:`_DamagedRows` naming the shard and chunk. For a segment with an id
    (``seg_id``, format 1.6) the shard header read with the index must name that
    segment and the shard's coordinates, and each chunk must end with the CRC-32C it
    lists: a shard file moved or swapped, or one read while a replaced store's writer
    put another file in its place, is an error, never other rows.
    """
    import google_crc32c
    from zarr.abc.store import RangeByteRequest, SuffixByteRequest
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    from .codecs.spikes import decode_chunk

    (c0, c1), (s0, s1) = shapes
    g0, g1 = s0 // c0, s1 // c1
    nbytes_index = 16 * g0 * g1 + 4
    nbytes_header = shard_header_size(2, g0 * g1) if seg_id is not None else 0
    nbytes_end = nbytes_index + nbytes_header
    ncols = int(arr.shape[1])
    out = None
    if place is None:
        out = packed = np.empty((rows.size, ncols), np.uint8)

        def place(a: int, b: int, block: np.ndarray | None, col0: int, width: int) -> None:
            if block is None:
                packed[a:b, col0 : col0 + width] = 0
            else:
                packed[a:b, col0 : col0 + width] = block[:, :width]

    if not rows.size or not ncols:
        return out
    store = arr.store_path.store
    proto = default_buffer_prototype()
    col_shards = range(-(-ncols // s1))
    # (shard key, shard row, shard column, wanted chunk rows of the shard)
    plan = []
    for s in np.unique(rows // s0):
        crows = np.unique((rows[(rows >= s * s0) & (rows < (s + 1) * s0)] - s * s0) // c0)
        for j in col_shards:
            key = arr.metadata.encode_chunk_key((int(s), j))
            key = f"{arr.path}/{key}" if arr.path else key
            plan.append((key, int(s), j, crows))

    def whole(crows: np.ndarray) -> bool:
        return crows.size >= _WHOLE_SHARD_SHARE * g0

    async def first() -> list[Any]:
        import asyncio

        return await asyncio.gather(
            *(
                store.get(key, proto, None if whole(cr) else SuffixByteRequest(nbytes_end))
                for key, _, _, cr in plan
            )
        )

    def index_of(
        key: str, s: int, j: int, tail: Any, end: int
    ) -> tuple[np.ndarray, np.ndarray | None]:
        def damaged(message: str) -> _DamagedRows:
            return _DamagedRows(f"shard {key}: {message}", s * s0, (s + 1) * s0)

        if tail is None:
            raise damaged("missing from the store")
        if len(tail) < nbytes_end:
            raise damaged(f"{len(tail)} bytes cannot hold its {nbytes_end}-byte index")
        raw = tail[len(tail) - nbytes_index : len(tail) - 4]
        crc = int(np.frombuffer(tail[len(tail) - 4 :], "<u4")[0])
        if google_crc32c.value(raw) != crc:
            raise damaged("the index's CRC-32C does not match (damaged)")
        trailers = None
        if seg_id is not None:
            head = tail[len(tail) - nbytes_end : len(tail) - nbytes_index].tobytes()
            try:
                got_id, coords, table = parse_shard_header(head, 2, g0 * g1)
            except ValueError as exc:
                raise damaged(f"{exc}; its segment's files have shard headers") from None
            if got_id != seg_id:
                raise _ForeignShard(
                    f"shard {key}: its shard header names segment {got_id}, not this "
                    f"segment ({seg_id}): a file of another array",
                    s * s0,
                    (s + 1) * s0,
                )
            if coords != (s, j):
                raise damaged(
                    f"the file holds shard {coords} of its array, not ({s}, {j}): shard "
                    "files were moved or swapped"
                )
            trailers = np.frombuffer(table, "<u4").reshape(g0, g1)
        index = np.frombuffer(raw, "<u8").reshape(g0, g1, 2)
        off, size = index[..., 0], index[..., 1]
        absent = (off == _ABSENT) & (size == _ABSENT)
        lim = np.uint64(end)
        # off + size <= end, written so that it cannot overflow
        bad = ~absent & ((size < 4) | (off > lim) | (size > lim - np.minimum(off, lim)))
        if bad.any():
            at = tuple(int(v) for v in np.argwhere(bad)[0])
            raise damaged(
                f"index entry of inner chunk {at} points outside the shard's {end} data "
                f"bytes (offset {int(off[at])}, size {int(size[at])})"
            )
        return np.where(absent[..., None], -1, index.astype(np.int64)), trailers

    heads = sync(first())
    # (chunk bytes or None, shard key, first row, first column, chunk column, trailer)
    jobs: list[tuple[Any, str, int, int, int, int | None]] = []
    ranged: list[tuple[int, str, int, int]] = []  # (plan entry, key, start, stop)
    indexes = []
    for n, ((key, s, j, crows), head) in enumerate(zip(plan, heads, strict=True)):
        if head is not None:
            head = head.as_numpy_array()
        if whole(crows):
            end = 0 if head is None else len(head) - nbytes_end
            idx, trailers = index_of(key, s, j, head, end)
            indexes.append((idx, trailers, head, 0))
            continue
        # The chunk rows must lie before the index; without the file size this is what
        # the byte range returned (checked below) that bounds them.
        idx, trailers = index_of(key, s, j, head, 2**62)
        sub = idx[crows]
        present = sub[..., 0] >= 0
        if present.any():
            lo = int(sub[..., 0][present].min())
            hi = int((sub[..., 0] + sub[..., 1])[present].max())
            ranged.append((n, key, lo, hi))
        indexes.append((idx, trailers, None, 0))

    if ranged:

        async def second() -> list[Any]:
            import asyncio

            return await asyncio.gather(
                *(store.get(key, proto, RangeByteRequest(lo, hi)) for _, key, lo, hi in ranged)
            )

        for (n, key, lo, hi), buf in zip(ranged, sync(second()), strict=True):
            data = None if buf is None else buf.as_numpy_array()
            if data is None or len(data) != hi - lo:
                got = 0 if data is None else len(data)
                s = plan[n][1]
                raise _DamagedRows(
                    f"shard {key}: bytes {lo}..{hi} of its chunks are truncated ({got} read)",
                    s * s0,
                    (s + 1) * s0,
                )
            indexes[n] = (indexes[n][0], indexes[n][1], data, lo)

    for (key, s, j, crows), (idx, trailers, data, base) in zip(plan, indexes, strict=True):
        for cr in crows:
            for cc in range(g1):
                off, size = (int(v) for v in idx[cr, cc])
                chunk = None if off < 0 else data[off - base : off - base + size]
                want = None if trailers is None else int(trailers[cr, cc])
                jobs.append((chunk, key, s * s0 + int(cr) * c0, j * s1 + cc * c1, cc, want))

    def decode(job: tuple[Any, str, int, int, int, int | None]) -> None:
        chunk, key, r0, col0, cc, want = job
        a, b = np.searchsorted(rows, [r0, r0 + c0])
        if a == b or col0 >= ncols:
            return
        width = min(c1, ncols - col0)
        where = f"shard {key}: inner chunk ({(r0 % s0) // c0}, {cc})"
        if chunk is None:
            # Every chunk of a committed row is written, zeros too: a lost one must not
            # read as zeros (the fill value).
            raise _DamagedRows(
                f"{where} is absent, though rows it holds are committed", r0, r0 + c0
            )
        body = chunk[:-4]
        crc = int(np.frombuffer(chunk[-4:], "<u4")[0])
        if google_crc32c.value(body) != crc:
            raise _DamagedRows(f"{where} fails its CRC-32C (damaged)", r0, r0 + c0)
        if want is not None and crc != want:
            raise _DamagedRows(
                f"{where} is not the chunk its shard header lists (the file was replaced "
                "while it was read, or pieced together from others)",
                r0,
                r0 + c0,
            )
        try:
            dec = decode_chunk(body, (c0, c1))
        except ValueError as exc:
            raise _DamagedRows(f"{where}: {exc}", r0, r0 + c0) from exc
        sel = rows[a:b] - r0
        if sel[-1] - sel[0] == b - a - 1:
            place(int(a), int(b), dec[int(sel[0]) : int(sel[-1]) + 1], col0, width)
        else:
            place(int(a), int(b), dec[sel], col0, width)

    if rows.size * ncols >= _PARALLEL_BITS // 8:
        _share(decode, jobs)
    else:
        for job in jobs:
            decode(job)
    return out


class _ForeignShard(_DamagedRows):
    """A shard file's header names another segment: a file of another array, or of the
    store that replaced the one a reader opened."""


class _TailGone(Exception):
    """A tail chunk is missing: the writer sealed and dropped it (or it was damaged)."""


def _exists(group: Any, key: str) -> bool:
    """Whether ``key`` (relative to ``group``) is in the group's store."""
    from zarr.core.sync import sync

    full = f"{group.path}/{key}" if group.path else key
    return bool(sync(group.store.exists(full)))


def _fresh_attrs(group: Any) -> dict[str, Any]:
    """A group's attributes read from the store now (Zarr caches them per object)."""
    import zarr

    return dict(zarr.open_group(store=group.store, path=group.path, mode="r").attrs)


class FieldReader:
    """One field of a layer's records (``f<i>``): its step index, segments and summaries.

    A tensor, number or ``None`` record has one field; a tuple or list record has
    one per element. :attr:`LayerReader.fields` lists them. This is the level
    :mod:`spikestore.analysis` reads at: step ``s`` of the field is row
    ``index(s, s + 1)[0, 1]`` of segment ``index(s, s + 1)[0, 0]`` (``-1``: the
    field was ``None``), and :meth:`take` reads any rows and columns of a segment
    touching only the chunks that hold them.

    Attributes
    ----------
    committed : int
        Steps committed when the store was opened (or last refreshed).
    segments : list of dict
        The segment descriptors (see ``docs/format.md``).
    group : zarr.Group or None
        The field's Zarr group; None for a field a writer had not created yet.
    where : str
        ``"monitor '...', layer '...'"``, for messages.

    Examples
    --------
    >>> fld = spikestore.open("run.spikes")["output"]["sn1"].field(0)  # doctest: +SKIP
    >>> fld.committed, [s["encoding"] for s in fld.segments]            # doctest: +SKIP
    (300, ['bitpack'])
    """

    def __init__(self, layer: LayerReader, group: Any, i: int) -> None:
        self.layer = layer
        self.where = f"monitor {layer.monitor!r}, layer {layer.name!r}"
        self.group = group
        self._arrays: dict[int, Any] = {}
        self._index: Any = None
        self._index_cache: dict[int, np.ndarray] = {}
        # Per index chunk: its rows that break what a writer's index is (_check_index).
        self._index_bad: dict[int, np.ndarray] = {}
        self._present: set[str] = set()
        self._summaries: dict[str, Any] = {}
        self.committed: int = 0
        self.segments: list[dict[str, Any]] = []
        #: Each segment's id (format 1.6; None before) and rows, as when opened.
        self._ids: list[str | None] = []
        self._rows0: list[int] = []
        #: Each index chunk's first entry (format 1.6 ``index_heads``; [] before).
        self._heads: list[Any] = []
        self._same_stat: tuple[Any, ...] | None = None  # see _check_same
        #: Per segment: the ``lstat`` of its array's ``zarr.json`` and the id read then.
        self._id_stat: dict[int, tuple[tuple[int, int, int, int], str]] = {}
        if group is None:
            # A writer killed (or still busy) before this field's first commit.
            return
        meta = check_field_attrs(dict(group.attrs), f"{self.where} field {i}")
        if meta["committed_steps"] > MAX_STEPS:
            raise FormatError(f"{self.where}: bad committed_steps {meta['committed_steps']}")
        self.committed = meta["committed_steps"]
        self.segments = meta["segments"]
        self._ids = [
            check_id(seg.get(SEGMENT_ID_KEY), f"{self.where} field {i} segment {k}")
            for k, seg in enumerate(self.segments)
        ]
        self._rows0 = [int(seg["rows"]) for seg in self.segments]
        self._heads = meta.get(INDEX_HEADS_KEY) or []

    # -- is this still the store that was opened?
    def _lost(self, k: int | None, problem: str) -> ReadError:
        """The error for data that is missing or not what the metadata read at opening
        says: :class:`StoreReplacedError` when the store changed under the reader (its
        store id, this field's metadata or a segment's id is not as when it was
        opened), else a ReadError saying ``problem`` (damage)."""
        why = self._replaced()
        if why is not None:
            return StoreReplacedError(
                f"{self.where}: the store was replaced since this reader opened it ({why}); "
                "call refresh() on the store reader (or open the store again) to read the "
                f"new one ({problem})"
            )
        return ReadError(f"{self.where}: {problem}")

    def _replaced(self) -> str | None:
        """Why what is stored is no longer the store this reader opened, or None (an
        error path: it reads the root's, the field's and the segments' metadata)."""
        store = self.layer.store
        try:
            now = check_root_attrs(_fresh_attrs(store._root), store._where)
            was, new = store_id(store.meta, store._where), store_id(now, store._where)
        except Exception as exc:
            return f"its root metadata cannot be read now: {type(exc).__name__}: {exc}"
        if was != new:
            return f"its store id is {new}, not {was}"
        assert self.group is not None
        try:
            latest = check_field_attrs(_fresh_attrs(self.group), self.where)
        except Exception as exc:
            return f"the field's metadata cannot be read now: {type(exc).__name__}: {exc}"
        return self._changed(latest, fresh_ids=True)

    def _changed(self, latest: dict[str, Any], fresh_ids: bool = False) -> str | None:
        """Why the field's metadata ``latest`` (read now) is not what a writer appending
        to the field opened could have made of it, or None. ``fresh_ids``: also read
        each segment array's id as stored now."""
        # A writer appending after a killed one sets every field back to the layer's
        # committed steps (the fewest of its fields): only fewer than those is a change.
        layer_steps = len(self.layer)
        if latest["committed_steps"] < layer_steps:
            return (
                f"the field has {latest['committed_steps']} committed steps, not the "
                f"{layer_steps} its layer had"
            )
        segs = latest["segments"]
        for k, old in enumerate(self.segments):
            if k >= len(segs):
                return f"segment {old['array']} is gone"
            new_seg = segs[k]
            same = ("encoding", "dtype", "shape", "python_scalar", "permute")
            if any(new_seg.get(f) != old.get(f) for f in same):
                return f"segment {old['array']} is another one"
            if new_seg["rows"] < self._rows0[k]:
                return f"segment {old['array']} has fewer rows than it had"
            if not self._rows0[k]:
                # No rows when opened: nothing of it was read, and a writer appending
                # after a killed one may make its array anew (with a new id).
                continue
            if new_seg.get(SEGMENT_ID_KEY) != old.get(SEGMENT_ID_KEY):
                return f"segment {old['array']} is another one"
            if fresh_ids and self._ids[k] is not None:
                got = self._fresh_segment_id(k)
                if got and got != self._ids[k]:  # a missing one is damage, not another
                    return f"segment {old['array']} is another array (id {got})"
        return None

    def _fresh_segment_id(self, k: int) -> str:
        """The id in segment ``k``'s array's ``zarr.json`` as stored now ("" when there is
        no such file or no id).

        In a local folder the file's ``lstat`` is taken first, and while it stays the
        same (inode, size, modification and change times) the id read last is still
        the stored one: a writer replaces the file by renaming a new one over it. That
        saves a round trip through Zarr's event loop (about 0.25 ms) per read."""
        import json

        from zarr.core.buffer import default_buffer_prototype
        from zarr.core.sync import sync

        from .storage import local_root

        assert self.group is not None
        name = self.segments[k]["array"]
        key = f"{self.group.path}/{name}/zarr.json" if self.group.path else f"{name}/zarr.json"
        root = local_root(self.group.store)
        stat = None
        if root is not None:
            try:
                st = os.lstat(root / key)
                stat = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            except OSError:
                return ""
            held = self._id_stat.get(k)
            if held is not None and held[0] == stat:
                return held[1]
        try:
            buf = sync(self.group.store.get(key, default_buffer_prototype()))
            attrs = json.loads(buf.to_bytes())["attributes"][FORMAT_NAME] if buf else None
            got = attrs.get(SEGMENT_ID_KEY) if isinstance(attrs, dict) else None
        except (ValueError, KeyError, TypeError, RecursionError):
            return ""
        got = got if isinstance(got, str) else ""
        if stat is not None:
            self._id_stat[k] = (stat, got)  # the stat taken before the read
        return got

    def _check_same(self, k: int) -> None:
        """Raise :class:`StoreReplacedError` if segment ``k`` is not the array this reader
        opened: called after every read through Zarr (which reads a missing chunk as
        zeros, and would read a replacing store's chunks as this one's). A writer that
        replaces a store creates a segment's array, with a new id, before any of its
        chunks, and removes the old array before that; so if the array is still the
        one opened after the read, the chunks read were its own. Without ids (format
        < 1.6) the field's metadata must only have grown since opening."""
        if not self.segments:
            return
        if self._ids[k] is not None and k not in self._arrays:
            self.array(k)  # opened now, after the read: checks the id it stores
            return
        if self._ids[k] is not None:
            got = self._fresh_segment_id(k)
            if got == self._ids[k]:
                return
            problem = f"segment {self.segments[k]['array']} is another array now"
        else:
            # A store before 1.6: its root's and this field's metadata must be as they
            # were; in a local folder unchanged files (lstat) need not be read again.
            sig = self._metadata_stat()
            if sig is not None and sig == self._same_stat:
                return
            why = self._replaced()
            if why is None:
                self._same_stat = sig
                return
            problem = why
        raise self._lost(k, f"what was read may be the new store's ({problem})")

    def _metadata_stat(self) -> tuple[Any, ...] | None:
        """The ``lstat`` of the root's and this field's ``zarr.json`` in a local folder
        (inode, size, times), or None elsewhere: a writer replaces such a file by
        renaming a new one over it, so an equal stat is an unchanged file."""
        from .storage import local_root

        assert self.group is not None
        root = local_root(self.group.store)
        if root is None:
            return None
        out = []
        for key in ("zarr.json", f"{self.group.path}/zarr.json"):
            try:
                st = os.lstat(root / key)
            except OSError:
                return None
            out.append((st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        return tuple(out)

    # -- summaries
    def _summary_array(self, name: str) -> Any:
        """The summary array ``name`` if it holds a row for every committed step, else None."""
        if name not in (SUMMARY, SUMMARY_AXIS0):
            raise ValueError(f"{name!r} is not a summary array ({SUMMARY!r}, {SUMMARY_AXIS0!r})")
        if name in self._summaries:
            return self._summaries[name]
        arr = None
        if self.group is not None:
            where = f"{self.where} field {self.group.basename}"
            arr = _child(self.group, name, where)
            if arr is None and _exists(self.group, f"{name}/zarr.json"):
                # Zarr reads some malformed metadata as "no such node".
                raise FormatError(f"{where}: malformed metadata of {name}: not a Zarr array")
            if arr is not None:
                width = len(COLUMNS) if name == SUMMARY else None
                if (
                    not hasattr(arr, "dtype")
                    or arr.ndim != 2
                    or arr.dtype != np.float64
                    or (width is not None and arr.shape[1] != width)
                ):
                    raise FormatError(
                        f"{where}: summary array {name} is not a float64 (steps, "
                        f"{width or 'T'}) array"
                    )
                _check_array(arr, where, name)
                if arr.shape[0] < self.committed:
                    if self._replaced() is not None:
                        raise self._lost(None, f"the {name} has {arr.shape[0]} rows")
                    arr = None  # written by a writer that did not keep it up: not usable
        self._summaries[name] = arr
        return arr

    def has_summary(self, name: str = SUMMARY) -> bool:
        """Whether the field has the summary array ``name`` (``"summary"`` or
        ``"summary_axis0"``, see :mod:`spikestore.summary`) for all its steps.

        Raises FormatError if the array is there but its metadata cannot be read.
        """
        return self._summary_array(name) is not None

    def summary(self, name: str, steps: np.ndarray) -> np.ndarray | None:
        """Rows ``steps`` of the summary array ``name``, or None if the field has none.

        ``steps`` are positions below :attr:`committed` (see :func:`step_indices`).
        Returns a float64 array ``(len(steps), columns)``. Raises ReadError if the
        rows cannot be read (a damaged or missing chunk), FormatError if the
        array's metadata is malformed.
        """
        arr = self._summary_array(name)
        if arr is None:
            return None
        steps = np.asarray(steps, dtype=np.int64)
        if not steps.size:
            return np.zeros((0, arr.shape[1]))
        lo, hi = int(steps.min()), int(steps.max()) + 1
        if lo < 0 or hi > self.committed:
            raise IndexError(f"{self.where}: steps {lo}..{hi - 1} of {self.committed} committed")
        self._require(arr, steps, steps, name)
        try:
            if hi - lo == len(steps) and bool((np.diff(steps) == 1).all()):
                out = read_retrying(arr.__getitem__, slice(lo, hi))  # a range: no copy
            elif hi - lo <= 2 * len(steps):
                out = read_retrying(arr.__getitem__, slice(lo, hi))[steps - lo]
            else:
                out = read_retrying(arr.get_orthogonal_selection, (steps,))
        except Exception as exc:
            raise self._lost(
                None,
                f"cannot read the {name} of steps {lo}..{hi - 1}: {type(exc).__name__}: {exc}",
            ) from exc
        self._check_same(0)  # read through Zarr: still the store that was opened?
        return out

    def _require(
        self,
        arr: Any,
        rows: np.ndarray,
        steps: np.ndarray,
        name: str,
        k: int | None = None,
        *,
        verify: bool = False,
        lost: bool = True,
    ) -> None:
        """Raise ReadError if a shard holding ``rows`` is missing from the store.

        Zarr reads a missing chunk as fill values; the writer writes every shard
        (``write_empty_chunks``), so a missing one means the store was damaged, or
        replaced since it was opened (:class:`StoreReplacedError`; ``lost=False``: a
        plain ReadError, for tails, which a live writer drops). ``verify`` (segment
        ``k``'s sharded array, read through Zarr, with an id): each shard's header is
        read and checked once (see :func:`_shard_problem`).
        """
        from zarr.core.sync import sync

        r0, r1 = int(rows.min()), int(rows.max()) + 1
        outer = (arr.shards or arr.chunks)[0]
        seg_id = self._ids[k] if verify and k is not None and arr.shards else None
        for first, key, coords in _shard_keys(arr, r0, r1):
            if key in self._present:
                continue
            found: str | None = None
            if seg_id is not None:
                assert k is not None
                sealed = self.segments[k].get("sealed", self.segments[k]["rows"])
                found = _shard_problem(arr, key, coords, sealed, seg_id)
            elif not sync(arr.store_path.store.exists(key)):
                found = f"chunk {key} of {name} is missing from the store"
            if found is not None:
                hit = steps[(rows >= first) & (rows < first + outer)]
                problem = f"cannot read steps {int(hit.min())}..{int(hit.max())}: {found}"
                if not lost:
                    raise ReadError(f"{self.where}: {problem}")
                raise self._lost(k, problem)
            self._present.add(key)

    def array(self, k: int) -> Any:
        arr = self._arrays.get(k)
        if arr is None:
            seg = self.segments[k]
            name = seg["array"]
            try:
                arr = self.group[name]
            except Exception as exc:
                raise self._lost(k, f"cannot open segment {name}: {exc}") from exc
            _check_array(arr, self.where, name)
            numel = int(np.prod(seg["shape"], dtype=np.int64))
            if seg["encoding"] == SPIKE_ENCODING:
                ok = arr.ndim != 2 or arr.dtype != np.uint8 or arr.shape[1] == -(-numel // 8)
            else:
                ok = arr.shape[1:] == tuple(seg["shape"]) and arr.dtype == np.dtype(
                    DTYPES[seg["dtype"]][0]
                )
            # The array keeps its own copy of the descriptor; both must agree.
            own = dict(arr.attrs).get(FORMAT_NAME)
            if isinstance(own, dict) and own.get("node") == "segment":
                ok = ok and all(own.get(f) == seg.get(f) for f in ("encoding", "dtype", "shape"))
            if self._ids[k] is not None and (
                not isinstance(own, dict) or own.get(SEGMENT_ID_KEY) != self._ids[k]
            ):
                got = own.get(SEGMENT_ID_KEY) if isinstance(own, dict) else None
                raise self._lost(
                    k, f"the array {name} is not the segment its descriptor names (id {got})"
                )
            sealed = seg.get("sealed", seg["rows"])
            # Rows past ``sealed`` are in a tail, which holds at most one shard.
            open_rows = seg["rows"] - sealed
            if not ok or arr.shape[0] < sealed or open_rows > (arr.shards or arr.chunks)[0]:
                why = self._replaced()
                if why is not None:
                    raise self._lost(k, f"segment {name} does not match its descriptor")
                raise FormatError(
                    f"{self.where}: segment {name} ({arr.shape}, {arr.dtype}) does not match "
                    f"its descriptor (shape {seg['shape']}, dtype {seg['dtype']}, "
                    f"rows {seg['rows']})"
                )
            self._arrays[k] = arr
        return arr

    def index(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of the index, read a chunk at a time and cached."""
        if self._index is None:
            try:
                index = self.group["index"]
            except Exception as exc:
                raise self._lost(None, f"cannot open the step index: {exc}") from exc
            _check_array(index, self.where, "index")
            if index.ndim != 2 or index.shape[1] != 2 or index.shape[0] < self.committed:
                if self._replaced() is not None:
                    raise self._lost(None, f"the step index has {index.shape[0]} rows")
                raise FormatError(
                    f"{self.where}: step index of shape {index.shape} cannot hold "
                    f"{self.committed} committed steps"
                )
            self._index = index
        out, bad_rows = [], []
        c0, c1 = start // INDEX_CHUNK, (stop - 1) // INDEX_CHUNK
        try:
            for c in range(c0, c1 + 1):
                block = self._index_cache.get(c)
                lo = c * INDEX_CHUNK
                hi = min(lo + INDEX_CHUNK, self.committed)
                if block is None or block.shape[0] < hi - lo:
                    steps = np.arange(max(start, lo), min(stop, hi))
                    self._require(self._index, steps, steps, "index")
                    block = np.asarray(self._index[lo:hi])
                    self._index_bad[c] = self._check_index(c, block)
                    self._index_cache[c] = block
                part = slice(max(start, lo) - lo, min(stop, hi) - lo)
                out.append(block[part])
                bad_rows.append(self._index_bad[c][part])
        except ReadError:
            raise
        except Exception as exc:
            raise ReadError(
                f"{self.where}: cannot read the index for steps {start}..{stop - 1}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        idx = np.concatenate(out) if len(out) > 1 else out[0]
        bad = (idx[:, 0] >= len(self.segments)) | (idx[:, 0] < -1) | (idx[:, 1] < 0)
        bad |= np.concatenate(bad_rows) if len(bad_rows) > 1 else bad_rows[0]
        if bad.any():
            hit = np.nonzero(bad)[0] + start
            raise self._lost(None, f"corrupt index at steps {int(hit.min())}..{int(hit.max())}")
        return idx

    def _check_index(self, c: int, block: np.ndarray) -> np.ndarray:
        """The rows of an index chunk (its committed rows ``block``) that break what
        any index a writer wrote satisfies, so that a chunk file in another one's
        place (or the index of a store that replaced this one) is an error for the
        steps where it can be told, and a damaged entry costs only its own steps.

        A segment's rows are given out in step order and never reused, so within the
        chunk each segment's rows go up from step to step, and all lie below the
        segment's stored ``rows``. They need not go up by one: a writer appending
        after a killed one starts above rows the killed one wrote but never
        committed. Then the segment the chunk points to first is checked to be the
        array that was opened (:meth:`_check_same`): the chunk was read from this
        store. A field written by format 1.6 also lists each chunk's first entry
        (``index_heads``): a chunk whose first entry is not its own is in another's
        place, and all of its steps are an error.
        """
        head = self._heads[c] if c < len(self._heads) else None
        if head is not None and len(block) and [int(x) for x in block[0]] != head:
            lo = c * INDEX_CHUNK
            raise self._lost(
                None,
                f"the step index chunk {c} (steps {lo}..{lo + len(block) - 1}) does not "
                "belong there: its first entry is not the one the field's metadata lists "
                "(a chunk file moved, swapped or damaged)",
            )
        ks, rs = block[:, 0].astype(np.int64), block[:, 1].astype(np.int64)
        bad = np.zeros(len(block), dtype=bool)
        used = (ks >= 0) & (ks < len(self.segments))
        if used.any():
            pos = np.flatnonzero(used)
            order = np.argsort(ks[used], kind="stable")  # by segment, then by step
            k, r, pos = ks[used][order], rs[used][order], pos[order]
            down = (k[1:] == k[:-1]) & (r[1:] <= r[:-1])
            bad[pos[1:][down]] = bad[pos[:-1][down]] = True
            bad[pos[r >= np.asarray(self._rows0, dtype=np.int64)[k]]] = True
        ref = ks[used]
        self._check_same(int(ref[0]) if ref.size else 0)
        return bad

    def read(self, steps: np.ndarray, device: Any) -> list[torch.Tensor | None]:
        """Decode the given steps (sorted or not) to one tensor (or None) per step."""
        if steps.size == 0:
            return []
        lo, hi = int(steps.min()), int(steps.max()) + 1
        idx = self.index(lo, hi)[steps - lo]
        out: list[Any] = [None] * len(steps)
        for k in np.unique(idx[:, 0]):
            if k < 0:
                continue
            sel = np.nonzero(idx[:, 0] == k)[0]
            rows = idx[sel, 1]
            seg = self.segments[int(k)]
            past = rows >= seg["rows"]
            if past.any():
                hit = steps[sel][past]
                raise self._lost(
                    int(k),
                    f"corrupt index at steps {int(hit.min())}..{int(hit.max())}: "
                    f"rows past the end of segment {seg['array']}",
                )
            data = self.take(int(k), rows, (), steps[sel])
            try:
                dec = _decode_segment_rows(data, seg, device)
            except Exception as exc:
                raise ReadError(
                    f"{self.where}: cannot decode steps {int(steps[sel].min())}.."
                    f"{int(steps[sel].max())} ({seg['array']}): {type(exc).__name__}: {exc}"
                ) from exc
            scalar = seg.get("python_scalar", False)
            for j, pos in enumerate(sel):
                out[pos] = dec[j].item() if scalar else dec[j]
        return out

    def read_block(self, steps: np.ndarray, device: Any) -> torch.Tensor | None:
        """The given steps decoded into one tensor ``(len(steps), *shape)`` when they are
        all tensors of one segment, else None (then use :meth:`read`).

        Decodes straight into the stacked output: no per-step tensors, no copy.
        """
        if steps.size == 0:
            return None
        lo, hi = int(steps.min()), int(steps.max()) + 1
        idx = self.index(lo, hi)[steps - lo]
        k = int(idx[0, 0])
        if k < 0 or not bool((idx[:, 0] == k).all()):
            return None
        seg = self.segments[k]
        if seg.get("python_scalar", False):
            return None
        rows = idx[:, 1]
        if bool((rows >= seg["rows"]).any()):
            return None  # read() names the corrupt steps
        direct = self._unpack_shards(k, rows, steps, device)
        if direct is not None:
            return direct
        data = self.take(k, rows, (), steps)
        try:
            return _decode_segment_rows(data, seg, device)
        except Exception as exc:
            raise ReadError(
                f"{self.where}: cannot decode steps {lo}..{hi - 1} ({seg['array']}): "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def _unpack_shards(
        self, k: int, rows: np.ndarray, steps: np.ndarray, device: Any
    ) -> torch.Tensor | None:
        """Rows ``rows`` (increasing) of spike segment ``k`` decoded into one output
        tensor, each chunk unpacked as soon as it is decoded (see
        :func:`_read_spike_rows`); None when the segment is not stored that way, the
        rows reach its tail, or the output is not on the CPU."""
        seg = self.segments[k]
        if seg["encoding"] != SPIKE_ENCODING or (
            device is not None and torch.device(device).type != "cpu"
        ):
            return None
        if int(rows[-1]) >= seg.get("sealed", seg["rows"]) or not bool((np.diff(rows) > 0).all()):
            return None
        arr = self.array(k)
        shapes = _spike_shards(arr)
        if shapes is None:
            return None
        from .codecs import torch_dtype

        shape = tuple(int(d) for d in seg["shape"])
        numel = int(np.prod(shape, dtype=np.int64))
        perm = seg.get("permute")
        n = len(rows)
        # Time-last records are unpacked whole: only chunks as wide as a row will do.
        if not numel or (perm is not None and shapes[0][1] < arr.shape[1]):
            return None
        out = _empty_cpu((n, *shape), torch_dtype(seg["dtype"]))
        dst = out.permute(0, *[int(p) + 1 for p in perm]) if perm is not None else out.view(n, -1)

        def place(a: int, b: int, block: np.ndarray | None, col0: int, width: int) -> None:
            bit0 = col0 * 8
            count = min(width * 8, numel - bit0)
            if block is None:
                (dst[a:b] if perm is not None else dst[a:b, bit0 : bit0 + count]).zero_()
                return
            # a few rows at a time, so the unpacked bits are still in cache for the cast
            step = max(1, (1 << 20) // count)
            for i in range(0, b - a, step):
                bits = torch.from_numpy(
                    np.unpackbits(block[i : i + step, :width], axis=1, count=count)
                )
                j = a + i
                if perm is not None:
                    dst[j : j + len(bits)].copy_(bits.view(len(bits), *dst.shape[1:]))
                else:
                    dst[j : j + len(bits), bit0 : bit0 + count].copy_(bits)

        self._require(arr, rows, steps, seg["array"], k)
        try:
            read_retrying(_read_spike_rows, arr, shapes, rows, place, self._ids[k])
        except Exception as exc:
            raise self._lost(
                k, f"cannot read {_read_failure(exc, rows, steps, seg['array'])}"
            ) from exc
        return out

    def tail(self, k: int) -> Any:
        """The unsharded array holding segment ``k``'s rows past ``sealed``."""
        key = -1 - k
        arr = self._arrays.get(key)
        if arr is None:
            seg = self.segments[k]
            main = self.array(k)
            shard = (main.shards or main.chunks)[0]
            name = tail_name(seg["array"], (seg["sealed"] // shard) % 2)
            try:
                arr = self.group[name]
            except KeyError:
                raise _TailGone from None  # sealed and dropped by the writer (take() checks)
            except Exception as exc:
                raise ReadError(f"{self.where}: cannot open tail {name}: {exc}") from exc
            _check_array(arr, self.where, name)
            if arr.shape != (shard, *main.shape[1:]) or seg["rows"] - seg["sealed"] > shard:
                raise FormatError(f"{self.where}: tail {name} does not match segment {k}")
            own = dict(arr.attrs).get(FORMAT_NAME)
            got = own.get(SEGMENT_ID_KEY) if isinstance(own, dict) else None
            if self._ids[k] is not None and got != self._ids[k]:
                raise self._lost(k, f"the tail {name} is another segment's (id {got})")
            self._arrays[key] = arr
        return arr

    def take(
        self, k: int, rows: np.ndarray, rest: tuple[Any, ...] = (), steps: Any = None
    ) -> np.ndarray:
        """``segment_k[rows, *rest]`` (orthogonal selection), reading only the chunks
        involved, from the sharded array or, past ``sealed``, the tail.

        A live writer moves rows from the tail into shards and then reuses the tail,
        committing the new ``sealed`` first; so after reading from a tail the
        field's metadata is read again, and if ``sealed`` moved meanwhile the rows
        are read again from where they are now.
        """
        rows = np.asarray(rows, dtype=np.int64)
        steps = rows if steps is None else np.asarray(steps)
        for _ in range(4):
            sealed = self.segments[k].get("sealed", self.segments[k]["rows"])
            try:
                data = self._take(k, rows, rest, steps)
            except _TailGone:
                data = None
            if data is not None and not (rows >= sealed).any():
                return data
            try:
                meta = check_field_attrs(
                    _fresh_attrs(self.group), f"{self.where} field {self.group.path}"
                )
            except Exception as exc:
                raise self._lost(k, f"the field's metadata cannot be read now: {exc}") from exc
            changed = self._changed(meta)
            if changed is not None:
                raise self._lost(k, f"the field changed under the reader ({changed})")
            latest = meta["segments"]
            if latest[k].get("sealed", latest[k]["rows"]) == sealed:
                if data is not None:
                    return data
                raise ReadError(
                    f"{self.where}: cannot read steps {int(steps.min())}..{int(steps.max())}: "
                    f"a chunk of the tail of {self.segments[k]['array']} is missing"
                )
            # The writer sealed rows we took from a tail: look again.
            for old, new in zip(self.segments, latest, strict=False):
                old.update({"rows": new["rows"], "sealed": new.get("sealed", new["rows"])})
            self._arrays.clear()
            self._present.clear()
        raise ReadError(f"{self.where}: segment {k} kept moving while being read; try again")

    def _take(
        self, k: int, rows: np.ndarray, rest: tuple[Any, ...], steps: np.ndarray
    ) -> np.ndarray:
        seg = self.segments[k]
        sealed = seg.get("sealed", seg["rows"])
        urows, inv = np.unique(rows, return_inverse=True)
        parts = []
        for in_tail in (False, True):
            sel = urows[urows >= sealed] if in_tail else urows[urows < sealed]
            if not sel.size:
                continue
            if in_tail:
                arr, local, name = self.tail(k), sel - sealed, f"{seg['array']} (tail)"
            else:
                arr, local, name = self.array(k), sel, seg["array"]
            hit = steps[np.isin(rows, sel)]
            shards = None if in_tail or rest else _spike_shards(arr)
            if in_tail:
                # Tails are rewritten and dropped by the writer: never trust a cache.
                self._present = {p for p in self._present if not is_tail_name(p)}
                try:
                    self._require(arr, local, hit if hit.size else local, name, lost=False)
                except ReadError:
                    raise _TailGone from None
            else:
                self._require(
                    arr, local, hit if hit.size else local, name, k, verify=shards is None
                )
            r0, r1 = int(local[0]), int(local[-1]) + 1
            try:
                if shards is not None:
                    packed = read_retrying(_read_spike_rows, arr, shards, local, None, self._ids[k])
                    assert packed is not None
                    parts.append(packed)
                elif r1 - r0 <= 2 * len(local):
                    data = read_retrying(arr.get_orthogonal_selection, (slice(r0, r1), *rest))
                    parts.append(data[local - r0])
                else:
                    parts.append(read_retrying(arr.get_orthogonal_selection, (local, *rest)))
            except Exception as exc:
                at = rows[np.isin(rows, sel)]  # aligned with hit
                raise self._lost(k, f"cannot read {_read_failure(exc, at, hit, name)}") from exc
            if shards is None:
                # Zarr reads a missing chunk as zeros, and a replacing store's chunks as
                # this one's: the segment must still be the array that was opened.
                self._check_same(k)
        data = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if len(inv) == len(data) and bool((np.diff(rows) > 0).all()):
            return data  # increasing rows: already in order
        return data[inv]


class LayerReader(Sequence[Any]):
    """The records of one layer: a sequence over steps.

    ``layer[i]`` decodes step ``i`` (negative indices count from the end) to a
    tensor of the original dtype and shape (or the tuple, list, number or
    ``None`` that was recorded). ``layer[a:b]`` decodes several steps, stacked
    into one tensor when they are tensors of one shape, else a list. Indices are
    those of :func:`step_indices`.

    A field group missing from a layer whose metadata has ``time_axis`` (format
    1.3, whose writer creates every field group before writing that key) is
    damage: the layer still opens and lists, but ``len``, :attr:`fields` and every
    read raise :class:`ReadError` naming the monitor, layer and field. In older
    stores a missing field group is a writer killed before its first commit,
    and the layer has 0 steps.

    Examples
    --------
    >>> layer = spikestore.open("run.spikes")["output"]["sn1"]  # doctest: +SKIP
    >>> len(layer), layer.shape, layer[-1].dtype                 # doctest: +SKIP
    (300, (16, 64), torch.float32)
    """

    def __init__(self, monitor: MonitorReader, meta: dict[str, Any], group: Any) -> None:
        self._monitor = monitor
        self.monitor = monitor.name
        self.name: str = meta["name"]
        self.structure: str = meta["structure"]
        #: The record axis that is time (format 1.3), or None (not time-major, or unknown).
        self.time_axis: int | None = meta.get("time_axis")
        #: The layer's position in its monitor's call order (format 1.5), or None.
        self.order: int | None = meta.get("order")
        #: The unit of the recorded values (``"mV"``; format 1.5), or None.
        self.units: str | None = meta.get("units")
        self._dims: list[str] | None = meta.get("dims")
        self._field_dims: list[list[str] | None] | None = meta.get("field_dims")
        #: How nested records (namedtuples, dicts) are rebuilt (format 1.5), or None.
        self.tree: dict[str, Any] | None = meta.get("tree")
        #: Each field's name: its path in the record (``"0"``, ``"1.v"``).
        self.field_names: list[str] = tree_field_names(self.tree, meta["fields"])
        self._rebuild = _rebuilder(self.tree, self.structure)
        self._group = group
        where = f"monitor {self.monitor!r}, layer {self.name!r}"
        self._damage: str | None = None
        groups = [_child(group, field_key(i), where) for i in range(meta["fields"])]
        missing = [field_key(i) for i, g in enumerate(groups) if g is None]
        if missing and "time_axis" in meta:
            groups_are = "field group is" if len(missing) == 1 else "field groups are"
            self._damage = (
                f"{where}: {groups_are} missing from the store "
                f"({self._monitor.store._where}): {', '.join(missing)}"
            )
        self._fields = [FieldReader(self, g, i) for i, g in enumerate(groups)]

    # -- description
    @property
    def source(self) -> Source | None:
        """The :class:`Source` of the store this layer was read from (None when it was
        opened from a store object): enough to open the layer again elsewhere."""
        return self._monitor.store.source

    @property
    def fields(self) -> list[FieldReader]:
        """One :class:`FieldReader` per field of the records (one unless tuples or lists)."""
        if self._damage is not None:
            raise ReadError(self._damage)
        return self._fields

    def field(self, i: int | str = 0) -> FieldReader:
        """Field ``i`` (the ``i``-th element of tuple or list records), or the field
        named ``i`` (see :meth:`field_index`)."""
        return self.fields[self.field_index(i)]

    def field_index(self, field: int | str) -> int:
        """The number of a field given as a number or a name: a path in
        :attr:`field_names` (``"1.v"``) or its last part when only one field has it
        (``"v"``). ``IndexError`` or ``KeyError`` naming the layer and its fields."""
        names = self.field_names
        if isinstance(field, str):
            hits = [i for i, n in enumerate(names) if n == field]
            if len(hits) > 1:
                raise KeyError(
                    f"monitor {self.monitor!r}, layer {self.name!r}: {field!r} names fields "
                    f"{hits}; pass the field's number; fields: {names}"
                )
            if hits:
                return hits[0]
            hits = [i for i, n in enumerate(names) if n.rsplit(".", 1)[-1] == field]
            if len(hits) == 1:
                return hits[0]
            why = "is ambiguous" if hits else "is not a field"
            raise KeyError(
                f"monitor {self.monitor!r}, layer {self.name!r}: {field!r} {why}; fields: {names}"
            )
        if isinstance(field, (int, np.integer)) and not isinstance(field, bool):
            if 0 <= field < len(names):
                return int(field)
            if -len(names) <= field < 0:
                return int(field) + len(names)
        raise IndexError(
            f"monitor {self.monitor!r}, layer {self.name!r} has {len(names)} field(s) "
            f"({', '.join(names)}), no field {field!r}"
        )

    @property
    def store(self) -> StoreReader:
        """The :class:`StoreReader` this layer belongs to (its ``attrs``, ``dt``)."""
        return self._monitor.store

    @property
    def dims(self) -> tuple[str, ...] | None:
        """Names of the record's axes (format 1.5; ``("time", "batch", "channel", "y",
        "x")``), or None when unknown or when records of another rank were recorded."""
        if self._dims is None:
            return None
        segs = self.segments
        if any(len(s["shape"]) != len(self._dims) for s in segs):
            return None
        return tuple(self._dims)

    def field_dims(self, field: int | str = 0) -> tuple[str, ...] | None:
        """Names of a field's axes (:attr:`dims` for fields shaped like the first; a
        field of another rank has its own, such as the ``[B, N]`` state of Norse's
        ``(z, state)`` whose ``z`` is ``[T, B, N]``), or None."""
        i = self.field_index(field)
        if self._field_dims is not None:
            names = self._field_dims[i]
        else:
            names = self._dims
        if names is None:
            return None
        if any(len(s["shape"]) != len(names) for s in self.fields[i].segments):
            return None
        return tuple(names)

    def dims_of(self, ndim: int) -> tuple[str, ...] | None:
        """The stored names for records of rank ``ndim`` (of the first field that has
        that rank), or None."""
        for names in [self._dims, *(self._field_dims or [])]:
            if names is not None and len(names) == ndim:
                return tuple(names)
        return None

    def marks(self) -> dict[str, np.ndarray]:
        """The user's marks (``writer.mark(epoch=3, phase="eval")``) per step: for each
        key an object array of ``len(self)`` values, None before its first mark."""
        return self._monitor.store.marks(self.monitor, self.name, len(self))

    def __len__(self) -> int:
        return min((f.committed for f in self.fields), default=0)

    @property
    def segments(self) -> list[dict[str, Any]]:
        """Segment descriptors of the first field (see ``docs/format.md``)."""
        fields = self.fields
        return fields[0].segments if fields else []

    @property
    def dtype(self) -> torch.dtype | None:
        from .codecs import torch_dtype

        segs = self.segments
        return torch_dtype(segs[0]["dtype"]) if segs else None

    @property
    def shape(self) -> tuple[int, ...] | None:
        """Record shape when every step has the same one, else None."""
        shapes = {tuple(s["shape"]) for s in self.segments}
        return shapes.pop() if len(shapes) == 1 else None

    @property
    def encodings(self) -> list[str]:
        return sorted({s["encoding"] for f in self.fields for s in f.segments})

    def nbytes_stored(self) -> int:
        """Bytes this layer takes in the store (compressed chunks and metadata).

        Safe while a writer is writing the store: a live writer renames temporary
        files into place and drops tails, so files vanish between listing and
        measuring them. In a local directory vanished files and the writers'
        ``*.partial`` temporary files are skipped; other stores are asked again
        a few times.
        """
        from zarr.core.sync import sync
        from zarr.storage import LocalStore

        store, prefix = self._group.store, self._group.path
        if isinstance(store, LocalStore):
            return sum(
                size for key, size in walk_files(Path(store.root), prefix)
                if not key.endswith(".partial")
            )
        for attempt in range(5):
            try:
                return int(sync(store.getsize_prefix(prefix)))
            except (FileNotFoundError, KeyError) as exc:
                if attempt == 4:
                    raise ReadError(
                        f"monitor {self.monitor!r}, layer {self.name!r}: cannot measure "
                        f"its size: {type(exc).__name__}: {exc}"
                    ) from exc
                time.sleep(0.01 * 2**attempt)
        raise AssertionError("unreachable")

    def nbytes_metadata(self) -> int:
        """Bytes of the layer's ``zarr.json`` documents (part of :meth:`nbytes_stored`):
        the fixed cost of a layer, a few KiB, that dominates the size of short runs."""
        from zarr.core.sync import sync
        from zarr.storage import LocalStore

        store, prefix = self._group.store, self._group.path
        if isinstance(store, LocalStore):
            return sum(
                size for key, size in walk_files(Path(store.root), prefix)
                if key.rsplit("/", 1)[-1] == "zarr.json"
            )

        async def sizes() -> int:
            n = 0
            async for key in store.list_prefix(prefix):
                if key.rsplit("/", 1)[-1] == "zarr.json":
                    with contextlib.suppress(FileNotFoundError, KeyError):
                        n += int(await store.getsize(key))
            return n

        return int(sync(sizes()))

    def nbytes_float32(self) -> int:
        """What the layer's records would take as float32 tensors."""
        total = 0
        for f in self.fields:
            for s in f.segments:
                total += 4 * s["rows"] * int(np.prod(s["shape"], dtype=np.int64))
        return total

    def __repr__(self) -> str:
        if self._damage is not None:
            return f"<spikestore layer {self.monitor!r}/{self.name!r}: damaged ({self._damage})>"
        return (
            f"<spikestore layer {self.monitor!r}/{self.name!r}: {len(self)} steps, "
            f"shape {self.shape}, dtype {self.dtype}, encodings {self.encodings}>"
        )

    # -- reading
    def _steps(self, key: Any) -> tuple[np.ndarray, bool]:
        return step_indices(key, len(self), where=f"monitor {self.monitor!r}, layer {self.name!r}")

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        return self.read(key)

    def read(self, key: Any, device: torch.device | str | None = None) -> Any:
        """Like ``layer[key]``, decoding onto ``device``."""
        steps, many = self._steps(key)
        if many and self.structure == "tensor" and len(self.fields) == 1:
            device = device if device is not None else self._monitor.store.device
            block = self.fields[0].read_block(steps, device)
            if block is not None:
                return block
        records = self._decode(steps, device)
        return _stack(records) if many else records[0]

    def records(self, key: Any = slice(None)) -> list[Any]:
        """Like ``layer[key]`` but always a list, never stacked."""
        return self._decode(self._steps(key)[0], None)

    def _decode(self, steps: np.ndarray, device: torch.device | str | None) -> list[Any]:
        device = device if device is not None else self._monitor.store.device
        cols = [f.read(steps, device) for f in self.fields]
        return [self._assemble([c[j] for c in cols]) for j in range(len(steps))]

    def _assemble(self, leaves: list[Any]) -> Any:
        return self._rebuild(leaves)

    def __iter__(self) -> Iterator[Any]:
        n = len(self)
        block = 64
        for a in range(0, n, block):
            yield from self.records(slice(a, min(n, a + block)))

    def neuron(
        self, index: int | tuple[int, ...], steps: Any = slice(None), *, field: int | str = 0
    ) -> torch.Tensor:
        """One element's values over steps, reading only the chunks that hold it.

        ``index`` is a flat index into the record or a tuple of per-axis indices
        (negative ones count from the end). Returns a 1-D tensor (one value per step)
        of the steps' dtype (promoted if the steps differ). A step that recorded a
        Python number (SpikingJelly's ``v = 0.0`` before a neuron's first step) gives
        that number for every element; a step that recorded ``None`` is an error.
        ``field`` picks a field of tuple records (a number or a name).
        """
        fld = self.field(field)
        where = f"monitor {self.monitor!r}, layer {self.name!r}"
        sel, _ = self._steps(steps)
        if not len(sel):
            return torch.empty(0, dtype=self.dtype)
        lo = int(sel.min())
        idx = fld.index(lo, int(sel.max()) + 1)[sel - lo]
        from .codecs import torch_dtype

        used = [int(k) for k in np.unique(idx[:, 0])]
        if -1 in used:
            bad = sel[idx[:, 0] < 0]
            raise ValueError(
                f"{where} recorded None at step(s) {bad[:5].tolist()}"
                f"{' ...' if len(bad) > 5 else ''}: they have no values; pass steps= without them"
            )
        dtype = torch_dtype(fld.segments[used[0]]["dtype"])
        for k in used[1:]:
            dtype = torch.promote_types(dtype, torch_dtype(fld.segments[k]["dtype"]))
        out = torch.empty(len(sel), dtype=dtype)
        for k in used:
            pos = np.nonzero(idx[:, 0] == k)[0]
            seg = fld.segments[k]
            shape = tuple(seg["shape"])
            rows = idx[pos, 1]
            if not shape and seg.get("python_scalar"):  # one number for every element
                col = fld.take(k, rows, ())
                dec = decode_rows(col.reshape(len(rows)), {**seg, "shape": []})
                out[torch.from_numpy(pos)] = dec.to(dtype)
                continue
            nd = _element(index, shape, self.dims, where)
            if seg["encoding"] == SPIKE_ENCODING:
                flat = int(
                    bit_positions(np.ravel_multi_index(nd, shape), shape, seg.get("permute"))
                )
                col = fld.take(k, rows, (flat // 8,))
                vals = torch.from_numpy(((col >> (7 - flat % 8)) & 1).astype(np.uint8))
                out[torch.from_numpy(pos)] = vals.to(dtype)
            else:
                col = fld.take(k, rows, nd)
                dec = decode_rows(col.reshape(len(rows)), {**seg, "shape": []})
                out[torch.from_numpy(pos)] = dec.to(dtype)
        return out


def _element(
    index: Any, shape: tuple[int, ...], dims: tuple[str, ...] | None, where: str
) -> tuple[int, ...]:
    """``index`` (flat, or one per axis) as per-axis indices into records of ``shape``,
    or an error naming the layer, the record shape and the valid range."""
    numel = math.prod(shape)
    axes = f"shape {list(shape)}" + (f" ({', '.join(dims)})" if dims else "")
    if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
        i = int(index)
        if not -numel <= i < numel:
            raise IndexError(
                f"{where}: neuron {i} is out of range for records of {axes}: a flat index "
                f"is from 0 to {numel - 1} (or a tuple of {len(shape)} indices)"
            )
        return tuple(int(x) for x in np.unravel_index(i % numel, shape))
    if not isinstance(index, (tuple, list)) or not all(
        isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in index
    ):
        raise TypeError(f"{where}: a neuron is an int or a tuple of ints, got {index!r}")
    if len(index) != len(shape):
        raise IndexError(
            f"{where}: neuron {tuple(index)} has {len(index)} indices; records of {axes} "
            f"need {len(shape)} (or one flat index from 0 to {numel - 1})"
        )
    for i, n, a in zip(index, shape, range(len(shape)), strict=True):
        if not -n <= i < n:
            name = f" ({dims[a]})" if dims else ""
            raise IndexError(
                f"{where}: neuron {tuple(index)}: index {i} on axis {a}{name} is out of "
                f"range 0..{n - 1} for records of {axes}"
            )
    return tuple(int(i) % n for i, n in zip(index, shape, strict=True))


def _rebuilder(tree: dict[str, Any] | None, structure: str) -> Callable[[list[Any]], Any]:
    """A function putting one step's field values back together as recorded: namedtuples
    (and dataclasses) as namedtuples of the recorded class name, dicts, tuples, lists."""
    if tree is None:
        if structure in ("tensor", "number", "none"):
            return lambda leaves: leaves[0]
        return tuple if structure == "tuple" else list  # type: ignore[return-value]
    import collections
    import keyword

    def build(node: Any) -> Callable[[list[Any]], Any]:
        if isinstance(node, int):
            return lambda leaves: leaves[node]
        parts = [build(i) for i in node["items"]]
        kind = node["type"]
        keys = node.get("keys") or []
        usable = all(
            k.isidentifier() and not keyword.iskeyword(k) and not k.startswith("_") for k in keys
        )
        if kind == "namedtuple" and usable:
            name = node.get("name") or "Record"
            if not name.isidentifier() or keyword.iskeyword(name):
                name = "Record"
            cls = collections.namedtuple(name, keys)  # type: ignore[misc]
            return lambda leaves: cls(*(p(leaves) for p in parts))
        if kind in ("dict", "namedtuple"):
            # A namedtuple cannot have these field names (a dataclass's "_hidden"):
            # a dict keeps them as recorded.
            keys = node["keys"]
            return lambda leaves: {k: p(leaves) for k, p in zip(keys, parts, strict=True)}
        seq = tuple if kind == "tuple" else list
        return lambda leaves: seq(p(leaves) for p in parts)

    return build(tree)


def _stack(records: list[Any]) -> Any:
    if records and all(isinstance(r, torch.Tensor) for r in records):
        shapes = {tuple(r.shape) for r in records}
        dtypes = {r.dtype for r in records}
        devices = {r.device for r in records}
        if len(shapes) == 1:
            if len(dtypes) == 1 and devices == {torch.device("cpu")}:
                out = _empty_cpu((len(records), *shapes.pop()), dtypes.pop())
                return torch.stack(records, out=out)
            return torch.stack(records)
    return records


#: numpy dtypes with the itemsize of each torch dtype, for :func:`_empty_cpu`.
_UINT_OF_SIZE = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def _empty_cpu(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """``torch.empty(shape, dtype=dtype)`` in memory allocated by numpy.

    Large outputs are written once, so the cost of a read is mostly the first touch
    of each page: numpy asks for transparent huge pages on large arrays and torch's
    CPU allocator does not, which makes filling a fresh 64 MB tensor several times
    slower (measured in ``benchmarks/bench_read.py``).
    """
    itemsize = torch.empty((), dtype=dtype).element_size()
    arr = np.empty(shape, _UINT_OF_SIZE[itemsize])
    out = torch.from_numpy(arr)
    return out if dtype == out.dtype else out.view(dtype)


def _decode_segment_rows(rows: np.ndarray, seg: dict[str, Any], device: Any) -> torch.Tensor:
    """``decode_rows`` of ``rows`` of segment ``seg``; bit-packed rows decoded on the
    CPU are unpacked into an output allocated by :func:`_empty_cpu`, converted to the
    record's dtype and axis order in one pass."""
    if seg["encoding"] != SPIKE_ENCODING or (
        device is not None and torch.device(device).type != "cpu"
    ):
        return decode_rows(rows, seg, device)
    from .codecs import torch_dtype

    shape = tuple(int(d) for d in seg["shape"])
    n = rows.shape[0]
    numel = int(np.prod(shape, dtype=np.int64))
    out = _empty_cpu((n, *shape), torch_dtype(seg["dtype"]))
    if not n or not numel:
        return out
    rows = np.ascontiguousarray(rows).reshape(n, -1)
    perm = seg.get("permute")
    if perm is not None:
        # the rows hold the record in the axis order ``perm``: write through that view
        dst = out.permute(0, *[int(p) + 1 for p in perm])
    else:
        dst = out
    # Unpack a few rows at a time, so the unpacked bits stay in cache between the two
    # passes, and spread the blocks over two threads (both passes release the GIL).
    block = max(1, (1 << 21) // numel)

    def fill(a: int) -> None:
        bits = np.unpackbits(rows[a : a + block], axis=1, count=numel)
        dst[a : a + block].copy_(torch.from_numpy(bits).view(bits.shape[0], *dst.shape[1:]))

    starts = range(0, n, block)
    if n * numel >= _PARALLEL_BITS:
        _share(fill, starts)
    else:
        for a in starts:
            fill(a)
    return out


def _share(fn: Callable[[Any], None], jobs: Iterable[Any]) -> None:
    """``fn(job)`` for every job, by the calling thread and one of the reader's
    threads taking jobs from one queue; the first error stops both and is raised.

    The calling thread works too and waits only for a job the helper has started:
    on a machine whose other core is busy the helper gets few jobs or none, and the
    read never waits for it to be scheduled.
    """
    todo = list(jobs)
    if len(todo) < 2 or read_threads() < 2:
        for job in todo:
            fn(job)
        return
    it = iter(todo)
    cond = threading.Condition()
    busy = [False]  # the helper is running a job
    failed: list[BaseException] = []

    def take(helper: bool) -> Any:
        with cond:
            if helper:
                busy[0] = False
                cond.notify_all()
            job = _DONE if failed else next(it, _DONE)
            if helper and job is not _DONE:
                busy[0] = True
            return job

    def work(helper: bool) -> None:
        while (job := take(helper)) is not _DONE:
            try:
                fn(job)
            except BaseException as exc:
                with cond:
                    failed.append(exc)
                    busy[0] = False
                    cond.notify_all()
                if helper:
                    return
                raise

    _unpack_pool().submit(work, True)
    try:
        work(False)
    finally:
        with cond:
            while busy[0]:
                cond.wait()
    if failed:
        raise failed[0]


_DONE = object()


#: Outputs of at least this many elements are decoded and unpacked by two threads
#: (see :data:`READ_THREADS`).
_PARALLEL_BITS = 1 << 23
#: Threads that decode a large read: 1 or 2; None for the environment variable
#: ``SPIKESTORE_READ_THREADS``, else 2. The second thread only takes work when a core
#: is free for it (see :func:`_share`).
READ_THREADS: int | None = None


def read_threads() -> int:
    """The number of threads a large read uses (:data:`READ_THREADS`)."""
    n = READ_THREADS
    if n is None:
        try:
            n = int(os.environ.get("SPIKESTORE_READ_THREADS", "2"))
        except ValueError:
            n = 2
    return max(1, min(2, n))


_POOL: dict[int, Any] = {}


def _unpack_pool() -> Any:
    """The reader's thread pool, made on first use (never at import) and once per
    process: a forked child (a DataLoader worker) has none of its parent's threads, and
    the parent's pool would wait for them forever."""
    pid = os.getpid()
    pool = _POOL.get(pid)
    if pool is None:
        from concurrent.futures import ThreadPoolExecutor

        _POOL.clear()
        pool = _POOL[pid] = ThreadPoolExecutor(2, thread_name_prefix="spikestore-read")
    return pool


# ------------------------------------------------------------------ ranked stores
class RankedStoreReader(_Monitors["RankedMonitorReader"]):
    """A store written by the ranks of a ``torch.distributed`` job (format 1.4).

    Each recorded rank wrote a store of its own; :meth:`rank` opens one as an
    ordinary :class:`StoreReader`. As a mapping, monitor name to
    :class:`RankedMonitorReader`, whose layers (:class:`RankedLayerReader`) give
    the ranks side by side. A rank recorded in the root but without a store of its
    own (killed before it opened one) has no records.

    Examples
    --------
    >>> s = spikestore.open("ddp.spikes")            # doctest: +SKIP
    >>> s.ranks, s.rank(0)["output"]["sn1"][0].shape  # doctest: +SKIP
    ([0, 1, 2, 3], torch.Size([16, 64]))
    >>> s["output"]["sn1"][0].shape                   # doctest: +SKIP
    torch.Size([4, 16, 64])
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        store: Any = None,
        device: torch.device | str | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        self._loc = _Location(path, store, storage_options)
        self.path = self._loc.path
        self.source = self._loc.source
        self.device = device
        self._where = self._loc.where
        self._readers: dict[int, StoreReader] = {}
        self.refresh()

    def refresh(self) -> RankedStoreReader:
        """Re-read every rank's metadata (steps committed since opening become visible)."""
        root = _open_group(self._loc.path, self._loc.store)
        self.meta = check_root_attrs(dict(root.attrs), self._where)
        ranked = root_ranks(self.meta, self._where)
        if ranked is None:
            raise FormatError(f"{self._where} is a store of one process, not a ranked store")
        self.world_size, recorded = ranked
        present = {k for k, _ in _child_groups(root, self._where)}
        readers: dict[int, StoreReader] = {}
        for r in recorded:
            key = rank_key(r)
            if key not in present:
                continue
            old = self._readers.get(r)
            if old is not None:
                readers[r] = old.refresh()
            else:
                path, store = self._loc.child(key)
                so = self._loc.source.storage_options if self._loc.source else None
                readers[r] = StoreReader(path, store=store, device=self.device, storage_options=so)
        self._readers = readers
        self.recorded = recorded
        names: dict[str, None] = {}
        for rd in readers.values():
            names.update(dict.fromkeys(rd.monitors))
        self._monitors = {m: RankedMonitorReader(self, m) for m in names}
        return self

    @property
    def ranks(self) -> list[int]:
        """The ranks that have a store here (a recorded rank killed before it opened
        one has none)."""
        return list(self._readers)

    @property
    def attrs(self) -> dict[str, Any]:
        """The run's attributes, as the lowest rank stored them (each rank's store has
        its own: ``rank(r).attrs``)."""
        return self._first_run("attrs") or {}

    @property
    def dt(self) -> float | None:
        return self._first_run("dt")

    @property
    def time_unit(self) -> str | None:
        return self._first_run("time_unit")

    def _first_run(self, key: str) -> Any:
        for rd in self._readers.values():
            return rd.run[key]
        return None

    def rank(self, r: int) -> StoreReader:
        """Rank ``r``'s records: an ordinary :class:`StoreReader`."""
        try:
            return self._readers[r]
        except (KeyError, TypeError):
            raise KeyError(
                f"{self._where} has no store of rank {r!r}; ranks: {self.ranks} "
                f"(world size {self.world_size}, recorded {self.recorded})"
            ) from None

    def __repr__(self) -> str:
        return (
            f"<spikestore {self._where} (format {self.version}, ranks {self.ranks} of "
            f"{self.world_size}) {{{', '.join(self._monitors)}}}>"
        )


class RankedMonitorReader(_Layers["RankedLayerReader"]):
    """One monitor across ranks: layer name to :class:`RankedLayerReader` (the layers
    any rank recorded)."""

    def __init__(self, store: RankedStoreReader, name: str) -> None:
        self.store = store
        self.name = name
        self._layers: dict[str, RankedLayerReader] | None = None

    def _load(self) -> dict[str, RankedLayerReader]:
        if self._layers is None:
            per: dict[str, dict[int, LayerReader]] = {}
            for r in self.store.ranks:
                rd = self.store.rank(r)
                if self.name in rd:
                    for lname, lay in rd[self.name].items():
                        per.setdefault(lname, {})[r] = lay
            self._layers = {n: RankedLayerReader(self, n, lays) for n, lays in per.items()}
        return self._layers

    def __repr__(self) -> str:
        return f"<spikestore monitor {self.name!r} (ranks {self.store.ranks}): {self.layers}>"


class RankedLayerReader(Sequence[Any]):
    """One layer across ranks: a sequence over the steps that every rank has.

    ``layer[i]`` stacks the ranks' records of step ``i`` on a new leading axis
    (rank order as in :attr:`ranks`) when they are tensors of one shape, else gives
    a list, one record per rank; ``layer[a:b]`` gives ``[ranks, steps, ...]``.
    :meth:`concat` joins the ranks' batches instead (data-parallel shards of one
    global batch). :attr:`lengths` has each rank's own count: a rank that was
    killed has fewer steps, and ``len(layer)`` is the smallest; :meth:`layer`
    reads one rank's records, all of them.
    """

    def __init__(
        self, monitor: RankedMonitorReader, name: str, layers: dict[int, LayerReader]
    ) -> None:
        self._monitor = monitor
        self.monitor = monitor.name
        self.name = name
        self._layers = layers
        first = next(iter(layers.values()))
        self.structure = first.structure
        #: The record axis that is time, as the first rank stored it.
        self.time_axis: int | None = first.time_axis
        self.order, self.units, self.tree = first.order, first.units, first.tree
        self.field_names = first.field_names
        self.field_index = first.field_index

    @property
    def dims(self) -> tuple[str, ...] | None:
        """Names of the record's axes, as the first rank stored them (see
        :attr:`LayerReader.dims`)."""
        return next(iter(self._layers.values())).dims

    def dims_of(self, ndim: int) -> tuple[str, ...] | None:
        return next(iter(self._layers.values())).dims_of(ndim)

    def field_dims(self, field: int | str = 0) -> tuple[str, ...] | None:
        return next(iter(self._layers.values())).field_dims(field)

    @property
    def source(self) -> Source | None:
        """The :class:`Source` of the ranked store (None when opened from a store
        object)."""
        return self._monitor.store.source

    @property
    def store(self) -> RankedStoreReader:
        """The :class:`RankedStoreReader` this layer belongs to (its ``attrs``, ``dt``)."""
        return self._monitor.store

    @property
    def ranks(self) -> list[int]:
        """The ranks that recorded this layer."""
        return list(self._layers)

    def layer(self, r: int) -> LayerReader:
        """Rank ``r``'s records of this layer: an ordinary :class:`LayerReader`."""
        try:
            return self._layers[r]
        except (KeyError, TypeError):
            raise KeyError(
                f"monitor {self.monitor!r}, layer {self.name!r}: no records of rank {r!r}; "
                f"ranks: {self.ranks}"
            ) from None

    @property
    def lengths(self) -> dict[int, int]:
        """Committed steps of each rank."""
        return {r: len(lay) for r, lay in self._layers.items()}

    def __len__(self) -> int:
        return min(self.lengths.values())

    @property
    def shape(self) -> tuple[int, ...] | None:
        """The record shape when every rank's every step has the same one, else None."""
        shapes = {lay.shape for lay in self._layers.values()}
        return shapes.pop() if len(shapes) == 1 else None

    @property
    def dtype(self) -> torch.dtype | None:
        dtypes = {lay.dtype for lay in self._layers.values()} - {None}
        return dtypes.pop() if len(dtypes) == 1 else None

    @property
    def encodings(self) -> list[str]:
        return sorted({e for lay in self._layers.values() for e in lay.encodings})

    def nbytes_stored(self) -> int:
        return sum(lay.nbytes_stored() for lay in self._layers.values())

    def nbytes_metadata(self) -> int:
        return sum(lay.nbytes_metadata() for lay in self._layers.values())

    def nbytes_float32(self) -> int:
        return sum(lay.nbytes_float32() for lay in self._layers.values())

    @property
    def batch_axis(self) -> int:
        """The record axis :meth:`concat` joins: 1 for time-major ``[T, B, ...]``
        records, else 0."""
        return 1 if self.time_axis == 0 else 0

    def _steps(self, key: Any) -> tuple[np.ndarray, bool]:
        return step_indices(
            key, len(self), where=f"monitor {self.monitor!r}, layer {self.name!r} (all ranks)"
        )

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        return self.read(key)

    def read(self, key: Any, device: torch.device | str | None = None) -> Any:
        """Like ``layer[key]``, decoding onto ``device``."""
        steps, many = self._steps(key)
        per_rank = [
            lay.read(steps if many else int(steps[0]), device) for lay in self._layers.values()
        ]
        return _stack(per_rank)

    def concat(self, key: Any, device: torch.device | str | None = None) -> Any:
        """The ranks' records of ``key`` joined along :attr:`batch_axis` (one global
        batch), for tensor records."""
        steps, many = self._steps(key)
        per_rank = [
            lay.read(steps if many else int(steps[0]), device) for lay in self._layers.values()
        ]
        if not all(isinstance(t, torch.Tensor) for t in per_rank):
            raise TypeError(
                f"monitor {self.monitor!r}, layer {self.name!r}: concat joins tensor records; "
                "these records are not tensors of one shape per step"
            )
        return torch.cat(per_rank, dim=self.batch_axis + (1 if many else 0))

    def neuron(self, index: int | tuple[int, ...], steps: Any = slice(None)) -> torch.Tensor:
        """One element's values over steps, for every rank: ``[ranks, steps]``."""
        sel, _ = self._steps(steps)
        return torch.stack([lay.neuron(index, sel) for lay in self._layers.values()])

    def __iter__(self) -> Iterator[Any]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return (
            f"<spikestore layer {self.monitor!r}/{self.name!r}: ranks {self.ranks}, "
            f"steps {self.lengths}, shape {self.shape}, dtype {self.dtype}>"
        )
