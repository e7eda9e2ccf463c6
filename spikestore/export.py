"""Neuroscience exports: Neo spike trains and NWB (HDF5) files from a store.

* :func:`to_neo` turns a spike layer into a list of ``neo.SpikeTrain`` (one per
  neuron), ready for Elephant. Extra ``neo`` (``pip install "spikestore[neo]"``:
  neo, elephant).
* :func:`to_nwb` writes a whole store to an NWB file with pynwb's HDF5 backend:
  every spike layer becomes units of the file's Units table (one unit per neuron),
  every other numeric layer a ``TimeSeries`` in the ``spikestore`` processing
  module. Extra ``nwb`` (``pip install "spikestore[nwb]"``: pynwb, which brings
  hdmf and h5py).

Neurons and times are those of :func:`spikestore.analysis.spike_trains`: a neuron is
an element of the record (of the record without its time axis for multi-step
``[T, B, ...]`` layers), numbered by its flat C-order index; a spike at step ``s``
(time index ``t`` of a multi-step record of ``T`` time points) is at
``(s * T + t) * dt``.

NWB-Zarr is not offered: hdmf-zarr, the Zarr backend of pynwb, requires
``zarr<3``, and spikestore is built on Zarr 3, so the two cannot be installed
together. The NWB files written here are HDF5.

Both functions read the store through the public names of :mod:`spikestore.analysis`
and :mod:`spikestore.reader` and decode a bounded block of steps at a time; they run in the caller's
thread.

:func:`to_nwb` never writes into the store it reads: an output path inside the store's
folder (or inside the ranked store a rank's folder belongs to), however it is spelled
(symlinks, ``..``, the folder itself, a case-insensitive file system), is refused
before anything is written. The file is written beside ``out_path`` under a temporary
name and renamed over it, so a failed export leaves an existing file as it was, and a
hard link or symlink at ``out_path`` is replaced, never written through.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import uuid
import warnings
from datetime import UTC, datetime
from typing import Any

import numpy as np

from . import _nwb, analysis
from .reader import RankedLayerReader, RankedStoreReader
from .reader import open as open_store

__all__ = ["ExportWarning", "to_neo", "to_nwb"]


class ExportWarning(UserWarning):
    """A layer (or some of its steps) that :func:`to_nwb` leaves out of the file, with
    the reason; the command line prints each on stderr."""


def _require(module: str, extra: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{module} is not installed: install spikestore's {extra!r} extra "
            f'(pip install "spikestore[{extra}]")'
        ) from exc


def _layout(
    layer: Any, steps: Any, neurons: Any, field: int | None, time_axis: Any
) -> tuple[np.ndarray, int, tuple[int, ...], np.ndarray]:
    """How :func:`spikestore.analysis.spike_trains` numbers a layer's trains: the steps
    selected, T (1 for single-step records), the per-time-point shape that neuron ids
    index, and the chosen neurons' flat ids."""
    sel = analysis.step_selection(layer, steps)
    shape = analysis.record_shape(layer, 0 if field is None else int(field))
    axis = layer.time_axis if time_axis is None else time_axis
    if axis is False or axis is None or not shape:
        t_len, rest = 1, shape
    else:
        a = int(axis) % len(shape)
        t_len, rest = shape[a], shape[:a] + shape[a + 1 :]
    return sel, t_len, rest, analysis.neuron_ids(neurons, rest)


def _store_name(layer: Any) -> str:
    src = getattr(layer, "source", None)
    if src is not None:
        return str(src.location)
    return "<zarr store>"


def to_neo(
    layer: Any,
    steps: Any = None,
    *,
    dt: float | None = None,
    units: str | None = None,
    neurons: Any = None,
    field: int | None = None,
    time_axis: int | bool | None = None,
    t_start: float | None = None,
    t_stop: float | None = None,
) -> list[Any]:
    """One ``neo.SpikeTrain`` per neuron of a spike layer.

    Parameters
    ----------
    layer : LayerReader
        ``store[monitor][layer]`` (one rank of a ranked store: ``layer.layer(r)``).
    steps, neurons, field, time_axis
        As in :func:`spikestore.analysis.spike_trains` (default: every step and neuron).
    dt : float, optional
        Duration of one time step in ``units`` (one step of single-step records, one
        ``t`` of multi-step ones): a spike at step ``s`` is at ``s * dt``
        (``(s * T + t) * dt`` for multi-step records). Default: the store's ``dt``
        (``StoreWriter(dt=...)``) in its ``time_unit``, else 1 ms.
    units : str, optional
        The trains' time unit, any unit ``quantities`` knows ("ms", "s", ...).
        Default: the store's ``time_unit`` when ``dt`` comes from the store, else "ms".
    t_start, t_stop : float, optional
        In ``units``. Default: the start of the first step selected and the end of
        the last (``min(steps) * T * dt`` and ``(max(steps) + 1) * T * dt``).

    Returns
    -------
    list of neo.SpikeTrain
        In the order of ``analysis.neuron_ids(neurons, shape)``. Each is annotated
        with ``store`` (its path or URL), ``monitor``, ``layer``, ``field``,
        ``neuron`` (the flat index), ``neuron_index`` (the index tuple into
        ``record_shape``), ``record_shape`` (per time point) and ``dt``; its
        ``name`` is ``"<monitor>/<layer>[<neuron>]"``.

    Raises ImportError naming the ``neo`` extra when neo is not installed.
    """
    neo = _require("neo", "neo")
    pq = _require("quantities", "neo")
    if isinstance(layer, RankedLayerReader):
        raise ValueError(
            f"layer {layer.name!r} is a layer of a ranked store: export one rank, "
            "to_neo(layer.layer(r), ...)"
        )
    if dt is None:
        dt = analysis.store_dt(layer)
        if dt is not None and units is None:
            units = getattr(layer.store, "time_unit", None) or "s"
        dt = 1.0 if dt is None else dt
    units = units or "ms"
    sel, t_len, rest, ids = _layout(layer, steps, neurons, field, time_axis)
    trains = analysis.spike_trains(layer, sel, dt=dt, neurons=ids, field=field, time_axis=time_axis)
    if t_start is None:
        t_start = float(sel.min()) * t_len * dt if len(sel) else 0.0
    if t_stop is None:
        t_stop = float(sel.max() + 1) * t_len * dt if len(sel) else float(t_start)
    unit = pq.Quantity(1.0, units).units
    store = _store_name(layer)
    out = []
    for flat, times in zip(ids.tolist(), trains, strict=True):
        index = [int(i) for i in np.unravel_index(flat, rest)] if rest else []
        st = neo.SpikeTrain(
            times,
            units=unit,
            t_start=t_start,
            t_stop=t_stop,
            name=f"{layer.monitor}/{layer.name}[{flat}]",
        )
        st.annotate(
            store=store,
            monitor=layer.monitor,
            layer=layer.name,
            field=0 if field is None else int(field),
            neuron=int(flat),
            neuron_index=tuple(index),
            record_shape=tuple(int(n) for n in rest),
            dt=float(dt),
        )
        out.append(st)
    return out


def _nwb_name(used: set[str], *parts: str) -> str:
    """A series name from ``parts``, joined by dots: NWB names may hold neither ``/``
    nor ``:`` (each becomes ``_``), and two layers whose joined names meet (monitor
    ``a.b`` layer ``c``, monitor ``a`` layer ``b.c``) get ``~2``, ``~3``... so that
    neither is lost; the notes give each series' monitor and layer."""
    base = ".".join(parts).replace("/", "_").replace(":", "_")
    name, k = base, 1
    while name in used:
        k += 1
        name = f"{base}~{k}"
    used.add(name)
    return name


#: Seconds per unit, for a store's ``time_unit``.
_SECONDS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def _store_seconds(store: Any) -> float:
    """The store's ``dt`` in seconds (1 ms when it recorded none)."""
    dt = getattr(store, "dt", None)
    if dt is None:
        return 1e-3
    unit = getattr(store, "time_unit", None) or "s"
    if unit not in _SECONDS:
        raise ValueError(
            f"the store's dt is {dt} {unit!r}, a unit spikestore cannot convert to "
            "seconds; pass dt= in seconds"
        )
    return float(dt) * _SECONDS[unit]


def _store_folder(store: Any) -> str | None:
    """The local folder of a store reader (None for object storage, or a store
    object passed in)."""
    path = getattr(store, "path", None)
    if path is not None:
        return os.fspath(path)
    source = getattr(store, "source", None)
    location = getattr(source, "location", None)
    if isinstance(location, str) and location.lower().startswith("file://"):
        from urllib.parse import unquote, urlparse

        return unquote(urlparse(location).path)
    return None


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _inside(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it, compared by device and inode
    along ``path``'s resolved ancestors (symlinks, ``..``, case, bind mounts)."""
    try:
        root = os.stat(folder)
    except OSError:
        return False
    p = os.path.realpath(path)
    while True:
        try:
            if _same(os.stat(p), root):
                return True
        except OSError:
            pass  # not there (yet): its parent may be
        parent = os.path.dirname(p)
        if parent == p:
            return False
        p = parent


def _check_output(store: Any, out_path: str) -> None:
    """Refuse an output inside the store (or the Zarr hierarchy around it: a ranked
    store around a rank's folder) and an output folder that does not exist."""
    folder = _store_folder(store)
    if folder is not None:
        guarded = os.path.realpath(folder)
        up = os.path.dirname(guarded)
        while up != guarded and os.path.isfile(os.path.join(up, "zarr.json")):
            guarded, up = up, os.path.dirname(up)
        if _inside(out_path, guarded):
            raise ValueError(
                f"{out_path} is inside the store {guarded} being exported; writing it "
                "would damage the store: give an output path outside the store's folder"
            )
    if os.path.isdir(out_path):
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", out_path)
    parent = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(parent):
        missing = not os.path.lexists(parent)
        raise (FileNotFoundError if missing else NotADirectoryError)(
            errno.ENOENT if missing else errno.ENOTDIR,
            "no such folder to write the NWB file in" if missing else "not a folder",
            parent,
        )


def _first_start(store: Any) -> datetime | None:
    """When the store's first run started (format 1.7), or None."""
    for r in getattr(store, "runs", ())[:1]:
        if r.started is not None:
            try:
                return datetime.fromisoformat(r.started)
            except ValueError:
                return None
    return None


def to_nwb(
    store_or_path: Any,
    out_path: str | os.PathLike[str],
    *,
    dt: float | None = None,
    session_description: str | None = None,
    identifier: str | None = None,
    session_start_time: datetime | None = None,
    monitors: list[str] | None = None,
    overwrite: bool = False,
) -> str:
    """Write a store (or its chosen monitors) to an NWB file (HDF5).

    Parameters
    ----------
    store_or_path : str, PathLike or StoreReader
        The store (a path, a URL, or a reader from :func:`spikestore.open`).
    out_path : str or PathLike
        The ``.nwb`` file to write.
    dt : float, optional
        Duration of one time step **in seconds** (NWB's time unit): one step of
        single-step records, one ``t`` of multi-step ones. Default: the store's
        ``dt`` (``StoreWriter(dt=..., time_unit=...)``, converted from "s", "ms",
        "us" or "ns"), else 1 ms.
    session_description : str, optional
        Default: "spikestore store <path>".
    identifier : str, optional
        The file's identifier (default: a new UUID).
    session_start_time : datetime, optional
        Default: now (UTC). Spike and sample times count from it.
    monitors : list of str, optional
        Export only these monitors (default: all).
    overwrite : bool
        Replace ``out_path`` if it exists (otherwise FileExistsError). A path inside
        the store is refused (ValueError) whatever this says.

    What is written
    ---------------
    Every field of every layer of the chosen monitors, split by record shape: a
    layer whose steps recorded several shapes (eval batches of another batch size, a
    smaller last batch) gives one export per shape, never padded, each holding the
    steps of that shape (:func:`spikestore.analysis.shapes`) with their own times.

    * Spike layers (every segment bit-packed spikes): one unit per neuron in the
      file's Units table, ``spike_times`` as in :func:`spikestore.analysis.spike_trains`
      (step ``s``, time index ``t``: ``(s * T + t) * dt`` seconds). Unit columns:
      ``monitor``, ``layer``, ``field``, ``neuron`` (the flat C-order index into the
      per-time-point record shape), ``neuron_index`` (that index as a tuple, written
      as text such as ``"(0, 5)"``), ``record_shape`` (that shape, as text) and
      ``steps`` (the steps the unit covers, as ranges such as ``"0-99, 200-299"``:
      all of the layer's steps, or those of its shape). Units are in store order:
      monitor, layer, field, shape, then neuron.
    * Other numeric layers (membrane potentials, gradients, ...): a ``TimeSeries``
      named ``"<monitor>.<layer>"`` (``.f<i>`` added for tuple records, ``.shape<k>``
      for the ``k``-th record shape of a layer of several; "/" in names becomes ":")
      in the processing module ``spikestore``, data of shape
      ``(rows, *per-time-point shape)`` with time first (rows ``step * T + t`` of the
      shape's steps in order), unit ``"n/a"``. Records with more than 3 axes per
      time point (every float layer of a multi-step conv net: ``[T, B, C, H, W]``)
      are flattened to ``(rows, features)`` in C order, as NWB's TimeSeries has at
      most 4 dimensions; the description gives the record shape, its dims, the time
      axis and the steps, and so do the file's notes. Times: ``rate = 1 / dt`` and
      ``starting_time`` where the steps are contiguous, else ``timestamps``. Steps
      that recorded ``None`` are NaN; booleans are written as uint8.
    * Anything left out (nothing committed, only ``None`` recorded, records that hold
      no values, complex values) is named, with the reason, in an
      :class:`ExportWarning` (the command line prints each) and in the notes'
      ``skipped``.
    * ``notes``: JSON with the store's location, its format version and
      ``created_by``, ``dt``, the run's attrs and marks, its ``runs`` (each
      writer opening's own attrs and first steps), each export (``layers``)
      and what was skipped; ``source_script`` names spikestore. The session
      starts when the store's first run started, unless ``session_start_time``
      says otherwise (or the store predates runs: then now).

    Memory does not grow with the run: series are written a few MB of rows at a
    time (hdmf's chunk iterators), and spike times a block of neurons at a time
    (at most about 4M neuron time points decoded at once) through a scratch file
    beside ``out_path``, removed afterwards. The file passes pynwb's validator.

    Returns the path written. Ranked stores: export one rank (``store.rank(r)``).
    Raises ImportError naming the ``nwb`` extra when pynwb is not installed.
    """
    pynwb = _require("pynwb", "nwb")

    store = store_or_path
    if isinstance(store_or_path, (str, os.PathLike)):
        store = open_store(store_or_path)
    if isinstance(store, RankedStoreReader):
        raise ValueError("a ranked store: export one rank at a time, to_nwb(store.rank(r), ...)")
    out_path = os.fspath(out_path)
    _check_output(store, out_path)
    if os.path.lexists(out_path) and not overwrite:
        raise FileExistsError(f"{out_path} exists; pass overwrite=True to replace it")
    if dt is None:
        dt = _store_seconds(store)
    if not dt > 0:
        raise ValueError(f"dt must be a positive number of seconds, got {dt!r}")
    dt = float(dt)
    location = str(store.source.location) if store.source is not None else "<zarr store>"
    chosen = list(store) if monitors is None else list(monitors)
    for m in chosen:
        store[m]  # KeyError naming the store's monitors

    nwb = pynwb.NWBFile(
        session_description=session_description or f"spikestore store {location}",
        identifier=identifier or str(uuid.uuid4()),
        session_start_time=session_start_time or _first_start(store) or datetime.now(UTC),
        source_script="spikestore.export.to_nwb",
        source_script_file_name="spikestore/export.py",
    )
    meta: dict[str, Any] = {
        "spikestore_store": location,
        "format_version": store.meta.get("version"),
        "created_by": store.meta.get("created_by"),
        "dt_seconds": dt,
        # The run's description (format 1.5): the user's attributes and marks.
        "attrs": getattr(store, "attrs", {}),
        "marks": getattr(store, "run", {}).get("marks", {}),
        # Each opening of a writer (format 1.7): its own attrs and where it began.
        "runs": [
            {
                "index": r.index,
                "started": r.started,
                "attrs": r.attrs,
                "first": r.first,
                "marks_from": r.marks_from,
            }
            for r in getattr(store, "runs", ())
        ],
        "layers": [],
        "skipped": [],
    }
    # Beside out_path, then renamed over it: HDF5 truncates the file it opens, which
    # would write through a hard link (to a file in the store, say) and leave a
    # half-written file where a good one was if the export fails.
    folder = os.path.dirname(os.path.abspath(out_path))
    tmp = os.path.join(folder, f".spikestore-export-{uuid.uuid4().hex}.nwb")
    units = _nwb.UnitWriter(tmp[: -len(".nwb")] + ".spike-times")
    module = None
    used: set[str] = set()
    try:
        for m in chosen:
            for lname, layer in store[m].items():
                for fi in range(len(layer.fields)):
                    where = {"monitor": m, "layer": lname, "field": fi}
                    parts, skipped = _nwb.plan(layer, fi)
                    for why in skipped:
                        meta["skipped"].append({**where, "reason": why})
                        name = f"{m}/{lname}" + (f" field {fi}" if len(layer.fields) > 1 else "")
                        warnings.warn(
                            f"{name} is not exported to {out_path}: {why}",
                            ExportWarning,
                            stacklevel=2,
                        )
                    for part in parts:
                        entry = {**where, "kind": part.kind, "time_axis": layer.time_axis}
                        if part.kind == "spikes":
                            meta["layers"].append({**entry, **units.add(layer, part, dt)})
                            continue
                        name = _nwb_name(
                            used,
                            m,
                            lname,
                            *([f"f{fi}"] if len(layer.fields) > 1 else []),
                            *([f"shape{part.number}"] if part.number is not None else []),
                        )
                        ts, note = _nwb.series(pynwb, layer, part, name, dt)
                        meta["layers"].append({**entry, **note})
                        if module is None:
                            module = nwb.create_processing_module(
                                name="spikestore",
                                description=f"records of spikestore store {location}",
                            )
                        module.add(ts)
        if units.count:
            nwb.units = units.table(
                f"one unit per neuron of the spike layers of spikestore store {location}"
            )
        nwb.notes = json.dumps(meta)
        with pynwb.NWBHDF5IO(tmp, "w") as io:
            io.write(nwb)
        os.replace(tmp, out_path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno and tmp in f"{exc.filename} {exc}":
            # h5py's message names the temporary file: name the file asked for.
            raise OSError(exc.errno, os.strerror(exc.errno), out_path) from exc
        raise
    finally:
        with contextlib.suppress(OSError):
            units.close()
    return out_path
