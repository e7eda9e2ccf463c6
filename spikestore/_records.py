"""Records in the caller's thread: flattening into fields, validation, and each layer's schema.

A *record* is what a hook produced: a tensor, a number, ``None``, or a tuple or
list of those; each element is a *field*. Everything that can make a record
unstorable is checked here, in the caller's thread, so that no value the writer
thread cannot encode is ever queued (:class:`~spikestore.RecordError` at once,
nothing recorded before affected).

Every limit of the format (``spikestore.format``: axes, elements, fields, segments,
the time axis) is checked here with the reader's own check functions, run on the
metadata the writer would write, so that the writer never stores what its reader
refuses.

A layer's optional metadata (``dims``, ``units``: :func:`layer_extra`) is checked
against its first record, and completed for a layer an older writer made without it
(:func:`settle_extra`).

Thread ownership: functions here are pure (:func:`_layout_ok` caches its answers,
behind ``functools.lru_cache``'s own lock). A :class:`Schema` belongs to its
layer's entry in the writer's registry and is read and changed only under that
entry's lock (see ``spikestore._worker``); :meth:`Schema.check` never changes it,
:meth:`Schema.adopt` does, once the record is accepted.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import operator
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from . import format as fmt
from .codecs import dtype_name
from .errors import RecordError
from .format import (
    MAX_FIELDS,
    MAX_NODE_METADATA_BYTES,
    MAX_TREE_DEPTH,
    METADATA_EXPANSION,
    RAW_ENCODING,
    SPIKE_ENCODING,
    FormatError,
    check_layer_attrs,
    check_segment,
    check_time_axis,
    layer_attrs,
    segment_descriptor,
)

if TYPE_CHECKING:
    from ._staging import Staged

__all__ = [
    "Leaf",
    "Schema",
    "FieldSpec",
    "flatten",
    "SINGLE",
    "time_axis_arg",
    "check_time_axis_fits",
    "check_layer_meta",
    "layer_extra",
    "settle_extra",
    "segment_keys",
]

#: Structures whose records have one field; they may follow each other in a layer.
SINGLE = ("tensor", "number", "none")
_INT64 = (-(2**63), 2**63 - 1)


@dataclass(frozen=True)
class Leaf:
    """One field of a record: a detached strided tensor (or None) and whether it was
    a Python number."""

    tensor: torch.Tensor | None
    scalar: bool = False

    @property
    def kind(self) -> str:
        return "number" if self.scalar else "tensor"


def _check_tensor(t: torch.Tensor, field: int) -> None:
    """Refuse tensors the writer cannot store, with what to do instead."""
    if t.is_nested:
        raise RecordError("nested tensors cannot be stored; record each tensor of it instead")
    if t.layout != torch.strided:
        raise RecordError(f"{t.layout} tensors cannot be stored; record t.to_dense() instead")
    if t.device.type == "meta":
        raise RecordError("meta tensors have no values to store")
    if t.is_quantized:
        raise RecordError("quantized tensors cannot be stored; record t.dequantize() instead")
    try:
        name = dtype_name(t.dtype)
    except TypeError as exc:
        raise RecordError(str(exc)) from None
    shape = tuple(t.shape)
    if not _layout_ok(name, shape):
        # Checked before the tensor is copied: an expanded tensor of 2**41 elements
        # takes no memory until then.
        try:
            check_segment(segment_descriptor(0, RAW_ENCODING, name, shape), f"field {field}")
        except FormatError as exc:
            raise RecordError(str(exc)) from None


@functools.lru_cache(maxsize=4096)
def _layout_ok(dtype: str, shape: tuple[int, ...]) -> bool:
    """Whether the reader takes a segment of records of ``dtype`` and ``shape``
    (cached: a record's layout is checked once, not at every step)."""
    try:
        check_segment(segment_descriptor(0, RAW_ENCODING, dtype, shape), "")
    except FormatError:
        return False
    return True


def _leaf(value: Any, field: int = 0) -> Leaf:
    if value is None:
        return Leaf(None)
    if isinstance(value, torch.Tensor):
        _check_tensor(value, field)
        return Leaf(value.detach())
    if isinstance(value, (np.bool_, np.integer, np.floating)):
        value = value.item()
    if isinstance(value, bool):
        return Leaf(torch.tensor(value, dtype=torch.bool), True)
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise RecordError(f"the integer {value} does not fit in int64")
        return Leaf(torch.tensor(value, dtype=torch.int64), True)
    if isinstance(value, float):
        return Leaf(torch.tensor(value, dtype=torch.float64), True)
    raise TypeError(f"unsupported value of type {type(value).__name__}")


def _is_namedtuple(value: Any) -> bool:
    return isinstance(value, tuple) and isinstance(getattr(value, "_fields", None), tuple)


def _nest(value: Any, leaves: list[Leaf], depth: int) -> Any:
    """The tree node of ``value`` (see ``spikestore.format.check_tree``), its leaves
    appended to ``leaves``."""
    if depth > MAX_TREE_DEPTH:
        raise RecordError(f"records nested deeper than {MAX_TREE_DEPTH} cannot be stored")
    if _is_namedtuple(value):
        keys = [str(k) for k in value._fields]
        items = [_nest(v, leaves, depth + 1) for v in value]
        return {"type": "namedtuple", "name": type(value).__name__, "keys": keys, "items": items}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fs = dataclasses.fields(value)
        items = [_nest(getattr(value, f.name), leaves, depth + 1) for f in fs]
        return {
            "type": "namedtuple",
            "name": type(value).__name__,
            "keys": [f.name for f in fs],
            "items": items,
        }
    if isinstance(value, dict):
        if not all(isinstance(k, str) and k for k in value):
            raise RecordError("only dicts with non-empty str keys can be stored")
        items = [_nest(v, leaves, depth + 1) for v in value.values()]
        return {"type": "dict", "name": "dict", "keys": list(value), "items": items}
    if isinstance(value, (tuple, list)):
        items = [_nest(v, leaves, depth + 1) for v in value]
        return {"type": type(value).__name__, "items": items}
    if len(leaves) == MAX_FIELDS:
        # Before the leaf is taken: the reader refuses a layer of MAX_FIELDS + 1 fields.
        raise RecordError(f"a record of more than {MAX_FIELDS} fields cannot be stored")
    leaves.append(_leaf(value, len(leaves)))
    return len(leaves) - 1


def flatten(value: Any) -> tuple[str, list[Leaf], dict[str, Any] | None]:
    """A record's structure name, its fields, and its tree (None for a flat tuple or
    list; see ``spikestore.format.check_tree``).

    Tuples and lists of tensors, numbers and ``None`` are flat; namedtuples (Norse's
    states), dataclasses, dicts with ``str`` keys and nested tuples or lists are
    recorded field by field, with the tree that puts them back together.

    Raises ``TypeError`` for unsupported types and :class:`RecordError` for
    tensors or numbers that cannot be stored (the caller adds where).
    """
    if type(value) is torch.Tensor:  # the common record, checked first: no other test
        _check_tensor(value, 0)
        # detach() only where autograd tracks it (a new tensor object a call otherwise).
        return "tensor", [Leaf(value.detach() if value.requires_grad else value)], None
    nested = (
        _is_namedtuple(value)
        or isinstance(value, dict)
        or (dataclasses.is_dataclass(value) and not isinstance(value, type))
    )
    if nested or isinstance(value, (tuple, list)):
        leaves: list[Leaf] = []
        tree = _nest(value, leaves, 0)
        if not leaves:
            raise RecordError(f"an empty {type(value).__name__} has no field to record")
        structure = "list" if isinstance(value, list) else "tuple"
        flat = not nested and all(isinstance(i, int) for i in tree["items"])
        return structure, leaves, None if flat else tree
    leaf = _leaf(value)
    if leaf.tensor is None:
        return "none", [leaf], None
    return leaf.kind, [leaf], None


def time_axis_arg(time_axis: Any, where: str) -> int | None:
    """The ``time_axis`` argument of ``append`` as the format stores it (an int in
    ``[-MAX_RANK, MAX_RANK)``, or None); :class:`RecordError` starting with ``where``
    for anything else (a str, a float, a bool). NumPy integers are taken as ints."""
    if time_axis is None:
        return None
    try:
        if isinstance(time_axis, (bool, np.bool_)):
            raise TypeError
        axis = operator.index(time_axis)
    except TypeError:
        raise RecordError(
            f"{where}: time_axis must be an int (an axis of the record) or None, got "
            f"{str(time_axis)[:100]!r} ({type(time_axis).__name__})"
        ) from None
    try:
        return check_time_axis(axis, where)
    except FormatError as exc:
        raise RecordError(str(exc)) from None


def check_time_axis_fits(time_axis: int | None, leaves: list[Leaf]) -> None:
    """:class:`RecordError` unless ``time_axis`` is an axis of the record's first field
    (the time axis belongs to records of its rank: see ``spikestore.analysis``). A
    first field without axes (None, a number, a 0-d tensor) says nothing: a neuron's
    ``v`` is the number 0.0 before its first multi-step call."""
    if time_axis is None or not leaves:
        return
    t = leaves[0].tensor
    if t is None or t.dim() == 0:
        return
    if not -t.dim() <= time_axis < t.dim():
        raise RecordError(
            f"time_axis={time_axis} is not an axis of the record (field 0 has shape "
            f"{tuple(t.shape)}: axes {-t.dim()} to {t.dim() - 1})"
        )


def check_layer_meta(
    name: str,
    structure: str,
    fields: int,
    time_axis: int | None,
    extra: dict[str, Any] | None,
    where: str,
) -> None:
    """Run the reader's check (:func:`~spikestore.format.check_layer_attrs`) on the
    metadata the writer will write for a layer; :class:`RecordError` with its message
    if the reader would refuse it (too many fields, dims, a bad time axis or tree)."""
    meta = layer_attrs(name, structure, fields, time_axis, extra={**(extra or {}), "order": 0})
    try:
        check_layer_attrs(meta, where)
    except FormatError as exc:
        raise RecordError(str(exc)) from None
    # A layer's zarr.json is bounded too (readers refuse a longer one unread): huge
    # dims= or units= would fail the writer thread and every step waiting with them.
    size = len(json.dumps(meta, separators=(",", ":"))) * METADATA_EXPANSION
    if size > MAX_NODE_METADATA_BYTES:
        raise RecordError(
            f"{where}: the layer's metadata (dims, units, field names) would take up to "
            f"{size:,} bytes, more than a layer's zarr.json may hold "
            f"({MAX_NODE_METADATA_BYTES:,}); give shorter dims and units"
        )


def layer_extra(
    leaves: list[Any], tree: dict[str, Any] | None, dims: Any, units: Any, where: str
) -> dict[str, Any] | None:
    """A new layer's optional metadata (format 1.5), checked against its first record."""
    extra: dict[str, Any] = {}
    if tree is not None:
        extra["tree"] = tree
    if dims is not None:
        per_field = not isinstance(dims, str) and all(
            d is None or (not isinstance(d, str) and isinstance(d, (list, tuple))) for d in dims
        )
        if per_field:
            if len(dims) != len(leaves):
                raise RecordError(
                    f"cannot record {where}: dims has {len(dims)} entries for a record of "
                    f"{len(leaves)} fields"
                )
            names = [_check_dims(d, leaf, where) for d, leaf in zip(dims, leaves, strict=True)]
        else:
            first = next((i for i, leaf in enumerate(leaves) if leaf.tensor is not None), 0)
            names = [None] * len(leaves)
            names[first] = _check_dims(dims, leaves[first], where)
        head = next((d for d in names if d is not None), None)
        if head is not None:
            extra["dims"] = head
            if any(d is not None and d != head for d in names):
                extra["field_dims"] = names
    if units is not None:
        if not isinstance(units, str):
            raise RecordError(f"cannot record {where}: units must be a str, got {units!r}")
        extra["units"] = units
    return extra or None


def settle_extra(
    stored: dict[str, Any] | None,
    given: dict[str, Any] | None,
    time_axis: int | None,
    where: str,
) -> dict[str, Any] | None:
    """A stored layer's metadata with the ``dims`` and ``units`` it lacks taken from
    the first record this writer appends to it (a layer an older writer made without
    them); those it has are kept, with a warning where the new ones differ. Dims for
    a layer with a time axis must name that axis ``time`` (a monitor's automatic dims
    for a module it takes as single-step would call it ``batch``)."""
    extra = dict(stored or {})
    given = dict(given or {})
    dims = given.get("dims")
    if (
        "dims" not in extra
        and dims is not None
        and time_axis is not None
        and (time_axis >= len(dims) or dims[time_axis] != "time")
    ):
        warnings.warn(
            f"{where}: dims={tuple(dims)!r} do not name the layer's time axis "
            f"{time_axis} 'time'; the layer keeps no dims",
            stacklevel=3,
        )
        given.pop("dims")
        given.pop("field_dims", None)
    groups: tuple[tuple[str, ...], ...] = (("dims", "field_dims"), ("units",))
    for keys in groups:
        new = {k: given[k] for k in keys if k in given}
        old = {k: extra[k] for k in keys if k in extra}
        if not new or new == old:
            continue
        if keys[0] not in extra:
            extra.update(new)
        else:
            warnings.warn(
                f"{where}: the layer keeps its stored {keys[0]} {extra[keys[0]]!r}; "
                f"{keys[0]}={given.get(keys[0])!r} is ignored",
                stacklevel=3,
            )
    return extra or None


def _check_dims(dims: Any, leaf: Any, where: str) -> list[str] | None:
    """A field's axis names, checked against its first value (None: not named)."""
    if dims is None:
        return None
    if isinstance(dims, str) or not all(isinstance(d, str) and d for d in dims):
        raise RecordError(f"cannot record {where}: dims must be a sequence of names")
    dims = list(dims)
    if len(set(dims)) != len(dims):
        raise RecordError(f"cannot record {where}: dims {dims} repeat a name")
    t = leaf.tensor
    if t is not None and t.dim() != len(dims):
        raise RecordError(
            f"cannot record {where}: dims {dims} name {len(dims)} axes, the record has "
            f"{t.dim()} (shape {tuple(t.shape)})"
        )
    return dims


def segment_keys(staged: Staged) -> tuple[tuple[Any, ...], ...]:
    """The keys (``spikestore.codecs.Encoded.key``) of the segments a staged field may
    go to: one, or on a GPU, where the spike test ends on the writer thread, both the
    spike segment and the raw one."""
    name = dtype_name(staged.dtype)
    raw = (RAW_ENCODING, name, staged.shape, staged.scalar, None)
    if staged.packed is None:
        return (raw,)
    spikes = (SPIKE_ENCODING, name, staged.shape, False, staged.permute)
    return (spikes,) if staged.flag is None else (spikes, raw)


_NO_KEYS: frozenset[tuple[Any, ...]] = frozenset()


@dataclass
class FieldSpec:
    """What a field holds: its kind and rank, fixed by its first non-None value, and
    the dtype of its latest record (a dtype change starts a segment)."""

    kind: str | None = None  # "tensor" or "number"
    dtype: str | None = None
    ndim: int | None = None


@dataclass
class Schema:
    """A layer's record structure and each field's kind, rank and latest dtype."""

    structure: str | None = None  # None until the first record is accepted
    specs: list[FieldSpec] = field(default_factory=list)
    tree: dict[str, Any] | None = None  # how nested records put their fields together
    #: Per field, the keys of the segments its records went to (or, from a GPU, may
    #: have gone to): a field holds at most ``MAX_SEGMENTS``.
    segments: list[set[tuple[Any, ...]]] = field(default_factory=list)

    def check(
        self, structure: str, leaves: list[Leaf], where: object, tree: dict[str, Any] | None = None
    ) -> list[FieldSpec]:
        """The specs the layer would have after this record; ``RecordError`` if it
        does not fit. Changes nothing."""
        if self.structure is None:
            return [self._spec(leaf) for leaf in leaves]
        if tree != self.tree and structure == self.structure:
            raise RecordError(
                f"cannot record {where}: this layer records {_shape_of(self.tree, structure)}, "
                f"got {_shape_of(tree, structure)}"
            )
        # A single value may be None, a number or a tensor from step to step (a neuron's
        # ``v`` is the float 0.0 before its first step, then a tensor); each kind gets
        # its own segment, and the reader returns each step as it was recorded.
        single = structure in SINGLE and self.structure in SINGLE
        if (structure != self.structure and not single) or len(leaves) != len(self.specs):
            raise RecordError(
                f"cannot record {where}: this layer records {self.structure} values with "
                f"{len(self.specs)} field(s), got {structure} with {len(leaves)}"
            )
        out = []
        for i, (leaf, spec) in enumerate(zip(leaves, self.specs, strict=True)):
            t = leaf.tensor
            if t is None or spec.dtype is None:
                out.append(self._spec(leaf) if spec.dtype is None else spec)
                continue
            if single and leaf.kind != spec.kind:
                out.append(spec)
                continue
            name = dtype_name(t.dtype)
            # A dtype change (an eval pass under autocast, ``net.double()``) is like a
            # shape change: the record goes to a segment of its own dtype. The rank is
            # what the layer's dims and time axis describe, and it stays.
            if (leaf.kind, t.dim()) != (spec.kind, spec.ndim):
                raise RecordError(
                    f"cannot record {where} (field {i}): the layer holds {spec.kind}s of rank "
                    f"{spec.ndim} (dtype {spec.dtype}), got a {leaf.kind} of rank {t.dim()} "
                    f"(dtype {name}, shape {tuple(t.shape)}); record it into a new layer"
                )
            out.append(spec if name == spec.dtype else FieldSpec(spec.kind, name, spec.ndim))
        return out

    def new_segments(
        self, staged: list[Staged | None], where: object
    ) -> list[tuple[int, tuple[Any, ...]]]:
        """``(field, key)`` of the segments this record adds to the layer's fields;
        :class:`RecordError` if a field would have more than ``MAX_SEGMENTS`` (a
        record whose shape changes at every step). Changes nothing."""
        limit = fmt.MAX_SEGMENTS
        segments = self.segments
        new: list[tuple[int, tuple[Any, ...]]] = []
        for i, st in enumerate(staged):
            if st is None:
                continue
            known = segments[i] if i < len(segments) else _NO_KEYS
            for key in segment_keys(st):
                if key in known:
                    continue
                if len(known) + sum(1 for j, _ in new if j == i) >= limit:
                    raise RecordError(
                        f"cannot record {where} (field {i}): the field holds {len(known)} "
                        f"segments, one per distinct dtype and shape of its records, and a "
                        f"field may hold {limit}; record shape {st.shape} "
                        f"({dtype_name(st.dtype)}) is one more (pad records to a few shapes, "
                        "or record into a new layer)"
                    )
                new.append((i, key))
        return new

    def adopt(
        self,
        structure: str,
        specs: list[FieldSpec],
        tree: dict[str, Any] | None = None,
        segments: Sequence[tuple[int, tuple[Any, ...]]] = (),
    ) -> None:
        """Take the result of :meth:`check` (and :meth:`new_segments`) once the record
        is accepted."""
        if self.structure is None:
            self.structure = structure
            self.tree = tree
        self.specs = specs
        while len(self.segments) < len(specs):
            self.segments.append(set())
        for i, key in segments:
            self.segments[i].add(key)

    @staticmethod
    def _spec(leaf: Leaf) -> FieldSpec:
        t = leaf.tensor
        if t is None:
            return FieldSpec()
        return FieldSpec(leaf.kind, dtype_name(t.dtype), t.dim())


def _shape_of(tree: dict[str, Any] | None, structure: str) -> str:
    """A record tree as a reader would write it: ``tuple(0, LIFState(v=1, i=2))``."""
    if tree is None:
        return f"flat {structure}s"

    def text(node: Any) -> str:
        if isinstance(node, int):
            return "x"
        inner = [text(i) for i in node["items"]]
        if node.get("keys"):
            inner = [f"{k}={v}" for k, v in zip(node["keys"], inner, strict=True)]
        name = node.get("name") or node["type"]
        return f"{name}({', '.join(inner)})"

    return text(tree)
