"""Array views: lazy NumPy-style arrays of a layer (:class:`LayerArray`, and
:class:`RankedArray` over ranks), decoded NumPy arrays, and Dask and xarray views.

Functions run in the caller's thread. A Dask graph's blocks are read by whichever
thread or worker process computes them: each process keeps one reader per store in
``_READERS``, shared by its threads under ``_READERS_LOCK``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..format import SPIKE_ENCODING
from ._ranks import per_rank
from ._read import _blocks, _columns
from ._select import (
    _field,
    _np_dtype,
    field_index,
    pick_rank,
    ranks_of,
    record_dims,
    step_selection,
)
from ._shapes import _field_dtype, _plan

__all__ = ["to_numpy", "to_dask", "to_xarray", "LayerArray", "RankedArray"]


# Readers opened by unpickled lazy arrays, one per store and process: a dask worker
# opens each store once, however many tasks and graphs read it. Keyed by the process
# id too, so that a forked child opens its own.
_READERS: dict[tuple[int, str], Any] = {}
_READERS_LOCK = threading.Lock()
_OPENS = {"open": 0, "refresh": 0}


def _source_of(layer: Any) -> Any:
    """The picklable description of the store ``layer`` was read from, or None
    when the store was opened from a Zarr store object rather than a path or URL."""
    return layer.source


def _cached_layer(source: Any, monitor: str, name: str, steps: int) -> Any:
    """Layer ``monitor/name`` of this process's reader of ``source``, opening the
    store on first use and reading its metadata again only when the reader has
    fewer than ``steps`` committed steps (a graph built after the store was opened)."""
    key = (os.getpid(), repr(source))
    with _READERS_LOCK:
        store = _READERS.get(key)
        if store is None:
            store = source.open()
            _READERS[key] = store
            _OPENS["open"] += 1
        layer = store[monitor][name]
        if len(layer) < steps:
            store.refresh()
            _OPENS["refresh"] += 1
            layer = store[monitor][name]
    if len(layer) < steps:
        raise ValueError(
            f"{source.location}: monitor {monitor!r}, layer {name!r} has {len(layer)} "
            f"committed steps, fewer than the {steps} this array was built with "
            "(was the store replaced?)"
        )
    return layer


def _cached_readers() -> dict[str, int]:
    """How often this process opened a store for a lazy array (``"open"``, one per
    store) and re-read one's metadata (``"refresh"``), and how many are open
    (``"readers"``). Run it on dask workers with ``client.run``."""
    with _READERS_LOCK:
        mine = sum(1 for pid, _ in _READERS if pid == os.getpid())
        return {**_OPENS, "readers": mine}


class LayerArray:
    """A lazy NumPy-style array over one field of a layer: shape ``(steps, *record shape)``.

    Indexing with integers and slices (step first) reads only the chunks that
    hold the selection and returns a NumPy array. Python-number steps broadcast
    to the record shape; ``None`` steps read as NaN. This is what
    :func:`to_dask` and :func:`to_xarray` wrap.

    The array covers the steps committed when it was made (or the first
    ``length`` of them): a writer appending meanwhile changes neither its shape
    nor its values. ``field`` is a position or a field name. Steps of several
    batch sizes are a ValueError unless ``pad=True``: then the record shape is the
    largest batch's and elements beyond a step's own batch read as NaN (see "Mixed
    shapes" in the module docstring; integer and bool records become float64). It pickles as a
    description (the store's :attr:`~spikestore.StoreReader.source`, the monitor,
    layer and field names, the shape and dtype), a few hundred bytes; the
    unpickled copy opens the store on first read, once per process (see
    :func:`to_dask`). A layer of a store opened from a Zarr store object has no
    source, and its array pickles the reader itself.

    Examples
    --------
    >>> a = LayerArray(spikestore.open("run.spikes")["output"]["sn1"])  # doctest: +SKIP
    >>> a[100:200, 0].shape                                             # doctest: +SKIP
    """

    def __init__(
        self, layer: Any, field: int | str = 0, *, length: int | None = None, pad: bool = False
    ) -> None:
        if ranks_of(layer) is not None:
            raise TypeError(
                f"layer {layer.name!r} is a ranked layer: use RankedArray, or .layer(rank)"
            )
        self._layer = layer
        self.monitor: str = layer.monitor
        self.name: str = layer.name
        self.source = _source_of(layer)
        self.field = field_index(layer, field)
        fld = _field(layer, self.field)
        steps = len(layer)
        if length is not None:
            if not 0 <= length <= steps:
                raise ValueError(f"length {length} is not in 0..{steps} (committed steps)")
            steps = length
        what = "a LayerArray (to_numpy, to_dask, to_xarray)"
        self.record_shape, padded = _plan(
            layer, fld, np.arange(steps, dtype=np.int64), pad=pad, what=what
        )
        self.shape: tuple[int, ...] = (steps, *self.record_shape)
        dt = _np_dtype(_field_dtype(fld))
        has_gaps = bool(steps) and int(fld.index(0, steps)[:, 0].min()) < 0
        if padded or has_gaps or any(s.get("python_scalar", False) for s in fld.segments):
            if not np.issubdtype(dt, np.floating):
                dt = np.dtype("float64")
        self.dtype = dt
        self.ndim = len(self.shape)

    @property
    def layer(self) -> Any:
        """The :class:`~spikestore.reader.LayerReader` read from (in an unpickled
        copy: this process's reader of the store, opened on first use)."""
        if self._layer is None:
            self._layer = _cached_layer(self.source, self.monitor, self.name, self.shape[0])
        return self._layer

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self.source is not None:
            state["_layer"] = None
        return state

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[...]
        return out.astype(dtype) if dtype is not None else out

    def __repr__(self) -> str:
        return f"<LayerArray {self.monitor!r}/{self.name!r} {self.shape} {self.dtype}>"

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            i = next(i for i, k in enumerate(key) if k is Ellipsis)
            fill = (slice(None),) * (self.ndim - len(key) + 1)
            key = key[:i] + fill + key[i + 1 :]
        if len(key) > self.ndim:
            raise IndexError(f"too many indices for an array of rank {self.ndim}")
        key = key + (slice(None),) * (self.ndim - len(key))
        ranges, drop = [], []
        for ax, (k, n) in enumerate(zip(key, self.shape, strict=True)):
            if isinstance(k, slice):
                ranges.append(np.arange(*k.indices(n), dtype=np.int64))
            elif isinstance(k, (int, np.integer)):
                i = int(k) + n if k < 0 else int(k)
                if not 0 <= i < n:
                    raise IndexError(f"index {k} out of range for axis {ax} of size {n}")
                ranges.append(np.array([i], dtype=np.int64))
                drop.append(ax)
            else:
                arr = np.asarray(k, dtype=np.int64).reshape(-1)
                arr = np.where(arr < 0, arr + n, arr)
                if arr.size and (arr.min() < 0 or arr.max() >= n):
                    raise IndexError(f"index out of range for axis {ax} of size {n}")
                ranges.append(arr)
        steps, rest = ranges[0], ranges[1:]
        box = tuple(len(r) for r in rest)
        if rest:
            grids = np.meshgrid(*rest, indexing="ij")
            flat = np.ravel_multi_index(tuple(g.reshape(-1) for g in grids), self.record_shape)
        else:
            flat = np.zeros(1, dtype=np.int64)
        vals = _columns(
            self.layer, steps, flat, dtype=self.dtype, field=self.field, shape=self.record_shape
        )
        out = vals.reshape(len(steps), *box)
        if drop:
            out = out.reshape([s for ax, s in enumerate(out.shape) if ax not in drop])
        return out


class RankedArray:
    """A lazy array over one field of a ranked layer: shape ``(ranks, steps, *record shape)``.

    One :class:`LayerArray` per rank (in :attr:`ranks` order), each over the
    steps every rank had committed when the array was made. Indexing works as on
    :class:`LayerArray`, the first key picking ranks by position. It pickles as
    the ranks' descriptions.

    Examples
    --------
    >>> a = RankedArray(spikestore.open("ddp.spikes")["output"]["sn1"])  # doctest: +SKIP
    >>> a[:, -1].shape                                                   # doctest: +SKIP
    (2, 16, 64)
    """

    def __init__(self, layer: Any, field: int | str = 0, *, pad: bool = False) -> None:
        ranks = ranks_of(layer)
        if ranks is None:
            raise TypeError(f"layer {layer.name!r} is not a layer of a ranked store")
        self.ranks = ranks
        self.monitor: str = layer.monitor
        self.name: str = layer.name
        n = len(layer)
        self.arrays = [LayerArray(layer.layer(r), field, length=n, pad=pad) for r in ranks]
        self.field = self.arrays[0].field
        shapes = {a.record_shape for a in self.arrays}
        if len(shapes) != 1:
            raise ValueError(
                f"layer {layer.name!r}: ranks {ranks} recorded shapes {sorted(shapes)}; "
                "read one rank with .layer(rank)"
            )
        self.record_shape = shapes.pop()
        self.dtype = np.result_type(*[a.dtype for a in self.arrays])
        self.shape: tuple[int, ...] = (len(ranks), n, *self.record_shape)
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[...]
        return out.astype(dtype) if dtype is not None else out

    def __repr__(self) -> str:
        return (
            f"<RankedArray {self.monitor!r}/{self.name!r} ranks {self.ranks} "
            f"{self.shape} {self.dtype}>"
        )

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            i = next(i for i, k in enumerate(key) if k is Ellipsis)
            key = key[:i] + (slice(None),) * (self.ndim - len(key) + 1) + key[i + 1 :]
        if not key:
            key = (slice(None),)
        first, rest = key[0], key[1:]
        n = len(self.arrays)
        if isinstance(first, (int, np.integer)):
            i = int(first) + n if first < 0 else int(first)
            if not 0 <= i < n:
                raise IndexError(f"rank position {first} out of range for {n} ranks")
            return self.arrays[i][rest].astype(self.dtype, copy=False)
        if isinstance(first, slice):
            picked = list(range(*first.indices(n)))
        else:
            picked = [int(i) + n if i < 0 else int(i) for i in np.asarray(first).reshape(-1)]
            if any(not 0 <= i < n for i in picked):
                raise IndexError(f"rank position out of range for {n} ranks")
        parts = [self.arrays[i][rest].astype(self.dtype, copy=False) for i in picked]
        if not parts:
            shape = np.empty(self.shape[1:], dtype=np.bool_)[rest].shape
            return np.zeros((0, *shape), dtype=self.dtype)
        return np.stack(parts)


@per_rank()
def to_numpy(
    layer: Any,
    steps: Any = None,
    *,
    field: int | str = 0,
    pad: bool = False,
    rank: int | None = None,
) -> np.ndarray:
    """Decode a window of steps to a NumPy array ``(len(steps), *record shape)``.

    Values keep the record's dtype where NumPy has it (float16 included);
    bfloat16 and float8 records, which NumPy lacks, come back as float32.
    Python-number steps broadcast to the record shape; ``None`` steps are NaN
    (integer and bool records with such steps come back as float64). A ranked
    layer gives ``(ranks, len(steps), *record shape)``. ``field`` is a position
    or a field name.

    The selected steps must have one shape. Steps of several batch sizes (a
    smaller last batch) are a ValueError that lists the shapes and their steps,
    unless ``pad=True``: then the batch axis is padded to the largest batch with
    NaN (integer and bool records come back as float64). Shapes that differ in
    other axes are always a ValueError: pass ``steps=`` within one shape
    (:func:`shapes` lists them).
    """
    sel = step_selection(layer, steps)
    fld = _field(layer, field)
    shape, padded = _plan(layer, fld, sel, pad=pad, what="to_numpy")
    dt = _np_dtype(_field_dtype(fld))
    if not np.issubdtype(dt, np.floating):
        has_gaps = bool(len(layer)) and int(fld.index(0, len(layer))[:, 0].min()) < 0
        if padded or has_gaps or any(s.get("python_scalar", False) for s in fld.segments):
            dt = np.dtype("float64")
    if sel.size == 0:
        return np.zeros((0, *shape), dtype=dt)
    return np.concatenate([vals.astype(dt) for _, vals in _blocks(layer, sel, field, shape)])


def _store_chunks(layer: Any, arr: Any) -> tuple[Any, ...]:
    fld = _field(layer, arr.field)
    segs = [(k, s) for k, s in enumerate(fld.segments) if tuple(s["shape"]) == arr.record_shape]
    if not segs:
        # Padded: the step chunking of the first tensor segment, whole records.
        segs = [(k, s) for k, s in enumerate(fld.segments) if not s.get("python_scalar")][:1]
    step_chunk = 256
    rest: tuple[Any, ...] = tuple(-1 for _ in arr.record_shape)
    if segs:
        k, seg = segs[0]
        chunks = fld.array(k).chunks
        step_chunk = int(chunks[0])
        if seg["encoding"] != SPIKE_ENCODING and tuple(seg["shape"]) == arr.record_shape:
            rest = tuple(int(c) for c in chunks[1:])
    return (step_chunk, *rest)


def to_dask(
    layer: Any,
    *,
    field: int | str = 0,
    chunks: Any = None,
    pad: bool = False,
    rank: int | None = None,
) -> Any:
    """A lazy ``dask.array.Array`` of the layer, ``(steps, *record shape)``.

    ``field`` is a position or a field name. A layer of several batch sizes is a
    ValueError unless ``pad=True``, as in :func:`to_numpy` (then the batch axis is
    padded to the largest batch with NaN); other shape mixes are a ValueError.

    A ranked layer gives ``(ranks, steps, *record shape)`` over the steps every
    rank has, one block per rank along the first axis (``chunks``, when given,
    names that axis too); ``rank=r`` gives rank ``r``'s layer alone.

    Blocks follow the store's chunks (steps per chunk; for raw records also the
    chunks along the record's axes; spike records are chunked along steps only,
    since their chunks split packed bytes, not axes) unless ``chunks`` is given.
    Computing a block reads and decodes only the chunks under it.

    The array holds the steps committed when ``to_dask`` is called; a writer
    appending to a live store meanwhile never changes its shape or its values.
    The graph describes the store rather than holding it open: its tasks carry the
    store's :attr:`~spikestore.StoreReader.source` (path or URL), the monitor,
    layer and field names, the step count and the record's shape and dtype, so it
    pickles to a few kilobytes however long the run, and each process of a
    ``dask.distributed`` cluster opens the store once, on its first task, for
    every graph it runs. A store opened from a Zarr store object
    (``spikestore.open(store=...)``) has no source: its graph carries the reader
    itself, which suits the threaded scheduler.

    Requires ``dask[array]``.

    Examples
    --------
    >>> x = to_dask(store["v"]["sn1"])        # doctest: +SKIP
    >>> x[:, 0].mean().compute()              # doctest: +SKIP
    """
    try:
        import dask.array as da
        from dask.base import tokenize
    except ImportError as exc:
        raise ImportError(
            "spikestore.analysis.to_dask needs dask: pip install 'dask[array]'"
        ) from exc
    layer = pick_rank(layer, rank)
    arr: LayerArray | RankedArray
    if ranks_of(layer) is not None:
        arr = RankedArray(layer, field, pad=pad)
        if chunks is None:
            chunks = (1, *_store_chunks(layer.layer(arr.ranks[0]), arr.arrays[0]))
        parts: list[Any] = [(repr(a.source), a.shape) for a in arr.arrays]
        if any(a.source is None for a in arr.arrays):
            parts.append(f"{id(layer):x}")
        token = tokenize(parts, arr.monitor, arr.name, arr.field, str(arr.dtype))
    else:
        arr = LayerArray(layer, field, pad=pad)
        if chunks is None:
            chunks = _store_chunks(layer, arr)
        if arr.source is not None:
            token = tokenize(
                repr(arr.source), arr.monitor, arr.name, arr.field, arr.shape, str(arr.dtype)
            )
        else:
            token = f"{id(layer):x}"
    name = f"spikestore-{layer.monitor}-{layer.name}-{arr.field}-{arr.shape[0]}-{token}"
    return da.from_array(
        arr,
        chunks=chunks,
        name=name,
        lock=False,
        fancy=False,
        asarray=False,
        inline_array=False,
        meta=np.empty((0,) * arr.ndim, dtype=arr.dtype),
    )


def _xarray_backend(arr: LayerArray | RankedArray) -> Any:
    from xarray.backends import BackendArray
    from xarray.core import indexing

    class _Backend(BackendArray):
        def __init__(self, inner: LayerArray | RankedArray) -> None:
            self.inner = inner
            self.shape = inner.shape
            self.dtype = inner.dtype

        def __getitem__(self, key: Any) -> Any:
            return indexing.explicit_indexing_adapter(
                key, self.shape, indexing.IndexingSupport.OUTER, self._raw
            )

        def _raw(self, key: tuple[Any, ...]) -> np.ndarray:
            return np.asarray(self.inner[key])

    return indexing.LazilyIndexedArray(_Backend(arr))


def _mark_coords(layer: Any, arr: LayerArray | RankedArray, names: tuple[str, ...]) -> dict:
    """The writer's marks as step coordinates: over ``(rank, step)`` for a ranked layer
    whose ranks marked their steps differently, else over ``step``."""
    if isinstance(arr, RankedArray):
        n = arr.shape[1]
        per_rank = [_step_labels(layer.layer(r)) for r in arr.ranks]
        out: dict[str, Any] = {}
        for key in dict.fromkeys(k for m in per_rank for k in m):
            rows = [np.full(n, None, dtype=object) for _ in per_rank]
            for row, m in zip(rows, per_rank, strict=True):
                if key in m:
                    row[:] = m[key][:n]
            if all(row.tolist() == rows[0].tolist() for row in rows):
                out[key] = (names[1], _typed(rows[0]))
            else:
                out[key] = (names[:2], _typed(np.stack(rows)))
        return out
    return {
        key: (names[0], _typed(np.asarray(values, dtype=object)[: arr.shape[0]]))
        for key, values in _step_labels(layer).items()
    }


def _step_labels(layer: Any) -> dict[str, Any]:
    """A layer's per-step labels: ``run`` and ``call`` (``layer.runs()``), then the
    writer's marks; a mark named ``run`` or ``call`` becomes ``mark_run`` or
    ``mark_call``, so that ``groupby(["run", ...])`` always keeps runs apart."""
    marks = getattr(layer, "marks", None)
    out: dict[str, Any] = {}
    runs = getattr(layer, "runs", None)
    if callable(runs):
        run, call = runs()
        out = {"run": run.astype(object), "call": call.astype(object)}
    for key, values in (marks() if callable(marks) else {}).items():
        out[f"mark_{key}" if key in ("run", "call") and out else key] = values
    return out


def _typed(values: np.ndarray) -> np.ndarray:
    """Mark values (an object array, None before a key's first mark) in the dtype their
    values share, as a user's coordinates would be: int64, float64, bool or str; numbers
    with None before the first mark as float64 with NaN there; anything else as is."""
    flat = values.ravel().tolist()
    kinds = {type(v) for v in flat if v is not None}
    has_none = any(v is None for v in flat)
    if not kinds:
        return values
    try:
        if kinds <= {int, float}:
            if has_none and any(
                type(v) is int and not -(2**53) <= v <= 2**53 for v in flat if v is not None
            ):
                return values  # float64 (for the NaN) would round these ints
            if has_none:
                filled = [np.nan if v is None else v for v in flat]
                return np.array(filled, np.float64).reshape(values.shape)
            dtype = np.int64 if kinds == {int} else np.float64
            return np.array(flat, dtype).reshape(values.shape)
        if not has_none and len(kinds) == 1 and kinds <= {bool, str}:
            return np.array(flat).reshape(values.shape)
    except OverflowError:  # an int past int64
        pass
    return values


def to_xarray(
    layer: Any,
    dims: Sequence[str] | None = None,
    *,
    coords: dict[str, Any] | None = None,
    field: int | str = 0,
    chunks: Any = "store",
    pad: bool = False,
    rank: int | None = None,
) -> Any:
    """A lazy, labelled ``xarray.DataArray`` of the layer.

    Parameters
    ----------
    dims : sequence of str, optional
        Names of the record's axes (``("time", "batch", "neuron")``), with or
        without the leading ``"step"`` (and for a ranked layer ``"rank"`` before
        it). Default: the names the store keeps for the layer (``layer.dims``,
        e.g. ``("time", "batch", "neuron")``), else ``dim_0, dim_1, ...`` as in the
        store's ``dimension_names``; the step dimension is ``"step"``.
    coords : dict, optional
        Extra or replacement coordinates; every dimension gets an integer range
        by default, and the ``rank`` dimension the rank numbers.
    field : int or str
        Field of tuple records (position or name).
    chunks : "store", None, or dask chunks
        ``"store"`` (default): a dask array chunked like the store when dask is
        installed, else xarray's own lazy indexing. ``None``: always xarray's
        lazy indexing (no dask). Anything else is passed to :func:`to_dask`.
    pad : bool
        For a layer of several batch sizes: pad the batch axis to the largest
        batch with NaN, as in :func:`to_numpy`. Without it such a layer is a
        ValueError listing the shapes and their steps.
    rank : int, optional
        For a ranked layer, that rank's layer alone (no ``rank`` dimension).

    Each step's ``run`` (which opening of a writer recorded it) and ``call`` (its place
    in that run; ``layer.runs()``) are coordinates along ``step``, so
    ``da.groupby(["run", "epoch"])`` keeps appended runs apart. Marks the writer
    recorded (``writer.mark(epoch=3)``; ``layer.marks()``) become
    coordinates along ``step``, one per key (missing, None or NaN, at steps before
    the key was first set, which groupby leaves out), so ``da.groupby("epoch")``
    works; a mark named like a dimension or a coordinate in ``coords`` is left out.
    A ranked layer gives a ``rank`` dimension first, over the steps every rank has;
    its marks are coordinates over ``step`` where every rank marked the same steps
    alike (ranks of one job marking epochs), else over ``(rank, step)``.
    Nothing is read until values are used; selecting (``.isel``/``.sel``) then
    reads only the chunks under the selection. Requires ``xarray``.

    Examples
    --------
    >>> da = to_xarray(store["output"]["sn1"], dims=("time", "batch", "neuron"))  # doctest: +SKIP
    >>> da.isel(batch=0).sum("neuron").compute()                                  # doctest: +SKIP
    """
    try:
        import xarray as xr
    except ImportError as exc:
        raise ImportError("spikestore.analysis.to_xarray needs xarray: pip install xarray") from exc
    layer = pick_rank(layer, rank)
    arr: LayerArray | RankedArray
    lead: tuple[str, ...]
    if ranks_of(layer) is not None:
        arr, lead = RankedArray(layer, field, pad=pad), ("rank", "step")
        first = layer.layer(arr.ranks[0])
    else:
        arr, lead, first = LayerArray(layer, field, pad=pad), ("step",), layer
    n_rec = len(arr.record_shape)
    if dims is None:
        stored = record_dims(first, n_rec, arr.field)
        if stored is None or len(set(stored)) != n_rec or set(stored) & set(lead):
            stored = tuple(f"dim_{i}" for i in range(n_rec))
        names = (*lead, *stored)
    else:
        names = tuple(dims)
        missing = arr.ndim - len(names)
        if 0 < missing <= len(lead):
            names = (*lead[:missing], *names)
        if len(names) != arr.ndim or (len(lead) > 1 and names[0] != lead[0]):
            raise ValueError(
                f"dims {tuple(dims)} do not match records of shape {arr.record_shape} "
                f"(give {n_rec} names, or {arr.ndim} starting with {', '.join(lead)})"
            )
    data: Any
    if chunks is None:
        data = _xarray_backend(arr)
    else:
        try:
            data = to_dask(
                layer, field=arr.field, chunks=None if chunks == "store" else chunks, pad=pad
            )
        except ImportError:
            if chunks != "store":
                raise
            data = _xarray_backend(arr)
    all_coords: dict[str, Any] = {
        name: np.arange(n) for name, n in zip(names, arr.shape, strict=True)
    }
    if isinstance(arr, RankedArray):
        all_coords["rank"] = np.array(arr.ranks, dtype=np.int64)
    for key, coord in _mark_coords(layer, arr, names).items():
        if key not in names and key not in (coords or {}):
            all_coords[key] = coord
    all_coords.update(coords or {})
    fld = _field(first, arr.field)
    attrs = {
        "monitor": layer.monitor,
        "layer": layer.name,
        "dtype": _field_dtype(fld),
        "encodings": ",".join(sorted({s["encoding"] for s in fld.segments})),
    }
    return xr.DataArray(
        data, dims=names, coords=all_coords, name=f"{layer.monitor}/{layer.name}", attrs=attrs
    )
