"""Records by position: a user's step index (:func:`step_indices`), a neuron's index
into a record, nested records rebuilt from their fields, and steps stacked.

Thread ownership: any (pure functions).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ._pool import _empty_cpu

__all__ = [
    "step_indices",
]


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
