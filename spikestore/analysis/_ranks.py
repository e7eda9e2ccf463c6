"""The rule for ranked stores: a function of one layer read over every rank.

Runs in the caller's thread and keeps no state.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._select import _pick_rank, _ranks, step_selection

__all__: list[str] = []


def _over_ranks(layer: Any, steps: Any, rank: int | None, read: Any, *, stack: bool = True) -> Any:
    """``read(layer, steps)`` for a ranked layer, by the module's rule for ranks.

    ``rank=r``: rank ``r``'s own layer, its own steps. ``rank=None``: every rank over
    the steps that every rank has, stacked on a new leading axis (a list when
    ``stack`` is False).
    """
    if rank is not None:
        return read(_pick_rank(layer, rank), steps)
    ranks = _ranks(layer)
    assert ranks is not None
    sel = step_selection(layer, steps)
    out = [read(layer.layer(r), sel) for r in ranks]
    return np.stack(out) if stack else out
