"""Disk-backed monitors with SpikingJelly's API.

Each monitor registers PyTorch hooks on the selected modules of a network, like
``spikingjelly.activation_based.monitor``, but instead of keeping every record
in a Python list it hands the record to a :class:`~spikestore.StoreWriter`,
which copies it on the caller's thread and encodes and writes it on its own
thread. Memory therefore stays bounded however long the run, and the records
are on disk, readable with :func:`spikestore.open`, after the process ends.

Moving code over needs one changed import::

    from spikestore.monitor import OutputMonitor   # was spikingjelly...monitor

``records``, ``monitored_layers``, ``monitor[i]``, ``monitor['layer']``,
``enable``/``disable``/``is_enable``, ``clear_recorded_data``, ``remove_hooks``
and ``close`` behave as in SpikingJelly 2.0; reading a record decodes it from
disk (after flushing the writer, so it sees everything the hooks recorded).

What a monitor keeps in memory is one ``int32`` layer id and one ``int64`` step
per record (their order across layers), never the tensors. As in SpikingJelly,
the hooks hold the monitor, so a monitor created as a bare statement records for
as long as the network lives; it stops at :meth:`~BaseMonitor.close`,
:meth:`~BaseMonitor.remove_hooks`, or when the network (and the monitor) are
collected, and a store it owns is then closed (committed; at interpreter exit
too). See :class:`BaseMonitor` for what happens to a temporary store.
"""

from __future__ import annotations

import collections
import fnmatch
import os
import re
import shutil
import tempfile
import warnings
import weakref
from array import array
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ._records import flatten, time_axis_arg
from .errors import RecordError
from .reader import LayerReader, StoreReader, step_indices
from .writer import StoreWriter

__all__ = [
    "default_dims",
    "module_time_axis",
    "BaseMonitor",
    "OutputMonitor",
    "InputMonitor",
    "AttributeMonitor",
    "GradInputMonitor",
    "GradOutputMonitor",
]

#: Which monitor names are taken on each open writer, so that two live monitors
#: never append to the same (monitor, layer) arrays.
_CLAIMS: weakref.WeakKeyDictionary[StoreWriter, set[str]] = weakref.WeakKeyDictionary()

Instance = type | str | re.Pattern[str] | tuple[Any, ...] | list[Any] | None


def module_time_axis(module: nn.Module) -> int | None:
    """The time axis of a module's records as its library defines it: 0 for
    SpikingJelly modules in multi-step mode (``step_mode == "m"``) and for Norse's
    ``SNN`` modules (``LIF``, ... take ``[T, B, ...]``), None for single-step
    modules (SpikingJelly ``step_mode == "s"``, Norse's ``*Cell``, snnTorch) and for
    any other module."""
    if getattr(module, "step_mode", None) == "m":
        return 0
    for cls in type(module).__mro__:
        if cls.__module__.startswith("norse."):
            if cls.__name__ == "SNNCell":
                return None
            if cls.__name__ == "SNN":
                return 0
    return None


#: Names of the axes after time and batch, by how many there are.
_FEATURE_DIMS = {0: (), 1: ("neuron",), 2: ("channel", "x"), 3: ("channel", "y", "x")}
_FEATURE_DIMS[4] = ("channel", "z", "y", "x")


def default_dims(ndim: int, time_axis: int | None) -> tuple[str, ...] | None:
    """Axis names of a batch-first record of rank ``ndim`` (PyTorch's convention):
    ``("batch", "neuron")``, ``("batch", "channel", "y", "x")``, and with ``time``
    first when ``time_axis == 0``; None when the rank does not say (a 1-D record,
    a time axis elsewhere, more than four feature axes)."""
    lead: tuple[str, ...] = ("time", "batch") if time_axis == 0 else ("batch",)
    if time_axis not in (None, 0):
        return None
    rest = _FEATURE_DIMS.get(ndim - len(lead))
    return None if rest is None or ndim < 2 else lead + rest


def _leaf_ranks(value: Any) -> list[int | None] | None:
    """The rank of each field of a record, as the writer flattens it (None for a field
    that is not a tensor); None for a record the writer will refuse (its error says
    why, naming the monitor, layer and step)."""
    try:
        _, leaves, _ = flatten(value)
    except (TypeError, RecordError):
        return None
    return [None if leaf.tensor is None else leaf.tensor.dim() for leaf in leaves]


def _has_float(value: Any) -> bool:
    if isinstance(value, (tuple, list)):
        return any(_has_float(v) for v in value)
    return isinstance(value, float) or (
        isinstance(value, torch.Tensor)
        and value.dtype in (torch.float16, torch.float32, torch.float64)
    )


def _recent_copy(value: Any, limit: int) -> tuple[Any, int] | None:
    """A copy of ``value`` as the reader would give it back (CPU tensors, Python numbers,
    None, a flat tuple or list of those) and its bytes; None if it is larger than
    ``limit`` or of another kind (the reader then decodes it from the store)."""
    if isinstance(value, (tuple, list)) and type(value) in (tuple, list):
        if not value:
            return None
        parts = [_recent_copy(v, limit) for v in value]
        nested = any(isinstance(v, (tuple, list)) for v in value)
        if nested or any(p is None for p in parts):
            return None
        got = [p for p in parts if p is not None]
        n = sum(p[1] for p in got)
        if n > limit:
            return None
        return type(value)(p[0] for p in got), n
    if value is None:
        return None, 0
    if type(value) in (bool, int, float):
        return value, 8
    if isinstance(value, torch.Tensor):
        n = value.numel() * value.element_size()
        if n > limit or value.layout != torch.strided or value.is_nested:
            return None
        return value.detach().to("cpu", copy=True), n
    return None


def _unpack_len1_tuple(x: Any) -> Any:
    if isinstance(x, tuple) and len(x) == 1:
        return x[0]
    return x


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


class Records(Sequence[Any]):
    """A monitor's records in the order the hooks produced them, read from disk.

    Supports ``len``, integer indexing (negative too), slices and lists of indices
    (a list of records; see :func:`spikestore.reader.step_indices`),
    iteration, ``print`` and :meth:`clear` (same as the monitor's
    ``clear_recorded_data``). Each access decodes the records it needs, a layer at
    a time: every chunk that holds several of them is read and decoded once.

    SpikingJelly's idioms work too: ``torch.cat(m.records, 0)``,
    ``torch.stack(m.records)`` (any ``torch`` function given the records, through
    ``__torch_function__``), ``m.records + other_list`` and ``other_list + m.records``
    (a list).

    Memory: it is not a ``list``; the monitor keeps copies of its latest small records
    only (:attr:`BaseMonitor.recent_bytes`, 1 MiB), which are read back without a commit
    or decoding. Indexing holds the records asked for; iteration about 256 records at a
    time. A ``torch`` function and ``+``
    need every record at once: they decode all of them into a list (as large
    as SpikingJelly's own ``records``); ``+`` returns it, a ``torch`` function drops
    it when it returns, so ``torch.cat`` peaks at about twice the records' size. For a long run,
    read steps of one layer (``m[layer]``, or ``spikestore.open(path)``'s lazy
    layers) instead.
    """

    def __init__(self, monitor: BaseMonitor) -> None:
        self._m = monitor

    def __len__(self) -> int:
        return len(self._m._order)

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        m = self._m
        idx, many = step_indices(key, len(m._order), "record", where=f"monitor {m.name!r}")
        out = self._take(idx)
        return out if many else out[0]

    def _take(self, idx: np.ndarray) -> list[Any]:
        """The records at positions ``idx`` (any order), decoded a layer at a time."""
        m = self._m
        if idx.size == 0:
            return []
        lo, hi = int(idx.min()), int(idx.max()) + 1
        lids = np.frombuffer(m._order[lo:hi], dtype=np.int32)[idx - lo]
        steps = np.frombuffer(m._steps[lo:hi], dtype=np.int64)[idx - lo]
        out: list[Any] = [None] * idx.size
        recent = m._recent
        for lid in np.unique(lids):
            pos = np.nonzero(lids == lid)[0]
            lid = int(lid)
            if recent:
                hits = [(lid, int(steps[p])) in recent for p in pos]
                for p, hit in zip(pos.tolist(), hits, strict=True):
                    if hit:
                        out[p] = recent[(lid, int(steps[p]))][0]
                pos = pos[~np.asarray(hits, dtype=bool)]
                if not pos.size:
                    continue
            need = int(steps[pos].max()) + 1
            vals = m._layer_reader(lid, need).records(steps[pos])
            for p, v in zip(pos.tolist(), vals, strict=True):
                out[p] = v
        return out

    def __iter__(self) -> Iterator[Any]:
        n, block = len(self), 256
        for a in range(0, n, block):
            yield from self._take(np.arange(a, min(n, a + block), dtype=np.int64))

    def clear(self) -> None:
        self._m.clear_recorded_data()

    def __add__(self, other: Any) -> list[Any]:
        if not isinstance(other, (list, tuple, Records)):
            return NotImplemented
        return self[:] + list(other)

    def __radd__(self, other: Any) -> list[Any]:
        if not isinstance(other, (list, tuple)):
            return NotImplemented
        return list(other) + self[:]

    @classmethod
    def __torch_function__(
        cls, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        """Run ``func`` with every :class:`Records` argument decoded into a list (in
        one read a layer), so that ``torch.cat(m.records)`` works as on SpikingJelly's
        lists."""

        def plain(a: Any) -> Any:
            return a[:] if isinstance(a, Records) else a

        return func(*map(plain, args), **{k: plain(v) for k, v in (kwargs or {}).items()})

    def __repr__(self) -> str:
        n = len(self)
        if n <= 16:
            return repr(self[:])
        head = ", ".join(repr(r) for r in self[:3])
        tail = ", ".join(repr(r) for r in self[-3:])
        return f"[{head}, ..., {tail}] ({n} records)"


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
    #: Bytes of the latest records a monitor keeps copies of (records of at most a
    #: quarter of it each: tensors, numbers, None, flat tuples and lists), so that
    #: reading them back (``records[-1]``, ``torch.cat(m.records)`` at every step, as
    #: SpikingJelly's examples do) needs no commit and no decoding. Other records are
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
        # Copies of the latest small records, by (layer id, step): read back without
        # a commit (see recent_bytes).
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
        ranks = _leaf_ranks(value)
        t = self._time_axis[lid]
        if ranks is None:
            return None
        if len(ranks) == 1:
            return default_dims(ranks[0], t) if ranks[0] is not None else None
        # Each field by its rank: the time axis belongs to fields shaped like the first
        # (Norse's (z, state): z is [T, B, N], the state [B, N]).
        first = next((r for r in ranks if r is not None), None)
        return [None if r is None else default_dims(r, t if r == first else None) for r in ranks]

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
            hook = self._hook(holder, self._lids[n], value)
            if kind == "forward":
                self.hooks.append(module.register_forward_hook(hook))
            elif kind == "forward_pre":
                self.hooks.append(module.register_forward_pre_hook(hook))
            else:
                self.hooks.append(module.register_full_backward_hook(hook))

    @staticmethod
    def _hook(
        holder: _Holder, lid: int, value: Callable[[BaseMonitor, Any, tuple[Any, ...]], Any]
    ) -> Any:
        """A hook recording ``value(monitor, module, hook_args)`` for layer ``lid`` while
        ``holder`` holds the monitor (see :meth:`_attach`)."""

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

    def _record(self, lid: int, value: Any) -> None:
        try:
            step = self._writer.append(
                self.name,
                self.monitored_layers[lid],
                value,
                time_axis=self._time_axis[lid],
                dims=self._dims(lid, value),
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
            self._remember(lid, step, value)

    def _remember(self, lid: int, step: int, value: Any) -> None:
        """Keep a CPU copy of a small record (as the reader would return it), dropping
        the oldest copies beyond :attr:`recent_bytes`."""
        if self._writer.precision is not None and _has_float(value):
            return  # the store keeps them rounded: a copy would read back otherwise
        copy = _recent_copy(value, self.recent_bytes // 4)
        if copy is None:
            return
        value, nbytes = copy
        recent = self._recent
        recent[(lid, step)] = (value, nbytes)
        self._recent_nbytes += nbytes
        while self._recent_nbytes > self.recent_bytes and recent:
            _, (_, n) = recent.popitem(last=False)
            self._recent_nbytes -= n

    # --------------------------------------------------------------- reading
    def _layer_reader(self, lid: int, need: int | None = None) -> LayerReader:
        """The layer's reader, committing and refreshing first if records were taken
        since (unless its reader already holds ``need`` steps)."""
        lr = self._layer_readers.get(lid)
        if lr is not None and need is not None and len(lr) >= need:
            return lr
        if self._appended != self._seen or self._reader is None:
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
            self._seen = self._appended
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


def _output(m: Any, module: nn.Module, args: tuple[Any, ...]) -> Any:
    return m.function_on_output(_unpack_len1_tuple(args[1]))


def _input(m: Any, module: nn.Module, args: tuple[Any, ...]) -> Any:
    return m.function_on_input(_unpack_len1_tuple(args[0]))


def _attribute(m: Any, module: nn.Module, args: tuple[Any, ...]) -> Any:
    return m.function_on_attribute(getattr(module, m.attribute_name))


def _grad_input(m: Any, module: nn.Module, args: tuple[Any, ...]) -> Any:
    return m.function_on_grad_input(_unpack_len1_tuple(args[0]))


def _grad_output(m: Any, module: nn.Module, args: tuple[Any, ...]) -> Any:
    return m.function_on_grad_output(_unpack_len1_tuple(args[1]))


class OutputMonitor(BaseMonitor):
    """Record ``function_on_output(output)`` of every selected module, to disk.

    Parameters
    ----------
    net : nn.Module
        The network.
    instance : type, str, regex, or a tuple/list of those, optional
        Which modules: by type (``None`` means ``type(net)``), or by name pattern
        (``"features.*.sn"``, ``re.compile(r"layer\\d+")``).
    function_on_output : callable
        Applied to each output; may return a tensor, a tuple/list of tensors,
        a number or ``None``.
    store, name, every, mode, overwrite, time_axis, dims
        See :class:`BaseMonitor`; ``name`` defaults to ``"output"``.

    Examples
    --------
    >>> import torch, spikestore.monitor as sm
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    >>> with sm.OutputMonitor(net, torch.nn.ReLU) as mon:
    ...     _ = net(torch.ones(2, 4))
    ...     mon["1"][0].shape
    torch.Size([2, 3])
    """

    _default_name = "output"

    def __init__(
        self,
        net: nn.Module,
        instance: Instance = None,
        function_on_output: Callable[[Any], Any] = lambda x: x,
        *,
        store: str | os.PathLike[str] | StoreWriter | None = None,
        name: str | None = None,
        every: int = 1,
        mode: str | None = None,
        overwrite: bool = False,
        time_axis: int | str | None = "auto",
        dims: Sequence[str] | str | None = "auto",
    ) -> None:
        super().__init__(
            store=store,
            name=name,
            every=every,
            mode=mode,
            overwrite=overwrite,
            time_axis=time_axis,
            dims=dims,
        )
        self.function_on_output = function_on_output
        self._attach(net, instance, "forward", _output)


class InputMonitor(BaseMonitor):
    """Record ``function_on_input(input)`` before every selected module runs.

    Parameters are those of :class:`OutputMonitor`; ``name`` defaults to
    ``"input"``.

    Examples
    --------
    >>> import torch, spikestore.monitor as sm
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3))
    >>> with sm.InputMonitor(net, torch.nn.Linear) as mon:
    ...     _ = net(torch.ones(2, 4))
    ...     len(mon.records)
    1
    """

    _default_name = "input"

    def __init__(
        self,
        net: nn.Module,
        instance: Instance = None,
        function_on_input: Callable[[Any], Any] = lambda x: x,
        *,
        store: str | os.PathLike[str] | StoreWriter | None = None,
        name: str | None = None,
        every: int = 1,
        mode: str | None = None,
        overwrite: bool = False,
        time_axis: int | str | None = "auto",
        dims: Sequence[str] | str | None = "auto",
    ) -> None:
        super().__init__(
            store=store,
            name=name,
            every=every,
            mode=mode,
            overwrite=overwrite,
            time_axis=time_axis,
            dims=dims,
        )
        self.function_on_input = function_on_input
        self._attach(net, instance, "forward_pre", _input)


class AttributeMonitor(BaseMonitor):
    """Record ``function_on_attribute(module.<attribute_name>)`` of every selected module.

    Parameters
    ----------
    attribute_name : str
        The attribute, e.g. ``"v"`` or ``"v_seq"``; also the default ``name``.
    pre_forward : bool
        Read it before the module's forward (else after).
    net, instance, store, name, every, mode, overwrite, time_axis, dims
        As for :class:`OutputMonitor`.
    function_on_attribute : callable
        Applied to the attribute's value.

    Examples
    --------
    >>> import torch, spikestore.monitor as sm
    >>> net = torch.nn.Sequential(torch.nn.BatchNorm1d(3))
    >>> with sm.AttributeMonitor("running_mean", False, net, torch.nn.BatchNorm1d) as mon:
    ...     _ = net(torch.randn(4, 3))
    ...     mon.path.exists(), mon.name
    (True, 'running_mean')
    """

    def __init__(
        self,
        attribute_name: str,
        pre_forward: bool,
        net: nn.Module,
        instance: Instance = None,
        function_on_attribute: Callable[[Any], Any] = lambda x: x,
        *,
        store: str | os.PathLike[str] | StoreWriter | None = None,
        name: str | None = None,
        every: int = 1,
        mode: str | None = None,
        overwrite: bool = False,
        time_axis: int | str | None = "auto",
        dims: Sequence[str] | str | None = "auto",
    ) -> None:
        super().__init__(
            store=store,
            name=attribute_name if name is None else name,
            every=every,
            mode=mode,
            overwrite=overwrite,
            time_axis=time_axis,
            dims=dims,
        )
        self.attribute_name = attribute_name
        self.pre_forward = pre_forward
        self.function_on_attribute = function_on_attribute
        self._attach(net, instance, "forward_pre" if pre_forward else "forward", _attribute)

    def _has_batch(self, module: nn.Module) -> bool:
        # A neuron's state (v, v_seq) is shaped like its output; other attributes
        # (a BatchNorm's running_mean) are not batch-first.
        return getattr(module, "step_mode", None) is not None or any(
            c.__module__.split(".")[0] in ("spikingjelly", "snntorch", "norse")
            for c in type(module).__mro__
        )


class GradInputMonitor(BaseMonitor):
    """Record ``function_on_grad_input(dL/d input)`` of every selected module.

    Uses ``register_full_backward_hook``; the gradient of an input that needs
    none is ``None`` and is recorded as such. ``name`` defaults to
    ``"grad_input"``; other parameters as for :class:`OutputMonitor`.

    Examples
    --------
    >>> import torch, spikestore.monitor as sm
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh())
    >>> with sm.GradInputMonitor(net, torch.nn.Tanh, torch.norm) as mon:
    ...     net(torch.ones(2, 4)).sum().backward()
    ...     len(mon.records)
    1
    """

    _default_name = "grad_input"

    def __init__(
        self,
        net: nn.Module,
        instance: Instance = None,
        function_on_grad_input: Callable[[Any], Any] = lambda x: x,
        *,
        store: str | os.PathLike[str] | StoreWriter | None = None,
        name: str | None = None,
        every: int = 1,
        mode: str | None = None,
        overwrite: bool = False,
        time_axis: int | str | None = "auto",
        dims: Sequence[str] | str | None = "auto",
    ) -> None:
        super().__init__(
            store=store,
            name=name,
            every=every,
            mode=mode,
            overwrite=overwrite,
            time_axis=time_axis,
            dims=dims,
        )
        self.function_on_grad_input = function_on_grad_input
        self._attach(net, instance, "backward", _grad_input)


class GradOutputMonitor(BaseMonitor):
    """Record ``function_on_grad_output(dL/d output)`` of every selected module.

    ``name`` defaults to ``"grad_output"``; parameters as for
    :class:`OutputMonitor`.

    Examples
    --------
    >>> import torch, spikestore.monitor as sm
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh())
    >>> with sm.GradOutputMonitor(net, torch.nn.Tanh) as mon:
    ...     net(torch.ones(2, 4)).sum().backward()
    ...     mon[0]
    tensor([[1., 1., 1.],
            [1., 1., 1.]])
    """

    _default_name = "grad_output"

    def __init__(
        self,
        net: nn.Module,
        instance: Instance = None,
        function_on_grad_output: Callable[[Any], Any] = lambda x: x,
        *,
        store: str | os.PathLike[str] | StoreWriter | None = None,
        name: str | None = None,
        every: int = 1,
        mode: str | None = None,
        overwrite: bool = False,
        time_axis: int | str | None = "auto",
        dims: Sequence[str] | str | None = "auto",
    ) -> None:
        super().__init__(
            store=store,
            name=name,
            every=every,
            mode=mode,
            overwrite=overwrite,
            time_axis=time_axis,
            dims=dims,
        )
        self.function_on_grad_output = function_on_grad_output
        self._attach(net, instance, "backward", _grad_output)
