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
per record (their order across layers), never the tensors. The hooks hold the
monitor only through a weak reference, so a monitor that is no longer
referenced is collected; its hooks are then removed and a store it owns is
closed (see :class:`BaseMonitor` for what happens to a temporary store).
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import tempfile
import weakref
from array import array
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from .reader import LayerReader, StoreReader, step_indices
from .writer import StoreWriter

__all__ = [
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


class Records(Sequence[Any]):
    """A monitor's records in the order the hooks produced them, read from disk.

    Supports ``len``, integer indexing (negative too), slices and lists of indices
    (a list of records; see :func:`spikestore.reader.step_indices`),
    iteration, ``print`` and :meth:`clear` (same as the monitor's
    ``clear_recorded_data``). Each access decodes the records it needs.
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
        for lid in np.unique(lids):
            pos = np.nonzero(lids == lid)[0]
            vals = m._layer_reader(int(lid)).records(steps[pos])
            for p, v in zip(pos.tolist(), vals, strict=True):
                out[p] = v
        return out

    def __iter__(self) -> Iterator[Any]:
        n, block = len(self), 256
        for a in range(0, n, block):
            yield from self._take(np.arange(a, min(n, a + block), dtype=np.int64))

    def clear(self) -> None:
        self._m.clear_recorded_data()

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
        Where records go: a directory (a new store is written there, replacing a
        spikestore store already there), or an open :class:`~spikestore.StoreWriter`
        that several monitors share (it stays open when the monitor closes; each
        monitor needs its own ``name`` on it). By default a new store in a
        ``tempfile.mkdtemp()`` directory, given by :attr:`path`; that directory is
        deleted when the monitor is garbage collected or the interpreter exits, so
        pass ``store=`` to keep the data. A URL (``"s3://bucket/run"``) writes to
        object storage; for its ``storage_options``, or to record on some ranks
        of a ``torch.distributed`` job only, pass a ``StoreWriter(..., ranks=[0])``.
        Under ``torch.distributed`` every rank writes its own part of one ranked
        store, and :attr:`records` are this rank's.
    name : str
        The monitor's key in the store (``reader[name][layer]``).
    every : int
        Record only every ``every``-th call of each layer (the 1st, the
        ``every+1``-th, ...); calls while disabled do not count.

    Notes
    -----
    Modules with ``step_mode == "m"`` (SpikingJelly's multi-step mode) record
    ``[T, B, ...]`` tensors; their spikes are stored with T last (see
    ``time_axis`` in :meth:`~spikestore.StoreWriter.append`), which compresses
    them several times better and reads back identically.

    Hooks hold a monitor only weakly: keep a reference to it for as long as it
    should record (SpikingJelly's hooks keep an unreferenced monitor recording
    into a list nobody can reach; here it is collected and its hooks removed).

    :meth:`clear_recorded_data` only hides earlier records from ``records`` and
    ``monitor[layer]``: the store is append-only, so they stay on disk and a
    reader of the store still sees them (steps keep counting up).
    """

    _default_name = "records"

    def __init__(
        self,
        *,
        store: str | os.PathLike[str] | StoreWriter | None = None,
        name: str | None = None,
        every: int = 1,
    ) -> None:
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
        # Per layer id: the first step still visible (after a clear), calls seen.
        self._first: list[int] = []
        self._calls: list[int] = []
        self._time_axis: list[int | None] = []
        self._lids: dict[str, int] = {}
        self._reader: StoreReader | None = None
        self._layer_readers: dict[int, LayerReader] = {}
        self._seen = 0  # records appended when the reader was last refreshed
        self._appended = 0

        tmpdir = None
        if isinstance(store, StoreWriter):
            writer, self._owns_writer = store, False
        else:
            if store is None:
                tmpdir = tempfile.mkdtemp(prefix="spikestore-monitor-")
                store = tmpdir
            writer, self._owns_writer = StoreWriter(store), True
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
        for n, m in modules:
            self._lids[n] = len(self.monitored_layers)
            self.monitored_layers.append(n)
            self._first.append(self._writer.steps(self.name, n))
            self._calls.append(0)
            # SpikingJelly's multi-step modules take and give [T, B, ...]: tell the
            # writer, which then packs spikes with T last (each neuron's series
            # contiguous: several times smaller on conv layers).
            self._time_axis.append(0 if getattr(m, "step_mode", None) == "m" else None)
        return modules

    def _hook(self, lid: int, value: Callable[[BaseMonitor, Any, tuple[Any, ...]], Any]) -> Any:
        """A hook recording ``value(monitor, module, hook_args)`` for layer ``lid``.

        The closure holds the monitor weakly, so hooks left on a network never
        keep a monitor (and its store) alive.
        """
        ref = weakref.ref(self)

        def hook(module: nn.Module, *args: Any) -> None:
            m = ref()
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
                self.name, self.monitored_layers[lid], value, time_axis=self._time_axis[lid]
            )
        except TypeError as exc:
            raise TypeError(
                f"{type(self).__name__}: {exc}; the function_on_* must return a tensor, a "
                "tuple or list of tensors, a number or None"
            ) from None
        if step < 0:  # a rank that does not record (StoreWriter(ranks=...))
            return
        self._order.append(lid)
        self._steps.append(step)
        self._appended += 1

    # --------------------------------------------------------------- reading
    def _layer_reader(self, lid: int) -> LayerReader:
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
            first = self._first[lid]
            count = self._count(lid)
            if count == 0:
                return []
            return self._layer_reader(lid).records(slice(first, first + count))
        raise ValueError(i)

    def _count(self, lid: int) -> int:
        if not self._order:
            return 0
        return int(np.count_nonzero(np.frombuffer(self._order[:], dtype=np.int32) == lid))

    # ------------------------------------------------------------- controls
    def clear_recorded_data(self) -> None:
        """Forget the records so far (they stay on disk; see the class notes)."""
        self._order = array("i")
        self._steps = array("q")
        for lid, n in enumerate(self.monitored_layers):
            self._first[lid] = self._writer.steps(self.name, n)

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
        _release(*self._claim)

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
    store, name, every
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
    ) -> None:
        super().__init__(store=store, name=name, every=every)
        self.function_on_output = function_on_output
        for n, module in self._monitor_modules(net, instance):
            self.hooks.append(module.register_forward_hook(self._hook(self._lids[n], _output)))


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
    ) -> None:
        super().__init__(store=store, name=name, every=every)
        self.function_on_input = function_on_input
        for n, module in self._monitor_modules(net, instance):
            self.hooks.append(module.register_forward_pre_hook(self._hook(self._lids[n], _input)))


class AttributeMonitor(BaseMonitor):
    """Record ``function_on_attribute(module.<attribute_name>)`` of every selected module.

    Parameters
    ----------
    attribute_name : str
        The attribute, e.g. ``"v"`` or ``"v_seq"``; also the default ``name``.
    pre_forward : bool
        Read it before the module's forward (else after).
    net, instance, store, name, every
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
    ) -> None:
        super().__init__(store=store, name=attribute_name if name is None else name, every=every)
        self.attribute_name = attribute_name
        self.pre_forward = pre_forward
        self.function_on_attribute = function_on_attribute
        for n, module in self._monitor_modules(net, instance):
            hook = self._hook(self._lids[n], _attribute)
            if pre_forward:
                self.hooks.append(module.register_forward_pre_hook(hook))
            else:
                self.hooks.append(module.register_forward_hook(hook))


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
    ) -> None:
        super().__init__(store=store, name=name, every=every)
        self.function_on_grad_input = function_on_grad_input
        for n, module in self._monitor_modules(net, instance):
            hook = self._hook(self._lids[n], _grad_input)
            self.hooks.append(module.register_full_backward_hook(hook))


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
    ) -> None:
        super().__init__(store=store, name=name, every=every)
        self.function_on_grad_output = function_on_grad_output
        for n, module in self._monitor_modules(net, instance):
            hook = self._hook(self._lids[n], _grad_output)
            self.hooks.append(module.register_full_backward_hook(hook))
