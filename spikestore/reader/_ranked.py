"""Ranked stores (format 1.4): the ranks of a ``torch.distributed`` job read side by
side (:class:`RankedStoreReader`, :class:`RankedMonitorReader`,
:class:`RankedLayerReader`).

Thread ownership: the caller.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from ..format import FormatError, check_root_attrs, rank_key, root_ranks
from ._nodes import LayerReader, StoreReader, _Layers, _Monitors
from ._source import Source, _child_groups, _Location, _open_group
from ._trees import _stack, _stacked, common_dtype, step_indices

__all__ = [
    "RankedStoreReader",
    "RankedMonitorReader",
    "RankedLayerReader",
]


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
        # A rank's damaged monitors are its own reader's (rank(r).damaged).
        self._damaged: dict[str, str] = {}
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
    def runs(self) -> tuple[Any, ...]:
        """The runs (``StoreReader.runs``) as the lowest rank stored them (each rank's
        store has its own: ``rank(r).runs``)."""
        for rd in self._readers.values():
            return rd.runs
        return ()

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
        self._damaged: dict[str, str] = {}  # a rank's own: rank(r)[monitor].damaged

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
    a list, one record per rank; ``layer[a:b]`` gives ``[ranks, steps, ...]`` (a
    ValueError where the ranks' records do not stack; see :meth:`read`).
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
        """The dtype the ranks' records read in together (:func:`common_dtype` of each
        rank's :attr:`LayerReader.dtype`), None before any commit."""
        dtypes = [d for d in (lay.dtype for lay in self._layers.values()) if d is not None]
        return common_dtype(dtypes) if dtypes else None

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
        """Like ``layer[key]``, decoding onto ``device``.

        An int: the ranks' records of that step stacked when they are tensors of one
        shape, else a list, one per rank. Any other key, for one-value records: one
        tensor ``[ranks, steps, ...]`` (each rank's :meth:`LayerReader.read`), a
        ValueError naming the ranks' shapes when they differ (then read one rank with
        :meth:`layer`); for tuple records a list of each rank's list.
        """
        steps, many = self._steps(key)
        per_rank = []
        for r, lay in self._layers.items():
            try:
                per_rank.append(lay.read(steps if many else int(steps[0]), device))
            except ValueError as exc:  # steps of one rank that do not stack
                raise ValueError(f"rank {r}: {exc} (here: layer.layer({r}).records(key))") from None
        if not many or self.structure not in ("tensor", "number", "none"):
            return _stack(per_rank)
        shapes = {tuple(t.shape) for t in per_rank}
        if len(shapes) > 1:
            listed = ", ".join(
                f"rank {r}: {tuple(t.shape)}" for r, t in zip(self._layers, per_rank, strict=True)
            )
            raise ValueError(
                f"monitor {self.monitor!r}, layer {self.name!r}: the ranks' steps "
                f"{int(steps[0])}.. do not stack into one tensor ({listed}); read one rank "
                "with layer.layer(rank), or join batches with layer.concat(key)"
            )
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

    def neuron(
        self,
        index: int | tuple[int, ...],
        steps: Any = slice(None),
        *,
        field: int | str = 0,
        time_axis: int | bool | None = None,
    ) -> torch.Tensor:
        """One neuron's values over steps, for every rank: ``[ranks, values]``, each
        rank's row its :meth:`LayerReader.neuron` (neurons numbered without the time
        axis of multi-step records, ``T`` values per step; ``time_axis=False`` for one
        value per step)."""
        sel, _ = self._steps(steps)
        rows = [
            lay.neuron(index, sel, field=field, time_axis=time_axis)
            for lay in self._layers.values()
        ]
        if len({r.shape for r in rows}) > 1:
            raise ValueError(
                f"monitor {self.monitor!r}, layer {self.name!r}: the ranks' records have "
                f"time lengths that differ ({[len(r) for r in rows]} values); read one rank "
                "with layer.layer(rank).neuron(...)"
            )
        return _stacked(rows, tuple(rows[0].shape))

    def __iter__(self) -> Iterator[Any]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return (
            f"<spikestore layer {self.monitor!r}/{self.name!r}: ranks {self.ranks}, "
            f"steps {self.lengths}, shape {self.shape}, dtype {self.dtype}>"
        )
