"""The public writer: arguments, lifecycle, and delegation to the modules that do the work.

The write path, one module per job::

    append (caller's thread)
      -> _records  flatten the record, refuse what cannot be stored, check the layer's schema
      -> _staging  spike test and packing on the tensor's device, or a copy of the values
      -> _worker   step number and the byte-bounded queue (Registry, Worker)
    writer thread
      -> _commit   encode, buffer per field, commit (the protocol is documented there)
      -> _segments segments, tails and shard files
      -> storage   the directory (or Zarr store), its lock, durable writes

:class:`StoreWriter` checks its arguments (``spikestore._options``), opens the store
(a ranked store through ``spikestore.ranks``) and its root, then delegates each call
to a ``spikestore._recording.Recording``, or on a rank that does not record to a
``NotRecording``; the run description is ``spikestore._run``'s, what becomes of open
writers at exit ``spikestore._exit``'s.

This module holds no state of its own beyond the objects it delegates to.
"""

from __future__ import annotations

import ctypes
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ._exit import track as track_for_exit
from ._options import MAX_FLUSH_INTERVAL as MAX_FLUSH_INTERVAL
from ._options import WriterOptions
from ._recording import NotRecording, Recording
from ._stored import fresh_root, open_root
from ._version import __version__
from .errors import RecordError, StoreLockedError, WriteError
from .format import LOCK_FILE
from .ranks import RankPlan, open_ranked
from .ranks import plan as rank_plan
from .storage import Mode, storage_for

__all__ = ["StoreWriter", "WriteError", "RecordError", "StoreLockedError", "LOCK_FILE"]

_trim_fn: Any = False  # not looked up yet

#: Seconds between two trims of the process's heaps, at least (see :func:`_malloc_trim`).
TRIM_INTERVAL = 1.0


def _at_most_every(fn: Callable[[], None], interval: float,
                   clock: Callable[[], float] = time.monotonic) -> Callable[[], None]:
    """``fn``, skipped when it ran less than ``interval`` seconds ago (any thread: two
    calls at once may both run it, which is harmless)."""
    last = [-math.inf]

    def limited() -> None:
        now = clock()
        if now - last[0] >= interval:
            last[0] = now
            fn()

    return limited


def _malloc_trim() -> Callable[[], None] | None:
    """glibc's ``malloc_trim(0)`` (Linux only), at most every :data:`TRIM_INTERVAL`
    seconds in the process, or None: returns the free memory of every heap to the system.

    Record-sized blocks (hundreds of KiB to MiB) are allocated on one thread and freed
    on another, and glibc's per-thread heaps keep what is freed: without a trim a
    writer's peak RSS grows by tens to hundreds of MiB over what it holds. The writer
    thread trims after its writes; an earlier version fixed glibc's mmap threshold
    instead, which made every large allocation of the whole process (the network's own
    tensors too) a fresh mmap, paying its page faults. A trim returns the training
    loop's freed blocks too, which then fault in again: trimmed after every write (many
    an iteration when dense layers are recorded), a SpikingJelly conv net's iteration
    took about 27,000 page faults (110 MiB, 80 ms of system time) instead of 500-3,000;
    once a second costs the loop one iteration's faults a second.
    """
    global _trim_fn
    if _trim_fn is False:
        try:
            trim = ctypes.CDLL("libc.so.6").malloc_trim
            trim.argtypes = [ctypes.c_size_t]
            _trim_fn = _at_most_every(lambda: trim(0) and None, TRIM_INTERVAL)
        except (OSError, AttributeError):
            _trim_fn = None
    return _trim_fn


def _open(
    owner: StoreWriter, opts: WriterOptions, plan: RankPlan | None
) -> Recording | NotRecording:
    """Open the store (this rank's, in a ranked store) and its root for ``owner``; on a
    rank that does not record, a writer that records nothing."""
    if plan is not None:
        root_where, opened = open_ranked(
            plan,
            opts.mode,
            opts.path,
            opts.store,
            opts.durable,
            opts.storage_options,
            opts.lease_timeout,
        )
        if opened is None:  # this rank does not record
            return NotRecording(f"{root_where} (rank {plan.rank} does not record)")
        storage, zstore, zmode = opened
    else:
        storage = storage_for(
            opts.path,
            opts.store,
            durable=opts.durable,
            storage_options=opts.storage_options,
            lease_timeout=opts.lease_timeout,
        )
        zstore, zmode = storage.open(opts.mode)  # holds the lock from here on
    try:
        created_by = f"spikestore {__version__}"
        root = open_root(zstore, zmode, created_by, storage.where)
        if opts.mode == "w":
            # The old store's nodes are gone; its root metadata is replaced in one write.
            fresh_root(root, created_by)
        trim = _malloc_trim() if opts.tune_allocator else None
        return Recording(owner, storage, root, opts, trim)
    except BaseException:
        storage.abort()
        raise


class StoreWriter:
    """Write monitor records to a spikestore store on disk.

    Parameters
    ----------
    path : str or Path
        A directory, or a URL of object storage (``"s3://bucket/prefix"``, with
        ``storage_options``). A path that does not exist, or an empty folder, gets a
        new store in any mode.
    mode : {None, "w-", "a", "w"}
        What to do with a store already there. None (default) or ``"w-"``: refuse it
        (:class:`~spikestore.storage.StoreExistsError`, naming both ways out), so a
        store is never replaced by accident; ``"a"`` appends to it (each layer
        continues its step numbering); ``"w"`` replaces it. No mode writes into a
        folder that holds anything but a store.
    overwrite : bool
        True is ``mode="w"``: replace a store already there.
    compressor, level : str, int, optional
        One of ``zstd``, ``zlib``, ``blosc-lz4``, ``blosc-zstd`` and its level, for
        every array of the store. By default spikes use the ``spikestore.spikes``
        codec (level 1), and other tensors Blosc LZ4 with bit shuffle where it makes
        a segment's first record at least 20 % smaller, else uncompressed (a short
        run's segment: Blosc LZ4 level 1 without shuffle, which squeezes its fill
        rows); chosen per segment and recorded in its codec chain; ``level=0``
        stores them uncompressed.
    precision : int, optional
        Lossy, opt-in: keep ``precision`` mantissa bits (0 to 52) of float16,
        float32 and float64 records that are not spikes, rounding to nearest (Zarr's
        ``numcodecs.bitround`` codec, recorded in each array's codec chain), then
        compress them (Blosc LZ4 with bit shuffle unless ``compressor`` is given).
        Each value's relative error is at most ``2**-(precision + 1)`` (for float32
        and ``precision=7``, 0.4 %; subnormal numbers keep an absolute error of at
        most ``2**-(precision + 1)`` times the smallest normal number); a value within
        that of the largest finite float may round to infinity, and a NaN whose
        payload lies only in the dropped bits becomes infinity. Spikes, integers,
        bfloat16 and float8 are stored exactly. None (default): everything lossless.
    flush_interval : float, optional
        At most this many seconds pass between a record being taken and it being
        committed to disk, whether or not more records arrive (unless the disk is
        slower than the producer): from 0 (commit every record as it is taken) to
        86400 (one day, :data:`MAX_FLUSH_INTERVAL`). Default: 1 s on a local disk,
        longer on object storage, where every commit costs requests.
    max_queue_bytes, max_buffer_bytes : int
        Bounds on the bytes waiting for the writer thread (16 MiB), and on encoded
        bytes buffered before a write (8 MiB; up to 4x that while records too large
        to fill an inner chunk row are buffered; plus at most two shard files being
        written in the background). When the queue is full, ``append`` waits: a slow
        disk slows the caller instead of filling memory.
    shard_steps, chunk_bytes : int
        Steps per shard file (2048; more for small records) and the target size of
        an inner chunk (256 KiB, at least 16 steps; one step for records too large
        for 16 steps within ``max_buffer_bytes``): one step's read decodes one chunk
        row, one neuron's history one chunk column.
    store : zarr Store, optional
        Write into this Zarr store instead of a local directory: an object store
        (``zarr.storage.ObjectStore``, ``FsspecStore``) gets the same lease as a
        URL; a ``MemoryStore`` (tests) allows one writer per store object in a
        process.
    tune_allocator : bool
        After its writes, at most once a second, the writer thread has glibc return
        freed memory to the system (``malloc_trim``; Linux only): record buffers freed on
        another thread then do not pile up in glibc's per-thread heaps (peak RSS: see
        ``benchmarks/bench_scale.py``). False skips it.
    storage_options : dict, optional
        For a URL ``path``: the object store's endpoint and credentials (see
        ``spikestore.storage.url_store``).
    ranks : "all", int, ints or None
        Under ``torch.distributed`` (initialised when the writer opens), the ranks
        that record: each writes a store of its own in ``<path>/rank00003/``, and
        ``spikestore.open(path)`` reads them side by side (see
        :mod:`spikestore.ranks`). On a rank left out the writer records nothing.
        None ignores ``torch.distributed``: a store of one process at ``path``.
    lease_timeout : float, optional
        On object storage, where there is no ``flock``: seconds (default 30) after
        which a writer's lease, no longer renewed because its process died, may be
        taken over by a new writer (see ``spikestore.storage._lease``).
    durable : bool
        ``fsync`` every file written (then its directory) before the commit that
        points to it, so a committed step survives power loss, not only a killed
        process; costs a few ms a commit (``benchmarks/bench_durable.py``).
    attrs : dict, optional
        The run's attributes (hyperparameters, a description: JSON values), kept in
        the store; :meth:`set_attrs` adds more. Each opening of a writer
        (``mode="a"`` included) is a new *run* with its own attributes, kept apart
        from earlier runs' (``spikestore.open(path).runs[-1].attrs``);
        ``spikestore.open(path).attrs`` merges every run's, a later value winning.
    dt, time_unit : float, str, optional
        The duration of one time step (of one step for single-step layers, of one
        element along the time axis for multi-step ones) and its unit (default
        ``"s"``): analysis and exports then give times in that unit by default.
        Appending with another ``dt`` or unit is refused (ValueError).

    Notes
    -----
    **Crash safety.** A record is *committed* when its field's ``committed_steps``
    attribute is updated, after its data and index are written (the protocol is
    in ``spikestore._commit``); every file is written to a temporary name and
    renamed. A process killed at any moment (``SIGKILL``; power loss too with
    ``durable=True``) leaves a store that opens and reads back every committed
    record exactly. What a crash loses is bounded by the flush policy: records
    appended in the last ``flush_interval`` seconds (counted from ``append``;
    longer only while the disk is slower than the producer), none appended before
    the last :meth:`flush` or :meth:`close` returned; of them, at most about
    ``max_queue_bytes + 4 * max_buffer_bytes`` bytes not yet written and 1,024
    written steps a field. A layer's groups are created as soon as its first record
    is taken, so a store killed before any commit still lists its monitors and
    layers. ``mode="w"`` replaces an old store crash-safely: killed while clearing,
    the path still opens and accepts a new writer. Reopen with ``mode="a"`` to go
    on: each layer continues after its last committed step, with its ``time_axis``.
    Writers are committed and closed at interpreter exit and when collected.

    **One writer at a time.** The writer holds an exclusive ``flock`` on
    ``<path>/.spikestore.lock``; a second writer (from any process, or this one)
    gets :class:`StoreLockedError`. The kernel drops the lock when the holder dies,
    however it dies, so a lock file left by a killed run never blocks the next;
    a constructor that fails releases it. The lock belongs to the process that
    took it: in a forked child the writer refuses to write, and its ``close()``
    (or exit) leaves the parent's lock and records alone. Readers take no lock and
    may open the store while it is written (:func:`spikestore.open`, then
    ``refresh()``); they see committed steps only.

    **Exit paths.** Records are committed when the writer is closed, collected, at
    interpreter exit (an uncaught exception too: for example a collective that
    fails because another rank died), and on SIGTERM, which ``torchrun`` sends to
    the ranks that survive a failed one: while a writer is open and no other
    SIGTERM handler is installed, SIGTERM raises ``SystemExit(143)`` in the main
    thread, so ``finally`` blocks run and the exit hook commits; a SIGTERM that comes
    while the main thread is committing (in ``close()`` or at exit), or once the
    interpreter has begun to exit, waits for the commit (the exit then ends with the
    program's own status), and one that comes inside a writer call (a monitor's
    ``append``) is raised as that call returns; threads that never end do not keep a
    SIGTERMed process alive: it commits, then ends by SIGTERM. Python acts on SIGTERM
    only when the main thread runs Python code: a main thread blocked in a C call (a
    collective waiting on a dead peer) handles it when that call returns or fails;
    meanwhile the writer thread keeps committing every ``flush_interval``. SIGKILL
    ends the process at once and loses what was not yet committed (see above).

    **Threads.** ``append`` may be called from any number of threads (hooks under
    ``nn.DataParallel``); steps are numbered in the order the calls reach the
    layer, and every record lands at its own step.

    **Memory.** The queue holds at most ``max_queue_bytes`` (a single record larger
    than that waits for an empty queue and then goes alone); the writer thread
    buffers encoded rows up to ``max_buffer_bytes``.

    **Failures.** If a background write fails (a full disk, a permission error), or
    the writer thread ends for any other reason, the writer stops writing and the
    next :meth:`append`, :meth:`flush` or :meth:`close` raises :class:`WriteError`
    naming the store, the cause, and each layer's steps that are not committed; what
    was committed before the failure stays readable.

    Examples
    --------
    >>> import torch, spikestore, tempfile
    >>> path = tempfile.mkdtemp() + "/run.spikes"
    >>> with spikestore.StoreWriter(path) as w:
    ...     w.append("output", "sn1", torch.zeros(4, 10))
    0
    >>> spikestore.open(path)["output"]["sn1"][0].shape
    torch.Size([4, 10])
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        mode: str | None = None,
        *,
        overwrite: bool = False,
        compressor: str | None = None,
        level: int | None = None,
        flush_interval: float | None = None,
        max_queue_bytes: int = 16 << 20,
        max_buffer_bytes: int = 8 << 20,
        shard_steps: int = 2048,
        chunk_bytes: int = 1 << 18,
        store: Any = None,
        tune_allocator: bool = True,
        durable: bool = False,
        storage_options: dict[str, Any] | None = None,
        ranks: str | int | Iterable[int] | None = "all",
        lease_timeout: float | None = None,
        precision: int | None = None,
        attrs: dict[str, Any] | None = None,
        dt: float | None = None,
        time_unit: str | None = None,
    ) -> None:
        opts = WriterOptions.check(
            path, mode, overwrite=overwrite, compressor=compressor, level=level,
            flush_interval=flush_interval, max_queue_bytes=max_queue_bytes,
            max_buffer_bytes=max_buffer_bytes, shard_steps=shard_steps, chunk_bytes=chunk_bytes,
            store=store, tune_allocator=tune_allocator, durable=durable,
            storage_options=storage_options, lease_timeout=lease_timeout, precision=precision,
            attrs=attrs, dt=dt, time_unit=time_unit,
        )  # fmt: skip
        self.mode: Mode = opts.mode
        self.compressor = opts.compressor
        self.level = opts.level
        self.precision = opts.precision
        self.durable = opts.durable
        #: This process's part in a ranked store (None: a store of one process).
        self._plan = rank_plan(ranks)
        self._impl = _open(self, opts, self._plan)
        self.path = self._impl.path
        if not isinstance(self._impl, Recording):
            return  # nothing to commit, at exit or ever
        storage = self._storage = self._impl.storage
        self._worker = self._impl.worker
        self._sink = self._impl.sink  # the writer thread's; used only via calls
        track_for_exit(self, self._worker, lambda: storage.owned)

    # ------------------------------------------------------------- properties
    @property
    def where(self) -> str:
        """How messages name this store (its path, or the Zarr store's repr)."""
        return self._impl.where

    @property
    def store(self) -> Any:
        """The Zarr store written to (this rank's, in a ranked store; None on a rank that
        does not record); ``spikestore.open(store=writer.store)`` reads it."""
        return self._impl.store

    @property
    def recording(self) -> bool:
        """False on a rank that the ``ranks`` argument left out: there the writer records
        nothing (``append`` returns -1)."""
        return self._impl.recording

    @property
    def rank(self) -> int | None:
        """This process's rank when it writes a ranked store (``torch.distributed``), else
        None."""
        return None if self._plan is None else self._plan.rank

    @property
    def world_size(self) -> int | None:
        """The job's world size when this writer writes a ranked store, else None."""
        return None if self._plan is None else self._plan.world_size

    @property
    def closed(self) -> bool:
        return self._impl.closed

    _closed = closed  # its name before it was public, which tests still read

    @property
    def owned(self) -> bool:
        """Whether this process opened the writer (False in a forked child, where the
        writer refuses to write and ``close()`` does nothing to the parent's store)."""
        return self._impl.owned

    @property
    def flush_interval(self) -> float:
        return self._impl.flush_interval

    @property
    def max_queue_bytes(self) -> int:
        return self._impl.max_queue_bytes

    @property
    def max_buffer_bytes(self) -> int:
        return self._impl.max_buffer_bytes

    @property
    def layers(self) -> list[tuple[str, str]]:
        """(monitor, layer) pairs this writer has recorded into."""
        return self._impl.layers

    def steps(self, monitor: str, layer: str) -> int:
        """Steps recorded so far for a layer (committed or not).

        In append mode this counts the steps already in the store, so it is the
        step number the next :meth:`append` to the layer will return.
        """
        return self._impl.steps(monitor, layer)

    # ---------------------------------------------------------------- writing
    def add_monitor(self, monitor: str) -> None:
        """Create the monitor's group now (monitors call this when they attach), so that
        a store killed before its first record still lists the monitor."""
        if not isinstance(monitor, str):
            raise TypeError("monitor names must be str")
        self._impl.add_monitor(monitor)

    def append(
        self,
        monitor: str,
        layer: str,
        value: Any,
        *,
        time_axis: int | None = None,
        dims: Sequence[str] | None = None,
        units: str | None = None,
    ) -> int:
        """Record ``value`` as the next step of ``monitor``/``layer``; return its step.

        ``value`` is a tensor, a number, ``None``, or a tuple or list of those; or a
        namedtuple (Norse's neuron states), a dataclass, a dict with ``str`` keys, or
        tuples and lists nesting those, recorded field by field and read back as
        namedtuples (dataclasses too), dicts, tuples and lists.
        ``time_axis`` names the axis of multi-step records that is time (0 for
        SpikingJelly's ``[T, B, ...]``); spikes are then packed with that axis last,
        so each neuron's time series is contiguous and compresses far better.
        ``dims`` names the record's axes (``("time", "batch", "channel", "y", "x")``;
        analysis and ``to_xarray`` use them), or each field's (a list with one
        sequence of names, or None, per field: Norse's ``(z, state)`` has ``z`` of
        ``[T, B, N]`` and a state of ``[B, N]``); ``units`` is its values' unit (``"mV"``).
        All three are fixed by a layer's first record, and kept in the store for
        ``mode="a"``; the first record a writer appends to a layer that an older
        writer made without dims or units adds them (dims that differ from a layer's
        stored ones warn, as do dims that do not name its time axis ``time``). Later
        records' ``dims`` and ``units`` are not looked at.

        Safe to call from several threads at once (``nn.DataParallel`` runs hooks in
        threads): each call gets its own step. A value that cannot be stored (an
        unsupported dtype or layout, a sparse, nested, meta or quantized tensor, an
        integer beyond int64, a record that does not fit the layer) raises
        :class:`RecordError` (a ``TypeError`` for unsupported types) naming the
        monitor, layer and step, before anything is queued: nothing already recorded
        is affected, and the layer is left as it was. So does a record past a limit
        of the format (``spikestore.format``: more than 32 axes or 2**40 elements,
        more than 1,024 fields, more than 32 ``dims``, a field's 100,001st distinct
        shape), and a ``time_axis`` that is not an int (an axis of the record's first
        field, from -32 to 31), checked as the reader checks what it reads: what
        ``append`` accepts, the reader reads.

        On a rank that the ``ranks`` argument left out nothing is recorded and the
        step returned is -1.
        """
        return self._impl.append(monitor, layer, value, time_axis, dims, units)

    # --------------------------------------------------------- run metadata
    @property
    def attrs(self) -> dict[str, Any]:
        """This run's attributes (a copy; change them with :meth:`set_attrs`)."""
        return self._impl.attrs

    @property
    def dt(self) -> float | None:
        """Duration of one time step (see ``dt`` in the class docstring), or None."""
        return self._impl.dt

    @property
    def time_unit(self) -> str | None:
        return self._impl.time_unit

    def set_attrs(self, **attrs: Any) -> None:
        """Add or replace run attributes (hyperparameters, a description, ...): any
        JSON values. Readers get them as ``spikestore.open(path).runs[-1].attrs``
        (and merged over runs as ``.attrs``); written
        with the next commit (within ``flush_interval``, or at :meth:`flush`)."""
        self._impl.set_attrs(attrs)

    def mark(self, **values: Any) -> None:
        """Mark every later step of every layer with ``values`` (until a later mark
        sets the same key), e.g. ``mark(epoch=3, phase="eval")``.

        Values are JSON scalars (str, int within int64, finite float, bool, None;
        NumPy and 0-d tensor scalars are converted). A mark applies from the next step
        each layer records (for a layer first recorded later, from its step 0) until
        a new mark sets the key or the run ends: a writer opened again
        (``mode="a"``) starts a new run, whose steps have no mark values before its
        own first mark.
        ``LayerReader.marks()`` gives the values per step and
        ``spikestore.analysis.to_xarray`` makes them coordinates
        (``da.groupby("epoch")``). Cheap enough for every step: marks are
        written with the next commit (within ``flush_interval``; a mark holds one
        integer for each layer recorded since the previous mark), and a mark costs
        the caller no wait.
        """
        self._impl.mark(values)

    def flush(self) -> None:
        """Block until every record appended so far is committed to disk."""
        self._impl.flush()

    def close(self) -> None:
        """Commit everything, stop the writer thread and release the store. Idempotent.

        In a forked child it only lets go of the child's copy of the lock: the parent
        keeps writing (and keeps its lock).
        """
        impl = self._impl
        if impl.closed:
            return
        impl.closed = True
        owned = impl.owned
        impl.shutdown()
        if owned:
            impl.check()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self.layers)} layers"
        return f"<spikestore.StoreWriter {self.where} ({state})>"
