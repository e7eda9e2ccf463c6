"""Per-field buffering and the commit protocol: everything the writer thread writes.

The commit protocol
-------------------
A field's steps become visible to readers, and survive a crash, only when its
group's attributes (``committed_steps`` and the segment descriptors) are
rewritten; Zarr writes that ``zarr.json`` in one atomic rename, and it is always
the last write of a commit. In order, :meth:`FieldWriter.write`:

1. appends the steps' rows to their segments (the open shard's tail, or whole
   shard files; see ``spikestore._segments``), the chunks encoded and written on
   the Sink's encoder threads, all of them finished before step 2; a whole shard
   file made of rows in memory is written on the Sink's shard-writer threads
   meanwhile, and every such write has ended before step 2 of the commit that
   follows (a failed one: the steps from the first with a row in that shard on
   are not written, see :meth:`FieldWriter.settle`);
2. writes the steps' rows of the ``index`` array (``[segment, row]`` per step);
3. writes their ``summary`` rows (``spikestore.summary``);
4. writes the field's attributes: the commit point.

Rows past ``committed_steps`` in any array are garbage a reader never looks at,
and the next writer overwrites them. With ``durable=True`` every write of steps
1-3 is ``fsync``-ed before step 4 starts (see ``spikestore.storage``). Where a
writer holds a lease instead of a lock (object storage), the Sink's ``fence`` is
called before every commit point and raises if another writer took over.

Requests per commit
-------------------
On object storage every write and read is a request. A commit of one field
writes one chunk of its segment's tail, one of its ``index``, one of each summary
array and its ``zarr.json``: five writes and, through
``spikestore.storage.CachingStore``, no reads (Zarr rewrites a partly written
chunk by reading it back, and the cache holds what this writer wrote). The
``index`` and summary arrays grow a whole chunk (a shard for summaries) at a
time, so their ``zarr.json`` is rewritten once per chunk rather than at every
commit; rows past ``committed_steps`` hold the fill value, and :meth:`FieldWriter.seal`
cuts the arrays to ``committed_steps`` when the writer closes.

Groups are created as soon as a layer's first record is taken: the monitor group,
the layer group without ``time_axis``, every field group (``committed_steps = 0``,
an empty index), then the layer's ``time_axis``: once that key is there every
field group exists (format 1.3).

Thread ownership: a :class:`Sink` and everything it holds belong to the writer
thread (its :class:`~spikestore._segments.Encoder`'s threads run only while the
writer thread waits for them, on chunks handed to them, never on the Sink's state);
``spikestore._stored``'s functions are also called by the thread that opens
the writer, before that thread starts or for layers it has not seen.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import wait as wait_all
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._segments import Encoder, Segment, SegmentOptions, ShardWriter, create_segment
from ._stored import StoredField, layer_path, load_layer
from .codecs import Encoded, compressor_codecs
from .codecs.rows import repack_rows
from .format import (
    INDEX_CHUNK,
    RUN_KEY,
    SPIKE_ENCODING,
    field_attrs,
    field_key,
    layer_attrs,
    monitor_attrs,
    node_key,
    segment_descriptor,
)
from .storage import local_root, member_keys
from .storage._dirs import DirCache, hold_dirs
from .summary import FieldSummary, SpikeBlock

__all__ = [
    "MAX_UNCOMMITTED_STEPS",
    "Sink",
    "steps_text",
]


def steps_text(first: int, last: int) -> str:
    """Steps ``first`` to ``last`` for a message: "step 4", "steps 4..9", "no steps"."""
    if last < first:
        return "no steps"
    return f"step {first}" if first == last else f"steps {first}..{last}"


#: Written steps a field keeps uncommitted at most (see :meth:`FieldWriter.write`): a
#: bound on the index entries and summaries held for the next commit when the flush
#: interval is long.
MAX_UNCOMMITTED_STEPS = 1024


class FieldWriter:
    """One field: its buffered rows, index, summary and segments, and its commit."""

    def __init__(
        self,
        root: Any,
        path: str,
        opts: SegmentOptions,
        stored: StoredField | None = None,
        fence: Callable[[], None] | None = None,
        encoder: Encoder | None = None,
        shard_writer: ShardWriter | None = None,
    ) -> None:
        self.root = root
        self.path = path
        self.opts = opts
        self.fence = fence
        self.encoder = encoder
        self.shard_writer = shard_writer
        #: Shard files being written in the background: ``(segment, shard, future)``.
        self.in_flight: list[tuple[int, int, Future[None]]] = []
        self.committed = 0
        #: Steps whose rows are in their segments: ``committed`` up to here, the rest
        #: waiting for the next commit with their index entries in ``unindexed``.
        self.written = 0
        self.unindexed: list[np.ndarray] = []
        self.segments: list[dict[str, Any]] = []
        self.keys: dict[tuple[Any, ...], int] = {}
        self.arrays: dict[int, Segment] = {}
        self.pending_index: list[tuple[int, int]] = []
        self.pending_rows: dict[int, list[np.ndarray]] = {}
        #: Whether segment k's pending rows are packed in their records' own order
        #: (``Encoded.as_recorded``), put in the segment's order as a block when written.
        self.as_recorded: dict[int, bool] = {}
        self.buffered_bytes = 0
        self.summary = FieldSummary()
        #: Entry c: the index entry of step c * INDEX_CHUNK (format.INDEX_HEADS_KEY).
        self.index_heads: list[list[int] | None] = []
        grp = stored.group if stored is not None else None
        if grp is None:
            grp = root.create_group(path, attributes=field_attrs(0, []), overwrite=True)
            self.index = self._create_index(grp)
        else:
            self.committed = self.written = stored.committed if stored is not None else 0
            self.segments = stored.segments if stored is not None else []
            self.keys = {Encoded.segment_key(s): k for k, s in enumerate(self.segments)}
            self.index = grp["index"] if "index" in grp else self._create_index(grp)
            self.summary.load(grp, self.committed)
            chunks = -(-self.committed // INDEX_CHUNK)  # a killed writer's later ones go
            heads = (stored.index_heads if stored is not None else None) or []
            self.index_heads = (list(heads) + [None] * chunks)[:chunks]
        self.group = grp

    @staticmethod
    def _create_index(grp: Any) -> Any:
        return grp.create_array(
            "index",
            shape=(0, 2),
            dtype="int32",
            chunks=(INDEX_CHUNK, 2),
            # Byte shuffle: the rows go up by one from step to step, which zstd alone
            # keeps at ~1.4 bytes a step and shuffled at ~0.03.
            compressors=compressor_codecs("blosc-zstd", 5, itemsize=4, shuffle=True),
            fill_value=-1,
            dimension_names=["step", "segment_row"],
            config={"write_empty_chunks": True},
            overwrite=True,
        )

    @property
    def pending(self) -> int:
        return len(self.pending_index)

    def add(self, enc: Encoded | None) -> bool:
        """Buffer one step; True when it fills its segment's open shard."""
        self.summary.add(enc)
        if enc is None:
            self.pending_index.append((-1, 0))
            return False
        k = self._segment(enc)
        rows = self.pending_rows.setdefault(k, [])
        row = self.segments[k]["rows"] + len(rows)
        bits = enc.row
        if not rows:
            self.as_recorded[k] = enc.as_recorded
        elif enc.as_recorded != self.as_recorded[k]:
            # Rows in both orders (a layer whose records moved between a GPU, which
            # packs in order, and the CPU): all of them in order, one at a time.
            assert enc.permute is not None
            if enc.as_recorded:
                bits = repack_rows(bits[None], enc.shape, enc.permute)[0]
            else:
                rows[:] = repack_rows(np.stack(rows), enc.shape, enc.permute)
                self.as_recorded[k] = False
        rows.append(bits)
        self.pending_index.append((k, row))
        self.buffered_bytes += enc.row.nbytes
        seg = self.arrays.get(k)
        return seg is not None and (row + 1) % seg.shard == 0

    def _segment(self, enc: Encoded) -> int:
        k = self.keys.get(enc.key)
        if k is None:
            k = len(self.segments)
            desc = segment_descriptor(
                k, enc.encoding, enc.dtype, enc.shape,
                python_scalar=enc.python_scalar, permute=enc.permute,
            )  # fmt: skip
            self.segments.append(desc)
            self.keys[enc.key] = k
        return k

    def _open_segment(self, k: int, row: np.ndarray) -> None:
        desc = self.segments[k]
        if desc["rows"] and desc["array"] in self.group:
            arr = self.group[desc["array"]]
        else:
            arr = create_segment(self.group, desc, row, self.opts)
        self.arrays[k] = Segment(
            self.group, desc, arr, self.commit, self.encoder, self.shard_writer
        )

    def write(self, aligned: bool = False, commit: bool = True) -> None:
        """Write the pending steps' rows (a prefix of them if ``aligned``), and commit
        every step written if ``commit``.

        ``aligned``: only steps whose rows end on inner-chunk boundaries, so that
        the next write does not decode, merge and encode a chunk again.
        ``commit=False`` (writes forced by the writer's memory bound or by a full
        shard): the rows go to their segments, their index entries and summaries
        stay in memory (a few bytes a step) for the next commit, which the flush
        interval still bounds; the index, summary and commit point are then written
        once for many writes. At most :data:`MAX_UNCOMMITTED_STEPS` written steps
        wait. A commit costs about 10 ms (three Zarr writes and the commit point), so
        the bound is what decides how often records of tens of KB commit: with 128,
        2,000 ``[4, 8, 16, 28, 28]`` spike records committed at each of 13 forced
        writes, 13% of the run's wall time; with 1,024, `bench_scale.py`'s peak RSS
        growth over 100,000 steps is 77-80 MiB (69-74 with 128; 126-144 with 512
        in an earlier writer, whose small per-step objects fragmented glibc's heaps).

        The fence (a lease's check) runs before the first write and again before the
        commit point: a writer that lost its lease (frozen past its timeout, then
        resumed) must not overwrite the chunks of the writer that took over.
        """
        if self.pending_index:
            self._write_rows(aligned)
        if commit or self.written - self.committed >= MAX_UNCOMMITTED_STEPS:
            self.commit_written()

    def _write_rows(self, aligned: bool) -> None:
        if self.fence is not None:
            self.fence()
        for k, rows in self.pending_rows.items():
            if rows and k not in self.arrays:
                # Created at the first write, not when a record is taken: the store is
                # written in commits only (and once per layer, for its groups).
                self._open_segment(k, rows[0])
        steps = len(self.pending_index)
        if aligned:
            limit = {}
            for k, rows in self.pending_rows.items():
                seg = self.arrays[k]
                end = seg.desc["rows"] + len(rows)
                limit[k] = end - end % seg.chunk_rows
            steps = 0
            for k, row in self.pending_index:
                if k >= 0 and row >= limit[k]:
                    break
                steps += 1
        if not steps:
            return
        done = np.asarray(self.pending_index[:steps], dtype=np.int32).reshape(steps, 2)
        spikes = []
        for k, seg in self.arrays.items():
            pos = np.flatnonzero(done[:, 0] == k)
            n = len(pos)
            if n:
                rows = self.pending_rows[k]
                desc = seg.desc
                spiky = desc["encoding"] == SPIKE_ENCODING
                perm = desc.get("permute")
                shape = tuple(desc["shape"])
                permute = tuple(perm) if perm is not None else None
                block: np.ndarray | list[np.ndarray]
                if seg.takes_rows and not spiky:
                    block = rows[:n]  # written from the rows themselves: no copy
                    self.buffered_bytes -= sum(r.nbytes for r in block)
                else:
                    block = np.stack(rows[:n])
                    self.buffered_bytes -= block.nbytes
                    if self.as_recorded.get(k):
                        assert permute is not None
                        block = repack_rows(block, shape, permute)
                del rows[:n]  # before the write: never the rows and their block, encoded too
                try:
                    seg.write(block)
                finally:
                    self.in_flight += [(k, j, f) for j, f in seg.writing]
                    seg.writing = []
                if spiky:
                    assert isinstance(block, np.ndarray)
                    spikes.append(SpikeBlock(pos, shape, permute, block))
        self.summary.absorb(self.written, spikes)
        self.unindexed.append(done)
        self.written += steps
        del self.pending_index[:steps]

    def settle(self) -> BaseException | None:
        """Wait for the shard files being written in the background; if one failed,
        :meth:`_take_back` what it held and return its error (the first one)."""
        flights, self.in_flight = self.in_flight, []
        if not flights:
            return None
        wait_all([f for _, _, f in flights])
        failed: dict[int, int] = {}  # segment -> its first shard not written
        error = None
        for k, j, f in flights:
            exc = f.exception()
            if exc is not None:
                error = error or exc
                failed[k] = min(j, failed.get(k, j))
        if error is not None:
            self._take_back(failed)
        return error

    def _take_back(self, failed: dict[int, int]) -> None:
        """Segment ``k``'s shard ``failed[k]`` was not written: the segment ends before
        it (every earlier shard is whole: shards are sealed in order), and the steps
        from the first one whose row is in it on are not written (their index entries
        and spike summaries are forgotten; the next commit commits those before).
        Nothing else goes back: what other segments hold, tails included, is theirs
        as it is now, which the steps kept read."""
        done = np.concatenate(self.unindexed) if self.unindexed else np.empty((0, 2), np.int32)
        first = self.written - len(done)  # the step of done[0]
        lost = np.zeros(len(done), dtype=bool)
        for k, j in failed.items():
            desc = self.arrays[k].desc
            end = j * self.arrays[k].shard
            lost |= (done[:, 0] == k) & (done[:, 1] >= end)
            desc["rows"] = desc["sealed"] = min(desc["rows"], end)
        keep = int(np.argmax(lost)) if lost.any() else len(done)
        self.written = first + keep
        self.unindexed = [done[:keep]] if keep else []
        self.summary.forget(self.written)

    def commit_written(self) -> None:
        """Index and summarise the steps written since the last commit, and commit them.

        Also what a writer whose later write failed still commits: the steps written
        before are complete (see ``Sink.commit_written``). A shard file written in the
        background that failed (see :meth:`settle`) is raised after the steps before
        its write are committed."""
        failed = self.settle()
        try:
            self._commit_written()
        finally:
            if failed is not None:
                raise failed

    def _commit_written(self) -> None:
        n0, n1 = self.committed, self.written
        if n1 == n0:
            return
        if self.unindexed:  # empty: indexed by an attempt whose commit point failed
            if self.index.shape[0] < n1:
                # A chunk at a time: the index's zarr.json is not rewritten at every commit.
                self.index.resize((-(-n1 // INDEX_CHUNK) * INDEX_CHUNK, 2))
            done = np.concatenate(self.unindexed) if len(self.unindexed) > 1 else self.unindexed[0]
            self.index[n0:n1] = done
            for c in range(-(-n0 // INDEX_CHUNK), -(-n1 // INDEX_CHUNK)):
                del self.index_heads[c:]
                self.index_heads += [None] * (c - len(self.index_heads))
                self.index_heads.append([int(x) for x in done[c * INDEX_CHUNK - n0]])
            self.summary.write(self.group, n0, n1)
            self.unindexed = []
        # Counted once the commit point is written: a failed one (a full disk) leaves
        # these steps uncommitted, as the error must say and a retry must finish.
        self.commit(n1)
        self.committed = n1

    def commit(self, steps: int | None = None) -> None:
        """Write the field's attributes with ``steps`` committed (default: as many as
        now): the atomic commit point, fenced again (a writer frozen during this
        commit's writes must not land its commit point). Every shard file written in
        the background has ended first (see :meth:`settle`)."""
        failed = self.settle()
        if failed is not None:
            raise failed
        if self.fence is not None:
            self.fence()
        segs = [{k: v for k, v in s.items() if not k.startswith("_")} for s in self.segments]
        steps = self.committed if steps is None else steps
        heads = self.index_heads[: -(-steps // INDEX_CHUNK)]
        self.group.attrs.update(field_attrs(steps, segs, heads))
        for seg in self.arrays.values():
            seg.disk_sealed = seg.desc["sealed"]

    def seal(self) -> None:
        """On close: every open shard into its shard file, committed; tails deleted.

        A closed store then holds each segment in one sharded array, as plain Zarr
        expects; a writer that appends later moves the partial shard back. Fenced
        first: a writer whose lease was taken over must not seal (rewrite shard
        files, drop tails, cut arrays) in the store of the writer that took over.
        """
        if self.fence is not None:
            self.fence()
        self.commit_written()
        if any([seg.seal_partial() for seg in self.arrays.values()]):
            self.commit()
        for seg in self.arrays.values():
            seg.drop_tails()
        # Arrays grown ahead of the commits (see the module docstring) get their exact
        # length back: a closed store's index has exactly committed_steps rows.
        if self.index.shape[0] > self.committed:
            self.index.resize((self.committed, 2))
        self.summary.trim(self.committed)


@dataclass
class LayerWriter:
    monitor: str
    name: str
    fields: list[FieldWriter]
    next_step: int  # the step the next record taken must have
    #: Steps below this are committed by every field.
    done: int = 0

    @property
    def pending(self) -> bool:
        """Steps taken and not yet committed by some field (written or not)."""
        return any(f.pending_index or f.written > f.committed for f in self.fields)


@dataclass
class Sink:
    """The writer thread's state: every layer it writes, and what is buffered.

    ``buffered_bytes`` and ``oldest`` are asked after every record: both are kept up
    to date as records are taken and written, never summed over the layers.
    """

    root: Any
    opts: SegmentOptions
    where: str
    #: Raises if this writer may no longer write (its lease was taken over); called
    #: before every commit point and before a layer's groups are made.
    fence: Callable[[], None] | None = None
    layers: dict[tuple[str, str], LayerWriter] = field(default_factory=dict)
    #: What is being written now, for error messages.
    doing: str = ""
    #: Encodes each commit's chunks on a pool of threads (``spikestore._segments``).
    encoder: Encoder = field(default_factory=Encoder)
    #: Writes complete shard files in the background (``spikestore._segments``).
    shard_writer: ShardWriter = field(default_factory=ShardWriter)
    #: Bytes of rows taken and not yet written, over all layers.
    _buffered: int = 0
    #: Layer writes so far (the worker returns freed memory to the system after them).
    writes: int = 0
    #: The run description (attributes, dt, marks; see :meth:`change_run`), and whether
    #: it changed since it was last written.
    run: dict[str, Any] | None = None
    run_dirty: bool = False
    _run_since: float | None = None  # when run_dirty was set
    #: The layer being written, the last step of the write and ``doing`` as it said
    #: so (for :meth:`lost`).
    _writing: tuple[LayerWriter, int, str] | None = None
    #: ``(layer, step, append time)`` of the records not yet committed (and of some that
    #: were: dropped from the front when met), in the order they were taken.
    _order: deque[tuple[LayerWriter, int, float]] = field(default_factory=deque)
    #: The store's folders held open by the thread writing (a local store's; see
    #: ``storage._localfs.hold_dirs``), from its first write to :meth:`close`.
    _dirs: DirCache | None = None
    _dirs_thread: int | None = None

    @property
    def buffered_bytes(self) -> int:
        return self._buffered

    @property
    def oldest(self) -> float | None:
        """Append time (``time.monotonic()``) of the oldest record not yet committed.

        Records are taken in the order they were queued, which is the order of their
        append times but for callers in several threads racing by microseconds: the
        first record taken and not committed stands for the oldest.
        """
        order = self._order
        while order and order[0][1] < order[0][0].done:
            order.popleft()
        first = order[0][2] if order else None
        if self.run_dirty and self._run_since is not None:
            # A changed run description waits for a commit like a record.
            return self._run_since if first is None else min(first, self._run_since)
        return first

    def close(self) -> None:
        """Stop the encoder's and the shard writer's threads (after their last write) and
        let go of the folders held (the writer thread's last act)."""
        self.encoder.close()
        self.shard_writer.close()
        if self._dirs is not None and self._dirs_thread == threading.get_ident():
            self._dirs.close()
            self._dirs = None

    def _hold_dirs(self) -> None:
        # The thread that writes first holds the folders (the writer thread; after a
        # SIGTERM the exit thread commits without them, walking from the root).
        if self._dirs_thread is None:
            self._dirs_thread = threading.get_ident()
            root = local_root(self.root.store)
            if root is not None:
                self._dirs = hold_dirs(root)

    def declare_monitor(self, monitor: str) -> None:
        key = node_key(monitor)
        if key not in self.root:
            if self.fence is not None:
                self.fence()
            self.root.create_group(key, attributes=monitor_attrs(monitor))

    def _layer(
        self,
        monitor: str,
        name: str,
        structure: str,
        nfields: int,
        t: int | None,
        extra: dict[str, Any] | None = None,
    ) -> LayerWriter:
        lay = self.layers.get((monitor, name))
        if lay is not None:
            return lay
        self.doing = f"monitor {monitor!r}, layer {name!r}"
        path = layer_path(monitor, name)
        stored = load_layer(self.root, monitor, name, self.where)
        if self.fence is not None:
            self.fence()
        if stored is None:
            self.declare_monitor(monitor)
            # The layer's place in its monitor's call order: layers already there first.
            order = len(member_keys(self.root[node_key(monitor)]))
            extra = {**(extra or {}), "order": order}
            self.root.create_group(
                path, attributes=layer_attrs(name, structure, nfields, complete=False)
            )
            fields = [
                FieldWriter(
                    self.root,
                    f"{path}/{field_key(i)}",
                    self.opts,
                    fence=self.fence,
                    encoder=self.encoder,
                    shard_writer=self.shard_writer,
                )
                for i in range(nfields)
            ]
            self.root[path].attrs.update(layer_attrs(name, structure, nfields, t, extra=extra))
            lay = LayerWriter(monitor, name, fields, 0)
        else:
            fields = [
                FieldWriter(
                    self.root,
                    f"{path}/{field_key(i)}",
                    self.opts,
                    f,
                    self.fence,
                    self.encoder,
                    self.shard_writer,
                )
                for i, f in enumerate(stored.fields)
            ]
            steps = stored.steps
            for f in fields:
                # Steps past the slowest field's were not committed as a whole record.
                f.committed = f.written = steps
            # dims and units that a layer made by an older writer lacks, from the
            # first record appended to it (the caller keeps those it has).
            added = {k: v for k, v in (extra or {}).items() if k not in stored.meta}
            if not stored.complete or added:
                axis = stored.time_axis if stored.time_axis is not None else t
                meta = {**stored.meta, **added}
                self.root[path].attrs.update(
                    layer_attrs(name, stored.structure, nfields, axis, extra=meta)
                )
            lay = LayerWriter(monitor, name, fields, steps, steps)
        self.layers[(monitor, name)] = lay
        if self.run is not None:
            # Where this run begins on the layer (format 1.7), written before its steps.
            self.run["runs"][-1]["first"].setdefault(monitor, {})[name] = lay.next_step
            self._run_changed()
        return lay

    def take(
        self,
        monitor: str,
        name: str,
        structure: str,
        time_axis: int | None,
        step: int,
        encoded: list[Encoded | None],
        appended: float,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Buffer one record; write the layer at once if a shard filled. ``extra``: the
        layer's optional metadata (``dims``, ``units``, ``tree``), written with a new layer."""
        lay = self._layer(monitor, name, structure, len(encoded), time_axis, extra)
        self.doing = f"monitor {monitor!r}, layer {name!r}, step {step}"
        if step != lay.next_step or len(encoded) != len(lay.fields):
            raise RuntimeError(
                f"internal error: step {step} with {len(encoded)} fields arrived where step "
                f"{lay.next_step} with {len(lay.fields)} was expected"
            )
        full = False
        for fld, enc in zip(lay.fields, encoded, strict=True):
            full |= fld.add(enc)
            if enc is not None:
                self._buffered += enc.row.nbytes
        lay.next_step += 1
        self._order.append((lay, step, appended))
        if full:
            # The shard's rows are written now (one shard file), committed later.
            self.write_layer(lay, commit=False)

    def write_layer(self, lay: LayerWriter, aligned: bool = False, commit: bool = True) -> None:
        """Write the layer's pending rows (see :meth:`FieldWriter.write`)."""
        if not lay.pending:
            return
        self._hold_dirs()
        if self.run_dirty:
            # Marks first: a step committed before the mark that precedes it would be
            # read with the previous mark's values after a crash (a mark may name steps
            # not committed yet; readers count only committed ones).
            self.write_run()
        # The steps not committed yet: a failure leaves them all uncommitted (those
        # written before it are committed afterwards if the store still allows it).
        first = min(f.committed for f in lay.fields)
        last = max(f.written + f.pending for f in lay.fields) - 1
        self.doing = f"monitor {lay.monitor!r}, layer {lay.name!r}, {steps_text(first, last)}"
        self._writing = (lay, last, self.doing)
        before = sum(f.buffered_bytes for f in lay.fields)
        self.writes += 1
        try:
            for fld in lay.fields:
                fld.write(aligned, commit)
        finally:
            self._buffered += sum(f.buffered_bytes for f in lay.fields) - before
            lay.done = min(f.committed for f in lay.fields)

    def lost(self) -> str:
        """After a failure: what is not committed, as ``doing`` says it (call after
        :meth:`commit_written`, which may have committed part of what ``doing`` names)."""
        if self._writing is None or self._writing[2] != self.doing:
            return self.doing
        lay, last, _ = self._writing
        first = min(f.committed for f in lay.fields)
        if first > last:  # the write failed, and then its steps were committed after all
            return f"monitor {lay.monitor!r}, layer {lay.name!r} (its steps committed after all)"
        return f"monitor {lay.monitor!r}, layer {lay.name!r}, {steps_text(first, last)}"

    def commit_written(self) -> None:
        """Commit what every field has written (best effort, after a failed write: the
        steps written before it are whole records; errors are left to the caller)."""
        if self.run_dirty:
            self.write_run()
        for lay in self.layers.values():
            for fld in lay.fields:
                fld.commit_written()
            lay.done = min(f.committed for f in lay.fields)

    def write_all(self, aligned: bool = False, commit: bool = True) -> None:
        if commit and self.run_dirty:
            self.write_run()  # before the steps it names (see write_layer)
        for lay in list(self.layers.values()):
            self.write_layer(lay, aligned, commit)

    def change_run(self, attrs: dict[str, Any] | None = None, mark: Any = None) -> None:
        """Apply a change to the run description (``RUN_KEY``): new ``attrs``, or a
        mark ``(new marked layers, {"values": ..., "at": ...})``. Written with the next
        commit, which the change makes due within the flush interval as a record would
        (written at once, a mark per step would rewrite the growing description at
        every step)."""
        if self.run is None:
            raise RuntimeError("internal error: the run description was not set")
        if attrs:
            self.run["attrs"].update(attrs)
            self.run["runs"][-1]["attrs"].update(attrs)
        if mark is not None:
            layers, entry = mark
            self.run["marks"]["layers"].extend(layers)
            self.run["marks"]["marks"].append(entry)
        self._run_changed()

    def _run_changed(self) -> None:
        if not self.run_dirty:
            self.run_dirty = True
            self._run_since = time.monotonic()

    def write_run(self) -> None:
        """Write the run description into the root's attributes (one atomic write of
        the root's ``zarr.json``; its size grows with the marks, one write a commit)."""
        if self.run is None or not self.run_dirty:
            return
        self.doing = "the run's attributes and marks"
        if self.fence is not None:
            self.fence()
        self.root.attrs.update({RUN_KEY: self.run})
        self.run_dirty = False
        self._run_since = None

    def seal_all(self) -> None:
        for lay in self.layers.values():
            self.doing = f"monitor {lay.monitor!r}, layer {lay.name!r} (closing)"
            for fld in lay.fields:
                fld.seal()
