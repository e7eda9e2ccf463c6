"""Analysis of recorded layers: rates, counts, rasters, traces, and NumPy/Dask/xarray views.

Every function takes a :class:`~spikestore.reader.LayerReader` (``store[monitor][layer]``)
and reads only what it needs:

* :func:`summary`, :func:`firing_rate` read the per-step summaries the writer
  stored beside the records (see :mod:`spikestore.summary`); no record is
  decoded. Stores without summaries fall back to decoding.
* :func:`raster` and :func:`traces` with a neuron subset read only the chunks
  holding those neurons' columns (bytes of packed spikes, or raw elements).
* :func:`spike_counts` and :func:`spike_trains` decode the step window block by
  block (a bounded number of elements at a time).
* :func:`to_dask` and :func:`to_xarray` are lazy: each block reads its own chunks
  when computed.
* :func:`step_selection`, :func:`record_shape`, :func:`neuron_ids`, :func:`unravel`
  and :func:`shapes` turn the ``steps``, ``field`` and ``neurons`` arguments these
  functions take into indices, for plots and code of your own.

Fields
------
A layer whose records are tuples or lists (snnTorch's ``(spk, mem)``) stores one
field per element. Every function that reads values takes ``field=``: an int (the
element's position) or, in stores that name their fields, a field name as in
``layer.field_names``. Default 0.

Time axis
---------
A step is one record (one hook call). Multi-step records (SpikingJelly's
``[T, B, ...]``, recorded with ``time_axis=0``) hold ``T`` time steps each; the
store keeps that axis as ``layer.time_axis``. :func:`raster`, :func:`traces`,
:func:`spike_counts`, :func:`spike_trains` and :func:`unravel` take ``time_axis``:

* ``None`` (default): the layer's stored ``time_axis`` (none for single-step layers
  and for stores written before format 1.3).
* ``True`` (axis 0) or an int: that record axis is time, stored or not.
* ``False``: no time axis; every step is one time point.

With a time axis ``a`` of length ``T``, step ``s``, time index ``t`` is global time
``s * T + t``, and a neuron is an element of the record *without* axis ``a``: a
tuple of its indices (``(batch, neuron)`` for ``[T, B, N]``) or its flat C-order
index into that shape (``b * N + n``). :func:`raster` gives flat ids; ``unravel(layer,
ids)`` turns them into one row of indices per id (``(batch, neuron)`` pairs).
Without a time axis a neuron is an element of the whole record, numbered the same
way. ``firing_rate(over="time")`` reads per-time summaries, which exist for axis 0
only.

Mixed shapes
------------
A layer can record several shapes: a smaller last batch (a ``DataLoader`` with
``drop_last=False``), another batch size for evaluation. :func:`shapes` lists each
shape with its steps. Every function whose selected steps (``steps=``) all have one
shape works exactly as on a one-shape layer. When the selection mixes shapes:

* :func:`summary`, :func:`firing_rate` and :func:`mean_rate` are per step and
  never mind shapes (``firing_rate(over="time")`` needs one time length).
* Shapes that differ only in the **batch axis** (the axis named ``"batch"`` by
  ``layer.dims``; else axis 1 of a layer whose time axis is 0, else axis 0):
  neurons are numbered in the largest shape (the batch axis at its largest size,
  :func:`record_shape`), and a neuron ``(b, ...)`` exists only at steps whose batch
  is larger than ``b``. :func:`spike_counts` counts each neuron over the steps where
  it exists; :func:`raster` and :func:`spike_trains` have its events only there;
  :func:`traces` is NaN at the other steps. :func:`to_numpy`, :func:`to_dask`,
  :func:`to_xarray` and :class:`LayerArray` refuse such a selection with a
  ValueError listing the shapes and their steps, unless ``pad=True``: then the
  batch axis is padded to the largest size with NaN (integer and bool records come
  back as float64).
* Shapes that differ in any **other axis**: a ValueError listing each shape with
  its step count and first and last step; pass ``steps=`` within one shape.

Steps that recorded ``None`` are NaN rows (no events, zero counts), and steps that
recorded a Python number (SpikingJelly's ``v = 0.0`` before the first step)
broadcast to the shape around them. A layer that recorded only ``None`` at the
selected steps (an attribute that was never set, e.g. ``v_seq`` without
``store_v_seq=True``) is a ValueError that says so.

Ranked stores
-------------
A layer of a store written by the ranks of a ``torch.distributed`` job
(:class:`~spikestore.reader.RankedLayerReader`) is read by one rule everywhere:
without ``rank=``, a function reads every rank over the steps that every rank has
(``len(layer)``; ``steps`` index those) and returns what it returns for one rank
with a new leading rank axis, ranks in ``layer.ranks`` order: ``summary`` gives
``(ranks, steps, 5)``, ``firing_rate`` ``(ranks, steps)``, ``spike_counts``
``(ranks, *counts)``, ``traces`` ``(ranks, steps, neurons)``, ``to_numpy`` and
``to_dask`` ``(ranks, steps, *record shape)``, ``to_xarray`` a ``rank`` dimension
whose coordinate is the rank numbers, ``mean_rate`` one rate per rank. Events
are ragged, so :func:`raster` gives a list of ``(times, neurons)`` pairs, one per
rank. With ``rank=r``, a function reads rank ``r`` alone, all its steps, exactly
as it reads ``layer.layer(r)``. ``rank=`` on a layer of an ordinary store is a
ValueError.

Dask and dask.distributed
-------------------------
:func:`to_dask` builds a graph that describes the store (its path or URL, the
layer, the step count) rather than holding it open: it pickles to a few
kilobytes, each worker process opens the store once and keeps it for every graph
it runs, and the array is the prefix committed when ``to_dask`` was called, so a
writer appending to the store meanwhile never changes a result.

Reading the store without spikestore
------------------------------------
Each field group (``<store>/<monitor key>/<layer key>/f0``) is a plain Zarr v3 group
whose arrays carry ``dimension_names``, so ``xarray.open_zarr`` and
``dask.array.from_zarr`` open them directly:

* raw segments ``s<k>`` (e.g. float membrane potentials) are arrays of shape
  ``(rows, *record shape)`` with dimensions ``["step", "dim_0", ...]`` and the
  record's storage dtype. ``dask.array.from_zarr(store_path, component="v/sn1/f0/s0")``
  or ``xarray.open_zarr(store_path, group="v/sn1/f0", consolidated=False)["s0"]``
  give them lazily. Row ``r`` is a step only when the field has a single segment
  and never recorded ``None``; otherwise map steps to rows with the ``index``
  array (and open the arrays one by one: the rows of different segments share
  the dimension name ``step`` but not its length, which ``xarray.open_zarr``
  refuses for the whole group; pass ``drop_variables``).
* spike segments hold packed bytes, dimensions ``["step", "packed_bits"]``:
  ``numpy.unpackbits(row, count=numel)`` (MSB first) gives the flat record.
  :func:`to_dask` and :func:`to_xarray` decode them for you.
* ``summary`` (``["step", "stat"]``) and ``summary_axis0`` (``["step", "axis0"]``) are
  aligned with steps (see :mod:`spikestore.summary`).

Modules and threads
-------------------
This package re-exports the public names of its modules, one per job: ``_select``
(steps, fields, time axis, ranks, neurons), ``_ranks`` (the rule for ranked stores,
a decorator), ``_shapes`` (mixed shapes, neuron layouts), ``_read`` (decoding chosen
elements), ``_rates`` (summaries, rates), ``_events`` (counts, rasters, spike trains,
traces) and ``_views`` (lazy arrays, NumPy, Dask, xarray). A module's ``__all__``
lists the names other modules of spikestore may use (:mod:`spikestore.plot` reads
layers through ``_select`` and ``_shapes``). Every function runs in the caller's
thread; the blocks of a Dask graph run where it is computed (its workers), each
process with one reader per store.
"""

from __future__ import annotations

from ._events import _TRAIN_BLOCK as _TRAIN_BLOCK  # lowered by tests
from ._events import raster, spike_counts, spike_trains, store_dt, traces
from ._rates import firing_rate, mean_rate, summary
from ._select import neuron_ids, step_selection
from ._shapes import record_shape, shapes, unravel
from ._views import LayerArray, to_dask, to_numpy, to_xarray
from ._views import _cached_readers as _cached_readers  # for client.run on dask workers

__all__ = [
    "step_selection",
    "record_shape",
    "shapes",
    "neuron_ids",
    "unravel",
    "summary",
    "firing_rate",
    "mean_rate",
    "spike_counts",
    "raster",
    "spike_trains",
    "store_dt",
    "traces",
    "to_numpy",
    "to_dask",
    "to_xarray",
    "LayerArray",
]
