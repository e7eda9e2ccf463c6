"""One field of a layer's records: :class:`FieldReader` (its step index, segments,
tails and summaries) and the decoding of its rows to tensors.

Thread ownership: the caller (and the read pool's helper thread, for a large read).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..codecs import decode_rows
from ..errors import ReadError, StoreReplacedError
from ..format import (
    DTYPES,
    FORMAT_NAME,
    INDEX_CHUNK,
    INDEX_HEADS_KEY,
    SEGMENT_ID_KEY,
    SPIKE_ENCODING,
    FormatError,
    check_field_attrs,
    check_id,
    check_root_attrs,
    is_tail_name,
    store_id,
    tail_name,
)
from ..summary import COLUMNS, SUMMARY, SUMMARY_AXIS0
from ._pool import _PARALLEL_BITS, _empty_cpu, _share
from ._shards import (
    _check_array,
    _read_failure,
    _read_spike_rows,
    _shard_keys,
    _shard_problem,
    _spike_shards,
)
from ._source import _child

if TYPE_CHECKING:
    from ._nodes import LayerReader

__all__ = [
    "FieldReader",
    "MAX_STEPS",
    "read_retrying",
]


def read_retrying(read: Callable[..., Any], *args: Any) -> np.ndarray:
    """``np.asarray(read(*args))`` for a Zarr read, tried again a few times if it fails.

    A shard that a live writer rewrites (atomically, by renaming a new file over it)
    between Zarr's read of the shard index and its read of a chunk's bytes gives bytes
    of the new file at the old offsets; the chunk's checksum or its codec's header
    then fails, and reading again sees one consistent file. Damage on disk fails
    every time and is raised after the last try (about 0.3 s).
    """
    for attempt in range(5):
        try:
            return np.asarray(read(*args))
        except Exception:
            if attempt == 4:
                raise
            time.sleep(0.01 * 2**attempt)
    raise AssertionError("unreachable")


#: Bounds on what hostile array metadata can make a read allocate (the chunk bounds
#: are the format's, :data:`~spikestore.format.MAX_CHUNK_BYTES` and
#: :data:`~spikestore.format.MAX_CHUNKS_PER_SHARD`, which the writer keeps).
MAX_STEPS = 1 << 53


class _TailGone(Exception):
    """A tail chunk is missing: the writer sealed and dropped it (or it was damaged)."""


def _exists(group: Any, key: str) -> bool:
    """Whether ``key`` (relative to ``group``) is in the group's store."""
    from zarr.core.sync import sync

    full = f"{group.path}/{key}" if group.path else key
    return bool(sync(group.store.exists(full)))


def _fresh_attrs(group: Any) -> dict[str, Any]:
    """A group's attributes read from the store now (Zarr caches them per object)."""
    import zarr

    return dict(zarr.open_group(store=group.store, path=group.path, mode="r").attrs)


class FieldReader:
    """One field of a layer's records (``f<i>``): its step index, segments and summaries.

    A tensor, number or ``None`` record has one field; a tuple or list record has
    one per element. :attr:`LayerReader.fields` lists them. This is the level
    :mod:`spikestore.analysis` reads at: step ``s`` of the field is row
    ``index(s, s + 1)[0, 1]`` of segment ``index(s, s + 1)[0, 0]`` (``-1``: the
    field was ``None``), and :meth:`take` reads any rows and columns of a segment
    touching only the chunks that hold them.

    Attributes
    ----------
    committed : int
        Steps committed when the store was opened (or last refreshed).
    segments : list of dict
        The segment descriptors (see ``docs/format.md``).
    group : zarr.Group or None
        The field's Zarr group; None for a field a writer had not created yet.
    where : str
        ``"monitor '...', layer '...'"``, for messages.

    Examples
    --------
    >>> fld = spikestore.open("run.spikes")["output"]["sn1"].field(0)  # doctest: +SKIP
    >>> fld.committed, [s["encoding"] for s in fld.segments]            # doctest: +SKIP
    (300, ['bitpack'])
    """

    def __init__(self, layer: LayerReader, group: Any, i: int) -> None:
        self.layer = layer
        self.where = f"monitor {layer.monitor!r}, layer {layer.name!r}"
        self.group = group
        self._arrays: dict[int, Any] = {}
        self._index: Any = None
        self._index_cache: dict[int, np.ndarray] = {}
        # Per index chunk: its rows that break what a writer's index is (_check_index).
        self._index_bad: dict[int, np.ndarray] = {}
        self._present: set[str] = set()
        self._summaries: dict[str, Any] = {}
        self.committed: int = 0
        self.segments: list[dict[str, Any]] = []
        #: Each segment's id (format 1.6; None before) and rows, as when opened.
        self._ids: list[str | None] = []
        self._rows0: list[int] = []
        #: Each index chunk's first entry (format 1.6 ``index_heads``; [] before).
        self._heads: list[Any] = []
        self._same_stat: tuple[Any, ...] | None = None  # see _check_same
        #: Per segment: the ``lstat`` of its array's ``zarr.json`` and the id read then.
        self._id_stat: dict[int, tuple[tuple[int, int, int, int], str]] = {}
        if group is None:
            # A writer killed (or still busy) before this field's first commit.
            return
        meta = check_field_attrs(dict(group.attrs), f"{self.where} field {i}")
        if meta["committed_steps"] > MAX_STEPS:
            raise FormatError(f"{self.where}: bad committed_steps {meta['committed_steps']}")
        self.committed = meta["committed_steps"]
        self.segments = meta["segments"]
        self._ids = [
            check_id(seg.get(SEGMENT_ID_KEY), f"{self.where} field {i} segment {k}")
            for k, seg in enumerate(self.segments)
        ]
        self._rows0 = [int(seg["rows"]) for seg in self.segments]
        self._heads = meta.get(INDEX_HEADS_KEY) or []

    # -- is this still the store that was opened?
    def _lost(self, k: int | None, problem: str) -> ReadError:
        """The error for data that is missing or not what the metadata read at opening
        says: :class:`StoreReplacedError` when the store changed under the reader (its
        store id, this field's metadata or a segment's id is not as when it was
        opened), else a ReadError saying ``problem`` (damage)."""
        why = self._replaced()
        if why is not None:
            return StoreReplacedError(
                f"{self.where}: the store was replaced since this reader opened it ({why}); "
                "call refresh() on the store reader (or open the store again) to read the "
                f"new one ({problem})"
            )
        return ReadError(f"{self.where}: {problem}")

    def _replaced(self) -> str | None:
        """Why what is stored is no longer the store this reader opened, or None (an
        error path: it reads the root's, the field's and the segments' metadata)."""
        store = self.layer.store
        try:
            now = check_root_attrs(_fresh_attrs(store._root), store._where)
            was, new = store_id(store.meta, store._where), store_id(now, store._where)
        except Exception as exc:
            return f"its root metadata cannot be read now: {type(exc).__name__}: {exc}"
        if was != new:
            return f"its store id is {new}, not {was}"
        assert self.group is not None
        try:
            latest = check_field_attrs(_fresh_attrs(self.group), self.where)
        except Exception as exc:
            return f"the field's metadata cannot be read now: {type(exc).__name__}: {exc}"
        return self._changed(latest, fresh_ids=True)

    def _changed(self, latest: dict[str, Any], fresh_ids: bool = False) -> str | None:
        """Why the field's metadata ``latest`` (read now) is not what a writer appending
        to the field opened could have made of it, or None. ``fresh_ids``: also read
        each segment array's id as stored now."""
        # A writer appending after a killed one sets every field back to the layer's
        # committed steps (the fewest of its fields): only fewer than those is a change.
        layer_steps = len(self.layer)
        if latest["committed_steps"] < layer_steps:
            return (
                f"the field has {latest['committed_steps']} committed steps, not the "
                f"{layer_steps} its layer had"
            )
        segs = latest["segments"]
        for k, old in enumerate(self.segments):
            if k >= len(segs):
                return f"segment {old['array']} is gone"
            new_seg = segs[k]
            same = ("encoding", "dtype", "shape", "python_scalar", "permute")
            if any(new_seg.get(f) != old.get(f) for f in same):
                return f"segment {old['array']} is another one"
            if new_seg["rows"] < self._rows0[k]:
                return f"segment {old['array']} has fewer rows than it had"
            if not self._rows0[k]:
                # No rows when opened: nothing of it was read, and a writer appending
                # after a killed one may make its array anew (with a new id).
                continue
            if new_seg.get(SEGMENT_ID_KEY) != old.get(SEGMENT_ID_KEY):
                return f"segment {old['array']} is another one"
            if fresh_ids and self._ids[k] is not None:
                got = self._fresh_segment_id(k)
                if got and got != self._ids[k]:  # a missing one is damage, not another
                    return f"segment {old['array']} is another array (id {got})"
        return None

    def _fresh_segment_id(self, k: int) -> str:
        """The id in segment ``k``'s array's ``zarr.json`` as stored now ("" when there is
        no such file or no id).

        In a local folder the file's ``lstat`` is taken first, and while it stays the
        same (inode, size, modification and change times) the id read last is still
        the stored one: a writer replaces the file by renaming a new one over it. That
        saves a round trip through Zarr's event loop (about 0.25 ms) per read."""
        import json

        from zarr.core.buffer import default_buffer_prototype
        from zarr.core.sync import sync

        from ..storage import local_root

        assert self.group is not None
        name = self.segments[k]["array"]
        key = f"{self.group.path}/{name}/zarr.json" if self.group.path else f"{name}/zarr.json"
        root = local_root(self.group.store)
        stat = None
        if root is not None:
            try:
                st = os.lstat(root / key)
                stat = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            except OSError:
                return ""
            held = self._id_stat.get(k)
            if held is not None and held[0] == stat:
                return held[1]
        try:
            buf = sync(self.group.store.get(key, default_buffer_prototype()))
            attrs = json.loads(buf.to_bytes())["attributes"][FORMAT_NAME] if buf else None
            got = attrs.get(SEGMENT_ID_KEY) if isinstance(attrs, dict) else None
        except (ValueError, KeyError, TypeError, RecursionError):
            return ""
        got = got if isinstance(got, str) else ""
        if stat is not None:
            self._id_stat[k] = (stat, got)  # the stat taken before the read
        return got

    def _check_same(self, k: int) -> None:
        """Raise :class:`StoreReplacedError` if segment ``k`` is not the array this reader
        opened: called after every read through Zarr (which reads a missing chunk as
        zeros, and would read a replacing store's chunks as this one's). A writer that
        replaces a store creates a segment's array, with a new id, before any of its
        chunks, and removes the old array before that; so if the array is still the
        one opened after the read, the chunks read were its own. Without ids (format
        < 1.6) the field's metadata must only have grown since opening."""
        if not self.segments:
            return
        if self._ids[k] is not None and k not in self._arrays:
            self.array(k)  # opened now, after the read: checks the id it stores
            return
        if self._ids[k] is not None:
            got = self._fresh_segment_id(k)
            if got == self._ids[k]:
                return
            problem = f"segment {self.segments[k]['array']} is another array now"
        else:
            # A store before 1.6: its root's and this field's metadata must be as they
            # were; in a local folder unchanged files (lstat) need not be read again.
            sig = self._metadata_stat()
            if sig is not None and sig == self._same_stat:
                return
            why = self._replaced()
            if why is None:
                self._same_stat = sig
                return
            problem = why
        raise self._lost(k, f"what was read may be the new store's ({problem})")

    def _metadata_stat(self) -> tuple[Any, ...] | None:
        """The ``lstat`` of the root's and this field's ``zarr.json`` in a local folder
        (inode, size, times), or None elsewhere: a writer replaces such a file by
        renaming a new one over it, so an equal stat is an unchanged file."""
        from ..storage import local_root

        assert self.group is not None
        root = local_root(self.group.store)
        if root is None:
            return None
        out = []
        for key in ("zarr.json", f"{self.group.path}/zarr.json"):
            try:
                st = os.lstat(root / key)
            except OSError:
                return None
            out.append((st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        return tuple(out)

    # -- summaries
    def _summary_array(self, name: str) -> Any:
        """The summary array ``name`` if it holds a row for every committed step, else None."""
        if name not in (SUMMARY, SUMMARY_AXIS0):
            raise ValueError(f"{name!r} is not a summary array ({SUMMARY!r}, {SUMMARY_AXIS0!r})")
        if name in self._summaries:
            return self._summaries[name]
        arr = None
        if self.group is not None:
            where = f"{self.where} field {self.group.basename}"
            arr = _child(self.group, name, where)
            if arr is None and _exists(self.group, f"{name}/zarr.json"):
                # Zarr reads some malformed metadata as "no such node".
                raise FormatError(f"{where}: malformed metadata of {name}: not a Zarr array")
            if arr is not None:
                width = len(COLUMNS) if name == SUMMARY else None
                if (
                    not hasattr(arr, "dtype")
                    or arr.ndim != 2
                    or arr.dtype != np.float64
                    or (width is not None and arr.shape[1] != width)
                ):
                    raise FormatError(
                        f"{where}: summary array {name} is not a float64 (steps, "
                        f"{width or 'T'}) array"
                    )
                _check_array(arr, where, name)
                if arr.shape[0] < self.committed:
                    if self._replaced() is not None:
                        raise self._lost(None, f"the {name} has {arr.shape[0]} rows")
                    arr = None  # written by a writer that did not keep it up: not usable
        self._summaries[name] = arr
        return arr

    def has_summary(self, name: str = SUMMARY) -> bool:
        """Whether the field has the summary array ``name`` (``"summary"`` or
        ``"summary_axis0"``, see :mod:`spikestore.summary`) for all its steps.

        Raises FormatError if the array is there but its metadata cannot be read.
        """
        return self._summary_array(name) is not None

    def summary(self, name: str, steps: np.ndarray) -> np.ndarray | None:
        """Rows ``steps`` of the summary array ``name``, or None if the field has none.

        ``steps`` are positions below :attr:`committed` (see :func:`step_indices`).
        Returns a float64 array ``(len(steps), columns)``. Raises ReadError if the
        rows cannot be read (a damaged or missing chunk), FormatError if the
        array's metadata is malformed.
        """
        arr = self._summary_array(name)
        if arr is None:
            return None
        steps = np.asarray(steps, dtype=np.int64)
        if not steps.size:
            return np.zeros((0, arr.shape[1]))
        lo, hi = int(steps.min()), int(steps.max()) + 1
        if lo < 0 or hi > self.committed:
            raise IndexError(f"{self.where}: steps {lo}..{hi - 1} of {self.committed} committed")
        self._require(arr, steps, steps, name)
        try:
            if hi - lo == len(steps) and bool((np.diff(steps) == 1).all()):
                out = read_retrying(arr.__getitem__, slice(lo, hi))  # a range: no copy
            elif hi - lo <= 2 * len(steps):
                out = read_retrying(arr.__getitem__, slice(lo, hi))[steps - lo]
            else:
                out = read_retrying(arr.get_orthogonal_selection, (steps,))
        except Exception as exc:
            raise self._lost(
                None,
                f"cannot read the {name} of steps {lo}..{hi - 1}: {type(exc).__name__}: {exc}",
            ) from exc
        self._check_same(0)  # read through Zarr: still the store that was opened?
        return out

    def _require(
        self,
        arr: Any,
        rows: np.ndarray,
        steps: np.ndarray,
        name: str,
        k: int | None = None,
        *,
        verify: bool = False,
        lost: bool = True,
    ) -> None:
        """Raise ReadError if a shard holding ``rows`` is missing from the store.

        Zarr reads a missing chunk as fill values; the writer writes every shard
        (``write_empty_chunks``), so a missing one means the store was damaged, or
        replaced since it was opened (:class:`StoreReplacedError`; ``lost=False``: a
        plain ReadError, for tails, which a live writer drops). ``verify`` (segment
        ``k``'s sharded array, read through Zarr, with an id): each shard's header is
        read and checked once (see :func:`_shard_problem`).
        """
        from zarr.core.sync import sync

        r0, r1 = int(rows.min()), int(rows.max()) + 1
        outer = (arr.shards or arr.chunks)[0]
        seg_id = self._ids[k] if verify and k is not None and arr.shards else None
        for first, key, coords in _shard_keys(arr, r0, r1):
            if key in self._present:
                continue
            found: str | None = None
            if seg_id is not None:
                assert k is not None
                sealed = self.segments[k].get("sealed", self.segments[k]["rows"])
                found = _shard_problem(arr, key, coords, sealed, seg_id)
            elif not sync(arr.store_path.store.exists(key)):
                found = f"chunk {key} of {name} is missing from the store"
            if found is not None:
                hit = steps[(rows >= first) & (rows < first + outer)]
                problem = f"cannot read steps {int(hit.min())}..{int(hit.max())}: {found}"
                if not lost:
                    raise ReadError(f"{self.where}: {problem}")
                raise self._lost(k, problem)
            self._present.add(key)

    def array(self, k: int) -> Any:
        arr = self._arrays.get(k)
        if arr is None:
            seg = self.segments[k]
            name = seg["array"]
            try:
                arr = self.group[name]
            except Exception as exc:
                raise self._lost(k, f"cannot open segment {name}: {exc}") from exc
            _check_array(arr, self.where, name)
            numel = int(np.prod(seg["shape"], dtype=np.int64))
            if seg["encoding"] == SPIKE_ENCODING:
                ok = arr.ndim != 2 or arr.dtype != np.uint8 or arr.shape[1] == -(-numel // 8)
            else:
                ok = arr.shape[1:] == tuple(seg["shape"]) and arr.dtype == np.dtype(
                    DTYPES[seg["dtype"]][0]
                )
            # The array keeps its own copy of the descriptor; both must agree.
            own = dict(arr.attrs).get(FORMAT_NAME)
            if isinstance(own, dict) and own.get("node") == "segment":
                ok = ok and all(own.get(f) == seg.get(f) for f in ("encoding", "dtype", "shape"))
            if self._ids[k] is not None and (
                not isinstance(own, dict) or own.get(SEGMENT_ID_KEY) != self._ids[k]
            ):
                got = own.get(SEGMENT_ID_KEY) if isinstance(own, dict) else None
                raise self._lost(
                    k, f"the array {name} is not the segment its descriptor names (id {got})"
                )
            sealed = seg.get("sealed", seg["rows"])
            # Rows past ``sealed`` are in a tail, which holds at most one shard.
            open_rows = seg["rows"] - sealed
            if not ok or arr.shape[0] < sealed or open_rows > (arr.shards or arr.chunks)[0]:
                why = self._replaced()
                if why is not None:
                    raise self._lost(k, f"segment {name} does not match its descriptor")
                raise FormatError(
                    f"{self.where}: segment {name} ({arr.shape}, {arr.dtype}) does not match "
                    f"its descriptor (shape {seg['shape']}, dtype {seg['dtype']}, "
                    f"rows {seg['rows']})"
                )
            self._arrays[k] = arr
        return arr

    def index(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of the index, read a chunk at a time and cached."""
        if self._index is None:
            try:
                index = self.group["index"]
            except Exception as exc:
                raise self._lost(None, f"cannot open the step index: {exc}") from exc
            _check_array(index, self.where, "index")
            if index.ndim != 2 or index.shape[1] != 2 or index.shape[0] < self.committed:
                if self._replaced() is not None:
                    raise self._lost(None, f"the step index has {index.shape[0]} rows")
                raise FormatError(
                    f"{self.where}: step index of shape {index.shape} cannot hold "
                    f"{self.committed} committed steps"
                )
            self._index = index
        out, bad_rows = [], []
        c0, c1 = start // INDEX_CHUNK, (stop - 1) // INDEX_CHUNK
        try:
            for c in range(c0, c1 + 1):
                block = self._index_cache.get(c)
                lo = c * INDEX_CHUNK
                hi = min(lo + INDEX_CHUNK, self.committed)
                if block is None or block.shape[0] < hi - lo:
                    steps = np.arange(max(start, lo), min(stop, hi))
                    self._require(self._index, steps, steps, "index")
                    block = np.asarray(self._index[lo:hi])
                    self._index_bad[c] = self._check_index(c, block)
                    self._index_cache[c] = block
                part = slice(max(start, lo) - lo, min(stop, hi) - lo)
                out.append(block[part])
                bad_rows.append(self._index_bad[c][part])
        except ReadError:
            raise
        except Exception as exc:
            raise ReadError(
                f"{self.where}: cannot read the index for steps {start}..{stop - 1}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        idx = np.concatenate(out) if len(out) > 1 else out[0]
        bad = (idx[:, 0] >= len(self.segments)) | (idx[:, 0] < -1) | (idx[:, 1] < 0)
        bad |= np.concatenate(bad_rows) if len(bad_rows) > 1 else bad_rows[0]
        if bad.any():
            hit = np.nonzero(bad)[0] + start
            raise self._lost(None, f"corrupt index at steps {int(hit.min())}..{int(hit.max())}")
        return idx

    def _check_index(self, c: int, block: np.ndarray) -> np.ndarray:
        """The rows of an index chunk (its committed rows ``block``) that break what
        any index a writer wrote satisfies, so that a chunk file in another one's
        place (or the index of a store that replaced this one) is an error for the
        steps where it can be told, and a damaged entry costs only its own steps.

        A segment's rows are given out in step order and never reused, so within the
        chunk each segment's rows go up from step to step, and all lie below the
        segment's stored ``rows``. They need not go up by one: a writer appending
        after a killed one starts above rows the killed one wrote but never
        committed. Then the segment the chunk points to first is checked to be the
        array that was opened (:meth:`_check_same`): the chunk was read from this
        store. A field written by format 1.6 also lists each chunk's first entry
        (``index_heads``): a chunk whose first entry is not its own is in another's
        place, and all of its steps are an error.
        """
        head = self._heads[c] if c < len(self._heads) else None
        if head is not None and len(block) and [int(x) for x in block[0]] != head:
            lo = c * INDEX_CHUNK
            raise self._lost(
                None,
                f"the step index chunk {c} (steps {lo}..{lo + len(block) - 1}) does not "
                "belong there: its first entry is not the one the field's metadata lists "
                "(a chunk file moved, swapped or damaged)",
            )
        ks, rs = block[:, 0].astype(np.int64), block[:, 1].astype(np.int64)
        bad = np.zeros(len(block), dtype=bool)
        used = (ks >= 0) & (ks < len(self.segments))
        if used.any():
            pos = np.flatnonzero(used)
            order = np.argsort(ks[used], kind="stable")  # by segment, then by step
            k, r, pos = ks[used][order], rs[used][order], pos[order]
            down = (k[1:] == k[:-1]) & (r[1:] <= r[:-1])
            bad[pos[1:][down]] = bad[pos[:-1][down]] = True
            bad[pos[r >= np.asarray(self._rows0, dtype=np.int64)[k]]] = True
        ref = ks[used]
        self._check_same(int(ref[0]) if ref.size else 0)
        return bad

    def read(self, steps: np.ndarray, device: Any) -> list[torch.Tensor | None]:
        """Decode the given steps (sorted or not) to one tensor (or None) per step."""
        if steps.size == 0:
            return []
        lo, hi = int(steps.min()), int(steps.max()) + 1
        idx = self.index(lo, hi)[steps - lo]
        out: list[Any] = [None] * len(steps)
        for k in np.unique(idx[:, 0]):
            if k < 0:
                continue
            sel = np.nonzero(idx[:, 0] == k)[0]
            rows = idx[sel, 1]
            seg = self.segments[int(k)]
            past = rows >= seg["rows"]
            if past.any():
                hit = steps[sel][past]
                raise self._lost(
                    int(k),
                    f"corrupt index at steps {int(hit.min())}..{int(hit.max())}: "
                    f"rows past the end of segment {seg['array']}",
                )
            data = self.take(int(k), rows, (), steps[sel])
            try:
                dec = _decode_segment_rows(data, seg, device)
            except Exception as exc:
                raise ReadError(
                    f"{self.where}: cannot decode steps {int(steps[sel].min())}.."
                    f"{int(steps[sel].max())} ({seg['array']}): {type(exc).__name__}: {exc}"
                ) from exc
            scalar = seg.get("python_scalar", False)
            for j, pos in enumerate(sel):
                out[pos] = dec[j].item() if scalar else dec[j]
        return out

    def read_block(self, steps: np.ndarray, device: Any) -> torch.Tensor | None:
        """The given steps decoded into one tensor ``(len(steps), *shape)`` when they are
        all tensors of one segment, else None (then use :meth:`read`).

        Decodes straight into the stacked output: no per-step tensors, no copy.
        """
        if steps.size == 0:
            return None
        lo, hi = int(steps.min()), int(steps.max()) + 1
        idx = self.index(lo, hi)[steps - lo]
        k = int(idx[0, 0])
        if k < 0 or not bool((idx[:, 0] == k).all()):
            return None
        seg = self.segments[k]
        if seg.get("python_scalar", False):
            return None
        rows = idx[:, 1]
        if bool((rows >= seg["rows"]).any()):
            return None  # read() names the corrupt steps
        direct = self._unpack_shards(k, rows, steps, device)
        if direct is not None:
            return direct
        data = self.take(k, rows, (), steps)
        try:
            return _decode_segment_rows(data, seg, device)
        except Exception as exc:
            raise ReadError(
                f"{self.where}: cannot decode steps {lo}..{hi - 1} ({seg['array']}): "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def _unpack_shards(
        self, k: int, rows: np.ndarray, steps: np.ndarray, device: Any
    ) -> torch.Tensor | None:
        """Rows ``rows`` (increasing) of spike segment ``k`` decoded into one output
        tensor, each chunk unpacked as soon as it is decoded (see
        :func:`_read_spike_rows`); None when the segment is not stored that way, the
        rows reach its tail, or the output is not on the CPU."""
        seg = self.segments[k]
        if seg["encoding"] != SPIKE_ENCODING or (
            device is not None and torch.device(device).type != "cpu"
        ):
            return None
        if int(rows[-1]) >= seg.get("sealed", seg["rows"]) or not bool((np.diff(rows) > 0).all()):
            return None
        arr = self.array(k)
        shapes = _spike_shards(arr)
        if shapes is None:
            return None
        from ..codecs import torch_dtype

        shape = tuple(int(d) for d in seg["shape"])
        numel = int(np.prod(shape, dtype=np.int64))
        perm = seg.get("permute")
        n = len(rows)
        # Time-last records are unpacked whole: only chunks as wide as a row will do.
        if not numel or (perm is not None and shapes[0][1] < arr.shape[1]):
            return None
        out = _empty_cpu((n, *shape), torch_dtype(seg["dtype"]))
        dst = out.permute(0, *[int(p) + 1 for p in perm]) if perm is not None else out.view(n, -1)

        def place(a: int, b: int, block: np.ndarray | None, col0: int, width: int) -> None:
            bit0 = col0 * 8
            count = min(width * 8, numel - bit0)
            if block is None:
                (dst[a:b] if perm is not None else dst[a:b, bit0 : bit0 + count]).zero_()
                return
            # a few rows at a time, so the unpacked bits are still in cache for the cast
            step = max(1, (1 << 20) // count)
            for i in range(0, b - a, step):
                bits = torch.from_numpy(
                    np.unpackbits(block[i : i + step, :width], axis=1, count=count)
                )
                j = a + i
                if perm is not None:
                    dst[j : j + len(bits)].copy_(bits.view(len(bits), *dst.shape[1:]))
                else:
                    dst[j : j + len(bits), bit0 : bit0 + count].copy_(bits)

        self._require(arr, rows, steps, seg["array"], k)
        try:
            read_retrying(_read_spike_rows, arr, shapes, rows, place, self._ids[k])
        except Exception as exc:
            raise self._lost(
                k, f"cannot read {_read_failure(exc, rows, steps, seg['array'])}"
            ) from exc
        return out

    def tail(self, k: int) -> Any:
        """The unsharded array holding segment ``k``'s rows past ``sealed``."""
        key = -1 - k
        arr = self._arrays.get(key)
        if arr is None:
            seg = self.segments[k]
            main = self.array(k)
            shard = (main.shards or main.chunks)[0]
            name = tail_name(seg["array"], (seg["sealed"] // shard) % 2)
            try:
                arr = self.group[name]
            except KeyError:
                raise _TailGone from None  # sealed and dropped by the writer (take() checks)
            except Exception as exc:
                raise ReadError(f"{self.where}: cannot open tail {name}: {exc}") from exc
            _check_array(arr, self.where, name)
            if arr.shape != (shard, *main.shape[1:]) or seg["rows"] - seg["sealed"] > shard:
                raise FormatError(f"{self.where}: tail {name} does not match segment {k}")
            own = dict(arr.attrs).get(FORMAT_NAME)
            got = own.get(SEGMENT_ID_KEY) if isinstance(own, dict) else None
            if self._ids[k] is not None and got != self._ids[k]:
                raise self._lost(k, f"the tail {name} is another segment's (id {got})")
            self._arrays[key] = arr
        return arr

    def take(
        self, k: int, rows: np.ndarray, rest: tuple[Any, ...] = (), steps: Any = None
    ) -> np.ndarray:
        """``segment_k[rows, *rest]`` (orthogonal selection), reading only the chunks
        involved, from the sharded array or, past ``sealed``, the tail.

        A live writer moves rows from the tail into shards and then reuses the tail,
        committing the new ``sealed`` first; so after reading from a tail the
        field's metadata is read again, and if ``sealed`` moved meanwhile the rows
        are read again from where they are now.
        """
        rows = np.asarray(rows, dtype=np.int64)
        steps = rows if steps is None else np.asarray(steps)
        for _ in range(4):
            sealed = self.segments[k].get("sealed", self.segments[k]["rows"])
            try:
                data = self._take(k, rows, rest, steps)
            except _TailGone:
                data = None
            if data is not None and not (rows >= sealed).any():
                return data
            try:
                meta = check_field_attrs(
                    _fresh_attrs(self.group), f"{self.where} field {self.group.path}"
                )
            except Exception as exc:
                raise self._lost(k, f"the field's metadata cannot be read now: {exc}") from exc
            changed = self._changed(meta)
            if changed is not None:
                raise self._lost(k, f"the field changed under the reader ({changed})")
            latest = meta["segments"]
            if latest[k].get("sealed", latest[k]["rows"]) == sealed:
                if data is not None:
                    return data
                raise ReadError(
                    f"{self.where}: cannot read steps {int(steps.min())}..{int(steps.max())}: "
                    f"a chunk of the tail of {self.segments[k]['array']} is missing"
                )
            # The writer sealed rows we took from a tail: look again.
            for old, new in zip(self.segments, latest, strict=False):
                old.update({"rows": new["rows"], "sealed": new.get("sealed", new["rows"])})
            self._arrays.clear()
            self._present.clear()
        raise ReadError(f"{self.where}: segment {k} kept moving while being read; try again")

    def _take(
        self, k: int, rows: np.ndarray, rest: tuple[Any, ...], steps: np.ndarray
    ) -> np.ndarray:
        seg = self.segments[k]
        sealed = seg.get("sealed", seg["rows"])
        urows, inv = np.unique(rows, return_inverse=True)
        parts = []
        for in_tail in (False, True):
            sel = urows[urows >= sealed] if in_tail else urows[urows < sealed]
            if not sel.size:
                continue
            if in_tail:
                arr, local, name = self.tail(k), sel - sealed, f"{seg['array']} (tail)"
            else:
                arr, local, name = self.array(k), sel, seg["array"]
            hit = steps[np.isin(rows, sel)]
            shards = None if in_tail or rest else _spike_shards(arr)
            if in_tail:
                # Tails are rewritten and dropped by the writer: never trust a cache.
                self._present = {p for p in self._present if not is_tail_name(p)}
                try:
                    self._require(arr, local, hit if hit.size else local, name, lost=False)
                except ReadError:
                    raise _TailGone from None
            else:
                self._require(
                    arr, local, hit if hit.size else local, name, k, verify=shards is None
                )
            r0, r1 = int(local[0]), int(local[-1]) + 1
            try:
                if shards is not None:
                    packed = read_retrying(_read_spike_rows, arr, shards, local, None, self._ids[k])
                    assert packed is not None
                    parts.append(packed)
                elif r1 - r0 <= 2 * len(local):
                    data = read_retrying(arr.get_orthogonal_selection, (slice(r0, r1), *rest))
                    parts.append(data[local - r0])
                else:
                    parts.append(read_retrying(arr.get_orthogonal_selection, (local, *rest)))
            except Exception as exc:
                at = rows[np.isin(rows, sel)]  # aligned with hit
                raise self._lost(k, f"cannot read {_read_failure(exc, at, hit, name)}") from exc
            if shards is None:
                # Zarr reads a missing chunk as zeros, and a replacing store's chunks as
                # this one's: the segment must still be the array that was opened.
                self._check_same(k)
        data = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if len(inv) == len(data) and bool((np.diff(rows) > 0).all()):
            return data  # increasing rows: already in order
        return data[inv]


def _decode_segment_rows(rows: np.ndarray, seg: dict[str, Any], device: Any) -> torch.Tensor:
    """``decode_rows`` of ``rows`` of segment ``seg``; bit-packed rows decoded on the
    CPU are unpacked into an output allocated by :func:`_empty_cpu`, converted to the
    record's dtype and axis order in one pass."""
    if seg["encoding"] != SPIKE_ENCODING or (
        device is not None and torch.device(device).type != "cpu"
    ):
        return decode_rows(rows, seg, device)
    from ..codecs import torch_dtype

    shape = tuple(int(d) for d in seg["shape"])
    n = rows.shape[0]
    numel = int(np.prod(shape, dtype=np.int64))
    out = _empty_cpu((n, *shape), torch_dtype(seg["dtype"]))
    if not n or not numel:
        return out
    rows = np.ascontiguousarray(rows).reshape(n, -1)
    perm = seg.get("permute")
    if perm is not None:
        # the rows hold the record in the axis order ``perm``: write through that view
        dst = out.permute(0, *[int(p) + 1 for p in perm])
    else:
        dst = out
    # Unpack a few rows at a time, so the unpacked bits stay in cache between the two
    # passes, and spread the blocks over two threads (both passes release the GIL).
    block = max(1, (1 << 21) // numel)

    def fill(a: int) -> None:
        bits = np.unpackbits(rows[a : a + block], axis=1, count=numel)
        dst[a : a + block].copy_(torch.from_numpy(bits).view(bits.shape[0], *dst.shape[1:]))

    starts = range(0, n, block)
    if n * numel >= _PARALLEL_BITS:
        _share(fill, starts)
    else:
        for a in starts:
            fill(a)
    return out
