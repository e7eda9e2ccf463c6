"""The data side of the viewer: a store turned into JSON-ready dicts.

:class:`ViewData` owns one reader of the store (:func:`spikestore.open`) and answers
the page's questions with plain dicts and lists: the layers in the store's order with
a rate sparkline each, a layer's rate over a window of steps decimated to at most a
given number of bins (min, mean and max of the per-step rate in each bin), the marks
of a layer as intervals, and whether a writer is at work. Everything here comes from
the per-step summaries the writer stored beside the records: nothing is decoded. The
raster and traces of a window, which decode, are in :mod:`._windows`.

Layers are named by the request (monitor, layer, rank, field) and looked up in the
reader's mappings; no part of a request ever becomes a path.

Thread ownership: a :class:`ViewData` may be called from any thread (the web server's
pool); one lock serialises every use of the reader and of the caches.
"""

from __future__ import annotations

import math
import os
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import analysis
from ..errors import SpikestoreError
from ..format import LOCK_FILE, SPIKE_ENCODING, STORE_ID_KEY
from ..summary import COLUMNS

__all__ = [
    "ViewData",
    "NotFound",
    "BadRequest",
    "StoreGone",
    "decimate",
    "json_safe",
    "SPARK_BINS",
    "MAX_BINS",
]

#: Bins of a layer's sparkline (the whole run, one line).
SPARK_BINS = 96
#: The most bins an overview request may ask for (a few screens' width in pixels).
MAX_BINS = 8192
#: The reader re-reads the store's metadata at most this often (seconds).
REFRESH_EVERY = 1.0
#: A layer that grew within this many seconds counts as growing.
GROWING_FOR = 10.0
#: Mark intervals sent per key at most; more are summarised as a count.
MAX_INTERVALS = 2000

_SUM = COLUMNS.index("sum")
_NUMEL = COLUMNS.index("numel")
_MEAN = COLUMNS.index("mean")


class NotFound(LookupError):
    """A monitor, layer, field or rank that the store does not have (HTTP 404)."""


class BadRequest(ValueError):
    """A request argument out of range or malformed (HTTP 400)."""


class StoreGone(LookupError):
    """The store was deleted or moved while viewed (HTTP 503): every request says so
    until a store is there again."""


#: Nesting deeper than this in an answer (a store's attrs) is sent as a note.
_MAX_DEPTH = 100


def json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` as plain JSON: non-finite floats become None, numpy scalars and arrays
    Python numbers and lists, tuples lists, keys strings, ints too long to print None,
    anything else its ``repr``; nesting deeper than 100 levels a note."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        value = int(value)
        return value if value.bit_length() <= 1000 else None
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if depth >= _MAX_DEPTH:
        return f"(nested more than {_MAX_DEPTH} levels deep: not shown)"
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, depth + 1) for v in value]
    if isinstance(value, np.bool_):
        return bool(value)
    return repr(value)[:200]


def decimate(values: np.ndarray, start: int, stop: int, bins: int) -> dict[str, Any]:
    """``values[start:stop]`` in at most ``bins`` bins of ``k`` consecutive steps: per bin
    its first step, and the min, mean and max of its finite values (None where a bin
    has none). ``k`` is the smallest width that fits (1: every step its own bin)."""
    n = max(0, stop - start)
    k = max(1, -(-n // max(1, bins)))
    part = values[start:stop]
    nb = -(-n // k)
    pad = np.full(nb * k, np.nan)
    pad[:n] = part
    grid = pad.reshape(nb, k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN bins are None below
        lo, mean, hi = np.nanmin(grid, 1), np.nanmean(grid, 1), np.nanmax(grid, 1)
    return {
        "start": start,
        "stop": stop,
        "k": k,
        "x": (start + k * np.arange(nb)).tolist(),
        "min": _json_floats(lo),
        "mean": _json_floats(mean),
        "max": _json_floats(hi),
    }


def _json_floats(a: np.ndarray) -> list[float | None]:
    """Floats for JSON: NaN and infinities become None."""
    out = a.astype(np.float64).tolist()
    return [x if math.isfinite(x) else None for x in out]


@dataclass
class _Series:
    """The per-step rate (spike layers) or mean (others) of one field, read so far."""

    values: np.ndarray = field(default_factory=lambda: np.zeros(0))
    spikes: bool = True


@dataclass
class _Growth:
    """Total committed steps seen at the last refresh, and when they last grew."""

    steps: int = -1
    grew_at: float = 0.0


class ViewData:
    """Read-only answers about one store, for the viewer's page.

    Parameters
    ----------
    path : str or os.PathLike
        The store: a folder or a URL (``s3://bucket/run``).
    storage_options : dict, optional
        For a URL: the object store's endpoint and credentials.

    Examples
    --------
    >>> data = ViewData("demo.spikes")                  # doctest: +SKIP
    >>> [(r["monitor"], r["layer"]) for r in data.layers()["layers"]]  # doctest: +SKIP
    [('output', 'sn1'), ...]
    """

    def __init__(
        self, path: str | os.PathLike[str], storage_options: dict[str, Any] | None = None
    ) -> None:
        self.path = os.fspath(path)
        self.storage_options = storage_options
        self._lock = threading.RLock()
        self._open()
        self._refreshed = time.monotonic()
        self._series: dict[tuple[int | None, str, str, int], _Series] = {}
        self._growth = _Growth()
        self._ids = self._store_ids()

    def _open(self) -> None:
        """Open the store afresh, as the kind (ranked or not) it is now."""
        from ..reader import RankedStoreReader
        from ..reader import open as open_store

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # damaged parts are listed by layers()
            self._store = open_store(self.path, storage_options=self.storage_options)
        self.ranked = isinstance(self._store, RankedStoreReader)

    def gone(self) -> StoreGone | None:
        """The error to give when the store's folder no longer exists (None while it
        does, and for a URL, which cannot be told apart from a store not written yet)."""
        from ..storage import is_url

        if is_url(self.path) or os.path.lexists(self.path):
            return None
        return StoreGone(
            f"the store at {self.path} is gone (deleted or moved); the page shows it again "
            "when a store is there"
        )

    def _store_ids(self) -> tuple[Any, ...]:
        """The store ids (format 1.6) of the store and of each rank's store: new ones
        when a store is replaced."""
        stores = [self._store]
        if self.ranked:
            stores += [self._store.rank(r) for r in self._store.ranks]
        return tuple(getattr(x, "meta", {}).get(STORE_ID_KEY) for x in stores)

    # ----------------------------------------------------------------- lookups
    def refresh(self, force: bool = False) -> None:
        """See steps committed since the last refresh (at most every
        :data:`REFRESH_EVERY` seconds unless ``force``)."""
        with self._lock:
            now = time.monotonic()
            if not force and now - self._refreshed < REFRESH_EVERY:
                return
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self._store.refresh()
            except (OSError, SpikestoreError):
                # Deleted, or replaced by a store of the other kind (ranked or not):
                # open it as what it is now. Not marked refreshed until that works, so
                # every request says what is wrong.
                gone = self.gone()
                if gone is not None:
                    raise gone from None
                self._open()
            self._refreshed = now
            ids = self._store_ids()
            if ids != self._ids:
                # Replaced (mode="w"): what was read of the old store says nothing of this one.
                self._series.clear()
                self._ids = ids

    def ranks(self) -> list[int] | None:
        """The ranks with a store of their own (None for a store of one process)."""
        return list(self._store.ranks) if self.ranked else None

    def _reader(self, rank: int | None) -> Any:
        if not self.ranked:
            if rank is not None:
                raise BadRequest(
                    f"{self.path} is not a ranked store (now): leave out rank, or reload the page"
                )
            return self._store
        ranks = self._store.ranks
        if rank is None:
            if not ranks:
                raise NotFound(f"{self.path} has no rank with records yet")
            rank = ranks[0]
        if rank not in ranks:
            raise NotFound(f"{self.path} has no store of rank {rank}; ranks: {ranks}")
        return self._store.rank(rank)

    def layer(self, monitor: str, layer: str, rank: int | None = None) -> Any:
        """The reader of ``monitor``/``layer`` (of ``rank`` in a ranked store)."""
        store = self._reader(rank)
        if monitor not in store:
            raise NotFound(f"{self.path}: no monitor {monitor!r}; monitors: {list(store)}")
        mon = store[monitor]
        if layer not in mon:
            raise NotFound(f"{self.path}: monitor {monitor!r} has no layer {layer!r}")
        return mon[layer]

    @staticmethod
    def field_of(lay: Any, field: int) -> int:
        """``field`` checked against the layer's fields."""
        n = len(lay.fields)
        if not 0 <= field < n:
            raise NotFound(
                f"monitor {lay.monitor!r}, layer {lay.name!r} has {n} field(s); no field {field}"
            )
        return field

    # ----------------------------------------------------------------- series
    def _values(self, lay: Any, rank: int | None, field: int) -> _Series:
        """The layer's per-step rate (or mean), read from the summaries; only the steps
        committed since the last call are read."""
        key = (rank, lay.monitor, lay.name, field)
        series = self._series.get(key)
        n = len(lay)
        if series is None or len(series.values) > n:
            series = _Series(np.zeros(0), _is_spikes(lay, field))
        have = len(series.values)
        if n > have:
            s = analysis.summary(lay, slice(have, n), field=field)
            with np.errstate(invalid="ignore", divide="ignore"):
                new = s[:, _SUM] / s[:, _NUMEL] if series.spikes else s[:, _MEAN]
            series.values = np.concatenate([series.values, new])
        self._series[key] = series
        return series

    # ----------------------------------------------------------------- answers
    def layers(self, rank: int | None = None) -> dict[str, Any]:
        """Every layer in the store's order (each monitor's layers in call order), with
        its steps, shape, dims, kind (``spikes`` or ``values``), time axis length and a
        sparkline of :data:`SPARK_BINS` bin means over the whole run; then the run's
        ``dt``, ``time_unit``, ``attrs``, the ranks and the writer's state."""
        with self._lock, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # damaged parts: listed below, not on the console
            self.refresh()
            store = self._reader(rank)
            rows = [self._safe_row(lay, rank) for lay in store.layers()]
            damaged = [f"monitor {k!r}: {v}" for k, v in store.damaged.items()]
            for mon in store.values():
                damaged += [f"{mon.name}/{k}: {v}" for k, v in mon.damaged.items()]
            ranks = self.ranks()
            return {
                "path": self.path,
                "format_version": store.version,
                "ranks": ranks,
                "rank": ranks[0] if rank is None and ranks else rank,
                "dt": store.dt,
                "time_unit": store.time_unit,
                "attrs": json_safe(store.attrs),
                "layers": rows,
                "damaged": damaged,
                "writer": self._writer(rows),
            }

    def _safe_row(self, lay: Any, rank: int | None) -> dict[str, Any]:
        """The layer's row; a layer that cannot be read (damaged or hostile metadata:
        any error, out of memory included) is listed with its error, never taking the
        other layers down with it."""
        try:
            return self._layer_row(lay, rank)
        except Exception as exc:  # one layer's failure is its row's error
            self._series.pop((rank, lay.monitor, lay.name, 0), None)
            return {
                "monitor": lay.monitor, "layer": lay.name, "steps": _steps(lay),
                "fields": None, "units": None, "dims": None, "shape": None, "time_len": 1,
                "neurons": None, "kind": None, "spark": None, "error": _message(exc, lay),
            }  # fmt: skip

    def _layer_row(self, lay: Any, rank: int | None) -> dict[str, Any]:
        row: dict[str, Any] = {
            "monitor": lay.monitor,
            "layer": lay.name,
            "steps": len(lay),
            "fields": _field_names(lay),
            "units": getattr(lay, "units", None),
            "dims": list(lay.dims) if lay.dims else None,
        }
        try:
            shape = analysis.record_shape(lay, 0)
        except (ValueError, LookupError) as exc:
            shape, row["shape_note"] = None, str(exc)
        row["shape"] = list(shape) if shape is not None else None
        axis = _time_axis(lay, shape)
        row["time_len"] = shape[axis] if shape is not None and axis is not None else 1
        row["neurons"] = _neurons(shape, axis)
        try:
            series = self._values(lay, rank, 0)
        except Exception as exc:  # MemoryError too (a hostile step count)
            # A damaged summary must not hide the other layers: the row says what failed.
            row.update(kind=None, spark=None, error=_message(exc, lay))
            return row
        row["kind"] = "spikes" if series.spikes else "values"
        row["spark"] = decimate(series.values, 0, len(series.values), SPARK_BINS)["mean"]
        return row

    def overview(
        self,
        monitor: str,
        layer: str,
        start: int | None = None,
        stop: int | None = None,
        bins: int = 1000,
        *,
        rank: int | None = None,
        field: int = 0,
    ) -> dict[str, Any]:
        """The layer's rate (spike fields: spikes per element) or mean (other fields)
        over steps ``[start, stop)`` (default: all), in at most ``bins`` bins of equal
        width with the min, mean and max of the per-step values in each (one step a
        bin when the window is short enough); with the marks as intervals."""
        if not 1 <= bins <= MAX_BINS:
            raise BadRequest(f"bins must be from 1 to {MAX_BINS}, got {bins}")
        with self._lock:
            self.refresh()
            lay = self.layer(monitor, layer, rank)
            field = self.field_of(lay, field)
            series = self._values(lay, rank, field)
            n = len(series.values)
            a, b = _window(start, stop, n)
            out = decimate(series.values, a, b, bins)
            out.update(
                monitor=monitor,
                layer=layer,
                field=field,
                steps=n,
                kind="spikes" if series.spikes else "values",
                marks=_intervals(lay.marks(), n),
                runs=_runs(self._reader(rank), lay, n),
            )
            return out

    def status(self, rank: int | None = None) -> dict[str, Any]:
        """Steps per layer and the writer's state: what the page polls."""
        with self._lock:
            self.refresh()
            store = self._reader(rank)
            rows = [
                {"monitor": x.monitor, "layer": x.name, "steps": _steps(x)} for x in store.layers()
            ]
            return {"layers": rows, "writer": self._writer(rows), "ranks": self.ranks()}

    def _writer(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        total = sum(int(r["steps"]) for r in rows)
        now = time.monotonic()
        g = self._growth
        if g.steps >= 0 and total > g.steps:
            g.grew_at = now
        g.steps = total
        growing = g.grew_at > 0 and now - g.grew_at < GROWING_FOR
        return {"locked": writer_locked(self.path), "growing": growing, "steps": total}


def writer_locked(path: str) -> bool | None:
    """Whether a writer holds the store's lock (its ``flock``, or a rank's): read from
    ``/proc/locks`` without touching the lock, so that a writer starting meanwhile is
    never refused. None where it cannot be told (a URL, a system without
    ``/proc/locks``)."""
    from ..storage import is_url

    if is_url(path):
        return None
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            held = f.read()
    except OSError:
        return None
    keys = set()
    for name in _lock_files(path):
        try:
            st = os.lstat(name)
        except OSError:
            continue
        keys.add(f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}")
    if not keys:
        return False
    # "1: FLOCK  ADVISORY  WRITE <pid> <major>:<minor>:<inode> 0 EOF"; waiters
    # ("1: -> FLOCK ...") hold nothing.
    for line in held.splitlines():
        parts = line.split()
        if len(parts) > 5 and parts[1] == "FLOCK" and parts[5] in keys:
            return True
    return False


def _lock_files(path: str) -> list[str]:
    """The lock file of the store and of each rank's store below it."""
    names = [os.path.join(path, LOCK_FILE)]
    try:
        with os.scandir(path) as it:
            for e in it:
                if e.name.startswith("rank") and e.is_dir(follow_symlinks=False):
                    names.append(os.path.join(path, e.name, LOCK_FILE))
    except OSError:
        pass
    return names


def _message(exc: BaseException, lay: Any) -> str:
    """A layer's error in one line, naming the monitor and layer; its type named where
    the message alone would not say what happened (out of memory, a bug)."""
    text = " ".join(str(exc).split())
    if not isinstance(exc, (SpikestoreError, ValueError, OSError, LookupError)) or not text:
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if repr(lay.name) not in text:
        text = f"monitor {lay.monitor!r}, layer {lay.name!r}: {text}"
    return text


def _steps(lay: Any) -> int:
    """The layer's committed steps; 0 where even that cannot be read."""
    try:
        return len(lay)
    except Exception:  # listed as damaged by its row's error
        return 0


def _is_spikes(lay: Any, field: int) -> bool:
    encodings = {s["encoding"] for s in lay.fields[field].segments}
    return encodings == {SPIKE_ENCODING}


def _field_names(lay: Any) -> list[str]:
    names = getattr(lay, "field_names", None)
    n = len(lay.fields)
    if isinstance(names, (list, tuple)) and len(names) == n:
        return [str(x) for x in names]
    return [str(i) for i in range(n)]


def _time_axis(lay: Any, shape: tuple[int, ...] | None) -> int | None:
    axis = getattr(lay, "time_axis", None)
    if shape is None or axis is None or not shape:
        return None
    return int(axis) % len(shape)


def _neurons(shape: tuple[int, ...] | None, axis: int | None) -> int | None:
    if shape is None:
        return None
    rest = shape if axis is None else shape[:axis] + shape[axis + 1 :]
    return math.prod(rest)


def _window(start: int | None, stop: int | None, n: int) -> tuple[int, int]:
    """``[start, stop)`` clipped to ``[0, n]`` (None: the ends)."""
    a = 0 if start is None else min(max(0, start), n)
    b = n if stop is None else min(max(a, stop), n)
    return a, b


def _intervals(marks: dict[str, np.ndarray], n: int) -> dict[str, Any]:
    """Each mark key's runs of equal values as ``[start, stop, value]`` (steps before
    the key's first mark left out); a key with more than :data:`MAX_INTERVALS` runs
    gives its count only."""
    out: dict[str, Any] = {}
    for key, arr in marks.items():
        vals = arr[:n]
        if not len(vals):
            continue
        change = np.flatnonzero(vals[1:] != vals[:-1]) + 1
        starts = np.concatenate([[0], change])
        if len(starts) > MAX_INTERVALS:
            out[key] = {"count": len(starts), "intervals": None}
            continue
        stops = np.concatenate([change, [len(vals)]])
        runs = [
            [int(a), int(b), _json_value(vals[a])]
            for a, b in zip(starts, stops, strict=True)
            if vals[a] is not None
        ]
        out[key] = {"count": len(runs), "intervals": runs}
    return out


def _runs(store: Any, lay: Any, n: int) -> list[list[Any]]:
    """Each writer opening that recorded steps of the layer (``store.runs``, format 1.7)
    as ``[start, stop, run index, started]``; empty where the store has one run or
    does not record them."""
    runs = getattr(store, "runs", None)
    if not runs or len(runs) < 2:
        return []
    starts = []
    for r in runs:
        first = r.start(lay.monitor, lay.name)
        if first is not None and first < n:
            starts.append((int(first), r.index, r.started))
    starts.sort()
    stops = [s[0] for s in starts[1:]] + [n]
    return [[a, b, i, when] for (a, i, when), b in zip(starts, stops, strict=True) if b > a]


def _json_value(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
