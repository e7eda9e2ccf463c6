"""The checks that what a :class:`~spikestore.reader.FieldReader` reads is what it
opened: data missing or damaged (a ReadError), or a store replaced under the reader
(:class:`~spikestore.reader.StoreReplacedError`), told apart by reading the metadata
again; the arrays it opens checked against their descriptors.

Thread ownership: the caller (one :class:`FieldChecks` per field reader, touched only
by the thread reading through it).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from .._zarr import buffer_prototype
from ..errors import ReadError, StoreReplacedError, UnsafeStoreError
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
    store_id,
)
from ..summary import COLUMNS, SUMMARY
from ._shards import _check_array, _shard_keys, _shard_problem

if TYPE_CHECKING:
    from ._field import FieldReader

__all__ = ["FieldChecks"]

#: A file's ``lstat`` as compared: inode, size, modification and change times.
Stat = tuple[int, int, int, int]


def _lstat(path: os.PathLike[str]) -> Stat | None:
    """The ``lstat`` of ``path`` (see :data:`Stat`), or None if it cannot be taken. A
    writer replaces a metadata file by renaming a new one over it, so an equal stat
    is an unchanged file."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _fresh_attrs(group: Any) -> dict[str, Any]:
    """A group's attributes read from the store now (Zarr caches them per object)."""
    import zarr

    return dict(zarr.open_group(store=group.store, path=group.path, mode="r").attrs)


class FieldChecks:
    """Whether what one :class:`~spikestore.reader.FieldReader` reads is still the field
    it opened, and which error to raise when it is not.

    It keeps the field's metadata as opened (each segment's id and rows, each index
    chunk's first entry) and what it has already checked: the shard files found
    present, and the ``lstat`` of metadata files read (in a local folder).
    """

    def __init__(self, field: FieldReader) -> None:
        self.field = field
        #: Each segment's id (format 1.6; None before) and rows, as when opened.
        self.ids: list[str | None] = []
        self.rows0: list[int] = []
        #: Each index chunk's first entry (format 1.6 ``index_heads``; [] before).
        self.heads: list[Any] = []
        #: Store keys of shard files found present (:meth:`require`).
        self.present: set[str] = set()
        self._same_stat: tuple[Any, ...] | None = None  # see check_same
        #: Per segment: the ``lstat`` of its array's ``zarr.json`` and the id read then.
        self._id_stat: dict[int, tuple[Stat, str]] = {}

    def opened(self, meta: dict[str, Any], where: str) -> None:
        """Keep what the field's metadata ``meta`` (checked) says as it is opened."""
        self.ids = [
            check_id(seg.get(SEGMENT_ID_KEY), f"{where} segment {k}")
            for k, seg in enumerate(meta["segments"])
        ]
        self.rows0 = [int(seg["rows"]) for seg in meta["segments"]]
        self.heads = meta.get(INDEX_HEADS_KEY) or []

    def lost(self, k: int | None, problem: str) -> ReadError:
        """The error for data that is missing or not what the metadata read at opening
        says: :class:`StoreReplacedError` when the store changed under the reader (its
        store id, this field's metadata or a segment's id is not as when it was
        opened), else a ReadError saying ``problem`` (damage)."""
        why = self.replaced()
        if why is not None:
            return StoreReplacedError(
                f"{self.field.where}: the store was replaced since this reader opened it ({why}); "
                "call refresh() on the store reader (or open the store again) to read the "
                f"new one ({problem})"
            )
        return ReadError(f"{self.field.where}: {problem}")

    def replaced(self) -> str | None:
        """Why what is stored is no longer the store this reader opened, or None (an
        error path: it reads the root's, the field's and the segments' metadata)."""
        store = self.field.layer.store
        try:
            now = check_root_attrs(_fresh_attrs(store._root), store._where)
            was, new = store_id(store.meta, store._where), store_id(now, store._where)
        except Exception as exc:
            return f"its root metadata cannot be read now: {type(exc).__name__}: {exc}"
        if was != new:
            return f"its store id is {new}, not {was}"
        assert self.field.group is not None
        try:
            latest = check_field_attrs(_fresh_attrs(self.field.group), self.field.where)
        except Exception as exc:
            return f"the field's metadata cannot be read now: {type(exc).__name__}: {exc}"
        return self.changed(latest, fresh_ids=True)

    def changed(self, latest: dict[str, Any], fresh_ids: bool = False) -> str | None:
        """Why the field's metadata ``latest`` (read now) is not what a writer appending
        to the field opened could have made of it, or None. ``fresh_ids``: also read
        each segment array's id as stored now."""
        # A writer appending after a killed one sets every field back to the layer's
        # committed steps (the fewest of its fields): only fewer than those is a change.
        layer_steps = len(self.field.layer)
        if latest["committed_steps"] < layer_steps:
            return (
                f"the field has {latest['committed_steps']} committed steps, not the "
                f"{layer_steps} its layer had"
            )
        segs = latest["segments"]
        for k, old in enumerate(self.field.segments):
            if k >= len(segs):
                return f"segment {old['array']} is gone"
            new_seg = segs[k]
            same = ("encoding", "dtype", "shape", "python_scalar", "permute")
            if any(new_seg.get(f) != old.get(f) for f in same):
                return f"segment {old['array']} is another one"
            if new_seg["rows"] < self.rows0[k]:
                return f"segment {old['array']} has fewer rows than it had"
            if not self.rows0[k]:
                # No rows when opened: nothing of it was read, and a writer appending
                # after a killed one may make its array anew (with a new id).
                continue
            if new_seg.get(SEGMENT_ID_KEY) != old.get(SEGMENT_ID_KEY):
                return f"segment {old['array']} is another one"
            if fresh_ids and self.ids[k] is not None:
                got = self.fresh_segment_id(k)
                if got and got != self.ids[k]:  # a missing one is damage, not another
                    return f"segment {old['array']} is another array (id {got})"
        return None

    def fresh_segment_id(self, k: int) -> str:
        """The id in segment ``k``'s array's ``zarr.json`` as stored now ("" when there is
        no such file or no id).

        In a local folder the file's ``lstat`` is taken first, and while it stays the
        same (inode, size, modification and change times) the id read last is still
        the stored one: a writer replaces the file by renaming a new one over it. That
        saves a round trip through Zarr's event loop (about 0.25 ms) per read."""
        import json

        from .._zarr import sync
        from ..storage import local_root

        assert self.field.group is not None
        name = self.field.segments[k]["array"]
        group = self.field.group
        key = f"{group.path}/{name}/zarr.json" if group.path else f"{name}/zarr.json"
        root = local_root(group.store)
        stat = None
        if root is not None:
            stat = _lstat(root / key)
            if stat is None:
                return ""
            held = self._id_stat.get(k)
            if held is not None and held[0] == stat:
                return held[1]
        try:
            buf = sync(group.store.get(key, buffer_prototype()))
            attrs = json.loads(buf.to_bytes())["attributes"][FORMAT_NAME] if buf else None
            got = attrs.get(SEGMENT_ID_KEY) if isinstance(attrs, dict) else None
        except (ValueError, KeyError, TypeError, RecursionError):
            return ""
        got = got if isinstance(got, str) else ""
        if stat is not None:
            self._id_stat[k] = (stat, got)  # the stat taken before the read
        return got

    def check_same(self, k: int) -> None:
        """Raise :class:`StoreReplacedError` if segment ``k`` is not the array this reader
        opened: called after every read through Zarr (which reads a missing chunk as
        zeros, and would read a replacing store's chunks as this one's). A writer that
        replaces a store creates a segment's array, with a new id, before any of its
        chunks, and removes the old array before that; so if the array is still the
        one opened after the read, the chunks read were its own. Without ids (format
        < 1.6) the field's metadata must only have grown since opening."""
        if not self.field.segments:
            return
        if self.ids[k] is not None and k not in self.field._arrays:
            self.field.array(k)  # opened now, after the read: checks the id it stores
            return
        if self.ids[k] is not None:
            got = self.fresh_segment_id(k)
            if got == self.ids[k]:
                return
            problem = f"segment {self.field.segments[k]['array']} is another array now"
        else:
            # A store before 1.6: its root's and this field's metadata must be as they
            # were; in a local folder unchanged files (lstat) need not be read again.
            sig = self._metadata_stat()
            if sig is not None and sig == self._same_stat:
                return
            why = self.replaced()
            if why is None:
                self._same_stat = sig
                return
            problem = why
        raise self.lost(k, f"what was read may be the new store's ({problem})")

    def _metadata_stat(self) -> tuple[Any, ...] | None:
        """The ``lstat`` of the root's and this field's ``zarr.json`` in a local folder
        (inode, size, times), or None elsewhere: a writer replaces such a file by
        renaming a new one over it, so an equal stat is an unchanged file."""
        from ..storage import local_root

        assert self.field.group is not None
        root = local_root(self.field.group.store)
        if root is None:
            return None
        stats = [_lstat(root / key) for key in ("zarr.json", f"{self.field.group.path}/zarr.json")]
        return None if None in stats else tuple(stats)

    def require(
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
        r0, r1 = int(rows.min()), int(rows.max()) + 1
        outer = (arr.shards or arr.chunks)[0]
        seg_id = self.ids[k] if verify and k is not None and arr.shards else None
        for first, key, coords in _shard_keys(arr, r0, r1):
            if key in self.present:
                continue
            found: str | None = None
            if seg_id is not None:
                assert k is not None
                sealed = self.field.segments[k].get("sealed", self.field.segments[k]["rows"])
                found = _shard_problem(arr, key, coords, sealed, seg_id)
            else:
                try:
                    there = self._exists(arr.store_path.store, key)
                except UnsafeStoreError as exc:
                    hit = steps[(rows >= first) & (rows < first + outer)]
                    raise UnsafeStoreError(
                        f"{self.field.where}: cannot read steps {int(hit.min())}.."
                        f"{int(hit.max())} ({name}): {exc}"
                    ) from None
                if not there:
                    found = f"chunk {key} of {name} is missing from the store"
            if found is not None:
                hit = steps[(rows >= first) & (rows < first + outer)]
                problem = f"cannot read steps {int(hit.min())}..{int(hit.max())}: {found}"
                if not lost:
                    raise ReadError(f"{self.field.where}: {problem}")
                raise self.lost(k, problem)
            self.present.add(key)

    @staticmethod
    def _exists(store: Any, key: str) -> bool:
        """Whether ``key`` is a file of ``store``: asked of the file system directly in
        spikestore's confined local store (no round trip through Zarr's event loop),
        where a link or special file on its path is :class:`UnsafeStoreError`, not a
        missing file."""
        from pathlib import Path

        from .._zarr import sync
        from ..storage._localfs import check_entry, is_file
        from ._direct import confined_root

        root = confined_root(store)
        if root is None:
            return bool(sync(store.exists(key)))
        if is_file(root, key):
            return True
        parts = [p for p in key.split("/") if p]
        for i in range(len(parts)):  # each entry before the next: no link is followed
            check_entry(Path(root, *parts[: i + 1]), file_ok=i == len(parts) - 1)
        return False

    def check_index(self, c: int, block: np.ndarray) -> np.ndarray:
        """The rows of an index chunk (its committed rows ``block``) that break what
        any index a writer wrote satisfies, so that a chunk file in another one's
        place (or the index of a store that replaced this one) is an error for the
        steps where it can be told, and a damaged entry costs only its own steps.

        A segment's rows are given out in step order and never reused, so within the
        chunk each segment's rows go up from step to step, and all lie below the
        segment's stored ``rows``. They need not go up by one: a writer appending
        after a killed one starts above rows the killed one wrote but never
        committed. Then the segment the chunk points to first is checked to be the
        array that was opened (:meth:`check_same`): the chunk was read from this
        store. A field written by format 1.6 also lists each chunk's first entry
        (``index_heads``): a chunk whose first entry is not its own is in another's
        place, and all of its steps are an error.
        """
        head = self.heads[c] if c < len(self.heads) else None
        if head is not None and len(block) and [int(x) for x in block[0]] != head:
            lo = c * INDEX_CHUNK
            raise self.lost(
                None,
                f"the step index chunk {c} (steps {lo}..{lo + len(block) - 1}) does not "
                "belong there: its first entry is not the one the field's metadata lists "
                "(a chunk file moved, swapped or damaged)",
            )
        ks, rs = block[:, 0].astype(np.int64), block[:, 1].astype(np.int64)
        bad = np.zeros(len(block), dtype=bool)
        used = (ks >= 0) & (ks < len(self.field.segments))
        if used.any():
            pos = np.flatnonzero(used)
            order = np.argsort(ks[used], kind="stable")  # by segment, then by step
            k, r, pos = ks[used][order], rs[used][order], pos[order]
            down = (k[1:] == k[:-1]) & (r[1:] <= r[:-1])
            bad[pos[1:][down]] = bad[pos[:-1][down]] = True
            bad[pos[r >= np.asarray(self.rows0, dtype=np.int64)[k]]] = True
        ref = ks[used]
        self.check_same(int(ref[0]) if ref.size else 0)
        return bad

    def segment(self, k: int, arr: Any) -> None:
        """Refuse segment ``k``'s array ``arr`` unless it matches the segment's
        descriptor (and its id, format 1.6)."""
        f = self.field
        seg = f.segments[k]
        name = seg["array"]
        _check_array(arr, f.where, name)
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
        if self.ids[k] is not None and (
            not isinstance(own, dict) or own.get(SEGMENT_ID_KEY) != self.ids[k]
        ):
            got = own.get(SEGMENT_ID_KEY) if isinstance(own, dict) else None
            raise self.lost(
                k, f"the array {name} is not the segment its descriptor names (id {got})"
            )
        sealed = seg.get("sealed", seg["rows"])
        # Rows past ``sealed`` are in a tail, which holds at most one shard.
        open_rows = seg["rows"] - sealed
        if not ok or arr.shape[0] < sealed or open_rows > (arr.shards or arr.chunks)[0]:
            why = self.replaced()
            if why is not None:
                raise self.lost(k, f"segment {name} does not match its descriptor")
            raise FormatError(
                f"{f.where}: segment {name} ({arr.shape}, {arr.dtype}) does not match "
                f"its descriptor (shape {seg['shape']}, dtype {seg['dtype']}, "
                f"rows {seg['rows']})"
            )

    def index_array(self, index: Any) -> None:
        """Refuse the field's step index array unless it holds every committed step."""
        f = self.field
        _check_array(index, f.where, "index")
        if index.ndim != 2 or index.shape[1] != 2 or index.shape[0] < f.committed:
            if self.replaced() is not None:
                raise self.lost(None, f"the step index has {index.shape[0]} rows")
            raise FormatError(
                f"{f.where}: step index of shape {index.shape} cannot hold "
                f"{f.committed} committed steps"
            )

    def summary(self, arr: Any, name: str, where: str) -> Any:
        """The summary array ``arr`` (``name``) if it holds a row for every committed
        step, None if a writer did not keep it up; FormatError if it is not a summary
        array."""
        width = len(COLUMNS) if name == SUMMARY else None
        if (
            not hasattr(arr, "dtype")
            or arr.ndim != 2
            or arr.dtype != np.float64
            or (width is not None and arr.shape[1] != width)
        ):
            raise FormatError(
                f"{where}: summary array {name} is not a float64 (steps, {width or 'T'}) array"
            )
        _check_array(arr, where, name)
        if arr.shape[0] < self.field.committed:
            if self.replaced() is not None:
                raise self.lost(None, f"the {name} has {arr.shape[0]} rows")
            return None  # written by a writer that did not keep it up: not usable
        return arr

    def latest(self, k: int) -> list[dict[str, Any]]:
        """The field's segment descriptors as stored now, which a writer appending to
        the field may have made of those opened; else the error for segment ``k``."""
        f = self.field
        try:
            meta = check_field_attrs(_fresh_attrs(f.group), f"{f.where} field {f.group.path}")
        except Exception as exc:
            raise self.lost(k, f"the field's metadata cannot be read now: {exc}") from exc
        changed = self.changed(meta)
        if changed is not None:
            raise self.lost(k, f"the field changed under the reader ({changed})")
        return meta["segments"]
