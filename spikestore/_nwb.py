"""The parts of an NWB file that :func:`spikestore.export.to_nwb` writes, each streamed
into the HDF5 file a bounded block at a time, so an export's memory does not grow with
the run's length.

* :func:`plan` splits a field of a layer into what is exported: one part per record
  shape (:func:`spikestore.analysis.shapes`), or the reason it cannot be.
* :func:`series` builds a part of numeric records as a ``TimeSeries`` whose data (and
  timestamps, where the part's steps are not contiguous) are hdmf chunk iterators over
  the store; records with more than 3 axes per time point are flattened to
  ``(time, features)``, as NWB's TimeSeries holds at most 4 dimensions.
* :class:`UnitWriter` gathers spike parts as units (one per neuron), decoding a block
  of neurons over all their steps at a time and spilling spike times to a scratch file
  beside the output, from which the Units table's ``spike_times`` is written.

Reads go through the public names of :mod:`spikestore.analysis` and the reader's
:class:`~spikestore.reader.FieldReader`; everything runs in the caller's thread.
"""

from __future__ import annotations

import math
import os
from typing import Any, NamedTuple

import numpy as np
import torch

from . import analysis
from .format import SPIKE_ENCODING

__all__ = ["Part", "UnitWriter", "plan", "series", "row_iterator", "step_ranges"]

#: HDF5 chunk and write buffer of a dataset (about; whole rows each).
CHUNK_BYTES = 4 << 20
BUFFER_BYTES = 16 << 20
#: Values of spike records decoded at once, and spike events sorted at once.
SPIKE_BLOCK = 1 << 21
#: Bucket files a spike layer's events are spread over by neuron range.
BUCKETS = 64
_EVENT = np.dtype([("neuron", "<i8"), ("tick", "<i8")])
#: NWB's TimeSeries ``data`` has at most 4 dimensions: time and 3 more.
MAX_SERIES_AXES = 3


def row_iterator(read: Any, shape: tuple[int, ...], dtype: Any) -> Any:
    """An hdmf chunk iterator over ``read(a, b)`` (rows ``a:b`` of a dataset of
    ``shape``), so that pynwb writes it a few MB at a time."""
    from hdmf.data_utils import GenericDataChunkIterator

    class _Rows(GenericDataChunkIterator):  # type: ignore[misc]
        def _get_data(self, selection: tuple[slice, ...]) -> np.ndarray:
            a, b, _ = selection[0].indices(shape[0])
            return read(a, b)[(slice(None), *selection[1:])]  # type: ignore[no-any-return]

        def _get_maxshape(self) -> tuple[int, ...]:
            return shape

        def _get_dtype(self) -> np.dtype:
            return np.dtype(dtype)

        def __len__(self) -> int:  # hdmf's VectorIndex asks its target's length
            return shape[0]

    # Whole rows in every chunk and buffer (a read decodes whole steps).
    row = max(1, math.prod(shape[1:]) * np.dtype(dtype).itemsize)
    chunk = max(1, min(shape[0], CHUNK_BYTES // row))
    buffer = max(chunk, min(shape[0], BUFFER_BYTES // row // chunk * chunk))
    return _Rows(
        chunk_shape=(chunk, *shape[1:]),
        buffer_shape=(buffer, *shape[1:]),
        display_progress=False,
    )


def step_ranges(steps: np.ndarray, limit: int = 6) -> str:
    """``"0-99, 200-299"``: the steps as ranges, the first ``limit`` of them."""
    if not len(steps):
        return "none"
    cut = np.nonzero(np.diff(steps) != 1)[0] + 1
    starts, ends = np.r_[steps[:1], steps[cut]], np.r_[steps[cut - 1], steps[-1:]]
    pairs = zip(starts[:limit].tolist(), ends[:limit].tolist(), strict=True)
    text = [f"{a}" if a == b else f"{a}-{b}" for a, b in pairs]
    more = len(starts) - limit
    return ", ".join(text) + (f", ... ({len(starts)} ranges)" if more > 0 else "")


def _dims(layer: Any, ndim: int) -> tuple[str, ...] | None:
    """The names of the axes of records of ``ndim`` axes, where the store has them."""
    dims_of = getattr(layer, "dims_of", None)
    dims = dims_of(ndim) if callable(dims_of) else getattr(layer, "dims", None)
    if dims is None or len(dims) != ndim:
        return None
    return tuple(str(d) for d in dims)


def _time_layout(layer: Any, shape: tuple[int, ...]) -> tuple[int | None, int, tuple[int, ...]]:
    """The time axis of records of ``shape`` (None for single-step ones), T, and the
    per-time-point shape."""
    axis = layer.time_axis
    if axis is None or isinstance(axis, bool) or not shape or not -len(shape) <= axis < len(shape):
        return None, 1, shape
    a = int(axis) % len(shape)
    return a, shape[a], shape[:a] + shape[a + 1 :]


def _chunk_steps(fld: Any) -> int:
    """Steps in a chunk of the field's first segment (1 where unknown)."""
    try:
        return max(1, int(fld.array(0).chunks[0]))
    except Exception:  # a best-effort block size only
        return 1


class Part(NamedTuple):
    """What one export holds: the ``kind`` (``"spikes"`` or ``"series"``) of field
    ``field``'s records of ``shape`` at ``steps``; ``number`` numbers the shapes of the
    field (None when it has one)."""

    kind: str
    field: int
    shape: tuple[int, ...]
    steps: np.ndarray
    number: int | None


def plan(layer: Any, fi: int) -> tuple[list[Part], list[str]]:
    """The parts field ``fi`` of ``layer`` is exported as, and why any of its steps
    are not (one reason per part left out)."""
    fld = layer.field(fi)
    if not len(layer):
        return [], ["it has no committed steps"]
    groups = analysis.shapes(layer, fi) if fld.segments else []
    if not groups:
        return [], [f"every one of its {len(layer)} steps recorded None"]
    kind = "spikes" if all(s["encoding"] == SPIKE_ENCODING for s in fld.segments) else "series"
    parts: list[Part] = []
    skipped: list[str] = []
    for k, (shape, steps) in enumerate(groups):
        number = k if len(groups) > 1 else None
        where = f"records of shape {list(shape)} (steps {step_ranges(steps)})"
        if math.prod(shape) == 0:
            skipped.append(f"{where} hold no values")
            continue
        if kind == "series":
            dtype = analysis.to_numpy(layer, steps[:1], field=fi).dtype
            if dtype.kind not in "iufb":
                skipped.append(f"{where} are {dtype}, and NWB series hold real numbers")
                continue
        parts.append(Part(kind, fi, tuple(shape), np.asarray(steps, dtype=np.int64), number))
    return parts, skipped


def _describe(layer: Any, part: Part, axis: int | None, flat: bool) -> str:
    dims = _dims(layer, len(part.shape))
    named = f" (dims {', '.join(dims)})" if dims else ""
    text = (
        f"spikestore monitor {layer.monitor!r}, layer {layer.name!r}, field {part.field}; "
        f"record shape {list(part.shape)}{named}, time axis {axis}; "
        f"steps {step_ranges(part.steps)} ({len(part.steps)} of {len(layer)})"
    )
    if part.number is not None:
        text += f"; shape {part.number} of the layer's records (one series per shape)"
    text += "; rows are the steps' time points in order (step * T + t)"
    if flat:
        text += "; each time point's record flattened to features in C order"
    return text


def series(pynwb: Any, layer: Any, part: Part, name: str, dt: float) -> tuple[Any, dict[str, Any]]:
    """A ``TimeSeries`` of a series part, and what the file's notes say of it."""
    fld = layer.field(part.field)
    shape, steps, fi = part.shape, part.steps, part.field
    axis, t_len, rest = _time_layout(layer, shape)
    flat = len(rest) > MAX_SERIES_AXES
    dtype = analysis.to_numpy(layer, steps[:1], field=fi).dtype
    out_dtype = np.dtype(np.uint8) if dtype.kind == "b" else dtype
    row_shape = (math.prod(rest),) if flat else rest

    def read(a: int, b: int) -> np.ndarray:
        s0, s1 = a // t_len, -(-b // t_len)
        chosen = steps[s0:s1]
        block = fld.read_block(chosen, None)  # the reader's fast path: one segment of tensors
        if block is not None and tuple(block.shape[1:]) == shape:
            if block.dtype in (torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2):
                block = block.float()  # dtypes NumPy lacks
            vals = block.numpy().astype(dtype, copy=False)
        else:  # None steps (NaN), Python-number steps, several segments
            vals = analysis.to_numpy(layer, chosen, field=fi)
        vals = vals.reshape(len(chosen), *shape)
        if axis is not None:
            vals = np.moveaxis(vals, axis + 1, 1)
        vals = vals.reshape(len(chosen) * t_len, *row_shape)
        return vals[a - s0 * t_len : b - s0 * t_len].astype(out_dtype, copy=False)

    rows = len(steps) * t_len
    timing: dict[str, Any]
    if int(steps[-1]) - int(steps[0]) + 1 == len(steps):
        timing = {"rate": 1.0 / dt, "starting_time": float(steps[0]) * t_len * dt}
    else:

        def stamps(a: int, b: int) -> np.ndarray:
            r = np.arange(a, b, dtype=np.int64)
            return (steps[r // t_len] * t_len + r % t_len).astype(np.float64) * dt

        timing = {"timestamps": row_iterator(stamps, (rows,), np.float64)}
    ts = pynwb.TimeSeries(
        name=name,
        data=row_iterator(read, (rows, *row_shape), out_dtype),
        unit="n/a",
        description=_describe(layer, part, axis, flat),
        **timing,
    )
    note = {
        "name": name,
        "record_shape": list(shape),
        "dims": _dims(layer, len(shape)),
        "steps": len(steps),
        "first_step": int(steps[0]),
        "last_step": int(steps[-1]),
        "flattened": flat,
    }
    return ts, note


class UnitWriter:
    """The Units table, one unit per neuron of every spike part, built without holding
    the run's spike times: each block of neurons' times (over all the part's steps) go
    to a scratch file at ``scratch`` as they are decoded; :meth:`table` writes them
    from there a few MB at a time. The per-unit columns (a few values per neuron)
    are kept in memory. Call :meth:`close` to remove the scratch file."""

    COLUMNS = (
        ("monitor", "spikestore monitor name"),
        ("layer", "spikestore layer name"),
        ("field", "field of tuple records (0 otherwise)"),
        ("neuron", "flat C-order index into the per-time-point record (without its time axis)"),
        ("neuron_index", "the neuron's index tuple into the per-time-point record, as text"),
        ("record_shape", "the per-time-point record shape the neuron indexes, as text"),
        ("steps", "the steps whose spikes the unit holds (ranges, as text)"),
    )

    def __init__(self, scratch: str) -> None:
        self.scratch = scratch
        self._file: Any = None
        self.count = 0
        self.spikes = 0
        self.lengths: list[np.ndarray] = []
        self.cols: dict[str, list[Any]] = {name: [] for name, _ in self.COLUMNS}

    def add(self, layer: Any, part: Part, dt: float) -> dict[str, Any]:
        """Add a spike part's neurons; returns what the file's notes say of it."""
        axis, t_len, rest = _time_layout(layer, part.shape)
        n = math.prod(rest)
        if self._file is None:
            self._file = open(self.scratch, "wb")  # closed by table() or close()
        counts = self._times(layer, part, dt, n, max(1, t_len))
        self.spikes += int(counts.sum())
        self.lengths.append(counts)
        shape_text, steps_text = str(tuple(rest)), step_ranges(part.steps)
        for a in range(0, n, SPIKE_BLOCK):
            ids = np.arange(a, min(n, a + SPIKE_BLOCK), dtype=np.int64)
            k = len(ids)
            self.cols["monitor"].extend([layer.monitor] * k)
            self.cols["layer"].extend([layer.name] * k)
            self.cols["field"].extend([part.field] * k)
            self.cols["neuron"].extend(ids.tolist())
            nd = np.unravel_index(ids, rest) if rest else ()
            self.cols["neuron_index"].extend(str(tuple(int(c[i]) for c in nd)) for i in range(k))
            self.cols["record_shape"].extend([shape_text] * k)
            self.cols["steps"].extend([steps_text] * k)
        self.count += n
        return {
            "units": n,
            "record_shape": list(rest),
            "time_axis": axis,
            "steps": len(part.steps),
        }

    def _times(self, layer: Any, part: Part, dt: float, n: int, t_len: int) -> np.ndarray:
        """Append the part's spike times to the scratch file in unit order (neuron,
        then time); returns the spike count of each neuron.

        Events are decoded a block of steps at a time (about :data:`SPIKE_BLOCK`
        values) in time order and appended to one of up to :data:`BUCKETS` bucket
        files by neuron range; each bucket is then sorted by neuron (stably, so
        times stay sorted) at most :data:`SPIKE_BLOCK` events at a time."""
        width = -(-n // min(n, BUCKETS))
        paths = [f"{self.scratch}.{b}" for b in range(-(-n // width))]
        counts = np.zeros(n, dtype=np.int64)
        files = [open(p, "wb") for p in paths]  # closed below
        try:
            step_block = max(1, SPIKE_BLOCK // (t_len * n))
            rows = _chunk_steps(layer.field(part.field))
            if step_block > rows:  # whole chunks of steps: each decoded once
                step_block -= step_block % rows
            for a in range(0, len(part.steps), step_block):
                ticks, ids = analysis.raster(
                    layer, part.steps[a : a + step_block], field=part.field
                )
                counts += np.bincount(ids, minlength=n)
                bucket = ids // width
                order = np.argsort(bucket, kind="stable")
                events = np.empty(len(ids), dtype=_EVENT)
                events["neuron"], events["tick"] = ids[order], ticks[order]
                cuts = np.searchsorted(bucket[order], np.arange(1, len(files)))
                for f, chunk in zip(files, np.split(events, cuts), strict=True):
                    chunk.tofile(f)
        finally:
            for f in files:
                f.close()
        try:
            for b, path in enumerate(paths):
                lo, hi = b * width, min(n, (b + 1) * width)
                self._sort_bucket(path, counts[lo:hi], lo, dt)
        finally:
            for path in paths:
                if os.path.lexists(path):
                    os.unlink(path)
        return counts

    def _sort_bucket(self, path: str, counts: np.ndarray, lo: int, dt: float) -> None:
        """Write the times of a bucket's neurons (``lo`` onwards, ``counts`` spikes
        each) in neuron order, reading its events for at most about
        :data:`SPIKE_BLOCK` of them (whole neurons) at a time."""
        ends = np.cumsum(counts)
        total = int(ends[-1]) if len(ends) else 0
        start = 0  # first neuron (of the bucket) not written yet
        while start < len(counts) and total:
            done = int(ends[start - 1]) if start else 0
            stop = int(np.searchsorted(ends, done + SPIKE_BLOCK, side="right"))
            stop = max(stop, start + 1)
            keep = []
            for a in range(0, total, SPIKE_BLOCK):
                ev = np.fromfile(path, dtype=_EVENT, count=SPIKE_BLOCK, offset=a * _EVENT.itemsize)
                mine = (ev["neuron"] >= lo + start) & (ev["neuron"] < lo + stop)
                keep.append(ev[mine] if not mine.all() else ev)
            ev = np.concatenate(keep)
            order = np.argsort(ev["neuron"], kind="stable")
            (ev["tick"][order].astype(np.float64) * float(dt)).tofile(self._file)
            start = stop

    def table(self, description: str) -> Any:
        from hdmf.common import ElementIdentifiers, VectorData, VectorIndex
        from pynwb.misc import Units

        if self._file is not None:
            self._file.close()
        total = self.spikes
        data: Any = np.zeros(0, dtype=np.float64)
        if total:
            path = self.scratch

            def read(a: int, b: int) -> np.ndarray:
                return np.fromfile(path, dtype=np.float64, count=b - a, offset=a * 8)

            data = row_iterator(read, (total,), np.float64)
        spike_times = VectorData(
            name="spike_times",
            description="the spike times for each unit in seconds",
            data=data,
        )
        # The index before its target: hdmf (6.2) drops a column of iterator data from
        # its length check before the index looks for it there.
        columns = [
            VectorIndex(
                name="spike_times_index",
                data=np.cumsum(np.concatenate(self.lengths)),
                target=spike_times,
            ),
            spike_times,
        ]
        for name, desc in self.COLUMNS:
            col: Any = self.cols[name]
            if name in ("field", "neuron"):
                col = np.asarray(col, dtype=np.int64)
            columns.append(VectorData(name=name, description=desc, data=col))
        return Units(
            name="units",
            description=description,
            id=ElementIdentifiers(name="id", data=np.arange(self.count)),
            columns=columns,
        )

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if os.path.lexists(self.scratch):
            os.unlink(self.scratch)
