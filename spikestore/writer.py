"""The streaming writer: records in, whole chunks out, on a background thread.

The caller's thread only checks a record, copies it (on its own device) and
puts it on a queue that is bounded in bytes, so a slow disk slows the caller
instead of filling memory. The writer thread encodes records, buffers them per
layer and writes them to Zarr in blocks: when a shard fills, when
``flush_interval`` seconds have passed since the oldest buffered record, when
the buffered bytes pass ``max_buffer_bytes``, and on :meth:`StoreWriter.flush`.
Each write ends with one atomic update of the field's ``committed_steps``
attribute, so a reader (or a crash) never sees half a record.
"""

from __future__ import annotations

import math
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from . import __version__
from ._shardfile import copy_from_shard, copy_to_shard
from ._spikecodec import MOTION_MAX_T, SpikeCodec
from .codecs import (
    COMPRESSORS,
    DEFAULT_DENSE,
    DEFAULT_SPIKES,
    Encoded,
    checksum,
    compressor_codecs,
    dtype_name,
    encode,
    pack_bits,
    spike_bits,
)
from .format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    SPIKE_ENCODING,
    FormatError,
    check_field_attrs,
    check_layer_attrs,
    check_root_attrs,
    field_attrs,
    layer_attrs,
    monitor_attrs,
    node_key,
    root_attrs,
)
from .summary import FieldSummary

__all__ = ["StoreWriter", "WriteError", "RecordError", "StoreLockedError", "LOCK_FILE"]

LOCK_FILE = ".spikestore.lock"
INDEX_CHUNK = 65536
_SINGLE = ("tensor", "number", "none")
# Rows of the open shard go to a tail array and each shard file is written once
# (see _shardfile), so shard size costs neither memory nor rewrites; the cap only keeps
# single files of huge records reasonable.
_MAX_SHARD_BYTES = 1 << 30
_M_MMAP_THRESHOLD = -3
_allocator_tuned = False


def _tune_allocator() -> None:
    """Make glibc return large freed blocks to the system at once (Linux only).

    glibc raises its mmap threshold each time a large block is freed, after which
    blocks of record size (hundreds of KiB to MiB, allocated and freed on two threads)
    come from per-thread heaps that keep their memory: a writer's peak RSS then grows
    by hundreds of MiB over what it actually holds. Fixing the threshold at 128 KiB
    (glibc's default starting value) keeps large blocks on mmap. Process-wide; done
    once, when the first writer opens; ``StoreWriter(tune_allocator=False)`` skips it.
    """
    global _allocator_tuned
    if _allocator_tuned:
        return
    _allocator_tuned = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 128 * 1024)
    except (OSError, AttributeError):
        pass


class RecordError(ValueError):
    """A record cannot be stored; the message names the monitor, layer and step."""


class WriteError(RuntimeError):
    """The background writer failed; the message names the store and the layer."""


class StoreLockedError(RuntimeError):
    """Another process holds the store open for writing."""


@dataclass
class _FieldSpec:
    kind: str | None = None  # "tensor" or "number", fixed by the first non-None value
    dtype: str | None = None
    ndim: int | None = None


@dataclass
class _Layer:
    monitor: str
    name: str
    path: str
    structure: str
    specs: list[_FieldSpec]
    next_step: int = 0  # caller thread only
    created: bool = False  # writer thread only
    time_axis: int | None = None  # spikes are packed with this axis last
    fields: list[_Field] = field(default_factory=list)


@dataclass
class _Field:
    path: str
    committed: int = 0
    segments: list[dict[str, Any]] = field(default_factory=list)
    keys: dict[tuple[Any, ...], int] = field(default_factory=dict)
    arrays: dict[int, Any] = field(default_factory=dict)
    index: Any = None
    pending_index: list[tuple[int, int]] = field(default_factory=list)
    pending_rows: dict[int, list[np.ndarray]] = field(default_factory=dict)
    summary: FieldSummary = field(default_factory=FieldSummary)


@dataclass
class _Item:
    layer: _Layer
    step: int
    leaves: list[Any]  # per field: None, a cpu tensor, or a _DeviceLeaf
    scalars: list[bool]
    nbytes: int


@dataclass
class _DeviceLeaf:
    """A record's spike test and packed bits, made on its device; the values too.

    ``tensor`` is the record itself (kept in case it is not spikes) or, for records
    already known to be spikes, a ``meta`` tensor that carries only dtype and shape.
    """

    tensor: torch.Tensor
    flag: torch.Tensor
    packed: torch.Tensor
    event: Any
    permute: tuple[int, ...] | None


_SAMPLE = 64


def _pack_cpu(t: torch.Tensor, permute: tuple[int, ...] | None) -> _DeviceLeaf | None:
    """Detect and pack spikes of a CPU tensor in the caller's thread, or return None.

    Packing here, rather than copying the tensor for the writer thread, puts 8-32x
    fewer bytes on the queue; it costs a few passes over the record. A look at the
    first elements rejects most non-spike tensors (membrane potentials) at once.
    """
    if t.numel() == 0:
        return None
    try:
        head_ok, _ = spike_bits(t.reshape(-1)[:_SAMPLE])
    except (RuntimeError, TypeError):
        return None
    if not bool(head_ok):
        return None
    flag, bits = spike_bits(t, permute)
    if not bool(flag):
        return None
    packed = pack_bits(bits)
    meta = torch.empty(t.shape, dtype=t.dtype, device="meta")
    return _DeviceLeaf(meta, flag, packed, None, permute)


def _field_meta(fld: _Field) -> dict[str, Any]:
    """The field's attributes: the commit point (see :mod:`spikestore.format`)."""
    segs = [{k: v for k, v in s.items() if not k.startswith("_")} for s in fld.segments]
    return field_attrs(fld.committed, segs)


class _Segment:
    """A segment's sharded array plus the two tail arrays for its open shard.

    Rows ``[0, sealed)`` are in the sharded array ``s<k>``; rows ``[sealed, rows)``
    (the open shard ``j = sealed // shard``) in the unsharded ``s<k>t<j % 2>``, at
    row ``row - sealed``, with the same inner chunks and codecs. A full shard's
    chunks are copied into its shard file once (``_shardfile``). Tails alternate
    between two arrays so that a live reader holding the previous ``sealed`` still
    finds the rows it expects for a whole shard's time.
    """

    def __init__(
        self, grp: Any, desc: dict[str, Any], main: Any, commit: Callable[[], None]
    ) -> None:
        self.grp = grp
        self.desc = desc
        self.main = main
        self._commit = commit
        self.disk_sealed = desc.get("sealed", desc["rows"])
        self.shard = int(main.shards[0])
        self._tails: dict[int, Any] = {}
        desc.setdefault("sealed", desc["rows"])
        if desc["sealed"] % self.shard:
            self._reopen()

    def tail(self, p: int) -> Any:
        t = self._tails.get(p)
        if t is not None:
            return t
        name = f"{self.desc['array']}t{p}"
        shape = (self.shard, *self.main.shape[1:])
        t = self.grp[name] if name in self.grp else None
        if t is None or t.shape != shape or t.chunks != self.main.chunks:
            inner = list(self.main.metadata.codecs[0].codecs)
            t = self.grp.create_array(
                name,
                shape=shape,
                dtype=self.main.dtype,
                chunks=self.main.chunks,
                serializer=inner[0],
                compressors=inner[1:],
                fill_value=0,
                # Its rows are not steps: another name keeps xarray from aligning them.
                dimension_names=["tail_row", *(self.main.metadata.dimension_names or [])[1:]]
                if self.main.metadata.dimension_names
                else None,
                attributes={FORMAT_NAME: {"node": "tail", "of": self.desc["array"]}},
                config={"write_empty_chunks": True},
                overwrite=True,
            )
        self._tails[p] = t
        return t

    def _grow(self, rows: int) -> None:
        if self.main.shape[0] < rows:
            self.main.resize((rows, *self.main.shape[1:]))

    def write(self, block: np.ndarray) -> None:
        """Append rows; full shards are written once, the open shard to its tail."""
        start = self.desc["rows"]
        stop = start + len(block)
        pos = start
        while pos < stop:
            j = pos // self.shard
            s0, s1 = j * self.shard, (j + 1) * self.shard
            end = min(stop, s1)
            part = block[pos - start : end - start]
            if pos == s0 and end == s1:
                self._grow(s1)
                self.main[s0:s1] = part  # a whole shard: Zarr writes it without reading
            else:
                if pos == s0 and self.disk_sealed < s0 - self.shard:
                    # This tail last held shard j - 2; a reader that still thinks so
                    # must see that shard j - 1 is sealed before the tail changes.
                    self._commit()
                tail = self.tail(j % 2)
                tail[pos - s0 : end - s0] = part
                if end == s1:
                    self._grow(s1)
                    copy_to_shard(tail, self.main, j, self.shard // self.main.chunks[0])
            if end == s1:
                self.desc["sealed"] = s1
            self.desc["rows"] = end
            pos = end

    def seal_partial(self) -> bool:
        """Copy the open shard's rows into a (partial) shard file; True if any."""
        rows, sealed = self.desc["rows"], self.desc["sealed"]
        if rows <= sealed:
            return False
        j = sealed // self.shard
        self._grow(rows)
        copy_to_shard(self.tail(j % 2), self.main, j, -(-(rows - sealed) // self.main.chunks[0]))
        self.desc["sealed"] = rows
        return True

    def drop_tails(self) -> None:
        """Delete the tail arrays (once everything is sealed and committed)."""
        for p in (0, 1):
            name = f"{self.desc['array']}t{p}"
            if name in self.grp:
                del self.grp[name]
        self._tails.clear()

    def _reopen(self) -> None:
        """A closed store's last shard is partial: move it back to the tail to go on."""
        j = self.desc["sealed"] // self.shard
        copy_from_shard(self.main, j, self.tail(j % 2))
        self.desc["sealed"] = j * self.shard


def _pow2_floor(x: int) -> int:
    return 1 << max(0, int(x).bit_length() - 1)


# Larger planes would make chunks of whole planes too big; they get TREE coding only.
_MAX_FRAME_BITS = 1 << 20


def _layout(
    row_shape: tuple[int, ...],
    itemsize: int,
    shard_steps: int,
    chunk_bytes: int,
    max_shard_bytes: int = _MAX_SHARD_BYTES,
    frame: tuple[int, int, int] | None = None,
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Chunk and shard shapes for a segment of rows of ``row_shape``.

    Inner chunks hold at least 16 steps and about ``chunk_bytes`` bytes, split
    over the record's trailing axes, so one step and one neuron's history both
    decode little; a shard holds ``shard_steps`` steps (more for tiny records).
    For 1-D packed spike rows with a MOTION ``frame`` (see :func:`_spike_frame`), the
    chunk width is a whole number of ``H * W * T``-bit planes, even if that pads the
    last chunk.
    """
    row_bytes = max(1, math.prod(row_shape) * itemsize)
    steps = min(max(16, _pow2_floor(chunk_bytes // row_bytes)), 4096)
    shard = max(shard_steps, min(65536, _pow2_floor(max(1, (1 << 20) // row_bytes))), steps)
    # Each flush rewrites the open shard whole (in memory too): cap shards of big rows.
    shard = min(shard, max(steps, _pow2_floor(max(1, max_shard_bytes // row_bytes))))
    shard -= shard % steps
    budget = row_budget = max(1, chunk_bytes // (steps * itemsize))
    chunk = [1] * len(row_shape)
    for ax in range(len(row_shape) - 1, -1, -1):
        d = max(1, row_shape[ax])
        if budget >= d:
            chunk[ax] = d
            budget //= d
        else:
            chunk[ax] = max(1, budget)
            break
    unit = math.lcm(8, math.prod(frame)) // 8 if frame else 1
    if unit > 1 and len(row_shape) == 1:
        whole = math.ceil(max(1, row_shape[0]) / unit) * unit
        chunk[0] = min(whole, max(unit, row_budget // unit * unit))
    shard_rest = [math.ceil(max(1, d) / c) * c for d, c in zip(row_shape, chunk, strict=True)]
    return (steps, *chunk), (shard, *shard_rest)


def _spike_frame(
    shape: tuple[int, ...], permute: tuple[int, ...] | None
) -> tuple[int, int, int] | None:
    """``(H, W, T)`` planes of a time-last spike record of 4 or more axes (a conv
    layer's ``[T, (B,) C, H, W]``), for the MOTION coding; None for other records."""
    if permute is None or len(shape) < 4:
        return None
    h, w, t = (shape[p] for p in permute[-3:])
    if not 2 <= t <= MOTION_MAX_T or h * w < 2 or h * w * t > _MAX_FRAME_BITS:
        return None
    return h, w, t


def _permutation(time_axis: int | None, ndim: int) -> tuple[int, ...] | None:
    """Axis order that moves ``time_axis`` last (None when there is nothing to move)."""
    if time_axis is None or ndim < 2 or not -ndim <= time_axis < ndim:
        return None
    t = time_axis % ndim
    if t == ndim - 1:
        return None
    return (*[i for i in range(ndim) if i != t], t)


def _flatten(value: Any) -> tuple[str, list[Any]]:
    if isinstance(value, torch.Tensor):
        return "tensor", [value]
    if value is None:
        return "none", [None]
    if isinstance(value, (bool, int, float)) and not isinstance(value, np.generic):
        return "number", [value]
    if isinstance(value, (np.bool_, np.integer, np.floating)):
        return "number", [value.item()]
    if isinstance(value, (tuple, list)):
        return type(value).__name__, list(value)
    raise TypeError(f"unsupported record type {type(value).__name__}")


def _leaf(value: Any) -> tuple[torch.Tensor | None, bool]:
    """A field value as a tensor (or None) and whether it was a Python number."""
    if value is None or isinstance(value, torch.Tensor):
        return value, False
    if isinstance(value, bool):
        return torch.tensor(value, dtype=torch.bool), True
    if isinstance(value, int):
        return torch.tensor(value, dtype=torch.int64), True
    if isinstance(value, float):
        return torch.tensor(value, dtype=torch.float64), True
    if isinstance(value, (np.bool_, np.integer, np.floating)):
        return _leaf(value.item())
    raise TypeError(f"unsupported value of type {type(value).__name__}")


class StoreWriter:
    """Write monitor records to a spikestore store on disk.

    Parameters
    ----------
    path : str or Path
        A directory. ``mode="w"`` creates it (replacing an existing *spikestore*
        store, never any other folder), ``"w-"`` fails if it exists, ``"a"``
        appends to an existing store (each layer continues its step numbering)
        or creates one.
    compressor, level : str, int, optional
        One of ``zstd``, ``zlib``, ``blosc-lz4``, ``blosc-zstd`` and its level, for
        every array of the store. By default spikes use the ``spikestore.spikes``
        codec (level 1) and other tensors Blosc zstd 1 with byte shuffle.
    flush_interval : float
        At most this many seconds pass between a record being taken and it being
        committed to disk, whether or not more records arrive (unless the disk is
        slower than the producer).
    max_queue_bytes, max_buffer_bytes : int
        Bounds on the bytes waiting for the writer thread (16 MiB), and on encoded
        bytes buffered before a write (8 MiB; up to 4x that while records too large
        to fill an inner chunk row are buffered). When the queue is full, ``append``
        waits: a slow disk slows the caller instead of filling memory.
    shard_steps, chunk_bytes : int
        Steps per shard file (2048; more for small records) and the target size of
        an inner chunk (256 KiB, at least 16 steps): one step's read decodes one
        chunk row, one neuron's history one chunk column.
    store : zarr Store, optional
        Write into this Zarr store instead of a local directory (tests, memory).
    tune_allocator : bool
        Fix glibc's mmap threshold at 128 KiB (process-wide, once) so that freed
        record buffers go back to the system; without it peak RSS grows by hundreds
        of MiB over what the writer holds (see ``benchmarks/bench_scale.py``).

    Notes
    -----
    **Crash safety.** A record is *committed* when its field's ``committed_steps``
    attribute is updated, after its data and index are written; every file is
    written to a temporary name and renamed. A process killed at any moment
    (``SIGKILL``, power loss aside: nothing is ``fsync``-ed) leaves a store that
    opens and reads back every committed record exactly. What a crash loses is
    bounded by the flush policy: the records of the last ``flush_interval``
    seconds, at most about ``max_queue_bytes + 4 * max_buffer_bytes`` bytes of them,
    and none appended before the last :meth:`flush` or :meth:`close` returned.
    Reopen with ``mode="a"`` to go on: each layer continues after its last
    committed step.

    **One writer at a time.** The writer holds an exclusive ``flock`` on
    ``<path>/.spikestore.lock``; a second writer (from any process) gets
    :class:`StoreLockedError`. The kernel drops the lock when the holder dies,
    however it dies, so a lock file left by a killed run never blocks the next.
    Readers take no lock and may open the store while it is written
    (:func:`spikestore.open`, then ``refresh()``); they see committed steps only.

    **Failures.** If a background write fails (a full disk, a permission error),
    the writer stops writing and the next :meth:`append`, :meth:`flush` or
    :meth:`close` raises :class:`WriteError` naming the store and the layer;
    what was committed before the failure stays readable.

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
        mode: str = "w",
        *,
        compressor: str | None = None,
        level: int | None = None,
        flush_interval: float = 1.0,
        max_queue_bytes: int = 16 << 20,
        max_buffer_bytes: int = 8 << 20,
        shard_steps: int = 2048,
        chunk_bytes: int = 1 << 18,
        store: Any = None,
        tune_allocator: bool = True,
    ) -> None:
        import zarr
        from zarr.storage import LocalStore

        if mode not in ("w", "w-", "a"):
            raise ValueError(f"mode must be 'w', 'w-' or 'a', got {mode!r}")
        if compressor is not None and compressor not in COMPRESSORS:
            raise ValueError(
                f"unknown compressor {compressor!r}; choose one of {sorted(COMPRESSORS)}"
            )
        if (path is None) == (store is None):
            raise ValueError("pass exactly one of path and store")
        self.path = Path(path) if path is not None else None
        self.mode = mode
        self.compressor = compressor
        self.level = level
        self.flush_interval = float(flush_interval)
        self.max_queue_bytes = int(max_queue_bytes)
        self.max_buffer_bytes = int(max_buffer_bytes)
        self.shard_steps = int(shard_steps)
        self.chunk_bytes = int(chunk_bytes)
        if tune_allocator:
            _tune_allocator()
        self._where = str(self.path) if self.path is not None else repr(store)
        self._lock_fd: int | None = None

        if self.path is not None:
            self._prepare_directory()
            store = LocalStore(self.path)
        # A directory was already cleared above (keeping the lock file); only a
        # caller-supplied store is cleared by Zarr.
        zmode: Literal["w", "a"] = "w" if (self.path is None and mode == "w") else "a"
        # A new root is written with its attributes in one go, so that a reader
        # never finds a root without the spikestore metadata.
        attrs = root_attrs(f"spikestore {__version__}")
        self._root: Any = zarr.open_group(
            store=store, mode=zmode, zarr_format=3, attributes=attrs
        )
        if FORMAT_NAME in self._root.attrs:
            meta = check_root_attrs(dict(self._root.attrs), self._where)
            current = attrs[FORMAT_NAME]["version"]
            if tuple(map(int, meta["version"].split("."))) < FORMAT_VERSION:
                # Arrays added from now on may use this version's features (a 1.1
                # reader cannot decode MOTION chunks): say so in the root.
                self._root.attrs.update({FORMAT_NAME: {**meta, "version": current}})
        elif len(list(self._root.keys())):
            raise FormatError(f"{self._where} is a Zarr group but not a spikestore store")
        else:
            self._root.attrs.update(attrs)

        self._layers: dict[tuple[str, str], _Layer] = {}
        self._state_lock = threading.Lock()
        self._queue: queue.Queue[Any] = queue.Queue()
        self._queued_bytes = 0
        self._space = threading.Condition()
        self._error: BaseException | None = None
        self._error_where = ""
        self._closed = False
        self._buffered_bytes = 0
        self._buffer_mark = 0
        self._oldest: float | None = None
        self._thread = threading.Thread(target=self._run, name="spikestore-writer", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ set-up
    def _prepare_directory(self) -> None:
        assert self.path is not None
        p = self.path
        if p.exists() and not p.is_dir():
            raise FileExistsError(f"{p} exists and is not a directory")
        if self.mode == "w-" and p.exists() and any(p.iterdir()):
            raise FileExistsError(f"{p} already exists")
        p.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        if self.mode == "w" and any(x.name != LOCK_FILE for x in p.iterdir()):
            meta = p / "zarr.json"
            import json

            try:
                attrs = json.loads(meta.read_text()).get("attributes", {})
                check_root_attrs(attrs, str(p))
            except (OSError, ValueError) as exc:
                self._release_lock()
                raise FileExistsError(
                    f"{p} exists and is not a spikestore store; refusing to overwrite it"
                ) from exc
            import shutil

            for x in p.iterdir():
                if x.name == LOCK_FILE:
                    continue
                if x.is_dir():
                    shutil.rmtree(x)
                else:
                    x.unlink()

    def _acquire_lock(self) -> None:
        """Hold an exclusive ``flock`` on the store's lock file while writing.

        The kernel drops the lock when the process dies, however it dies, so a
        lock file left by a killed writer never blocks the next run.
        """
        import fcntl

        assert self.path is not None
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.read(fd, 200).decode(errors="replace").strip() or "unknown"
            finally:
                os.close(fd)
            raise StoreLockedError(
                f"{self.path} is open for writing by another writer ({holder}); "
                "close it first (the lock is released when that process exits)"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            import fcntl

            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    # ------------------------------------------------------------ caller side
    def append(
        self, monitor: str, layer: str, value: Any, *, time_axis: int | None = None
    ) -> int:
        """Record ``value`` as the next step of ``monitor``/``layer``; return its step.

        ``value`` is a tensor, a number, ``None``, or a tuple or list of those.
        ``time_axis`` names the axis of multi-step records that is time (0 for
        SpikingJelly's ``[T, B, ...]``); spikes are then packed with that axis last,
        so each neuron's time series is contiguous and compresses far better. It is
        fixed by a layer's first record.
        A value that cannot be stored raises :class:`RecordError` (a ``TypeError``
        for unsupported types) naming the monitor, layer and step; nothing
        already recorded is affected.
        """
        self._raise_if_failed()
        if self._closed:
            raise RuntimeError(f"{self._where} is closed")
        lay = self._layer(monitor, layer, value)
        if lay.next_step == 0 and time_axis is not None:
            lay.time_axis = int(time_axis)
        step = lay.next_step
        where = f"monitor {monitor!r}, layer {layer!r}, step {step}"
        try:
            structure, values = _flatten(value)
            leaves = [_leaf(v) for v in values]
        except TypeError as exc:
            raise TypeError(f"cannot record {where}: {exc}") from None
        self._check(lay, structure, leaves, where)
        stored: list[Any] = []
        nbytes = 0
        for t, scalar in leaves:
            if t is None:
                stored.append(None)
                continue
            t = t.detach()
            perm = _permutation(lay.time_axis, t.dim())
            leaf: Any
            if t.device.type != "cpu":
                leaf = self._to_host_async(t, perm)
                nbytes += t.numel() * t.element_size()
            else:
                leaf = None if scalar else _pack_cpu(t, perm)
                if leaf is None:
                    leaf = t.clone()
                    nbytes += t.numel() * t.element_size()
                else:
                    nbytes += leaf.packed.numel()
            stored.append(leaf)
        lay.next_step += 1
        self._put(_Item(lay, step, stored, [s for _, s in leaves], nbytes))
        return step

    def _layer(self, monitor: str, layer: str, value: Any) -> _Layer:
        key = (monitor, layer)
        lay = self._layers.get(key)
        if lay is None:
            if not isinstance(monitor, str) or not isinstance(layer, str):
                raise TypeError("monitor and layer names must be str")
            lay = self._load_layer(monitor, layer)
            if lay is not None:
                # append() checks the value against the layer, naming the right step.
                self._layers[key] = lay
                return lay
            try:
                structure, values = _flatten(value)
            except TypeError as exc:
                raise TypeError(
                    f"cannot record monitor {monitor!r}, layer {layer!r}, step 0: {exc}"
                ) from None
            lay = _Layer(
                monitor,
                layer,
                f"{node_key(monitor)}/{node_key(layer)}",
                structure,
                [_FieldSpec() for _ in values],
            )
            lay.fields = [_Field(f"{lay.path}/f{i}") for i in range(len(values))]
            self._layers[key] = lay
        return lay

    def _load_layer(self, monitor: str, layer: str) -> _Layer | None:
        """Pick up an existing layer (append mode) so its steps continue."""
        path = f"{node_key(monitor)}/{node_key(layer)}"
        try:
            grp = self._root[path]
        except KeyError:
            return None
        where = f"{self._where} monitor {monitor!r} layer {layer!r}"
        meta = check_layer_attrs(dict(grp.attrs), where)
        lay = _Layer(monitor, layer, path, meta["structure"], [], created=True)
        steps = None
        for i in range(meta["fields"]):
            try:
                fgrp = self._root[f"{path}/f{i}"]
            except KeyError:
                # Killed before this field's first commit: it holds no steps.
                lay.fields.append(_Field(f"{path}/f{i}"))
                lay.specs.append(_FieldSpec())
                steps = 0
                continue
            fmeta = check_field_attrs(dict(fgrp.attrs), f"{where} field {i}")
            fld = _Field(f"{path}/f{i}", committed=fmeta["committed_steps"])
            fld.segments = [dict(s) for s in fmeta["segments"]]
            spec = _FieldSpec()
            for k, seg in enumerate(fld.segments):
                key = (
                    seg["encoding"],
                    seg["dtype"],
                    tuple(seg["shape"]),
                    seg.get("python_scalar", False),
                    tuple(seg["permute"]) if seg.get("permute") is not None else None,
                )
                fld.keys[key] = k
                spec.kind = "number" if seg.get("python_scalar") else "tensor"
                spec.dtype = seg["dtype"]
                spec.ndim = len(seg["shape"])
            fld.index = fgrp["index"] if "index" in fgrp else None
            fld.summary.load(fgrp, fld.committed)
            lay.fields.append(fld)
            lay.specs.append(spec)
            steps = fld.committed if steps is None else min(steps, fld.committed)
        lay.next_step = steps or 0
        for fld in lay.fields:
            fld.committed = lay.next_step
        return lay

    def _check(self, lay: _Layer, structure: str, leaves: list[Any], where: str) -> None:
        # A single value may be None, a number or a tensor from step to step (a neuron's
        # ``v`` is the float 0.0 before its first step, then a tensor); each kind gets
        # its own segment, and the reader returns each step as it was recorded.
        single = structure in _SINGLE and lay.structure in _SINGLE
        if (structure != lay.structure and not single) or len(leaves) != len(lay.specs):
            raise RecordError(
                f"cannot record {where}: this layer records {lay.structure} values with "
                f"{len(lay.specs)} field(s), got {structure} with {len(leaves)}"
            )
        for i, ((t, scalar), spec) in enumerate(zip(leaves, lay.specs, strict=True)):
            if t is None:
                continue
            try:
                name = dtype_name(t.dtype)
            except TypeError as exc:
                raise RecordError(f"cannot record {where} (field {i}): {exc}") from None
            kind = "number" if scalar else "tensor"
            if spec.dtype is None or (single and kind != spec.kind):
                continue
            if (kind, name, t.dim()) != (spec.kind, spec.dtype, spec.ndim):
                raise RecordError(
                    f"cannot record {where} (field {i}): the layer holds {spec.kind}s of dtype "
                    f"{spec.dtype} and rank {spec.ndim}, got a {kind} of dtype {name} and rank "
                    f"{t.dim()}"
                )
        for (t, scalar), spec in zip(leaves, lay.specs, strict=True):
            if t is not None and spec.dtype is None:
                spec.kind = "number" if scalar else "tensor"
                spec.dtype = dtype_name(t.dtype)
                spec.ndim = t.dim()

    def _to_host_async(self, t: torch.Tensor, permute: tuple[int, ...] | None) -> _DeviceLeaf:
        """Detect and pack spikes on the device; copy only packed bits to the host."""
        flag, bits = spike_bits(t, permute)
        packed = pack_bits(bits)
        host = torch.empty(packed.shape, dtype=torch.uint8, pin_memory=True)
        host.copy_(packed, non_blocking=True)
        flag_h = torch.empty((), dtype=torch.bool, pin_memory=True)
        flag_h.copy_(flag, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return _DeviceLeaf(t.clone(), flag_h, host, event, permute)

    def _put(self, item: Any) -> None:
        nbytes = getattr(item, "nbytes", 0)
        with self._space:
            while self._queued_bytes > 0 and self._queued_bytes + nbytes > self.max_queue_bytes:
                self._space.wait(0.1)
                self._raise_if_failed()
            self._queued_bytes += nbytes
        self._queue.put(item)

    def flush(self) -> None:
        """Block until every record appended so far is committed to disk."""
        self._raise_if_failed()
        if self._closed:
            return
        done = threading.Event()
        self._queue.put(done)
        while not done.wait(0.1):
            if not self._thread.is_alive():
                break
        self._raise_if_failed()

    def close(self) -> None:
        """Flush, stop the writer thread and release the store. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join()
        self._release_lock()
        self._raise_if_failed()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise WriteError(
                f"writing {self._where} failed at {self._error_where}: {self._error}"
            ) from self._error

    @property
    def layers(self) -> list[tuple[str, str]]:
        """(monitor, layer) pairs this writer has recorded into."""
        return list(self._layers)

    def steps(self, monitor: str, layer: str) -> int:
        """Steps recorded so far for a layer (committed or not).

        In append mode this counts the steps already in the store, so it is the
        step number the next :meth:`append` to the layer will return.
        """
        lay = self._layers.get((monitor, layer))
        if lay is None and not self._closed:
            lay = self._load_layer(monitor, layer)
            if lay is not None:
                self._layers[(monitor, layer)] = lay
        return lay.next_step if lay is not None else 0

    # ------------------------------------------------------------ writer side
    def _run(self) -> None:
        while True:
            timeout = None
            if self._oldest is not None:
                timeout = max(0.0, self._oldest + self.flush_interval - time.monotonic())
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = "tick"
            try:
                # After a failure nothing more is written: what is on disk stays
                # exactly what was committed before it.
                if item is None:
                    if self._error is None:
                        self._write_all()
                        self._seal_all()
                    return
                if isinstance(item, threading.Event):
                    if self._error is None:
                        self._write_all()
                    item.set()
                    continue
                if isinstance(item, _Item):
                    with self._space:
                        self._queued_bytes -= item.nbytes
                        self._space.notify_all()
                    if self._error is None:
                        self._take(item)
                if self._error is None and self._oldest is not None:
                    if time.monotonic() - self._oldest >= self.flush_interval:
                        self._write_all()
                    elif self._buffered_bytes >= max(self.max_buffer_bytes, self._buffer_mark):
                        self._write_all(aligned=True)
            except BaseException as exc:
                if self._error is None:
                    self._error = exc
                if isinstance(item, threading.Event):
                    item.set()
                if item is None:
                    return

    def _take(self, item: _Item) -> None:
        lay = item.layer
        self._error_where = f"monitor {lay.monitor!r}, layer {lay.name!r}, step {item.step}"
        full = False
        for fld, leaf, scalar in zip(lay.fields, item.leaves, item.scalars, strict=True):
            if leaf is None:
                fld.pending_index.append((-1, 0))
                fld.summary.add(None)
                continue
            if isinstance(leaf, _DeviceLeaf):
                if leaf.event is not None:
                    leaf.event.synchronize()
                enc = encode(
                    leaf.tensor,
                    python_scalar=scalar,
                    permute=leaf.permute,
                    spikes=(leaf.flag, leaf.packed),
                )
            else:
                # A CPU tensor that reaches the writer as values failed the spike test
                # in append() already (or is a number): store it raw without testing again.
                enc = encode(leaf, python_scalar=scalar, spikes=(False, None))
            fld.summary.add(enc)
            seg = self._segment(fld, enc)
            rows = fld.pending_rows.setdefault(seg, [])
            row = fld.segments[seg]["rows"] + len(rows)
            rows.append(enc.row)
            fld.pending_index.append((seg, row))
            self._buffered_bytes += enc.row.nbytes
            arr_shard = fld.segments[seg].get("_shard_steps", 0)
            if arr_shard and (row + 1) % arr_shard == 0:
                full = True
        if self._oldest is None:
            self._oldest = time.monotonic()
        if full:
            self._write_layer(lay)

    def _segment(self, fld: _Field, enc: Encoded) -> int:
        k = fld.keys.get(enc.key)
        if k is None:
            k = len(fld.segments)
            desc: dict[str, Any] = {
                "array": f"s{k}",
                "encoding": enc.encoding,
                "dtype": enc.dtype,
                "shape": list(enc.shape),
                "rows": 0,
            }
            if enc.python_scalar:
                desc["python_scalar"] = True
            if enc.encoding == SPIKE_ENCODING:
                desc["bit_order"] = "big"
                desc["permute"] = list(enc.permute) if enc.permute is not None else None
            fld.segments.append(desc)
            fld.keys[enc.key] = k
        return k

    def _write_all(self, aligned: bool = False) -> None:
        """Write what is buffered; ``aligned``: only whole inner-chunk rows.

        A write that ends inside an inner chunk makes the next one decode, merge and
        encode that chunk again; so writes forced by the buffer's byte bound stop at
        chunk boundaries and keep the rest (commits by time or ``flush`` take all).
        """
        # Records too large to fill an inner chunk row within the bound stay
        # buffered, up to a hard bound of 4x max_buffer_bytes.
        aligned = aligned and self._buffered_bytes < 4 * self.max_buffer_bytes
        for lay in list(self._layers.values()):
            self._write_layer(lay, aligned)
        self._buffered_bytes = sum(
            row.nbytes
            for lay in self._layers.values()
            for fld in lay.fields
            for rows in fld.pending_rows.values()
            for row in rows
        )
        # After a partial write, wait for half a bound more before the next one
        # (not at every record while what is left stays above the bound).
        self._buffer_mark = self._buffered_bytes + self.max_buffer_bytes // 2 if aligned else 0
        if not any(fld.pending_index for lay in self._layers.values() for fld in lay.fields):
            self._oldest = None

    def _write_layer(self, lay: _Layer, aligned: bool = False) -> int:
        if not any(f.pending_index for f in lay.fields):
            return 0
        self._error_where = f"monitor {lay.monitor!r}, layer {lay.name!r}"
        if not lay.created:
            mkey = node_key(lay.monitor)
            if mkey not in self._root:
                self._root.create_group(mkey, attributes=monitor_attrs(lay.monitor))
            self._root.create_group(
                lay.path, attributes=layer_attrs(lay.name, lay.structure, len(lay.fields))
            )
            lay.created = True
        return sum(self._write_field(lay, fld, aligned) for fld in lay.fields)

    def _write_field(self, lay: _Layer, fld: _Field, aligned: bool = False) -> int:
        """Write and commit the field's pending steps (a prefix of them if ``aligned``)."""
        if not fld.pending_index:
            return 0
        if fld.index is None:
            try:
                grp = self._root[fld.path]  # left by a run killed before its first commit
            except KeyError:
                grp = self._root.create_group(fld.path, attributes=field_attrs(0, []))
            fld.index = grp.create_array(
                "index",
                shape=(0, 2),
                dtype="int32",
                chunks=(INDEX_CHUNK, 2),
                compressors=compressor_codecs("zstd", 3, itemsize=4, shuffle=False),
                fill_value=-1,
                dimension_names=["step", "segment_row"],
                config={"write_empty_chunks": True},
                overwrite=True,
            )
        segs = {}
        for k, rows in fld.pending_rows.items():
            if rows:
                segs[k] = fld.arrays.get(k) or self._open_segment(fld, k, rows[0])
        steps = len(fld.pending_index)
        if aligned:
            # The longest prefix of steps whose rows end on inner-chunk boundaries.
            limit = {}
            for k, seg in segs.items():
                end = seg.desc["rows"] + len(fld.pending_rows[k])
                limit[k] = end - end % seg.main.chunks[0]
            steps = 0
            for k, row in fld.pending_index:
                if k >= 0 and row >= limit[k]:
                    break
                steps += 1
            if not steps:
                return 0
        done = fld.pending_index[:steps]
        for k, seg in segs.items():
            n = sum(1 for kk, _ in done if kk == k)
            if n:
                seg.write(np.stack(fld.pending_rows[k][:n]))
                del fld.pending_rows[k][:n]
        n0 = fld.committed
        n1 = n0 + steps
        fld.index.resize((n1, 2))
        fld.index[n0:n1] = np.asarray(done, dtype=np.int32)
        fld.summary.write(self._root[fld.path], n0, n1)
        fld.committed = n1
        self._commit_field(fld)
        del fld.pending_index[:steps]
        return steps

    def _commit_field(self, fld: _Field) -> None:
        """Write the field's attributes: the atomic commit point."""
        self._root[fld.path].attrs.update(_field_meta(fld))
        for seg in fld.arrays.values():
            seg.disk_sealed = seg.desc["sealed"]

    def _open_segment(self, fld: _Field, k: int, row: np.ndarray) -> Any:
        desc = fld.segments[k]
        grp = self._root[fld.path]
        if desc["rows"] and desc["array"] in grp:
            arr = grp[desc["array"]]
        else:
            spikes = desc["encoding"] == SPIKE_ENCODING
            itemsize = row.dtype.itemsize
            frame = None
            if spikes and self.compressor is None:
                perm = desc.get("permute")
                frame = _spike_frame(tuple(desc["shape"]), tuple(perm) if perm else None)
            chunks, shards = _layout(
                row.shape,
                itemsize,
                self.shard_steps,
                self.chunk_bytes,
                frame=frame,
            )
            serializer: Any = "auto"
            if spikes and self.compressor is None:
                # The default spike encoding: a registered codec that compresses
                # packed bits close to their entropy (see spikestore._spikecodec).
                serializer = SpikeCodec(
                    level=self.level if self.level is not None else 1, frame=frame
                )
                comp: Any = [checksum()]
            else:
                default = DEFAULT_SPIKES if spikes else DEFAULT_DENSE
                comp = compressor_codecs(
                    self.compressor or default,
                    self.level,
                    itemsize=itemsize,
                    shuffle=not spikes,
                )
            if spikes:
                dims = ["step", "packed_bits"]
            else:
                dims = ["step", *[f"dim_{i}" for i in range(row.ndim)]]
            attrs = {FORMAT_NAME: {"node": "segment", **desc}}
            arr = grp.create_array(
                desc["array"],
                shape=(0, *row.shape),
                dtype=row.dtype,
                chunks=chunks,
                shards=shards,
                compressors=comp,
                serializer=serializer,
                fill_value=0,
                dimension_names=dims,
                attributes=attrs,
                # Every committed shard exists on disk, even an all-zero one, so
                # the reader can tell a lost shard from silence.
                config={"write_empty_chunks": True},
                # An array with no committed rows is left over from a killed run.
                overwrite=True,
            )
        seg = _Segment(grp, desc, arr, lambda: self._commit_field(fld))
        desc["_shard_steps"] = seg.shard
        fld.arrays[k] = seg
        return seg

    def _seal_all(self) -> None:
        """On close: move every open shard's rows from its tail into a shard file.

        A closed store then holds each segment in one sharded array, as plain Zarr
        expects; a writer that appends later moves the partial shard back (see
        :meth:`_Segment.reopen`).
        """
        for lay in self._layers.values():
            for fld in lay.fields:
                sealed = [seg.seal_partial() for seg in fld.arrays.values()]
                if any(sealed):
                    self._commit_field(fld)
                for seg in fld.arrays.values():
                    seg.drop_tails()

