"""The reader's tree of nodes: :class:`StoreReader` (monitor name to
:class:`MonitorReader`), :class:`MonitorReader` (layer name to :class:`LayerReader`),
their mapping bases shared with the ranked readers, and the warnings naming damaged
nodes left out.

Thread ownership: the caller.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from ..errors import ReadError
from ..format import (
    FORMAT_NAME,
    FormatError,
    check_layer_attrs,
    check_root_attrs,
    check_run_attrs,
    field_key,
    node_key,
    root_ranks,
    tree_field_names,
)
from ..storage._localfs import walk_files
from ._field import FieldReader, Layout
from ._runs import Run, layer_runs, mark_resets, runs_of
from ._source import Source, _child, _child_groups, _Location, _open_group
from ._trees import _rebuilder, _record_axis, neuron_values, stack_steps, step_indices

__all__ = [
    "StoreReader",
    "MonitorReader",
    "LayerReader",
]


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
        return dict(self._damaged)

    @property
    def version(self) -> str:
        return str(self.meta["version"])

    def __getitem__(self, name: str) -> _M:
        try:
            return self._monitors[name]
        except KeyError:
            why = _damage_of(self._damaged, name)
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
        return dict(self._damaged)

    def __getitem__(self, name: str) -> _L:
        try:
            return self._load()[name]
        except KeyError:
            why = _damage_of(self._damaged, name)
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
        self._runs = runs_of(self.run)
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
        1.5): free JSON, empty for older stores. Every run's merged, a later run's value
        winning; each run's own are ``runs[i].attrs``."""
        return self.run["attrs"]

    @property
    def runs(self) -> tuple[Run, ...]:
        """Each opening of a writer, in order (format 1.7; a store written before is one
        run): its own ``attrs``, when it ``started``, and where it began on each layer
        (:class:`~spikestore.reader.Run`). ``layer.runs()`` numbers a layer's steps."""
        return self._runs

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
        # A run's steps start with no values (its marks are its own).
        resets = mark_resets(self._runs, monitor, layer)
        for i, m in enumerate([*marks["marks"], None]):
            if i in resets:
                where = max(where, resets[i])
                for runs in starts.values():
                    runs.append((min(where, steps), None))
            if m is None:
                break
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
        self._damaged: dict[str, str] = {}  # filled by _load

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


class LayerReader(Sequence[Any]):
    """The records of one layer: a sequence over steps.

    ``layer[i]`` decodes step ``i`` (negative indices count from the end) to a
    tensor of the original dtype and shape (or the tuple, list, number or
    ``None`` that was recorded). ``layer[a:b]`` (or a list of steps) decodes
    several: for one-value records always one tensor ``(steps, *shape)``, a
    ValueError naming the steps when their shapes differ (:meth:`records` gives a
    list; :attr:`shapes` lists the shapes); for tuple records a list. Indices are
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

    def runs(self) -> np.ndarray:
        """Per step, ``(run, call)`` as a ``(2, len(self))`` int64 array: the run
        (``store.runs``) that recorded it and its place in that run. A monitor's layers
        record once per forward call, so its layers' steps of one call share
        ``(run, call)``, even after an interrupted run left them out of step."""
        return layer_runs(self._monitor.store.runs, self.monitor, self.name, len(self))

    def __len__(self) -> int:
        return min((f.committed for f in self.fields), default=0)

    @property
    def segments(self) -> list[dict[str, Any]]:
        """Segment descriptors of the first field (see ``docs/format.md``)."""
        fields = self.fields
        return fields[0].segments if fields else []

    @property
    def dtype(self) -> torch.dtype | None:
        """The dtype the records of the first field read in together: the recorded one,
        or where it changed between steps (an eval pass under ``torch.autocast``, a
        ``net.double()`` phase) the common one (:attr:`FieldReader.dtype`), which
        ``layer[a:b]`` stacks in; each step alone reads in its own (:attr:`shapes`).
        None before the first commit."""
        fields = self.fields
        return fields[0].dtype if fields else None

    @property
    def shape(self) -> tuple[int, ...] | None:
        """The shape of the first field's tensor records when they all have one (steps
        that recorded a Python number or ``None`` left out), else None: then
        :attr:`shapes` lists each shape with its steps."""
        fields = self.fields
        shapes = fields[0].tensor_shapes() if fields else []
        if not shapes and fields and fields[0].segments:
            return ()  # Python numbers only
        return shapes[0] if len(shapes) == 1 else None

    @property
    def shapes(self) -> list[Layout]:
        """Each shape and dtype the first field's records have, with the steps that
        recorded it: a list of :class:`Layout` ``(shape, dtype, steps)`` in order of
        first appearance. Steps that recorded ``None`` or a Python number join the
        tensor step before them (see :meth:`FieldReader.layouts`); the same list as
        ``spikestore.analysis.shapes(layer, dtypes=True)``. Reads the step index."""
        fields = self.fields
        if not fields:
            return []
        return fields[0].layouts(np.arange(len(self), dtype=np.int64), dtypes=True)

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
        from zarr.storage import LocalStore

        from .._zarr import sync

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
        from zarr.storage import LocalStore

        from .._zarr import sync

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
        """Like ``layer[key]``, decoding onto ``device``.

        An int gives the record as it was recorded. Any other key (a slice, a list
        of steps) gives, for a layer of one value per step (tensor, number or
        ``None`` records), one tensor ``(steps, *shape)`` in the records' common
        dtype (:attr:`dtype`), or a ValueError naming the steps and what they
        recorded when they are not all tensors of one shape (or all numbers): then
        :meth:`records` gives the list. For tuple, list or nested records, a list.
        """
        steps, many = self._steps(key)
        if not many:
            return self._decode(steps, device)[0]
        if self.structure not in ("tensor", "number", "none"):
            return self._decode(steps, device)
        if not len(steps):
            shape = self.shape
            return torch.empty((0, *(shape or ())), dtype=self.dtype or torch.float32)
        if len(self.fields) == 1:
            device = device if device is not None else self._monitor.store.device
            block = self.fields[0].read_block(steps, device)
            if block is not None:
                return block
        where = f"monitor {self.monitor!r}, layer {self.name!r}"
        return stack_steps(self._decode(steps, device), steps, where)

    def records(self, key: Any = slice(None)) -> list[Any]:
        """The records of ``key`` as a list, each as it was recorded (its own shape and
        dtype), never stacked; an int gives a list of one."""
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
        self,
        index: int | tuple[int, ...],
        steps: Any = slice(None),
        *,
        field: int | str = 0,
        time_axis: int | bool | None = None,
    ) -> torch.Tensor:
        """One neuron's values over steps, reading only the chunks that hold it.

        ``index`` is a flat C-order index or a tuple of per-axis indices (negative
        ones count from the end), numbered as ``spikestore.analysis`` and the plots
        number neurons: on a layer with a time axis (multi-step ``[T, B, ...]``
        records), in the record *without* it, ``(batch, channel, y, x)``, and the
        result has ``T`` values per step, ``step * T + t`` in order (the column of
        ``analysis.traces(layer, [index])``). ``time_axis`` is as in the analysis
        functions: None for the layer's own, ``False`` to number elements of the
        whole record with one value per step (the per-step view), True or an int
        for that axis. Returns a 1-D tensor in the steps' common dtype. A step that
        recorded a Python number (SpikingJelly's ``v = 0.0`` before a neuron's first
        step) gives that number for every element and time point; a step that
        recorded ``None`` is an error, and so is a step whose records are too small to
        hold the neuron (a smaller eval batch): ``analysis.traces`` gives NaN there.
        ``field`` picks a field of tuple records.
        """
        fi = self.field_index(field)
        fld = self.fields[fi]
        where = f"monitor {self.monitor!r}, layer {self.name!r}"
        sel, _ = self._steps(steps)
        if not len(sel):
            return torch.empty(0, dtype=fld.dtype or torch.float32)
        stored = self.time_axis
        ranks = [{len(x) for x in f.tensor_shapes()} for f in (self.fields[0], fld)]
        if ranks[0] != ranks[1]:
            stored = None  # the axis is of the first field's rank (Norse's state has none)
        axis = _record_axis(time_axis, stored)
        return neuron_values(fld, index, sel, axis, self.field_dims(fi), where)
