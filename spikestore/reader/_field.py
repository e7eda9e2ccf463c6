"""One field of a layer's records: :class:`FieldReader` (its step index, segments,
tails and summaries) and the decoding of its rows to tensors.

Thread ownership: the caller (and the read pool's helper thread, for a large read).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from ..codecs import decode_rows
from ..errors import ReadError, UnsafeStoreError
from ..format import (
    FORMAT_NAME,
    INDEX_CHUNK,
    SEGMENT_ID_KEY,
    SPIKE_ENCODING,
    FormatError,
    check_field_attrs,
    is_tail_name,
    tail_name,
)
from ..summary import SUMMARY, SUMMARY_AXIS0
from ._checks import FieldChecks
from ._direct import cell_selection, raw_layout, read_raw_rows
from ._pool import _empty_cpu, _share
from ._shards import (
    _check_array,
    _MissingShard,
    _read_failure,
    _read_spike_rows,
    _spike_shards,
    _unpacker,
)
from ._source import _child
from ._trees import common_dtype

if TYPE_CHECKING:
    from ._nodes import LayerReader

__all__ = [
    "FieldReader",
    "Layout",
    "MAX_STEPS",
    "read_retrying",
]


class Layout(NamedTuple):
    """Records of one shape (and dtype) and the steps that recorded them: an entry of
    :attr:`LayerReader.shapes` and of ``spikestore.analysis.shapes(layer, dtypes=True)``.

    ``dtype`` is the records' torch dtype (None in a listing by shape alone);
    ``steps`` an int64 array of step indices, in the order selected.
    """

    shape: tuple[int, ...]
    dtype: torch.dtype | None
    steps: np.ndarray


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
        except (_MissingShard, UnsafeStoreError):
            raise  # the same again: a shard file is never removed, a link stays
        except Exception:
            if attempt == 4:
                raise
            time.sleep(0.01 * 2**attempt)
    raise AssertionError("unreachable")


#: Bounds on what hostile array metadata can make a read allocate (the chunk bounds
#: are the format's, :data:`~spikestore.format.MAX_CHUNK_BYTES` and
#: :data:`~spikestore.format.MAX_CHUNKS_PER_SHARD`, which the writer keeps).
MAX_STEPS = 1 << 53
#: Fields claiming more committed steps than this have the claim checked against their
#: step index's shape when opened (shorter ones when first read).
CHECKED_LENGTH = 1 << 20


class _TailGone(Exception):
    """A tail chunk is missing: the writer sealed and dropped it (or it was damaged)."""


def _exists(group: Any, key: str) -> bool:
    """Whether ``key`` (relative to ``group``) is in the group's store."""
    from .._zarr import sync

    full = f"{group.path}/{key}" if group.path else key
    return bool(sync(group.store.exists(full)))


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
        self._layouts: dict[int, tuple[Any, Any, Any]] = {}
        self._index: Any = None
        self._index_cache: dict[int, np.ndarray] = {}
        # Per index chunk: its rows that break what a writer's index is (check_index).
        self._index_bad: dict[int, np.ndarray] = {}
        self._summaries: dict[str, Any] = {}
        self.committed: int = 0
        self.segments: list[dict[str, Any]] = []
        #: The checks that what is read is what was opened (and the ids they compare).
        self._checks = FieldChecks(self)
        if group is None:
            # A writer killed (or still busy) before this field's first commit.
            return
        meta = check_field_attrs(dict(group.attrs), f"{self.where} field {i}")
        if meta["committed_steps"] > MAX_STEPS:
            raise FormatError(f"{self.where}: bad committed_steps {meta['committed_steps']}")
        self.committed = meta["committed_steps"]
        self.segments = meta["segments"]
        self._checks.opened(meta, f"{self.where} field {i}")
        if self.committed > CHECKED_LENGTH:
            # A long field's count is checked against its step index at once (one more
            # metadata read): analyses size arrays by len(layer), so a count edited to
            # 10**12 would otherwise cost memory before any read found it wrong.
            try:
                rows = group["index"].shape
            except Exception as exc:
                raise FormatError(f"{self.where}: cannot open the step index: {exc}") from None
            if len(rows) != 2 or rows[0] < self.committed:
                raise FormatError(
                    f"{self.where}: step index of shape {rows} cannot hold {self.committed} "
                    "committed steps"
                )

    @property
    def dtype(self) -> torch.dtype | None:
        """The common dtype of the tensor records (:func:`common_dtype`; of the numbers
        where there is no tensor), None before the first commit."""
        tensors = [s["dtype"] for s in self.segments if not s.get("python_scalar", False)]
        names = tensors or [s["dtype"] for s in self.segments]
        return common_dtype(names) if names else None

    def layouts(self, steps: np.ndarray, *, dtypes: bool = False) -> list[Layout]:
        """:func:`field_layouts` of this field's ``steps``."""
        return field_layouts(self, steps, dtypes=dtypes)

    def tensor_shapes(self) -> list[tuple[int, ...]]:
        """The distinct shapes of the tensor records (numbers left out), in segment order."""
        return [k[0] for k in _kinds(self.segments, False)[0]]

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
                arr = self._checks.summary(arr, name, where)
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
        self._checks.require(arr, steps, steps, name)
        try:
            if hi - lo == len(steps) and bool((np.diff(steps) == 1).all()):
                out = read_retrying(arr.__getitem__, slice(lo, hi))  # a range: no copy
            elif hi - lo <= 2 * len(steps):
                out = read_retrying(arr.__getitem__, slice(lo, hi))[steps - lo]
            else:
                out = read_retrying(arr.get_orthogonal_selection, (steps,))
        except Exception as exc:
            raise self._checks.lost(
                None,
                f"cannot read the {name} of steps {lo}..{hi - 1}: {type(exc).__name__}: {exc}",
            ) from exc
        self._checks.check_same(0)  # read through Zarr: still the store that was opened?
        return out

    def array(self, k: int) -> Any:
        """Segment ``k``'s sharded array, opened on first use and checked against its
        descriptor (:meth:`FieldChecks.segment`)."""
        arr = self._arrays.get(k)
        if arr is None:
            name = self.segments[k]["array"]
            try:
                arr = self.group[name]
            except Exception as exc:
                raise self._checks.lost(k, f"cannot open segment {name}: {exc}") from exc
            self._checks.segment(k, arr)
            self._arrays[k] = arr
        return arr

    def _open_index(self) -> None:
        """Open the step index array once, refusing it unless it holds every committed
        step."""
        if self._index is None:
            try:
                index = self.group["index"]
            except Exception as exc:
                raise self._checks.lost(None, f"cannot open the step index: {exc}") from exc
            self._checks.index_array(index)
            self._index = index

    def index(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of the index, read a chunk at a time and cached."""
        self._open_index()
        out, bad_rows = [], []
        c0, c1 = start // INDEX_CHUNK, (stop - 1) // INDEX_CHUNK
        try:
            for c in range(c0, c1 + 1):
                block = self._index_cache.get(c)
                lo = c * INDEX_CHUNK
                hi = min(lo + INDEX_CHUNK, self.committed)
                if block is None or block.shape[0] < hi - lo:
                    steps = np.arange(max(start, lo), min(stop, hi))
                    self._checks.require(self._index, steps, steps, "index")
                    block = np.asarray(self._index[lo:hi])
                    self._index_bad[c] = self._checks.check_index(c, block)
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
            at = f"{int(hit.min())}..{int(hit.max())}"
            raise self._checks.lost(None, f"corrupt index at steps {at}")
        return idx

    def read(self, steps: np.ndarray, device: Any) -> list[torch.Tensor | None]:
        """Decode the given steps (sorted or not) to one tensor (or None) per step."""
        if steps.size == 0:
            return []
        lo, hi = int(steps.min()), int(steps.max()) + 1
        idx = self.index(lo, hi)[steps - lo]
        out: list[Any] = [None] * len(steps)
        for k in idx[:, 0].tolist() if len(idx) == 1 else np.unique(idx[:, 0]):
            if k < 0:
                continue
            sel = np.nonzero(idx[:, 0] == k)[0]
            rows = idx[sel, 1]
            seg = self.segments[int(k)]
            past = rows >= seg["rows"]
            if past.any():
                hit = steps[sel][past]
                raise self._checks.lost(
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
        direct = _unpack_shards(self, k, rows, steps, device)
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
            if self._checks.ids[k] is not None and got != self._checks.ids[k]:
                raise self._checks.lost(k, f"the tail {name} is another segment's (id {got})")
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
            latest = self._checks.latest(k)
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
            self._checks.present.clear()
        raise ReadError(f"{self.where}: segment {k} kept moving while being read; try again")

    def _take(
        self, k: int, rows: np.ndarray, rest: tuple[Any, ...], steps: np.ndarray
    ) -> np.ndarray:
        seg = self.segments[k]
        sealed = seg.get("sealed", seg["rows"])
        urows, inv = _unique(rows)
        parts = []
        for in_tail in (False, True):
            sel = urows[urows >= sealed] if in_tail else urows[urows < sealed]
            if not sel.size:
                continue
            if in_tail:
                arr, local, name = self.tail(k), sel - sealed, f"{seg['array']} (tail)"
            else:
                arr, local, name = self.array(k), sel, seg["array"]
            hit = steps[np.isin(rows, sel)] if len(urows) > 1 else steps
            col = _byte_column(rest)
            shards, raw = (None, None) if in_tail else _layout(self._layouts, k, arr, rest)
            if in_tail:
                # Tails are rewritten and dropped by the writer: never trust a cache.
                self._checks.present = {p for p in self._checks.present if not is_tail_name(p)}
                try:
                    self._checks.require(arr, local, hit if hit.size else local, name, lost=False)
                except ReadError:
                    raise _TailGone from None
            elif shards is None and raw is None:
                self._checks.require(arr, local, hit if hit.size else local, name, k, verify=True)
            r0, r1 = int(local[0]), int(local[-1]) + 1
            try:
                if shards is not None and col is not None:
                    parts.append(
                        read_retrying(_spike_column, arr, shards, local, col, self._checks.ids[k])
                    )
                elif shards is not None:
                    seg_id = self._checks.ids[k]
                    packed = read_retrying(_read_spike_rows, arr, shards, local, None, seg_id)
                    assert packed is not None
                    parts.append(packed)
                elif raw is not None:
                    kept = [
                        n
                        for n, r in itertools.zip_longest(arr.shape[1:], rest)
                        if r is None or isinstance(r, slice)
                    ]
                    out = np.empty((len(local), *kept), raw.dtype)
                    seg_id = self._checks.ids[k]
                    read_retrying(read_raw_rows, arr, raw, local, out, seg_id, rest)
                    parts.append(out)
                elif r1 - r0 <= 2 * len(local):
                    data = read_retrying(arr.get_orthogonal_selection, (slice(r0, r1), *rest))
                    # a range of rows is already what was asked for: no copy
                    parts.append(data if r1 - r0 == len(local) else data[local - r0])
                else:
                    parts.append(read_retrying(arr.get_orthogonal_selection, (local, *rest)))
            except Exception as exc:
                if not in_tail and (shards is not None or raw is not None):
                    # A direct read opens the shard files itself, unchecked beforehand:
                    # one missing, or reached through a link, is named as require() does.
                    self._checks.require(arr, local, hit if hit.size else local, name, k)
                at = rows[np.isin(rows, sel)]  # aligned with hit
                why = _read_failure(exc, at, hit, name)
                raise self._checks.lost(k, f"cannot read {why}") from exc
            if shards is None and (raw is None or self._checks.ids[k] is None):
                # Zarr reads a missing chunk as zeros, and a replacing store's chunks as
                # this one's: the segment must still be the array that was opened (a
                # direct read of a segment with an id is bound by its shard headers).
                self._checks.check_same(k)
        data = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if len(inv) == len(data) and (len(rows) == 1 or bool((np.diff(rows) > 0).all())):
            return data  # increasing rows: already in order
        return data[inv]


def _unique(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(rows, return_inverse=True)``, without its sort for one row."""
    if rows.size == 1:
        return rows, np.zeros(1, np.intp)
    return np.unique(rows, return_inverse=True)  # type: ignore[no-any-return]


def _unpack_shards(
    fld: FieldReader, k: int, rows: np.ndarray, steps: np.ndarray, device: Any
) -> torch.Tensor | None:
    """Rows ``rows`` (increasing) of spike segment ``k`` of ``fld`` decoded into one output
    tensor, each chunk unpacked as soon as it is decoded (see
    :func:`_read_spike_rows`); None when the segment is not stored that way, the
    rows reach its tail, or the output is not on the CPU."""
    seg = fld.segments[k]
    if seg["encoding"] != SPIKE_ENCODING or (
        device is not None and torch.device(device).type != "cpu"
    ):
        return None
    if int(rows[-1]) >= seg.get("sealed", seg["rows"]) or not bool((np.diff(rows) > 0).all()):
        return None
    arr = fld.array(k)
    shapes = _spike_shards(arr)
    if shapes is None:
        return None
    target = _unpacker(seg, len(rows), shapes, int(arr.shape[1]))
    if target is None:
        return None
    out, place = target
    try:
        read_retrying(_read_spike_rows, arr, shapes, rows, place, fld._checks.ids[k])
    except Exception as exc:
        # A missing shard file, or one reached through a link, named as require() does.
        fld._checks.require(arr, rows, steps, seg["array"], k)
        raise fld._checks.lost(
            k, f"cannot read {_read_failure(exc, rows, steps, seg['array'])}"
        ) from exc
    return out


def _kinds(
    segments: list[dict[str, Any]], dtypes: bool
) -> tuple[list[tuple[Any, ...]], np.ndarray]:
    """The distinct tensor layouts of ``segments`` (``(shape,)``, or ``(shape, dtype)``
    with ``dtypes``) in segment order, and each segment's position among them (-1 for
    Python numbers), with one more -1 at the end for index entry -1 (``None``)."""
    known: list[tuple[Any, ...]] = []
    lut = []
    for s in segments:
        if s.get("python_scalar", False):
            lut.append(-1)
            continue
        key = (tuple(s["shape"]), s["dtype"]) if dtypes else (tuple(s["shape"]),)
        if key not in known:
            known.append(key)
        lut.append(known.index(key))
    return known, np.array([*lut, -1], dtype=np.int64)


def field_layouts(fld: FieldReader, steps: np.ndarray, *, dtypes: bool = False) -> list[Layout]:
    """The tensor shapes (and with ``dtypes``, dtypes) of steps ``steps`` of ``fld``, each
    with its steps, in order of first appearance.

    A step that recorded ``None`` or a Python number joins the layout of the nearest
    tensor step before it (after it, for steps before the first), so the layouts
    together cover every step given; with no tensor step at all, Python numbers are
    shape ``()`` (dtype that of the first) and ``None`` alone gives [].
    """
    from ..codecs import torch_dtype

    steps = np.asarray(steps, dtype=np.int64)
    if not steps.size:
        return []
    lo, hi = int(steps.min()), int(steps.max()) + 1
    seg_of = fld.index(lo, hi)[steps - lo, 0]
    known, lut = _kinds(fld.segments, dtypes)
    gid = lut[seg_of]
    valid = gid >= 0
    if not valid.any():
        if not bool((seg_of >= 0).any()):
            return []
        first = fld.segments[int(seg_of[seg_of >= 0][0])]
        return [Layout((), torch_dtype(first["dtype"]) if dtypes else None, steps)]
    pos = np.maximum.accumulate(np.where(valid, np.arange(len(gid)), 0))
    first_valid = int(np.argmax(valid))
    pos[:first_valid] = first_valid
    filled = gid[pos]
    order = sorted(set(filled.tolist()), key=lambda g: int(np.argmax(filled == g)))
    return [
        Layout(known[g][0], torch_dtype(known[g][1]) if dtypes else None, steps[filled == g])
        for g in order
    ]


def _byte_column(rest: tuple[Any, ...]) -> int | None:
    """The one byte column ``rest`` selects (a spike neuron's history), else None."""
    return int(rest[0]) if len(rest) == 1 and isinstance(rest[0], int | np.integer) else None


def _layout(
    cache: dict[int, Any], k: int, arr: Any, rest: tuple[Any, ...]
) -> tuple[Any, Any]:
    """How segment ``k``'s array ``arr`` is read directly from its shard files: ``(spike
    shards, None)`` (:func:`_spike_shards`; whole rows, or one byte column of them),
    ``(None, raw layout)`` (:func:`raw_layout`; whole rows, or a cell of them:
    :func:`cell_selection`), or ``(None, None)``:
    through Zarr. Kept per array in ``cache``."""
    held = cache.get(k)
    if held is None or held[0] is not arr:
        shards = _spike_shards(arr)
        held = cache[k] = (arr, shards, None if shards is not None else raw_layout(arr))
    if rest and held[1] is not None and _byte_column(rest) is None:
        return None, None
    if rest and held[2] is not None and not cell_selection(rest, tuple(arr.shape[1:])):
        return None, None
    return held[1], held[2]


def _spike_column(
    arr: Any, shards: Any, rows: np.ndarray, col: int, seg_id: str | None
) -> np.ndarray:
    """Byte column ``col`` of rows ``rows`` of a sharded spike segment, decoding only
    the chunks that hold it (:func:`_read_spike_rows` with its checks)."""
    out = np.empty(len(rows), np.uint8)

    def place(a: int, b: int, block: np.ndarray | None, col0: int, width: int) -> None:
        if col0 <= col < col0 + width:
            out[a:b] = 0 if block is None else block[:, col - col0]

    _read_spike_rows(arr, shards, rows, place, seg_id, (col, col + 1))
    return out


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
        stored = [shape[int(p)] for p in perm]
        back = [0, *[int(i) + 1 for i in np.argsort(perm)]]
    else:
        dst = out
    try:
        out_np = out.numpy()  # numpy: copies in this thread, never in torch's pool
    except TypeError:  # a dtype numpy lacks (bfloat16, float8)
        out_np = None
    # Unpack a few rows at a time, so the unpacked bits stay in cache between the two
    # passes, and spread the blocks over two threads (both passes release the GIL).
    block = max(1, (1 << 21) // numel)

    def fill(a: int) -> None:
        bits = np.unpackbits(rows[a : a + block], axis=1, count=numel)
        if out_np is None:
            dst[a : a + block].copy_(torch.from_numpy(bits).view(bits.shape[0], *dst.shape[1:]))
        elif perm is None:
            np.copyto(out_np[a : a + block], bits.reshape(-1, *shape), casting="unsafe")
        else:
            src = bits.reshape(-1, *stored).transpose(back)
            np.copyto(out_np[a : a + block], src, casting="unsafe")

    _share(fill, range(0, n, block), n * numel)
    return out
