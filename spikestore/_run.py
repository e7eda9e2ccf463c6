"""The run description (attrs, dt, time_unit, marks): opened from the store's root,
checked against what the root's metadata can hold.

Thread ownership: functions here are pure (they read the root they are given, in the
thread that opens the writer).
"""

from __future__ import annotations

import json
from typing import Any, cast

from .format import (
    MAX_METADATA_BYTES,
    METADATA_EXPANSION,
    FormatError,
    check_attrs_depth,
    check_run_attrs,
)

__all__ = ["json_size", "check_run_size", "json_object", "open_run"]


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
    root: Any, where: str, attrs: dict[str, Any], dt: float | None, time_unit: str | None
) -> dict[str, Any]:
    """The run description: the store's (appending) with this writer's changes."""
    run = check_run_attrs(dict(root.attrs), where)
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
    return run
