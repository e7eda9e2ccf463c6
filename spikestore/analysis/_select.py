"""Selection: the steps, fields, time axis, ranks and neurons a call of
:mod:`spikestore.analysis` names, turned into indices.

Its ``__all__`` is the package's helper contract: :func:`step_selection` and
:func:`neuron_ids` are public (``spikestore.analysis`` re-exports them); the other
names in ``__all__`` (rank, field, time axis and axis-name helpers) are how
:mod:`spikestore.plot` and :mod:`spikestore.export` read a layer the way analysis
does, without a copy. Names with a leading underscore stay inside the package.

Every function here runs in the caller's thread and keeps no state.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..reader import FieldReader, step_indices

__all__ = [
    "step_selection",
    "neuron_ids",
    "ranks_of",
    "pick_rank",
    "one_rank",
    "field_index",
    "record_dims",
    "time_axis_of",
]


def _where(layer: Any) -> str:
    return f"monitor {layer.monitor!r}, layer {layer.name!r}"


def step_selection(layer: Any, steps: Any = None) -> np.ndarray:
    """The steps of ``layer`` that ``steps`` selects, as an int64 array.

    ``steps`` is None (every committed step) or any key of
    :func:`spikestore.reader.step_indices`; a tuple of ints is taken as a list.
    Every function of this module takes its ``steps`` argument through here.

    Examples
    --------
    >>> step_selection(layer, slice(-3, None))  # doctest: +SKIP
    array([297, 298, 299])
    """
    if steps is None:
        steps = slice(None)
    elif isinstance(steps, tuple):
        steps = list(steps)
    return step_indices(steps, len(layer), where=_where(layer))[0]


def ranks_of(layer: Any) -> list[int] | None:
    """The ranks of a layer of a ranked store
    (:class:`~spikestore.reader.RankedLayerReader`); None for any other layer."""
    ranks = getattr(layer, "ranks", None)
    if ranks is None or not callable(getattr(layer, "layer", None)):
        return None
    return list(ranks)


def pick_rank(layer: Any, rank: int | None) -> Any:
    """``layer``, or with ``rank`` given that rank's layer of a ranked layer."""
    if rank is None:
        return layer
    if ranks_of(layer) is None:
        raise ValueError(f"rank={rank!r}: layer {layer.name!r} is not a layer of a ranked store")
    return layer.layer(rank)


def one_rank(layer: Any, rank: int | None) -> Any:
    """One rank's layer, for what reads a single rank (a plot): as :func:`pick_rank`,
    but a layer of a ranked store needs ``rank``, one of its ranks (a ValueError
    naming them otherwise)."""
    ranks = ranks_of(layer)
    if ranks is not None and (rank is None or rank not in ranks):
        where = f"layer {layer.monitor!r}/{layer.name!r}"
        if rank is None:
            raise ValueError(
                f"{where} is a layer of a ranked store (ranks {ranks}): pass rank= to "
                "choose one rank"
            )
        raise ValueError(f"rank={rank!r}: {where} has ranks {ranks}")
    return pick_rank(layer, rank)


def field_index(layer: Any, field: int | np.integer | str) -> int:
    """The position of field ``field`` (an int, or a name where the store names fields)."""
    resolve = getattr(layer, "field_index", None)
    if callable(resolve):
        return int(resolve(field))
    if isinstance(field, (int, np.integer)) and not isinstance(field, (bool, np.bool_)):
        return int(field)
    raise TypeError(
        f"{_where(layer)}: field must be an int (this store does not name its fields), "
        f"got {field!r}"
    )


def _field(layer: Any, field: int | str) -> FieldReader:
    fld: FieldReader = layer.field(field_index(layer, field))
    return fld


def _np_dtype(name: str) -> np.dtype:
    """The NumPy dtype decoded values take: the record's own, except that the dtypes
    NumPy lacks (bfloat16, float8) widen to float32; float16 stays float16."""
    if name in ("bfloat16", "float8_e4m3fn", "float8_e5m2"):
        return np.dtype("float32")
    return np.dtype(name)


def record_dims(layer: Any, ndim: int, field: int | None = None) -> tuple[str, ...] | None:
    """The names of the record's axes when the store knows them for records of ``ndim``
    (the names of field ``field``'s own axes first, where given)."""
    field_dims = getattr(layer, "field_dims", None)
    if field is not None and callable(field_dims):
        names = field_dims(field)
        if names is not None and len(names) == ndim:
            return tuple(str(d) for d in names)
    dims_of = getattr(layer, "dims_of", None)
    dims = dims_of(ndim) if callable(dims_of) else getattr(layer, "dims", None)
    if dims is None or len(dims) != ndim:
        return None
    return tuple(str(d) for d in dims)


def _stored_time_axis(layer: Any, ndim: int) -> int | None:
    """The layer's stored time axis, as an axis of records of rank ``ndim``: the axis
    belongs to records of the first field's rank (Norse's ``(z, state)``: ``z`` is
    ``[T, B, N]``, its state ``[B, N]`` has no time axis)."""
    t = getattr(layer, "time_axis", None)
    if t is None or isinstance(t, bool) or not -ndim <= int(t) < ndim:
        return None
    dims = record_dims(layer, ndim)
    if dims is not None and "time" in dims and dims.index("time") != int(t) % ndim:
        return None
    fields = getattr(layer, "fields", None)
    if fields:
        ranks = {len(s["shape"]) for s in fields[0].segments if not s.get("python_scalar")}
        if ranks and ndim not in ranks:
            return None
    return int(t) % ndim


def time_axis_of(layer: Any, time_axis: Any, shape: tuple[int, ...]) -> int | None:
    """The record axis a ``time_axis`` argument names for records of ``shape``, or None."""
    if time_axis is None:
        return _stored_time_axis(layer, len(shape))
    if isinstance(time_axis, (bool, np.bool_)):
        if not time_axis:
            return None
        axis = 0
    else:
        axis = operator.index(time_axis)
    if not -len(shape) <= axis < len(shape):
        raise ValueError(
            f"{_where(layer)}: time_axis={time_axis!r} is not an axis of its records "
            f"(shape {shape})"
        )
    return axis % len(shape)


def _batch_axis(layer: Any, ndim: int) -> int | None:
    """The record axis that is the batch: the one ``layer.dims`` names ``"batch"``,
    else 1 for a layer whose time axis is 0, else 0 (None for scalars)."""
    if ndim == 0:
        return None
    dims = record_dims(layer, ndim)
    if dims is not None and "batch" in dims:
        return dims.index("batch")
    return 1 if _stored_time_axis(layer, ndim) == 0 and ndim > 1 else 0

def neuron_ids(
    neurons: Any,
    shape: tuple[int, ...],
    *,
    where: str | None = None,
    dims: Sequence[str] | None = None,
) -> np.ndarray:
    """Flat (C-order) indices into records of ``shape`` from a neuron selection.

    ``neurons`` is None (all), an int, or a sequence of flat ints or of index
    tuples (one index per axis of ``shape``), as the ``neurons`` argument of
    :func:`raster` and :func:`traces`. A neuron out of range, or a tuple with the
    wrong number of indices, is an IndexError naming ``where`` (e.g. the layer),
    ``shape`` with its axis names ``dims`` when given, and the valid range.

    Examples
    --------
    >>> neuron_ids([(0, 1), 5], (2, 3)).tolist()
    [1, 5]
    """
    shape = tuple(int(n) for n in shape)
    numel = math.prod(shape)
    if neurons is None:
        return np.arange(numel, dtype=np.int64)
    if isinstance(neurons, (int, np.integer)):
        neurons = [int(neurons)]
    elif isinstance(neurons, (np.ndarray, torch.Tensor)):
        neurons = neurons.tolist()
        if not isinstance(neurons, list):
            neurons = [neurons]

    def bad(item: Any) -> IndexError:
        named = f" (axes {tuple(dims)})" if dims is not None else ""
        valid = (
            f"give a flat index in 0..{numel - 1} or {len(shape)} indices, one per axis"
            if numel
            else "these records have no elements"
        )
        head = f"{where}: " if where else ""
        return IndexError(
            f"{head}neuron {item!r} is out of range for records of shape {shape}{named}: "
            f"{valid}"
        )

    flat = np.empty(len(neurons), dtype=np.int64)
    for i, item in enumerate(neurons):
        if isinstance(item, (tuple, list)):
            nd = tuple(int(v) for v in item)
            if len(nd) != len(shape) or any(not 0 <= v < n for v, n in zip(nd, shape, strict=True)):
                raise bad(tuple(item))
            flat[i] = np.ravel_multi_index(nd, shape) if shape else 0
        else:
            flat[i] = int(item)
            if not 0 <= flat[i] < numel:
                raise bad(item)
    return flat
