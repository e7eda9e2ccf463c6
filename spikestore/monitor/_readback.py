"""Reading a monitor's records back: :class:`Records` and the latest records kept.

:class:`Records` is the lazy sequence behind ``monitor.records``: it decodes records
from the store a layer at a time, or returns the monitor's latest small records, kept
by :func:`remember` as the writer queued them (the staged fields of
``spikestore._staging``: packed spikes, or the writer's copy of the values, immutable)
and made tensors on their first read, exactly as the reader decodes them. The hook
copies nothing (on a GPU it no longer waits for the device either). Its state is the
monitor's, owned by the thread that runs the hooks (a monitor has no lock); read
records in that thread.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..codecs import decode_rows, dtype_name
from ..format import SPIKE_ENCODING
from ..reader import step_indices

if TYPE_CHECKING:
    from .._staging import Staged
    from ._base import BaseMonitor

__all__ = ["Records", "remember"]


def _has_float(value: Any) -> bool:
    if isinstance(value, (tuple, list)):
        return any(_has_float(v) for v in value)
    return isinstance(value, float) or (
        isinstance(value, torch.Tensor)
        and value.dtype in (torch.float16, torch.float32, torch.float64)
    )


class _Kept:
    """A tensor record's staged field, kept instead of a copy: the writer's own
    immutable packed bits (spikes) or copy of the values (see ``spikestore._staging``).
    :func:`_recent` turns it into the tensor the reader would return, on first read."""

    __slots__ = ("staged",)

    def __init__(self, staged: Staged) -> None:
        self.staged = staged

    def tensor(self) -> torch.Tensor:
        s = self.staged
        if s.event is not None:
            s.event.synchronize()
        if s.packed is not None and (s.flag is None or bool(s.flag)):
            seg = {
                "encoding": SPIKE_ENCODING,
                "dtype": dtype_name(s.dtype),
                "shape": s.shape,
                "permute": s.permute,
            }
            return decode_rows(s.bits()[None], seg)[0]
        assert s.values is not None
        # A copy: the writer thread may not have encoded these values yet.
        return s.values.to("cpu", copy=True)


def _keep(value: Any, staged: Sequence[Staged | None], limit: int) -> tuple[Any, int] | None:
    """What to keep of ``value`` (CPU tensors, Python numbers, None, a flat tuple or list
    of those), given its fields as the writer staged them, and the bytes it reads back
    as; None if it is larger than ``limit`` or of another kind (the reader then decodes
    it from the store). Tensors are kept as their staged fields (:class:`_Kept`), not
    copied: the hook pays nothing for them."""
    if type(value) in (tuple, list):
        if not value or len(staged) != len(value):
            return None
        parts = []
        n = 0
        for v, s in zip(value, staged, strict=True):
            p = _keep_leaf(v, s)
            if p is None:
                return None
            parts.append(p[0])
            n += p[1]
        if n > limit:
            return None
        return type(value)(parts), n
    if len(staged) != 1:
        return None
    p = _keep_leaf(value, staged[0])
    if p is None or p[1] > limit:
        return None
    return p


def _keep_leaf(value: Any, staged: Staged | None) -> tuple[Any, int] | None:
    if value is None:
        return None, 0
    if type(value) in (bool, int, float):
        return value, 8
    if isinstance(value, torch.Tensor) and staged is not None:
        return _Kept(staged), value.numel() * value.element_size()
    return None


def remember(
    m: BaseMonitor, lid: int, step: int, value: Any, staged: Sequence[Staged | None]
) -> None:
    """Keep a small record of ``m`` (``staged``: its fields as the writer staged them)
    for reading back as the reader would return it, dropping the oldest beyond its
    :attr:`~BaseMonitor.recent_bytes`."""
    if m._writer.precision is not None and _has_float(value):
        return  # the store keeps them rounded: a copy would read back otherwise
    limit = m.recent_bytes // 4
    if type(value) is torch.Tensor and len(staged) == 1 and staged[0] is not None:
        # The common record, kept as _keep keeps it, without its tests.
        size = value.numel() * value.element_size()
        if size > limit:
            return
        kept: tuple[Any, int] = (_Kept(staged[0]), size)
    else:
        maybe = _keep(value, staged, limit)
        if maybe is None:
            return
        kept = maybe
    recent = m._recent
    nbytes = kept[1]
    recent[(lid, step)] = kept
    m._recent_nbytes += nbytes
    while m._recent_nbytes > m.recent_bytes and recent:
        _, (_, n) = recent.popitem(last=False)
        m._recent_nbytes -= n


def _recent(m: BaseMonitor, key: tuple[int, int]) -> Any:
    """The kept record at ``key`` (layer id, step), made a tensor (or tuple, list of
    tensors) on its first read and kept so from then on."""
    value, nbytes = m._recent[key]
    if isinstance(value, _Kept):
        value = value.tensor()
    elif type(value) in (tuple, list) and any(isinstance(v, _Kept) for v in value):
        value = type(value)(v.tensor() if isinstance(v, _Kept) else v for v in value)
    else:
        return value
    m._recent[key] = (value, nbytes)  # same place in the order: a dict keeps it
    return value


class Records(Sequence[Any]):
    """A monitor's records in the order the hooks produced them, read from disk.

    Supports ``len``, integer indexing (negative too), slices and lists of indices
    (a list of records; see :func:`spikestore.reader.step_indices`),
    iteration, ``print`` and :meth:`clear` (same as the monitor's
    ``clear_recorded_data``). Each access decodes the records it needs, a layer at
    a time: every chunk that holds several of them is read and decoded once.

    SpikingJelly's idioms work too: ``torch.cat(m.records, 0)``,
    ``torch.stack(m.records)`` (any ``torch`` function given the records, through
    ``__torch_function__``), ``m.records + other_list`` and ``other_list + m.records``
    (a list).

    Memory: it is not a ``list``; the monitor keeps its latest small records only
    (:attr:`BaseMonitor.recent_bytes`, 1 MiB), which are read back without a commit or a
    read from the store. Indexing holds the records asked for; iteration about 256
    records at a time. A ``torch`` function and ``+``
    need every record at once: they decode all of them into a list (as large
    as SpikingJelly's own ``records``); ``+`` returns it, a ``torch`` function drops
    it when it returns, so ``torch.cat`` peaks at about twice the records' size. For a long run,
    read steps of one layer (``m[layer]``, or ``spikestore.open(path)``'s lazy
    layers) instead.
    """

    def __init__(self, monitor: BaseMonitor) -> None:
        self._m = monitor

    def __len__(self) -> int:
        return len(self._m._order)

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        m = self._m
        idx, many = step_indices(key, len(m._order), "record", where=f"monitor {m.name!r}")
        out = self._take(idx)
        return out if many else out[0]

    def _take(self, idx: np.ndarray) -> list[Any]:
        """The records at positions ``idx`` (any order), decoded a layer at a time."""
        m = self._m
        if idx.size == 0:
            return []
        lo, hi = int(idx.min()), int(idx.max()) + 1
        lids = np.frombuffer(m._order[lo:hi], dtype=np.int32)[idx - lo]
        steps = np.frombuffer(m._steps[lo:hi], dtype=np.int64)[idx - lo]
        out: list[Any] = [None] * idx.size
        recent = m._recent
        for lid in np.unique(lids):
            pos = np.nonzero(lids == lid)[0]
            lid = int(lid)
            if recent:
                hits = [(lid, int(steps[p])) in recent for p in pos]
                for p, hit in zip(pos.tolist(), hits, strict=True):
                    if hit:
                        out[p] = _recent(m, (lid, int(steps[p])))
                pos = pos[~np.asarray(hits, dtype=bool)]
                if not pos.size:
                    continue
            need = int(steps[pos].max()) + 1
            vals = m._layer_reader(lid, need).records(steps[pos])
            for p, v in zip(pos.tolist(), vals, strict=True):
                out[p] = v
        return out

    def __iter__(self) -> Iterator[Any]:
        n, block = len(self), 256
        for a in range(0, n, block):
            yield from self._take(np.arange(a, min(n, a + block), dtype=np.int64))

    def clear(self) -> None:
        self._m.clear_recorded_data()

    def __add__(self, other: Any) -> list[Any]:
        if not isinstance(other, (list, tuple, Records)):
            return NotImplemented
        return self[:] + list(other)

    def __radd__(self, other: Any) -> list[Any]:
        if not isinstance(other, (list, tuple)):
            return NotImplemented
        return list(other) + self[:]

    @classmethod
    def __torch_function__(
        cls, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        """Run ``func`` with every :class:`Records` argument decoded into a list (in
        one read a layer), so that ``torch.cat(m.records)`` works as on SpikingJelly's
        lists."""

        def plain(a: Any) -> Any:
            return a[:] if isinstance(a, Records) else a

        return func(*map(plain, args), **{k: plain(v) for k, v in (kwargs or {}).items()})

    def __repr__(self) -> str:
        n = len(self)
        if n <= 16:
            return repr(self[:])
        head = ", ".join(repr(r) for r in self[:3])
        tail = ", ".join(repr(r) for r in self[-3:])
        return f"[{head}, ..., {tail}] ({n} records)"
