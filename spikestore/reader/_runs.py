"""Runs (format 1.7): each opening of a writer, ``mode="a"`` included, with its own
attributes, and the step at which it began on each layer it recorded; per step of a
layer, the run that recorded it and its *call*, its place in that run.

Layers of one monitor record once per forward call, so within a run their steps of
one call share a call number even after an interrupted run left them out of step
(``KeyboardInterrupt`` between two layers' hooks): ``(run, call)`` aligns them, and
records an interrupted call never reached are absent, not shifted.

Thread ownership: pure functions and frozen values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Run", "runs_of", "layer_runs", "mark_resets"]


@dataclass(frozen=True)
class Run:
    """One opening of a writer: ``store.runs[i]``.

    ``attrs`` are this run's own attributes (``StoreWriter(attrs=...)`` and
    ``set_attrs``), never changed by a later run; ``started`` is when the writer
    opened (ISO 8601, UTC; None for the steps a writer before format 1.7 recorded);
    ``first`` maps ``monitor -> layer -> step``: where this run began on each layer
    it recorded.
    """

    index: int
    attrs: dict[str, Any]
    started: str | None = None
    created_by: str | None = None
    marks_from: int = 0
    first: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    def start(self, monitor: str, layer: str) -> int | None:
        """The step at which this run began on ``monitor``/``layer``, or None if it
        recorded nothing there."""
        return self.first.get(monitor, {}).get(layer)

    def __repr__(self) -> str:
        layers = sum(len(v) for v in self.first.values())
        return (
            f"<Run {self.index} started {self.started or 'before runs were recorded'}, "
            f"{layers} layers, attrs {self.attrs}>"
        )


def runs_of(run: dict[str, Any]) -> tuple[Run, ...]:
    """The runs of a checked run description (``format.check_run_attrs``); a store
    written before format 1.7 is one run, with the store's attrs."""
    entries = run.get("runs")
    if entries is None:
        return (Run(0, run["attrs"]),)
    return tuple(
        Run(i, e["attrs"], e.get("started"), e.get("created_by"), e["marks_from"], e["first"])
        for i, e in enumerate(entries)
    )


def layer_runs(runs: tuple[Run, ...], monitor: str, layer: str, steps: int) -> np.ndarray:
    """``(run, call)`` of each of a layer's first ``steps`` steps: a ``(2, steps)``
    int64 array. A step belongs to the latest run that began on the layer at or
    before it (run 0 for steps before every listed start)."""
    out = np.zeros((2, steps), dtype=np.int64)
    begins = np.zeros(steps, dtype=np.int64)
    for r in runs:
        s = r.start(monitor, layer)
        if s is not None and s < steps:
            out[0, s:] = r.index
            begins[s:] = s
    out[1] = np.arange(steps, dtype=np.int64) - begins
    return out


def mark_resets(runs: tuple[Run, ...], monitor: str, layer: str) -> dict[int, int]:
    """Where mark values end on a layer, by the index of the mark before which they
    end: a run's steps start with no mark values (its marks are its own), so before
    run ``r``'s first mark, values stop at the step where ``r`` began on the layer
    (of runs without marks of their own, the first)."""
    out: dict[int, int] = {}
    for r in runs[1:]:
        s = r.start(monitor, layer)
        if s is not None:
            out[r.marks_from] = min(s, out.get(r.marks_from, s))
    return out
