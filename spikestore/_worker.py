"""The layer registry (caller side) and the writer thread with its byte-bounded queue.

Thread ownership
----------------
:class:`Registry`
    Shared by every thread that appends (hooks under ``nn.DataParallel`` run in
    threads). Its dict is guarded by one lock; each :class:`LayerEntry` by its own
    lock, held while a record is checked against the layer's schema, given its
    step number and put on the queue, so that steps are unique, dense, and reach
    the writer thread in order.
:class:`Worker`
    Owns the writer thread, which alone touches the :class:`~spikestore._commit.Sink`
    (every Zarr write). The Sink's encoder threads (``spikestore._segments.Encoder``)
    encode and write a commit's chunks while the writer thread waits for them, so
    they never run beside it on the Sink's state, and stop when the writer thread
    ends. Callers talk to it only through the queue; the count of
    queued bytes is guarded by a condition variable. The first exception on the
    writer thread is kept; from then on nothing more is written (what is on disk
    stays what was committed), the queue is still drained so that callers never
    block, and every later call raises :class:`~spikestore.WriteError`. The whole
    body of the thread is covered: an exception that ends it from anywhere (waiting
    on the queue included) is kept the same way, and callers waiting for it stop
    waiting, so a writer thread never dies silently.
"""

from __future__ import annotations

import collections
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._commit import Sink
from ._records import FieldSpec, Schema
from ._staging import Staged
from ._stored import StoredLayer
from .codecs import Encoded
from .errors import WriteError

__all__ = ["LayerEntry", "Registry", "Item", "Worker"]


@dataclass
class LayerEntry:
    """A layer as the callers see it; change it only under ``lock``."""

    monitor: str
    name: str
    schema: Schema
    time_axis: int | None
    next_step: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: Optional layer metadata (dims, units, tree), fixed by the first record.
    extra: dict[str, Any] | None = None
    #: Whether this writer's first record has settled ``extra`` (a layer loaded from
    #: the store takes the dims and units it lacks from it).
    settled: bool = False
    #: Whether ``time_axis`` is the layer's for good: stored with it, or given with
    #: its first accepted record (until then each ``append`` gives its own).
    axis_fixed: bool = False
    #: Steps the store held of the layer when this writer loaded it.
    stored: int = 0
    #: ``monitor m, layer l, step s`` (the next step) when formatted: errors' messages.
    where: _Where = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.where = _Where(self)


class _Where:
    """A layer's next record as error messages name it, formatted only when one is
    (``str``, f-strings): ``monitor 'm', layer 'l', step 3``."""

    __slots__ = ("_entry",)

    def __init__(self, entry: LayerEntry) -> None:
        self._entry = entry

    def __str__(self) -> str:
        e = self._entry
        return f"monitor {e.monitor!r}, layer {e.name!r}, step {e.next_step}"

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


class Registry:
    """Every layer appended to, by ``(monitor, layer)``; safe from any thread.

    ``load`` gives what the store already holds of a layer (append mode), or None.
    """

    def __init__(self, load: Callable[[str, str], StoredLayer | None]) -> None:
        self._load = load
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], LayerEntry] = {}

    def entry(self, monitor: str, layer: str) -> LayerEntry:
        """The layer's entry, made (or loaded from the store) on first use.

        Its ``time_axis`` is fixed (``axis_fixed``) for a layer loaded from a store
        that recorded one; for a new layer, or one from a store before format 1.3
        that did not, the first record accepted fixes it.
        """
        key = (monitor, layer)
        # Entries are only ever added: one found without the lock is the layer's.
        entry = self._entries.get(key)
        if entry is not None:
            return entry
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._make(monitor, layer)
                self._entries[key] = entry
        return entry

    def _make(self, monitor: str, layer: str) -> LayerEntry:
        stored = self._load(monitor, layer)
        if stored is None:
            return LayerEntry(monitor, layer, Schema(), None, 0)
        schema = Schema(stored.structure, [FieldSpec() for _ in stored.fields])
        for spec, fld in zip(schema.specs, stored.fields, strict=True):
            for seg in fld.segments:
                spec.kind = "number" if seg.get("python_scalar") else "tensor"
                spec.dtype = seg["dtype"]
                spec.ndim = len(seg["shape"])
        schema.segments = [{Encoded.segment_key(s) for s in f.segments} for f in stored.fields]
        schema.tree = stored.meta.get("tree")
        fixed = stored.complete or stored.time_axis is not None
        extra: dict[str, Any] = {
            k: stored.meta[k] for k in ("dims", "field_dims", "units", "tree") if k in stored.meta
        }
        return LayerEntry(
            monitor,
            layer,
            schema,
            stored.time_axis,
            stored.steps,
            extra=extra or None,
            axis_fixed=fixed,
            stored=stored.steps,
        )

    def entries(self) -> list[LayerEntry]:
        """Every entry made so far."""
        with self._lock:
            return list(self._entries.values())

    def known_steps(self, monitor: str, layer: str) -> int | None:
        """Steps recorded so far of a layer this registry has an entry for, else None."""
        with self._lock:
            entry = self._entries.get((monitor, layer))
        if entry is None:
            return None
        with entry.lock:
            return entry.next_step

    def peek(self, monitor: str, layer: str) -> int:
        """Steps recorded so far (committed or not), loading the layer if need be."""
        key = (monitor, layer)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                stored = self._load(monitor, layer)
                return stored.steps if stored is not None else 0
        with entry.lock:
            return entry.next_step

    def keys(self) -> list[tuple[str, str]]:
        """Layers that have accepted a record (or hold steps from before)."""
        with self._lock:
            return [k for k, e in self._entries.items() if e.schema.structure is not None]


@dataclass
class Item:
    """One record on the queue."""

    monitor: str
    name: str
    structure: str
    time_axis: int | None
    step: int
    staged: list[Staged | None]
    nbytes: int
    appended: float  # time.monotonic() at append
    #: The layer's optional metadata (dims, units, tree), the same dict every step.
    extra: dict[str, Any] | None = None


@dataclass
class _Call:
    """Run ``fn`` on the writer thread; ``done`` is set afterwards, even on failure."""

    fn: Callable[[], None]
    done: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Post:
    """Run ``fn`` on the writer thread; nobody waits for it."""

    fn: Callable[[], None]


_STOP = object()

#: Seconds the writer thread waits, once it has taken every queued item, before it
#: sleeps: a record queued meanwhile does not wake it (see :class:`_Queue`).
NAP = 0.002

# _Queue's states: the writer thread takes items, naps, or sleeps.
_AWAKE, _NAPPING, _ASLEEP = 0, 1, 2


class _Queue:
    """The writer thread's queue: any thread puts, the writer thread alone gets.

    Waking a thread costs both threads a system call and a hand-over of the GIL, more
    than the writer thread's work on a small record. So once the queue is empty the
    writer thread first naps for :data:`NAP` seconds, during which records queued do
    not wake it (it takes them all when the nap ends), and only then sleeps, woken by
    the next item. Any other item (a call, a post, the stop) wakes it from a nap too.
    A record waits at most ``NAP`` longer to be taken; none is ever left queued while
    the writer thread sleeps. The items are a ``deque`` (``append`` and ``popleft``
    are atomic), the state is guarded by the lock.
    """

    def __init__(self, nap: float = NAP) -> None:
        self._items: collections.deque[Any] = collections.deque()
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._state = _AWAKE
        self._nap = nap

    def put(self, item: Any) -> None:
        with self._lock:
            self._items.append(item)
            state = self._state
            if state == _ASLEEP or (state == _NAPPING and not isinstance(item, Item)):
                self._state = _AWAKE
                self._ready.notify()

    def qsize(self) -> int:
        return len(self._items)

    def get_nowait(self) -> Any:
        return self.get(False)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """The next item; ``queue.Empty`` after ``timeout`` seconds (writer thread)."""
        items = self._items
        if items:
            return items.popleft()
        if not block:
            raise queue.Empty
        end = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            if not items and self._nap > 0 and (timeout is None or timeout > 0):
                self._state = _NAPPING
                self._ready.wait(self._nap if timeout is None else min(self._nap, timeout))
            while not items:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    self._state = _AWAKE
                    raise queue.Empty
                self._state = _ASLEEP
                self._ready.wait(left)
            self._state = _AWAKE
            return items.popleft()


class Worker:
    """The writer thread (see the module docstring).

    Records are written when a shard fills and when the buffered encoded bytes pass
    ``max_buffer_bytes`` (whole inner-chunk rows only); they are committed (index,
    summaries, the commit point) when the oldest uncommitted record was appended
    ``flush_interval`` seconds ago (or half that, by a write the byte bound forces),
    when a field has ``MAX_UNCOMMITTED_STEPS`` written steps uncommitted, on
    :meth:`call` of a flush, and on :meth:`close`. After a failure, the steps written
    before it are committed if the store allows (see :meth:`_fail`).
    """

    def __init__(
        self,
        sink: Sink,
        where: str,
        *,
        flush_interval: float,
        max_queue_bytes: int,
        max_buffer_bytes: int,
        trim: Callable[[], None] | None = None,
        registry: Registry | None = None,
    ) -> None:
        self._sink = sink
        self._trim = trim  # called after each write (the writer's memory back to the system)
        self._where = where
        # The callers' layers: after a failure, the steps they accepted and were not
        # committed are named (read without locks, for the message only).
        self._registry = registry
        #: Steps committed per layer when the writer thread failed (set before _error).
        self._committed: dict[tuple[str, str], int] = {}
        self.flush_interval = flush_interval
        self.max_queue_bytes = max_queue_bytes
        self.max_buffer_bytes = max_buffer_bytes
        self._queue = _Queue()
        self._space = threading.Condition()
        self._queued_bytes = 0  # guarded by _space
        self._space_waiters = 0  # callers waiting for space; guarded by _space
        self._error: BaseException | None = None  # set once, by the writer thread
        self._error_where = ""
        self._buffer_mark = 0  # writer thread only
        self._stopping = False  # guarded by _space
        self._thread = threading.Thread(target=self._run, name="spikestore-writer", daemon=True)
        self._thread.start()

    # ----------------------------------------------------------- caller side
    def check(self) -> None:
        """Raise :class:`WriteError` if the writer thread has failed (or ended without
        being told to): it names where, the cause, and each layer's steps that were
        accepted and not committed."""
        if self._error is not None:
            lost = self._not_committed()
            raise WriteError(
                f"writing {self._where} failed at {self._error_where}: "
                f"{type(self._error).__name__}: {self._error}"
                + (f"; not committed: {lost}" if lost else "")
            ) from self._error

    #: Layers named at most in a failure's message.
    _NAMED_LAYERS = 8

    def _not_committed(self) -> str:
        """Each layer's steps that ``append`` accepted and the store has not committed
        (read without the entries' locks: ``check`` runs under one, in ``put``)."""
        if self._registry is None:
            return ""
        parts = []
        for e in self._registry.entries():
            accepted = e.next_step
            done = self._committed.get((e.monitor, e.name), e.stored)
            if accepted > done:
                steps = f"steps {done}..{accepted - 1}" if accepted > done + 1 else f"step {done}"
                parts.append(f"monitor {e.monitor!r}, layer {e.name!r}, {steps}")
        more = len(parts) - self._NAMED_LAYERS
        if more > 0:
            parts[self._NAMED_LAYERS :] = [f"and {more} more layer{'s' if more > 1 else ''}"]
        return "; ".join(parts)

    def put(self, item: Item) -> None:
        """Queue a record, waiting while the queue holds ``max_queue_bytes``.

        A record larger than the bound waits for an empty queue and then goes alone,
        so the queue holds at most ``max(max_queue_bytes, one record)`` bytes.
        """
        with self._space:
            bound = self.max_queue_bytes
            while self._queued_bytes > 0 and self._queued_bytes + item.nbytes > bound:
                self._space_waiters += 1
                try:
                    self._space.wait(0.1)
                finally:
                    self._space_waiters -= 1
                self.check()
            self.check()
            if self._stopping:
                raise RuntimeError(f"{self._where} is closed")
            self._queued_bytes += item.nbytes
            # Under the lock: a record accepted before close() is queued before the stop.
            self._queue.put(item)

    def call(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the writer thread after everything queued so far; wait for it."""
        self.check()
        c = _Call(fn)
        self._queue.put(c)
        while not c.done.wait(0.1):
            if not self._thread.is_alive():
                break
        self.check()

    def start_commit(self) -> Callable[[float], None]:
        """Ask the writer thread to commit everything queued so far (any thread; used by
        ``spikestore._exit`` after a SIGTERM); returns a function that waits for it at
        most the given seconds. A writer that is closing commits as it stops: the wait
        then ends with the thread."""
        if self._error is not None or not self._thread.is_alive():
            return lambda timeout: None
        c = _Call(self._sink.write_all)
        self._queue.put(c)

        def wait(timeout: float) -> None:
            end = time.monotonic() + timeout
            while not c.done.wait(min(0.02, max(0.0, end - time.monotonic()))):
                if not self._thread.is_alive() or time.monotonic() >= end:
                    return

        return wait

    def post(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the writer thread after everything queued so far; do not wait
        (its failure is reported like a failed write)."""
        self.check()
        with self._space:
            if self._stopping:
                raise RuntimeError(f"{self._where} is closed")
            self._queue.put(_Post(fn))

    def close(self) -> None:
        """Commit everything, seal open shards and stop the thread."""
        with self._space:
            if not self._stopping:
                self._stopping = True
                self._queue.put(_STOP)
        self._thread.join()

    @property
    def failed(self) -> bool:
        """Whether the writer thread has failed (:meth:`check` then raises)."""
        return self._error is not None

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # ----------------------------------------------------------- writer side
    def _run(self) -> None:
        """The thread's body: every exception that ends it is kept (see :meth:`_fail`);
        one raised outside the handling of an item (waiting on the queue, say) finds
        the Sink between operations, so it writes and commits what it holds first."""
        ended = False
        try:
            self._loop()
            ended = True
        except BaseException as exc:
            self._fail(exc, between=True)
        finally:
            if not ended and self._error is None:
                self._error = RuntimeError("the writer thread ended unexpectedly")
            # The encoder's threads are the writer thread's: they end with it.
            self._sink.close()

    def _loop(self) -> None:
        sink = self._sink
        carry: Any = None  # an item taken from the queue but not yet handled
        while True:
            if carry is not None:
                item, carry = carry, None
            else:
                oldest = sink.oldest
                timeout = None
                if oldest is not None:
                    timeout = max(0.0, oldest + self.flush_interval - time.monotonic())
                try:
                    item = self._queue.get(timeout=timeout)
                except queue.Empty:
                    item = None
            writes = sink.writes
            try:
                if item is _STOP:
                    if self._error is None:
                        sink.write_all()
                        sink.seal_all()
                    return
                if isinstance(item, _Call):
                    try:
                        if self._error is None:
                            sink.doing = ""  # what it writes says so itself
                            item.fn()
                    except BaseException as exc:
                        self._fail(exc)  # before the caller wakes up to check
                    finally:
                        item.done.set()
                    continue
                if isinstance(item, _Post):
                    if self._error is None:
                        sink.doing = ""
                        item.fn()
                    continue
                if isinstance(item, Item):
                    self._taken(item)
                if self._error is None and self._overdue():
                    # Take what else is queued first: a writer that has fallen behind
                    # commits everything it can in one go instead of one record at a time.
                    carry = self._drain()
                    if self._error is None:
                        sink.write_all()
                        self._buffer_mark = 0
                elif self._error is None:
                    self._maybe_write()
            except BaseException as exc:
                self._fail(exc)
                if item is _STOP:
                    return
            finally:
                if self._trim is not None and sink.writes != writes:
                    # Buffers freed on this thread and the encoder's go back to the system.
                    self._trim()

    def _fail(self, exc: BaseException, between: bool = False) -> None:
        """Record the writer thread's first error. Steps written before the failure are
        whole records: they are committed if the store still takes writes (a full disk
        may not), and the message names what is lost. ``between``: the error came
        between two operations on the Sink (it ended the thread's loop), so every
        record it buffered is whole too and is written and committed first. The
        error is published last (callers read it without a lock), whatever fails
        meanwhile."""
        if self._error is not None:
            return
        sink = self._sink
        try:
            if between:
                self._error_where = "the writer thread, between records"
                with contextlib.suppress(BaseException):
                    sink.write_all()
            else:
                self._error_where = sink.doing or "the writer thread"
            with contextlib.suppress(BaseException):
                sink.commit_written()
                if not between:
                    self._error_where = sink.lost() or "the writer thread"
            with contextlib.suppress(BaseException):
                layers = sink.layers.values()
                self._committed = {(lay.monitor, lay.name): lay.done for lay in layers}
        finally:
            self._error = exc

    def _taken(self, item: Item) -> None:
        with self._space:
            self._queued_bytes -= item.nbytes
            if self._space_waiters:  # notify_all is Python code: only for a waiting caller
                self._space.notify_all()
        if self._error is None:
            self._take(item)

    def _overdue(self) -> bool:
        oldest = self._sink.oldest
        return oldest is not None and time.monotonic() - oldest >= self.flush_interval

    def _drain(self) -> Any:
        """Take the records already queued (up to 4x the buffer bound), and run the posts
        among them; return the first other item met, to be handled next.

        Only what was queued when the drain began: producers that keep the queue from
        ever emptying (several threads appending small records) would otherwise keep
        the commit from ever starting."""
        for _ in range(self._queue.qsize()):
            if self._sink.buffered_bytes >= 4 * self.max_buffer_bytes:
                break
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                return None
            if isinstance(nxt, _Post):
                # Marks and attributes change only what the next commit writes: a mark
                # per step must not cut the drain (and the commit) into steps.
                if self._error is None:
                    self._sink.doing = ""
                    nxt.fn()
                continue
            if not isinstance(nxt, Item):
                return nxt
            self._taken(nxt)
        return None

    def _take(self, item: Item) -> None:
        try:
            encoded = [None if s is None else s.encode() for s in item.staged]
        except BaseException:
            # Said only on failure: Sink.take says it for the record once encoded.
            self._sink.doing = f"monitor {item.monitor!r}, layer {item.name!r}, step {item.step}"
            raise
        self._sink.take(
            item.monitor,
            item.name,
            item.structure,
            item.time_axis,
            item.step,
            encoded,
            item.appended,
            item.extra,
        )

    def _maybe_write(self) -> None:
        buffered = self._sink.buffered_bytes
        if buffered >= max(self.max_buffer_bytes, self._buffer_mark):
            # Writes forced by the byte bound stop at inner-chunk boundaries (the next
            # write then need not decode and merge a chunk); records too large to fill
            # a chunk row within the bound stay buffered up to 4x the bound.
            # Written, not committed: the flush interval (or a flush, or close) commits,
            # unless the oldest record waits for half of it already (this write may
            # take a while, and the commit is then due before it would be noticed).
            oldest = self._sink.oldest
            commit = oldest is not None and time.monotonic() - oldest >= self.flush_interval / 2
            self._sink.write_all(aligned=buffered < 4 * self.max_buffer_bytes, commit=commit)
            left = self._sink.buffered_bytes
            # After a partial write, wait for half a bound more before the next one.
            self._buffer_mark = left + self.max_buffer_bytes // 2 if left else 0
