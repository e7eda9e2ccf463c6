"""An open writer's state, and its append path in the caller's thread
(:class:`Recording`); the writer of a rank that records nothing (:class:`NotRecording`).

:class:`~spikestore.StoreWriter` opens the store and its root, then delegates every
call to one of these.

Thread ownership: a :class:`Recording` is called from any caller thread; a layer's
state (its entry in the :class:`~spikestore._worker.Registry`) is read and changed under
that entry's lock, the run description under its own (``spikestore._run``); the
:class:`~spikestore._commit.Sink` and the root belong to the writer thread and are
reached only through the :class:`~spikestore._worker.Worker`. ``closed`` is set once,
by ``StoreWriter.close()``, which then calls ``shutdown()``. A :class:`NotRecording`
holds nothing but its name and ``closed``.
"""

from __future__ import annotations

import json
import os
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from ._commit import Sink
from ._options import WriterOptions
from ._records import (
    check_layer_meta,
    check_time_axis_fits,
    flatten,
    layer_extra,
    settle_extra,
    time_axis_arg,
)
from ._run import RunDescription, open_run
from ._segments import SegmentOptions
from ._staging import Staged, stage
from ._stored import list_layers, load_layer
from ._worker import Item, Registry, Worker
from .codecs import time_last
from .errors import RecordError
from .format import MAX_RANK
from .storage import Storage

__all__ = ["Recording", "NotRecording"]


def _shutdown(worker: Worker, storage: Storage) -> None:
    """Commit and release; run once, by close(), at collection or at interpreter exit."""
    if storage.owned:
        worker.close()
    # In a forked child the writer thread does not exist and its locks may be held:
    # touch nothing but the child's copy of the lock descriptor.
    storage.release()


_monotonic = time.monotonic


def _prepare(axis: int | None, leaves: list[Any], where: object) -> list[Staged | None]:
    """Check the record against ``axis`` and stage its fields (``where``: the record's
    place, formatted into an error's message)."""
    try:
        check_time_axis_fits(axis, leaves)
        staged: list[Staged | None] = []
        for leaf in leaves:
            t = leaf.tensor
            if t is None:
                staged.append(None)
            else:
                staged.append(stage(t, leaf.scalar, time_last(axis, t.dim())))
    except RecordError as exc:
        raise RecordError(f"cannot record {where}: {exc}") from None
    except RuntimeError as exc:  # a tensor torch cannot copy or test
        raise RecordError(f"cannot record {where}: {exc}") from exc
    return staged


class Recording:
    """A writer that records: its storage, root, layers, writer thread and run
    description.

    ``storage`` holds the store's lock (or lease) and ``root`` is its opened root
    group; from here on this object owns both (the constructor that fails leaves
    them to its caller to release). ``owner`` is the :class:`~spikestore.StoreWriter`
    whose collection commits and releases them; ``trim`` is run by the writer thread
    after each write (``StoreWriter``'s ``tune_allocator``).
    """

    recording = True

    def __init__(
        self,
        owner: object,
        storage: Storage,
        root: Any,
        opts: WriterOptions,
        trim: Callable[[], None] | None,
    ) -> None:
        where = storage.where
        self.storage = storage
        self.root = root
        self.path = storage.path
        self.where = where
        self.closed = False
        run = open_run(
            root,
            where,
            opts.attrs,
            opts.dt,
            opts.time_unit,
            has_records=lambda: bool(list_layers(root, where)),
        )
        segments = SegmentOptions(
            opts.compressor,
            opts.level,
            opts.shard_steps,
            opts.chunk_bytes,
            precision=opts.precision,
            dense_shard_bytes=opts.max_buffer_bytes,
        )
        self.registry = registry = Registry(lambda m, lay: load_layer(root, m, lay, where))
        # The writer thread's; used only via calls.
        self.sink = sink = Sink(root, segments, where, fence=storage.check_fence)
        # The writer thread's copy of the run description from now on (the marks' list
        # only there); self.run keeps what callers need to make marks.
        sink.run = json.loads(json.dumps(run))
        sink.run_dirty = True  # this opening is a new run (format 1.7)
        sink.write_run()  # before the writer thread starts, which owns it after
        flush_interval = opts.flush_interval
        if flush_interval is None:
            flush_interval = storage.default_flush_interval
        self.worker = worker = Worker(
            sink,
            where,
            flush_interval=float(flush_interval),
            max_queue_bytes=opts.max_queue_bytes,
            max_buffer_bytes=opts.max_buffer_bytes,
            trim=trim,
            registry=registry,
        )

        def stored_layers() -> list[tuple[str, str]]:
            """The layers already in the store (read on the writer thread, which owns
            the root)."""
            out: list[tuple[str, str]] = []
            worker.call(lambda: out.extend(list_layers(root, where)))
            return out

        self.run = RunDescription(
            run,
            registry,
            lambda **change: worker.post(lambda: sink.change_run(**change)),
            stored_layers,
        )
        #: Commit and release, once: called by ``StoreWriter.close()``, or when
        #: ``owner`` is collected.
        self.shutdown = weakref.finalize(owner, _shutdown, worker, storage)
        # At exit the writers are closed by spikestore._exit, before Zarr stops its loop.
        self.shutdown.atexit = False

    # ------------------------------------------------------------- properties
    @property
    def store(self) -> Any:
        return self.root.store

    @property
    def owned(self) -> bool:
        return self.storage.owned

    @property
    def flush_interval(self) -> float:
        return self.worker.flush_interval

    @property
    def max_queue_bytes(self) -> int:
        return self.worker.max_queue_bytes

    @property
    def max_buffer_bytes(self) -> int:
        return self.worker.max_buffer_bytes

    @property
    def layers(self) -> list[tuple[str, str]]:
        return self.registry.keys()

    @property
    def attrs(self) -> dict[str, Any]:
        return self.run.attrs

    @property
    def dt(self) -> float | None:
        return self.run.dt

    @property
    def time_unit(self) -> str | None:
        return self.run.time_unit

    def steps(self, monitor: str, layer: str) -> int:
        self._check_owner()
        return self.registry.peek(monitor, layer)

    # ---------------------------------------------------------------- writing
    def _check_owner(self) -> None:
        # Checked before any lock is touched: a forked child may have inherited them held.
        if not self.storage.owned:
            raise RuntimeError(
                f"this writer of {self.where} belongs to process {self.storage.owner_pid}, "
                f"not to this forked process {os.getpid()}; open a writer of its own (on "
                "another path) in the child"
            )

    def _check_usable(self) -> None:
        self._check_owner()
        self.worker.check()
        if self.closed:
            raise RuntimeError(f"{self.where} is closed")

    def add_monitor(self, monitor: str) -> None:
        self._check_usable()
        sink = self.sink
        self.worker.call(lambda: sink.declare_monitor(monitor))

    def append(
        self,
        monitor: str,
        layer: str,
        value: Any,
        time_axis: int | None,
        dims: Sequence[str] | None,
        units: str | None,
        keep: list[Staged | None] | None = None,
    ) -> int:
        """See ``StoreWriter.append``; ``keep``, if given, is extended with the record's
        fields as queued (immutable: see ``spikestore._staging``)."""
        # _check_usable, inlined: this runs once a record.
        if not self.storage.owned:
            self._check_owner()
        worker = self.worker
        if worker.failed:
            worker.check()
        if self.closed:
            raise RuntimeError(f"{self.where} is closed")
        if not isinstance(monitor, str) or not isinstance(layer, str):
            raise TypeError("monitor and layer names must be str")
        entry = self.registry.entry(monitor, layer)
        # "monitor m, layer l, step s" of error messages, formatted only when one is.
        where = entry.where
        if time_axis is None:
            given_axis = None
        elif type(time_axis) is int and -MAX_RANK <= time_axis < MAX_RANK:
            given_axis = time_axis  # what time_axis_arg returns for it
        else:
            given_axis = time_axis_arg(time_axis, f"cannot record {where}")
        try:
            structure, leaves, tree = flatten(value)
        except TypeError as exc:
            raise TypeError(f"cannot record {where}: {exc}") from None
        except RecordError as exc:
            raise RecordError(f"cannot record {where}: {exc}") from None
        # The layer's time axis, or this call's while the layer has accepted no record
        # (checked again under the lock: another thread's first record may fix it).
        axis = entry.time_axis if entry.axis_fixed else given_axis
        staged = _prepare(axis, leaves, where)
        with entry.lock:
            step = entry.next_step
            if entry.axis_fixed and entry.time_axis != axis:
                axis = entry.time_axis
                staged = _prepare(axis, leaves, where)
            schema = entry.schema
            specs = schema.check(structure, leaves, where, tree)
            segments = schema.new_segments(staged, where)
            extra = entry.extra
            new_layer = schema.structure is None
            if new_layer or not entry.settled:
                here = str(where)
                if new_layer:
                    extra = layer_extra(leaves, tree, dims, units, here)
                else:
                    given = layer_extra(leaves, tree, dims, units, here)
                    extra = settle_extra(entry.extra, given, axis, here)
                # The reader's own check, on the metadata this record makes the writer
                # thread write.
                check_layer_meta(
                    layer,
                    schema.structure or structure,
                    len(leaves),
                    axis,
                    extra,
                    f"cannot record {here}",
                )
            if len(staged) == 1:
                first = staged[0]
                nbytes = 0 if first is None else first.nbytes
            else:
                nbytes = sum(s.nbytes for s in staged if s is not None)
            worker.put(
                Item(
                    monitor,
                    layer,
                    schema.structure or structure,
                    axis,
                    step,
                    staged,
                    nbytes,
                    _monotonic(),
                    extra,
                )
            )
            entry.extra = extra
            entry.settled = True
            entry.time_axis = axis
            entry.axis_fixed = True
            schema.adopt(structure, specs, tree, segments)
            entry.next_step = step + 1
        if keep is not None:
            keep.extend(staged)
        return step

    def set_attrs(self, attrs: dict[str, Any]) -> None:
        self._check_usable()
        self.run.set_attrs(attrs)

    def mark(self, values: dict[str, Any]) -> None:
        self._check_usable()
        self.run.mark(values)

    def flush(self) -> None:
        if self.closed:
            self.worker.check()
            return
        self._check_usable()
        self.worker.call(self.sink.write_all)

    def check(self) -> None:
        """Raise the writer thread's error, if it failed (:class:`WriteError`)."""
        self.worker.check()


class NotRecording:
    """The writer of a rank that the ``ranks`` argument left out: it records nothing,
    checks nothing, and holds no store; ``where`` names the ranked store's root and
    this rank."""

    recording = False
    path = None
    store = None
    owned = True
    flush_interval = 0.0
    max_queue_bytes = 0
    max_buffer_bytes = 0
    dt = None
    time_unit = None

    def __init__(self, where: str) -> None:
        self.where = where
        self.closed = False

    @property
    def attrs(self) -> dict[str, Any]:
        return {}

    @property
    def layers(self) -> list[tuple[str, str]]:
        return []

    def steps(self, monitor: str, layer: str) -> int:
        return 0

    def add_monitor(self, monitor: str) -> None:
        pass

    def append(
        self,
        monitor: str,
        layer: str,
        value: Any,
        time_axis: int | None,
        dims: Sequence[str] | None,
        units: str | None,
        keep: list[Staged | None] | None = None,
    ) -> int:
        if self.closed:
            raise RuntimeError(f"{self.where} is closed")
        return -1

    def set_attrs(self, attrs: dict[str, Any]) -> None:
        pass

    def mark(self, values: dict[str, Any]) -> None:
        pass

    def flush(self) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def check(self) -> None:
        pass
