"""The rule for ranked stores, written once: :func:`per_rank` turns a function that
reads one layer into one that also reads a layer of a ranked store.

The wrapped functions run in the caller's thread; nothing here keeps state.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import numpy as np

from ._select import pick_rank, ranks_of, step_selection

__all__ = ["per_rank", "stacked", "listed"]

P = ParamSpec("P")
R = TypeVar("R")


def stacked(layer: Any, results: list[Any]) -> np.ndarray:
    """The ranks' results on a new leading axis, in ``layer.ranks`` order."""
    return np.stack(results)


def listed(layer: Any, results: list[Any]) -> list[Any]:
    """The ranks' results as a list, in ``layer.ranks`` order (for ragged results)."""
    return results


def per_rank(
    combine: Callable[[Any, list[Any]], Any] = stacked,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate ``read``, a function that reads one layer, with the rule for ranks.

    ``read`` takes the layer first, a ``steps`` parameter (None: every step) and a
    keyword-only ``rank``, which this decorator takes and never passes on: the body
    of ``read`` only ever sees one ordinary layer. Then:

    * an ordinary layer, no ``rank``: ``read`` itself;
    * ``rank=r``: ``read`` of rank ``r``'s layer (``layer.layer(r)``), all its steps,
      its result as it is; ``rank=`` on a layer of an ordinary store is a ValueError;
    * a layer of a ranked store, no ``rank``: ``read`` of each rank's layer over the
      steps every rank has (``steps`` index those), the results joined by
      ``combine(layer, results)``: :func:`stacked` on a new leading axis (the
      default), :func:`listed` for ragged results, or a function of the caller's.

    Examples
    --------
    >>> @per_rank(listed)                                         # doctest: +SKIP
    ... def events(layer, steps=None, *, rank=None): ...
    """

    def decorate(read: Callable[P, R]) -> Callable[P, R]:
        sig = inspect.signature(read)
        params = sig.parameters
        first = next(iter(params))
        if "steps" not in params or params.get("rank", None) is None or (
            params["rank"].kind is not inspect.Parameter.KEYWORD_ONLY
        ):
            raise TypeError(f"{read.__name__} needs a steps parameter and a keyword-only rank")

        @functools.wraps(read)
        def dispatch(*args: P.args, **kwargs: P.kwargs) -> R:
            rank: Any = kwargs.pop("rank", None)
            layer: Any = args[0] if args else kwargs[first]
            ranks = ranks_of(layer) if rank is None else None
            if rank is None and ranks is None:
                return read(*args, **kwargs)
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            if rank is not None:
                bound.arguments[first] = pick_rank(layer, rank)
                return read(*bound.args, **bound.kwargs)
            assert ranks is not None
            bound.arguments["steps"] = step_selection(layer, bound.arguments["steps"])
            results = []
            for r in ranks:
                bound.arguments[first] = layer.layer(r)
                results.append(read(*bound.args, **bound.kwargs))
            joined: R = combine(layer, results)
            return joined

        return dispatch

    return decorate
