"""A writer's arguments, checked in one place: :class:`WriterOptions`.

Every keyword of :class:`~spikestore.StoreWriter` that is a setting (codecs, bounds,
intervals, the mode, the run's attrs, dt and time unit) is checked here, before
anything is opened, with the errors the constructor documents; the modules that do
the work then take them as they are.

Thread ownership: a :class:`WriterOptions` is frozen, made by the thread that opens
the writer and read by any thread.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from ._run import json_object
from .codecs import COMPRESSORS, LEVELS
from .storage._lease import check_timeout as check_lease_timeout

if TYPE_CHECKING:
    from .storage import Mode

__all__ = ["MAX_FLUSH_INTERVAL", "WriterOptions"]

#: The longest ``flush_interval`` (one day): records wait at most that long for their
#: commit. Far below ``threading.TIMEOUT_MAX``, past which the writer thread's timed
#: waits fail.
MAX_FLUSH_INTERVAL = 86400.0


@dataclass(frozen=True)
class WriterOptions:
    """A writer's settings, checked (see :class:`~spikestore.StoreWriter` for each)."""

    path: str | os.PathLike[str] | None
    #: ``"w"``, ``"w-"`` or ``"a"`` (``overwrite=True`` and None resolved).
    mode: Mode
    store: Any
    storage_options: dict[str, Any] | None
    compressor: str | None
    level: int | None
    precision: int | None
    #: None: the storage's default.
    flush_interval: float | None
    max_queue_bytes: int
    max_buffer_bytes: int
    shard_steps: int
    chunk_bytes: int
    durable: bool
    lease_timeout: float | None
    tune_allocator: bool
    #: The run's attributes given to the constructor (a JSON copy).
    attrs: dict[str, Any]
    dt: float | None
    time_unit: str | None

    @classmethod
    def check(
        cls,
        path: str | os.PathLike[str] | None,
        mode: str | None,
        *,
        overwrite: bool,
        compressor: str | None,
        level: int | None,
        flush_interval: float | None,
        max_queue_bytes: int,
        max_buffer_bytes: int,
        shard_steps: int,
        chunk_bytes: int,
        store: Any,
        tune_allocator: bool,
        durable: bool,
        storage_options: dict[str, Any] | None,
        lease_timeout: float | None,
        precision: int | None,
        attrs: dict[str, Any] | None,
        dt: float | None,
        time_unit: str | None,
    ) -> WriterOptions:
        """The options for the constructor's arguments, or the error it raises."""
        run_attrs = json_object(attrs or {}, "attrs")
        if dt is not None and (
            isinstance(dt, bool) or not isinstance(dt, (int, float)) or not 0 < dt < math.inf
        ):
            raise ValueError(
                f"dt must be a positive number (the duration of a time step), got {dt!r}"
            )
        if time_unit is not None and not isinstance(time_unit, str):
            raise TypeError(f"time_unit must be a str such as 's' or 'ms', got {time_unit!r}")
        if overwrite:
            if mode not in (None, "w"):
                raise ValueError(f"overwrite=True means mode='w'; it contradicts mode={mode!r}")
            mode = "w"
        elif mode is None:
            mode = "w-"  # never replace a store unless told to
        if mode not in ("w", "w-", "a"):
            raise ValueError(
                f"mode must be 'w' (replace), 'w-' (new only, the default) or 'a' (append), "
                f"got {mode!r}"
            )
        if compressor is not None and compressor not in COMPRESSORS:
            raise ValueError(
                f"unknown compressor {compressor!r}; choose one of {sorted(COMPRESSORS)}"
            )
        if level is not None:
            lo, hi = LEVELS[compressor or "zstd"]
            if isinstance(level, bool) or not isinstance(level, int) or not lo <= level <= hi:
                raise ValueError(
                    f"level must be an int from {lo} to {hi} for "
                    f"{compressor or 'the default codecs (zstd levels)'}, got {level!r}"
                )
        if precision is not None and (
            isinstance(precision, bool)
            or not isinstance(precision, int)
            or not 0 <= precision <= 52
        ):
            raise ValueError(
                f"precision must be an int from 0 to 52 (mantissa bits kept), got {precision!r}"
            )
        if flush_interval is not None and (
            isinstance(flush_interval, bool)
            or not isinstance(flush_interval, numbers.Real)
            or not 0 <= flush_interval <= MAX_FLUSH_INTERVAL  # nan too
        ):
            raise ValueError(
                f"flush_interval must be a number of seconds from 0 to {MAX_FLUSH_INTERVAL:g} "
                f"(one day), got {flush_interval!r}"
            )
        for name, value in (
            ("max_queue_bytes", max_queue_bytes),
            ("max_buffer_bytes", max_buffer_bytes),
            ("shard_steps", shard_steps),
            ("chunk_bytes", chunk_bytes),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if path is not None and not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        if lease_timeout is not None:  # on every rank, whatever the store
            lease_timeout = check_lease_timeout(lease_timeout)
        return cls(
            path=path,
            mode=cast("Mode", mode),
            store=store,
            storage_options=storage_options,
            compressor=compressor,
            level=level,
            precision=precision,
            flush_interval=None if flush_interval is None else float(flush_interval),
            max_queue_bytes=int(max_queue_bytes),
            max_buffer_bytes=int(max_buffer_bytes),
            shard_steps=int(shard_steps),
            chunk_bytes=int(chunk_bytes),
            durable=bool(durable),
            lease_timeout=lease_timeout,
            tune_allocator=bool(tune_allocator),
            attrs=run_attrs,
            dt=dt,
            time_unit=time_unit,
        )
