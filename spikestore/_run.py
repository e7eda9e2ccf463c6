"""The run description (attrs, dt, time_unit, marks, runs): opened from the store's root,
checked against what the root's metadata can hold, and changed by a writer's
``set_attrs`` and ``mark`` (:class:`RunDescription`).

Thread ownership: the functions are pure (they read the root they are given, in the
thread that opens the writer). A :class:`RunDescription` is called from any caller
thread and keeps its state under its own lock; the stored copy of the run, with the
marks' list, is the writer thread's (``spikestore._commit.Sink.run``), changed only by
the changes this object posts to it, in the order it makes them.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from ._version import __version__
from .format import (
    MAX_METADATA_BYTES,
    METADATA_EXPANSION,
    FormatError,
    check_attrs_depth,
    check_run_attrs,
)

if TYPE_CHECKING:
    from ._worker import Registry

__all__ = ["RunDescription", "json_size", "check_run_size", "json_object", "open_run"]

_INT64 = (-(2**63), 2**63 - 1)


def json_size(obj: Any) -> int:
    return len(json.dumps(obj, separators=(",", ":")))


def check_run_size(attrs_bytes: int, marks_bytes: int, what: str) -> None:
    """Refuse, at the call, a run description the root's ``zarr.json`` could not hold
    (readers refuse one longer than ``format.MAX_METADATA_BYTES``)."""
    need = (attrs_bytes + marks_bytes) * METADATA_EXPANSION
    if need > MAX_METADATA_BYTES:
        raise ValueError(
            f"{what}: the run description (attrs {attrs_bytes:,} bytes and marks "
            f"{marks_bytes:,} bytes of compact JSON, up to {need / 2**20:.0f} MiB as Zarr "
            f"writes it) would not fit in the store's root metadata (at most "
            f"{MAX_METADATA_BYTES >> 20} MiB); marks are for epochs and phases, attrs for "
            "settings: record per-step values with append"
        )


def json_object(obj: Any, what: str) -> dict[str, Any]:
    """``obj`` as a JSON object (a copy), or a clear error; no deeper than the reader
    takes (``spikestore.format.MAX_ATTRS_DEPTH``)."""
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise TypeError(f"{what} must be a dict with str keys, got {type(obj).__name__}")
    try:
        # Before json.dumps, which recurses (a RecursionError a few hundred levels down).
        check_attrs_depth(obj, what)
    except FormatError as exc:
        raise ValueError(f"{exc} (or it holds itself); a reader would ignore them") from None
    try:
        out = json.loads(json.dumps(obj, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{what} must hold JSON values only (str, numbers, lists, dicts): {exc}"
        ) from None
    return cast(dict[str, Any], out)


def open_run(
    root: Any,
    where: str,
    attrs: dict[str, Any],
    dt: float | None,
    time_unit: str | None,
    has_records: Callable[[], bool] = lambda: False,
) -> dict[str, Any]:
    """The run description: the store's (appending) with this writer's changes and a
    new run (format 1.7) for this opening; refused (ValueError) if the root's metadata
    could not hold it. ``has_records`` says whether the store holds layers already
    (asked only of a store written before runs, whose steps then become run 0)."""
    run = check_run_attrs(dict(root.attrs), where)
    runs = run.get("runs")
    if runs is None:
        runs = []
        if run["attrs"] or run["marks"]["marks"] or has_records():
            runs.append(_run_entry(dict(run["attrs"]), None, 0))
    if dt is not None and time_unit is None:
        time_unit = run["time_unit"] or "s"
    for name, new in (("dt", dt), ("time_unit", time_unit)):
        old = run[name]
        if new is not None and old is not None and new != old:
            raise ValueError(
                f"{where} was recorded with {name}={old!r}; appending with {name}={new!r} "
                "would mislabel its steps (record into a new store)"
            )
        if new is not None:
            run[name] = float(new) if name == "dt" else new
    run["attrs"].update(attrs)
    runs.append(_run_entry(dict(attrs), _now(), len(run["marks"]["marks"])))
    run["runs"] = runs
    check_run_size(json_size(run["attrs"]) + json_size(runs), json_size(run["marks"]), "attrs")
    return run


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _run_entry(attrs: dict[str, Any], started: str | None, marks_from: int) -> dict[str, Any]:
    """A run of ``check_runs``: its own attrs, when it started, the index of its first
    mark, and (filled by the writer thread) each layer's first step."""
    return {
        "attrs": attrs,
        "started": started,
        "created_by": f"spikestore {__version__}" if started is not None else None,
        "marks_from": marks_from,
        "first": {},
    }


class RunDescription:
    """A writer's run description, as callers read and change it.

    ``run`` is what :func:`open_run` returned (its size already checked).
    ``post(**change)`` hands a change to the writer thread's copy
    (``Sink.change_run``); ``registry`` gives the layers' step counts, and
    ``stored_layers()`` the layers already in the store (read on the writer thread).
    """

    def __init__(
        self,
        run: dict[str, Any],
        registry: Registry,
        post: Callable[..., None],
        stored_layers: Callable[[], list[tuple[str, str]]],
    ) -> None:
        self._lock = threading.Lock()  # guards everything below (any caller thread)
        self.dt: float | None = run["dt"]
        self.time_unit: str | None = run["time_unit"]
        # This run's own attributes, and every run's merged (a later run's value winning).
        self._attrs: dict[str, Any] = run["runs"][-1]["attrs"]
        self._merged: dict[str, Any] = run["attrs"]
        self._runs_bytes = json_size(run["runs"])
        self._attrs_bytes = json_size(run["attrs"]) + self._runs_bytes
        self._marks_bytes = json_size(run["marks"])
        self._registry = registry
        self._post = post
        self._stored_layers = stored_layers
        self._mark_layers: list[list[str]] = run["marks"]["layers"]
        # Where the marks so far start on each marked layer (by its index): a mark
        # lists only the layers whose step count changed since.
        self._last_at: dict[int, int] = {}
        for m in run["marks"]["marks"]:
            self._last_at.update((int(k), int(v)) for k, v in m["at"].items())
        self._marked_layers: dict[tuple[str, str], int] | None = None
        self._stored_steps: dict[tuple[str, str], int] = {}

    @property
    def attrs(self) -> dict[str, Any]:
        """This run's attributes (a copy)."""
        with self._lock:
            return cast(dict[str, Any], json.loads(json.dumps(self._attrs)))

    def set_attrs(self, attrs: dict[str, Any]) -> None:
        """Add or replace run attributes (see ``StoreWriter.set_attrs``)."""
        new = json_object(attrs, "attrs")
        with self._lock:
            own = json_size({**self._attrs, **new})
            runs = self._runs_bytes - json_size(self._attrs) + own
            size = json_size({**self._merged, **new}) + runs
            check_run_size(size, self._marks_bytes, "set_attrs")
            self._attrs_bytes, self._runs_bytes = size, runs
            self._attrs.update(new)
            self._merged.update(new)
            self._post(attrs=new)

    def mark(self, values: dict[str, Any]) -> None:
        """Mark every later step of every layer with ``values`` (see
        ``StoreWriter.mark``)."""
        if not values:
            raise TypeError("mark() needs at least one key=value")
        clean = {}
        for k, v in values.items():
            if hasattr(v, "item") and callable(v.item) and getattr(v, "ndim", 0) == 0:
                v = v.item()
            if v is not None and not isinstance(v, (str, int, float, bool)):
                raise TypeError(
                    f"mark {k}={v!r}: a mark's value must be a str, int, float, bool or None"
                )
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"mark {k}={v!r}: a mark's value must be finite")
            if isinstance(v, int) and not isinstance(v, bool) and not _INT64[0] <= v <= _INT64[1]:
                # JSON holds any int, but Python writes none past 4,300 digits, and
                # tools that read JSON numbers as doubles or int64 would mangle it.
                raise ValueError(
                    f"mark {k}: a mark's int must fit in int64, got one of {v.bit_length()} bits"
                )
            clean[k] = v
        with self._lock:
            # Checked with the marks so far: METADATA_EXPANSION's margin (the real factor
            # is about 2.2) leaves megabytes for the mark being made.
            check_run_size(self._attrs_bytes, self._marks_bytes + json_size(clean), "mark")
            layers = self._mark_layers
            before = len(layers)
            known = self._marked_layers
            if known is None:
                # Layers of the store before this writer (mode="a") are marked too.
                known = self._marked_layers = {(lay[0], lay[1]): i for i, lay in enumerate(layers)}
                for key in self._stored_layers():
                    if key not in known:
                        known[key] = len(layers)
                        layers.append(list(key))
            for key in self._registry.keys():
                if key not in known:
                    known[key] = len(layers)
                    layers.append(list(key))
            at: dict[str, int] = {}
            stored = self._stored_steps
            last = self._last_at
            for key, i in known.items():
                n = self._registry.known_steps(*key)
                if n is None:  # not recorded by this writer: its stored steps stay as they are
                    n = stored.get(key)
                    if n is None:
                        n = stored[key] = self._registry.peek(*key)
                if n != last.get(i, 0):  # unchanged layers inherit the previous start
                    at[str(i)] = last[i] = n
            change = ([list(k) for k in layers[before:]], {"values": clean, "at": at})
            self._marks_bytes += json_size(change)
            self._post(mark=change)
