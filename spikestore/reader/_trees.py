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
    "common_dtype",
    "neuron_values",
    "stack_steps",
]


def common_dtype(dtypes: Any) -> torch.dtype:
    """The one dtype records of ``dtypes`` (torch dtypes or the format's names) are read
    together in: torch's promotion of them (a bfloat16 eval pass in a float32 run:
    float32; a ``net.double()`` phase: float64), float64 where torch has no common type
    (float8 kinds with others, uint16..uint64 with signed integers)."""
    from ..codecs import torch_dtype

    out: torch.dtype | None = None
    for d in dtypes:
        d = torch_dtype(d) if isinstance(d, str) else d
        if out is None or out == d:
            out = d
            continue
        try:
            out = torch.promote_types(out, d)
        except RuntimeError:
            return torch.float64
    if out is None:
        raise ValueError("no dtype to promote")
    return out


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
    """Tensors of one shape stacked on a new leading axis (in their common dtype), else
    the list as it is."""
    if records and all(isinstance(r, torch.Tensor) for r in records):
        shapes = {tuple(r.shape) for r in records}
        if len(shapes) == 1:
            return _stacked(records, shapes.pop())
    return records


def _stacked(records: list[torch.Tensor], shape: tuple[int, ...]) -> torch.Tensor:
    dtypes = {r.dtype for r in records}
    dtype = common_dtype(dtypes)
    if {r.device for r in records} == {torch.device("cpu")}:
        out = _empty_cpu((len(records), *shape), dtype)
        if len(dtypes) == 1:  # torch.stack writes straight into ``out``
            return torch.stack(records, out=out)
        for i, r in enumerate(records):
            out[i] = r  # cast in the copy
        return out
    return torch.stack([r.to(dtype) for r in records])


def stack_steps(records: list[Any], steps: np.ndarray, where: str) -> torch.Tensor:
    """Records of a one-value layer (tensor, number or None records) at ``steps``, as one
    tensor ``(len(steps), *shape)`` in their common dtype (:func:`common_dtype`);
    Python numbers are 0-d records. ValueError naming ``where``, the steps and what
    they recorded when they are not all tensors of one shape (or all numbers): then
    ``layer.records(key)`` gives the list."""
    if all(isinstance(r, torch.Tensor) for r in records):
        shapes = {tuple(r.shape) for r in records}
        if len(shapes) == 1:
            return _stacked(records, shapes.pop())
    elif all(isinstance(r, (bool, int, float)) for r in records):
        types = {type(r) for r in records}
        dtype = torch.float64 if float in types else torch.int64 if int in types else torch.bool
        return torch.tensor(records, dtype=dtype)
    kinds: dict[str, list[int]] = {}
    for s, r in zip(steps.tolist(), records, strict=True):
        if isinstance(r, torch.Tensor):
            what = f"shape {tuple(r.shape)} {str(r.dtype).removeprefix('torch.')}"
        else:
            what = "None" if r is None else f"a Python {type(r).__name__}"
        kinds.setdefault(what, []).append(s)
    listed = "; ".join(
        f"{what} at step{'s' if len(st) > 1 else ''} {_ranges(st)}" for what, st in kinds.items()
    )
    raise ValueError(
        f"{where}: steps {_ranges(steps.tolist())} do not stack into one tensor: they "
        f"recorded {listed}. layer.records(key) gives them as a list; layer.shapes lists "
        "each shape's steps; spikestore.analysis.to_numpy(layer, steps, pad=True) pads "
        "batch sizes"
    )


def _ranges(steps: list[int], most: int = 4) -> str:
    """``0..9, 12, 20..29`` for sorted or unsorted steps (runs in the order given)."""
    runs: list[list[int]] = []
    for s in steps:
        if runs and s == runs[-1][1] + 1:
            runs[-1][1] = s
        else:
            runs.append([s, s])
    text = [f"{a}..{b}" if b > a else f"{a}" for a, b in runs[:most]]
    return ", ".join(text) + (f", ... ({len(runs) - most} more)" if len(runs) > most else "")


def _record_axis(time_axis: Any, stored: int | None) -> int | None:
    """The record axis a ``neuron(time_axis=...)`` argument names: None for the
    layer's own (``stored``), False for none, True for axis 0, or an int."""
    if time_axis is None:
        return stored
    if isinstance(time_axis, (bool, np.bool_)):
        return 0 if time_axis else None
    return operator.index(time_axis)


def neuron_values(
    fld: Any,
    index: Any,
    sel: np.ndarray,
    axis: int | None,
    dims: tuple[str, ...] | None,
    where: str,
) -> torch.Tensor:
    """One neuron's values at steps ``sel`` of field ``fld`` (``LayerReader.neuron``).

    With a time ``axis``, ``index`` numbers neurons in the record without it (as
    ``spikestore.analysis`` and the plots do) and each step gives its ``T`` values in
    time order, step-major; without, ``index`` is an element of the whole record and
    each step gives one value. ``dims`` names the record's axes (for messages). Reads
    only the chunks holding the neuron (the bytes that pack its bits, for spikes).
    """
    from ..codecs import bit_positions, decode_rows
    from ..format import SPIKE_ENCODING

    lo = int(sel.min())
    idx = fld.index(lo, int(sel.max()) + 1)[sel - lo]
    used = [int(k) for k in np.unique(idx[:, 0])]
    if -1 in used:
        bad = sel[idx[:, 0] < 0]
        raise ValueError(
            f"{where} recorded None at step(s) {bad[:5].tolist()}"
            f"{' ...' if len(bad) > 5 else ''}: they have no values; pass steps= without them"
        )
    segs = fld.segments
    dtype = common_dtype(segs[k]["dtype"] for k in used)
    if axis is not None:
        # Each segment's time length (a Python number, rank 0, takes the tensors' one).
        lengths = {
            k: int(segs[k]["shape"][axis])
            for k in range(len(segs))
            if -len(segs[k]["shape"]) <= axis < len(segs[k]["shape"])
        }
        for k in used:
            if k not in lengths and segs[k]["shape"]:
                raise IndexError(
                    f"{where}: time axis {axis} is not an axis of the records of shape "
                    f"{segs[k]['shape']}; pass time_axis=False to number their elements"
                )
        ts = set(lengths.values())
    per_step = np.ones(len(sel), dtype=np.int64)
    plans: list[tuple[int, np.ndarray, int]] = []
    for k in used:
        pos = np.nonzero(idx[:, 0] == k)[0]
        shape = tuple(int(d) for d in segs[k]["shape"])
        t_len = 1
        if axis is not None:
            if k in lengths:
                t_len = lengths[k]
            elif len(ts) == 1:
                t_len = next(iter(ts))  # a number before the first step: every time point
            elif ts:
                raise ValueError(
                    f"{where}: steps {sel[pos][:5].tolist()} recorded a number, and the "
                    f"layer's records have time lengths {sorted(ts)}: pass steps= of one"
                )
        per_step[pos] = t_len
        plans.append((k, pos, t_len))
    starts = np.concatenate([[0], np.cumsum(per_step)[:-1]])
    out = torch.empty(int(per_step.sum()), dtype=dtype)
    for k, pos, t_len in plans:
        seg = segs[k]
        shape = tuple(int(d) for d in seg["shape"])
        rows = idx[pos, 1]
        if not shape:  # one number (or 0-d tensor) for every element and time point
            col = fld.take(k, rows, ())
            vals = decode_rows(col.reshape(len(rows)), {**seg, "shape": []})
            vals = vals.to(dtype)[:, None].expand(len(rows), t_len)
        else:
            flat = _element_flat(index, shape, axis, dims, where)
            if seg["encoding"] == SPIKE_ENCODING:
                bitpos = bit_positions(flat, shape, seg.get("permute"))
                cols = np.empty((len(rows), len(bitpos)), dtype=np.uint8)
                for c in np.unique(bitpos // 8):
                    got = fld.take(k, rows, (int(c),)).reshape(len(rows), 1)
                    hit = np.nonzero(bitpos // 8 == c)[0]
                    cols[:, hit] = (got >> (7 - bitpos[hit] % 8).astype(np.uint8)) & 1
                vals = torch.from_numpy(cols).to(dtype)
            else:
                nd = np.unravel_index(flat, shape)
                ta = None if axis is None else axis % len(shape)
                rest = tuple(slice(None) if a == ta else int(i[0]) for a, i in enumerate(nd))
                col = fld.take(k, rows, rest)
                dec = decode_rows(col.reshape(-1), {**seg, "shape": []})
                vals = dec.reshape(len(rows), t_len).to(dtype)
        at = torch.from_numpy(starts[pos][:, None] + np.arange(t_len)[None, :])
        out[at] = vals
    return out


def _element_flat(
    index: Any,
    shape: tuple[int, ...],
    axis: int | None,
    dims: tuple[str, ...] | None,
    where: str,
) -> np.ndarray:
    """Flat C-order indices into records of ``shape`` of the neuron ``index`` at every
    time point (one without a time ``axis``), in time order."""
    if axis is None:
        return np.array([np.ravel_multi_index(_element(index, shape, dims, where), shape)])
    a = axis % len(shape)
    rest = shape[:a] + shape[a + 1 :]
    rest_dims = None if dims is None else dims[:a] + dims[a + 1 :]
    at = f"{where} (records {list(shape)}, time axis {a}: neurons number the rest)"
    try:
        nd = _element(index, rest, rest_dims, at)
    except IndexError as exc:
        if isinstance(index, (tuple, list)) and len(index) == len(shape):
            raise IndexError(
                f"{exc}; pass time_axis=False to index the whole record, time axis "
                "included (one value per step)"
            ) from None
        raise
    grid = [np.full(shape[a], i, dtype=np.int64) for i in nd]
    grid.insert(a, np.arange(shape[a], dtype=np.int64))
    return np.asarray(np.ravel_multi_index(tuple(grid), shape), dtype=np.int64)
