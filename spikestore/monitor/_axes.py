"""A monitored module's time axis and its records' axis names.

SpikingJelly's ``step_mode``, Norse's ``SNN``/``SNNCell`` classes and PyTorch's
batch-first convention say which axis of a record is time and what the others are
called; a monitor passes both to the writer with a layer's first record. Pure
functions: any thread.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .._records import flatten
from ..errors import RecordError

__all__ = ["default_dims", "module_time_axis", "record_dims"]


def module_time_axis(module: nn.Module) -> int | None:
    """The time axis of a module's records as its library defines it: 0 for
    SpikingJelly modules in multi-step mode (``step_mode == "m"``) and for Norse's
    ``SNN`` modules (``LIF``, ... take ``[T, B, ...]``), None for single-step
    modules (SpikingJelly ``step_mode == "s"``, Norse's ``*Cell``, snnTorch) and for
    any other module."""
    if getattr(module, "step_mode", None) == "m":
        return 0
    for cls in type(module).__mro__:
        if cls.__module__.startswith("norse."):
            if cls.__name__ == "SNNCell":
                return None
            if cls.__name__ == "SNN":
                return 0
    return None


#: Names of the axes after time and batch, by how many there are.
_FEATURE_DIMS = {0: (), 1: ("neuron",), 2: ("channel", "x"), 3: ("channel", "y", "x")}
_FEATURE_DIMS[4] = ("channel", "z", "y", "x")


def default_dims(ndim: int, time_axis: int | None) -> tuple[str, ...] | None:
    """Axis names of a batch-first record of rank ``ndim`` (PyTorch's convention):
    ``("batch", "neuron")``, ``("batch", "channel", "y", "x")``, and with ``time``
    first when ``time_axis == 0``; None when the rank does not say (a 1-D record,
    a time axis elsewhere, more than four feature axes)."""
    lead: tuple[str, ...] = ("time", "batch") if time_axis == 0 else ("batch",)
    if time_axis not in (None, 0):
        return None
    rest = _FEATURE_DIMS.get(ndim - len(lead))
    return None if rest is None or ndim < 2 else lead + rest


def _leaf_ranks(value: Any) -> list[int | None] | None:
    """The rank of each field of a record, as the writer flattens it (None for a field
    that is not a tensor); None for a record the writer will refuse (its error says
    why, naming the monitor, layer and step)."""
    try:
        _, leaves, _ = flatten(value)
    except (TypeError, RecordError):
        return None
    return [None if leaf.tensor is None else leaf.tensor.dim() for leaf in leaves]


def record_dims(value: Any, time_axis: int | None) -> Any:
    """The axis names of a record, by :func:`default_dims` of each field's rank: a tuple
    for a one-field record, a list (one entry a field, None for one not named) for
    several; None for a record the writer will refuse or whose rank does not say."""
    ranks = _leaf_ranks(value)
    if ranks is None:
        return None
    if len(ranks) == 1:
        return default_dims(ranks[0], time_axis) if ranks[0] is not None else None
    # Each field by its rank: the time axis belongs to fields shaped like the first
    # (Norse's (z, state): z is [T, B, N], the state [B, N]).
    first = next((r for r in ranks if r is not None), None)
    return [
        None if r is None else default_dims(r, time_axis if r == first else None) for r in ranks
    ]
