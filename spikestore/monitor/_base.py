"""The base monitor: module selection, hooks, its writer, reading back, closing.

:class:`BaseMonitor` picks modules by SpikingJelly's ``instance`` argument, hooks them
through a holder that only the hooks keep (so the network keeps the monitor, never the
reverse), opens a :class:`~spikestore.StoreWriter` or shares one (one monitor name per
writer, claimed in ``_CLAIMS``), appends each record, and reads records back through a
:class:`~spikestore.StoreReader`. A monitor's state (record order, call counts, recent
records) is owned by the thread that runs the hooks; its store reader and layer readers
are refreshed under ``_reading``, so another thread may read ``records`` while the hooks
record. ``_CLAIMS`` is changed by the threads that open and close monitors.
"""

from __future__ import annotations

import collections
import fnmatch
import os
import re
import shutil
import tempfile
import threading
import warnings
import weakref
from array import array
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from .._records import time_axis_arg
from ..errors import RecordError
from ..reader import LayerReader, StoreReader
from ..writer import StoreWriter
from ._axes import module_time_axis, record_dims
from ._readback import Records, remember

__all__ = ["BaseMonitor", "Instance"]

#: Which monitor names are taken on each open writer, so that two live monitors
#: never append to the same (monitor, layer) arrays.
_CLAIMS: weakref.WeakKeyDictionary[StoreWriter, set[str]] = weakref.WeakKeyDictionary()

Instance = type | str | re.Pattern[str] | tuple[Any, ...] | list[Any] | None


def _matcher(net: nn.Module, instance: Instance) -> Callable[[str, nn.Module], bool]:
    """A predicate on ``(name, module)`` for SpikingJelly's ``instance`` argument.

    A type (or tuple of types) selects by ``isinstance``; a ``str`` is an
    ``fnmatch`` pattern and a compiled regex must ``fullmatch`` the module's
    name as ``net.named_modules()`` gives it; a list (or tuple) may mix them.
    """
    if instance is None:
        instance = type(net)
    items = list(instance) if isinstance(instance, (list, tuple)) else [instance]
    types: list[type] = []
    globs: list[str] = []
    regexes: list[re.Pattern[str]] = []
    for it in items:
        if isinstance(it, type):
            types.append(it)
        elif isinstance(it, str):
            globs.append(it)
        elif isinstance(it, re.Pattern):
            regexes.append(it)
        else:
            raise TypeError(
                "instance must be a module type, a name pattern (str or compiled regex) "
                f"or a list of those, got {type(it).__name__}"
            )
    ttuple = tuple(types)

    def match(name: str, module: nn.Module) -> bool:
        return (
            (bool(ttuple) and isinstance(module, ttuple))
            or any(fnmatch.fnmatchcase(name, g) for g in globs)
            or any(r.fullmatch(name) for r in regexes)
        )

    return match


def _cleanup(
    hooks: list[Any], writer: StoreWriter | None, tmpdir: str | None, claim: tuple[Any, str] | None
) -> None:
    """Run when a monitor is collected (or at exit) without :meth:`BaseMonitor.close`."""
    for h in hooks:
        h.remove()
    hooks.clear()
    if claim is not None:
        _release(*claim)
    if writer is not None:
        try:
            writer.close()
        except Exception:
            pass
    if tmpdir is not None:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _release(writer_ref: weakref.ref[StoreWriter], name: str) -> None:
    w = writer_ref()
    if w is not None:
        _CLAIMS.get(w, set()).discard(name)


class _Holder:
    """The monitor, for its hooks: the only strong reference the network has to it."""

    __slots__ = ("__weakref__", "monitor")

    def __init__(self, monitor: BaseMonitor) -> None:
        self.monitor: BaseMonitor | None = monitor


def _dead() -> None:
    """A weak reference that is already dead."""
    return None


def _empty(holder_ref: Callable[[], _Holder | None]) -> None:
    """Let go of the monitor: its hooks were removed, or its network was collected."""
    holder = holder_ref()
    if holder is not None:
        holder.monitor = None


def _hook(
    holder: _Holder, lid: int, value: Callable[[BaseMonitor, Any, tuple[Any, ...]], Any]
) -> Any:
    """A hook recording ``value(monitor, module, hook_args)`` for layer ``lid`` while
    ``holder`` holds the monitor (see :meth:`BaseMonitor._attach`)."""

    def hook(module: nn.Module, *args: Any) -> None:
        m = holder.monitor
        if m is None or not m._enable:
            return
        if m.every != 1:
            c = m._calls[lid]
            m._calls[lid] = c + 1
            if c % m.every:
                return
        m._record(lid, value(m, module, args))

    return hook


class BaseMonitor:
    """Base class of the disk-backed monitors.

    Parameters
    ----------
    store : str, Path or StoreWriter, optional
        Where records go: a directory (a new store is written there; a store
        already there is refused unless ``mode`` says what to do), or an open
        :class:`~spikestore.StoreWriter`
        that several monitors share (it stays open when the monitor closes; each
        monitor needs its own ``name`` on it). By default a new store in a
        ``tempfile.mkdtemp()`` directory, given by :attr:`path`; that directory is
        deleted when the monitor is garbage collected or the interpreter exits, so
        pass ``store=`` to keep the data. A URL (``"s3://bucket/run"``) writes to
        object storage; for its ``storage_options``, or to record on some ranks
        of a ``torch.distributed`` job only, pass a ``StoreWriter(..., ranks=[0])``.
        Under ``torch.distributed`` every rank writes its own part of one ranked
        store, and :attr:`records` are this rank's.
    mode, overwrite
        For a ``store`` path, as for :class:`~spikestore.StoreWriter`: by default an
        existing store is refused; ``mode="a"`` appends to it, ``mode="w"`` (or
        ``overwrite=True``) replaces it.
    name : str
        The monitor's key in the store (``reader[name][layer]``).
    every : int
        Record only every ``every``-th call of each layer (the 1st, the
        ``every+1``-th, ...); calls while disabled do not count.
    time_axis : "auto", int or None
        The axis of the records that is time, for any module (kept in the store; see
        ``time_axis`` in :meth:`~spikestore.StoreWriter.append`). ``"auto"``
        (default): :func:`module_time_axis` (0 for SpikingJelly's multi-step mode and
        Norse's ``LIF``-like modules); None: no time axis.
    dims : "auto", sequence of str, or None
        Names of the records' axes, kept in the store for analysis and
        ``to_xarray``. ``"auto"`` (default): :func:`default_dims` of each layer's
        first tensor (``time, batch, channel, y, x``; batch-first records; for
        :class:`AttributeMonitor` only on SpikingJelly, snnTorch and Norse modules);
        None: not named.

    Notes
    -----
    Modules with ``step_mode == "m"`` (SpikingJelly's multi-step mode) record
    ``[T, B, ...]`` tensors; their spikes are stored with T last (see
    ``time_axis`` in :meth:`~spikestore.StoreWriter.append`), which compresses
    them several times better and reads back identically.

    The network's hooks hold the monitor (as SpikingJelly's do), so
    ``OutputMonitor(net, IFNode, store="run.spikes")`` written as a statement records
    every forward pass until :meth:`close` or :meth:`remove_hooks`, or until the
    network is collected; a store the monitor opened is then committed and closed (at
    interpreter exit at the latest). Records go to disk as they come: a monitor
    nobody references costs no more memory than one held in a variable.

    :meth:`clear_recorded_data` only hides earlier records from ``records`` and
    ``monitor[layer]``: the store is append-only, so they stay on disk and a
    reader of the store still sees them (steps keep counting up).
    """

    _default_name = "records"
    #: Bytes of the latest records a monitor keeps (records of at most a quarter of it
    #: each, counted as the tensors they read back as: tensors, numbers, None, flat
    #: tuples and lists), so that reading them back (``records[-1]``,
    #: ``torch.cat(m.records)`` at every step, as SpikingJelly's examples do) needs no
    #: commit and no read from the store. A tensor is kept as the writer queued it (its
    #: packed spikes or its copy of the values: the hook copies nothing more), made a
    #: tensor when first read. Other records are
    #: read from the store, after a commit if they are not committed yet. Set it on
    #: the monitor (``mon.recent_bytes = 0`` keeps nothing). A writer with
    #: ``precision=`` stores floats rounded: their records are always read from the store.
    recent_bytes: int = 1 << 20

    def __init__(
        self,
        *,
        store: str | os.PathLike[str] | StoreWriter | None = None,
        name: str | None = None,
        every: int = 1,
        mode: str | None = None,
        overwrite: bool = False,
        time_axis: int | str | None = "auto",
        dims: Sequence[str] | str | None = "auto",
    ) -> None:
        if (
            time_axis != "auto"
            and time_axis is not None
            and (isinstance(time_axis, bool) or not isinstance(time_axis, int))
        ):
            raise ValueError(f"time_axis must be 'auto', None or an axis (int), got {time_axis!r}")
        if time_axis != "auto":
            try:
                time_axis_arg(time_axis, type(self).__name__)  # the writer's own check
            except RecordError as exc:
                raise ValueError(str(exc)) from None
        if (
            dims != "auto"
            and dims is not None
            and (isinstance(dims, str) or not all(isinstance(d, str) and d for d in dims))
        ):
            raise ValueError(f"dims must be 'auto', None or a sequence of names, got {dims!r}")
        self._time_axis_arg = time_axis
        self._dims_arg: tuple[str, ...] | str | None = (
            dims if dims is None or isinstance(dims, str) else tuple(dims)
        )
        self.hooks: list[Any] = []
        self.monitored_layers: list[str] = []
        self._enable = True
        self._closed = False
        self.name = self._default_name if name is None else name
        if not isinstance(self.name, str):
            raise TypeError(f"name must be str, got {type(self.name).__name__}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive int, got {every!r}")
        self.every = every
        # Per record: its layer id and its step in that layer's arrays.
        self._order = array("i")
        self._steps = array("q")
        # Per layer id: calls seen.
        self._calls: list[int] = []
        self._time_axis: list[int | None] = []
        self._auto_dims: list[bool] = []  # per layer: dims follow the module's convention
        self._named: list[bool] = []  # per layer: a record (and its dims) was taken
        self._lids: dict[str, int] = {}
        self._reader: StoreReader | None = None
        self._layer_readers: dict[int, LayerReader] = {}
        self._seen = 0  # records appended when the reader was last refreshed
        self._appended = 0
        self._reading = threading.RLock()  # held while reading records from the store
        # The latest small records, by (layer id, step): read back without a commit
        # (see recent_bytes and _readback).
        self._recent: collections.OrderedDict[tuple[int, int], tuple[Any, int]] = (
            collections.OrderedDict()
        )
        self._recent_nbytes = 0
        # Held only by the hooks (see _attach).
        self._holder: Callable[[], _Holder | None] = _dead
        self._net_finalizer: weakref.finalize | None = None

        tmpdir = None
        if isinstance(store, StoreWriter):
            if mode is not None or overwrite:
                raise ValueError(
                    "mode= and overwrite= apply to a store path; a StoreWriter passed as "
                    "store= was opened with its own mode"
                )
            writer, self._owns_writer = store, False
        else:
            if store is None:
                tmpdir = tempfile.mkdtemp(prefix="spikestore-monitor-")
                store = tmpdir
            writer, self._owns_writer = StoreWriter(store, mode, overwrite=overwrite), True
        self._writer = writer
        # The writer's own append (StoreWriter.append, also handing back the fields).
        self._append = writer._impl.append
        self.path: Path | None = writer.path
        claimed = _CLAIMS.setdefault(writer, set())
        if self.name in claimed:
            if self._owns_writer:
                writer.close()
                if tmpdir is not None:
                    shutil.rmtree(tmpdir, ignore_errors=True)
            raise ValueError(
                f"another open monitor already records as {self.name!r} into {writer.where}; "
                "give this one a different name="
            )
        claimed.add(self.name)
        self._claim = (weakref.ref(writer), self.name)
        # The monitor's group exists from now on, even if the run dies before a record.
        writer.add_monitor(self.name)
        self._finalizer = weakref.finalize(
            self, _cleanup, self.hooks, writer if self._owns_writer else None, tmpdir, self._claim
        )

    # ---------------------------------------------------------------- set-up
    def _monitor_modules(self, net: nn.Module, instance: Instance) -> list[tuple[str, nn.Module]]:
        match = _matcher(net, instance)
        modules = [(n, m) for n, m in net.named_modules() if match(n, m)]
        if not modules:
            warnings.warn(
                f"{type(self).__name__} {self.name!r}: no module of {type(net).__name__} "
                f"matches instance={instance!r}, so nothing will be recorded (module types "
                f"there: {sorted({type(m).__name__ for m in net.modules()})[:12]})",
                stacklevel=3,
            )
        for n, m in modules:
            self._lids[n] = len(self.monitored_layers)
            self.monitored_layers.append(n)
            self._calls.append(0)
            # Multi-step modules take and give [T, B, ...]: the writer then packs spikes
            # with T last (each neuron's series contiguous: several times smaller on
            # conv layers), and analysis knows the time axis.
            axis = self._time_axis_arg
            self._time_axis.append(module_time_axis(m) if axis == "auto" else axis)  # type: ignore[arg-type]
            self._auto_dims.append(self._dims_arg == "auto" and self._has_batch(m))
            self._named.append(False)
        return modules

    def _has_batch(self, module: nn.Module) -> bool:
        """Whether the records of ``module`` follow PyTorch's batch-first convention
        (activations and their gradients do; an attribute does for neuron modules)."""
        return True

    def _dims(self, lid: int, value: Any) -> Any:
        """The axis names to give the writer with this record: for a layer's first
        record only (the writer keeps them from then on)."""
        if self._dims_arg != "auto":
            return self._dims_arg
        if not self._auto_dims[lid] or self._named[lid]:
            return None
        return record_dims(value, self._time_axis[lid])

    def _attach(
        self,
        net: nn.Module,
        instance: Instance,
        kind: str,
        value: Callable[[BaseMonitor, Any, tuple[Any, ...]], Any],
    ) -> None:
        """Hook the selected modules of ``net``; each hook records
        ``value(monitor, module, hook_args)``.

        The hooks hold the monitor (through one :class:`_Holder`), so the network
        keeps it recording until the hooks are removed (:meth:`close`,
        :meth:`remove_hooks`) or ``net`` is collected. The holder is emptied then
        too: a module can outlive its network when autograd keeps it (a full backward
        hook sits in the graph of a tensor that the module itself holds, such as a
        neuron's membrane potential: a cycle through C++ that Python's collector
        cannot see), and such a module must not keep the monitor. The monitor holds
        its hooks' handles, which hold the modules only weakly, and ``net`` only
        weakly: it never keeps the network alive.
        """
        modules = self._monitor_modules(net, instance)
        if not modules:
            return
        holder = _Holder(self)
        self._holder = weakref.ref(holder)
        self._net_finalizer = weakref.finalize(net, _empty, self._holder)
        for n, module in modules:
            hook = _hook(holder, self._lids[n], value)
            if kind == "forward":
                self.hooks.append(module.register_forward_hook(hook))
            elif kind == "forward_pre":
                self.hooks.append(module.register_forward_pre_hook(hook))
            else:
                self.hooks.append(module.register_full_backward_hook(hook))

    def _record(self, lid: int, value: Any) -> None:
        # StoreWriter.append, also handing back the record's fields as queued for the
        # writer thread (immutable packed bits or copies of the values): the monitor
        # keeps its latest records without copying them again (see _readback).
        keep: list[Any] = []
        # Axis names go with a layer's first record only, unless given (_dims).
        dims = None if self._named[lid] and self._dims_arg == "auto" else self._dims(lid, value)
        try:
            step = self._append(
                self.name,
                self.monitored_layers[lid],
                value,
                self._time_axis[lid],
                dims,
                None,
                keep,
            )
        except TypeError as exc:
            raise TypeError(
                f"{type(self).__name__}: {exc}; the function_on_* must return a tensor, a "
                "tuple or list of tensors, a number or None"
            ) from None
        self._named[lid] = True
        if step < 0:  # a rank that does not record (StoreWriter(ranks=...))
            return
        self._order.append(lid)
        self._steps.append(step)
        self._appended += 1
        if self.recent_bytes > 0:
            remember(self, lid, step, value, keep)

    # --------------------------------------------------------------- reading
    def _layer_reader(self, lid: int, need: int | None = None) -> LayerReader:
        """The layer's reader, committing and refreshing first if records were taken
        since (unless its reader already holds ``need`` steps)."""
        with self._reading:  # threads reading records while the hooks record
            lr = self._layer_readers.get(lid)
            if lr is not None and need is not None and len(lr) >= need:
                return lr
            if self._appended != self._seen or self._reader is None:
                # Records appended from here on (by the hooks) may miss the commit.
                appended = self._appended
                w = self._writer
                if not w.closed and w.owned:
                    w.flush()
                if self._reader is None:
                    if w.path is not None:
                        self._reader = StoreReader(w.path)
                    else:
                        self._reader = StoreReader(store=w.store)
                else:
                    self._reader.refresh()
                self._layer_readers.clear()
                self._seen = appended
            lr = self._layer_readers.get(lid)
            if lr is None:
                lr = self._reader[self.name][self.monitored_layers[lid]]
                self._layer_readers[lid] = lr
            return lr

    @property
    def records(self) -> Records:
        """Every visible record, in the order recorded (a lazy, read-only sequence)."""
        return Records(self)

    @property
    def name_records_index(self) -> dict[str, list[int]]:
        """Layer name -> indices into ``records`` of that layer's records."""
        lids = np.frombuffer(self._order[:], dtype=np.int32) if self._order else np.zeros(0)
        return {n: np.nonzero(lids == i)[0].tolist() for i, n in enumerate(self.monitored_layers)}

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, int):
            return self.records[i]
        if isinstance(i, str):
            lid = self._lids.get(i)
            if lid is None:
                raise KeyError(f"{i!r} is not monitored; monitored_layers: {self.monitored_layers}")
            if not self._order:
                return []
            pos = np.nonzero(np.frombuffer(self._order[:], dtype=np.int32) == lid)[0]
            return self.records._take(pos)
        raise ValueError(i)

    # ------------------------------------------------------------- controls
    def clear_recorded_data(self) -> None:
        """Forget the records so far (they stay on disk; see the class notes)."""
        self._order = array("i")
        self._steps = array("q")
        self._recent.clear()
        self._recent_nbytes = 0

    def enable(self) -> None:
        self._enable = True

    def disable(self) -> None:
        self._enable = False

    def is_enable(self) -> bool:
        return self._enable

    def remove_hooks(self) -> None:
        """Remove the hooks; records stay readable."""
        for h in self.hooks:
            h.remove()
        self.hooks.clear()
        _empty(self._holder)
        if self._net_finalizer is not None:
            self._net_finalizer.detach()
        _release(*self._claim)

    @property
    def writer(self) -> StoreWriter:
        """The :class:`~spikestore.StoreWriter` this monitor records into (for its
        ``set_attrs``, ``mark``, ``flush``)."""
        return self._writer

    def mark(self, **values: Any) -> None:
        """Mark every later step of the store's layers, e.g. ``mark(epoch=3,
        phase="eval")`` (see :meth:`spikestore.StoreWriter.mark`)."""
        self._writer.mark(**values)

    def flush(self) -> None:
        """Block until every record taken so far is on disk."""
        if not self._writer.closed and self._writer.owned:
            self._writer.flush()

    def close(self) -> None:
        """Remove the hooks and flush; close the store if this monitor opened it.

        Idempotent. Records stay readable (from disk) afterwards.
        """
        if self._closed:
            return
        self._closed = True
        self.disable()
        self.remove_hooks()
        # The finalizer stays armed: it deletes a temporary store once the monitor goes.
        if self._owns_writer:
            self._writer.close()
        else:
            self.flush()

    def __enter__(self) -> BaseMonitor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self.path if self.path is not None else self._writer.where
        return (
            f"<{type(self).__name__} {self.name!r} -> {where}: {len(self._order)} records, "
            f"layers {self.monitored_layers}{'' if self._enable else ', disabled'}>"
        )
