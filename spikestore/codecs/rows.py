"""Turning tensors into stored rows and back, and the Zarr codecs that compress them.

Bytes in, bytes out: nothing here touches a store. Spike detection and packing
run in torch on the tensor's own device, so from a GPU only the packed bytes
(one bit per element) cross to the host.

Spike rows
----------
A record whose values are all exactly ``0`` or ``1`` (``-0.0`` and ``NaN`` are
not spikes) is flattened in C order, optionally after permuting its axes
(``permute``), and packed 8 elements to a byte with the first element in the
most significant bit, exactly like ``numpy.packbits(bits, bitorder="big")``.
The last byte is padded with zero bits.

On the CPU (:func:`spike_pack`) the test and the packing run in numpy on an
integer view of the tensor's bits: two comparisons and a count, then
``numpy.packbits`` (a record packed time-last is packed with shifts along its
time axis instead of a transposed copy), each a vectorised pass; with numba (the
``fast`` extra, unless ``SPIKESTORE_NUMBA=0``) the test of a large record is one
compiled pass over its values instead of two (the same bytes), and a large record
stored time-last is packed in its own order, one pass, and reordered on the writer
thread, a block of rows at a time (:func:`repack_later`, :func:`repack_rows`,
:mod:`._interleave`); on a GPU (:func:`spike_bits` then :func:`pack_bits`) in torch, on
the tensor's device.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..format import DTYPES, RAW_ENCODING, SPIKE_ENCODING
from ._interleave import compile_kernel, fits, interleave
from .motion import numba_module, numba_wanted

__all__ = [
    "COMPRESSORS",
    "LEVELS",
    "DEFAULT_DENSE",
    "DEFAULT_SPIKES",
    "Encoded",
    "compressor_codecs",
    "dense_codecs",
    "checksum",
    "dtype_name",
    "torch_dtype",
    "spike_bits",
    "spike_pack",
    "repack_later",
    "repack_rows",
    "compile_later",
    "start_jit",
    "pack_bits",
    "unpack_bits",
    "bit_positions",
    "encode",
    "encode_packed",
    "encode_values",
    "decode_rows",
]

#: Compressors a user may choose per store, with their default levels.
COMPRESSORS: dict[str, int] = {"zstd": 1, "zlib": 6, "blosc-lz4": 5, "blosc-zstd": 1}
#: The levels each compressor accepts (the default spike codec takes zstd's).
LEVELS: dict[str, tuple[int, int]] = {
    "zstd": (-(1 << 17), 22),
    "zlib": (0, 9),
    "blosc-lz4": (0, 9),
    "blosc-zstd": (0, 9),
}
DEFAULT_SPIKES = "zstd"
#: The default compressor of raw (dense) rows, with bit shuffle, where it pays (see
#: :func:`dense_codecs`).
DEFAULT_DENSE = "blosc-lz4"
#: Raw rows are compressed by default only if :data:`DEFAULT_DENSE` makes a segment's
#: first record at least this much smaller; otherwise the writer stores them as they
#: are (membrane potentials save 8-15 % with the former, at a fraction of the speed of
#: writing them raw), see :func:`dense_codecs`.
DENSE_MIN_SAVING = 0.2
#: Bytes of a first record compressed to decide.
_PROBE_BYTES = 1 << 20
#: Mantissa bits of each float dtype :func:`dense_codecs` may round (numpy's names).
MANTISSA_BITS = {"float16": 10, "float32": 23, "float64": 52}
#: The codec of the opt-in lossy precision, as Zarr names it in an array's metadata.
PRECISION_CODEC = "numcodecs.bitround"

_TORCH_DTYPES: dict[str, torch.dtype] = {
    name: getattr(torch, name) for name in DTYPES if hasattr(torch, name)
}
_NAMES = {v: k for k, v in _TORCH_DTYPES.items()}
_BIT_WEIGHTS: dict[torch.device, torch.Tensor] = {}
#: The bit pattern of 1.0 of each float8 dtype.
_FLOAT8 = {
    d: int(torch.ones((), dtype=d).view(torch.uint8))
    for d in (getattr(torch, "float8_e4m3fn", None), getattr(torch, "float8_e5m2", None))
    if d is not None
}


def dtype_name(dtype: torch.dtype) -> str:
    """The format's name for a torch dtype; ``TypeError`` if it cannot be stored."""
    try:
        return _NAMES[dtype]
    except KeyError:
        raise TypeError(
            f"dtype {dtype} cannot be stored (supported: {', '.join(sorted(_NAMES.values()))})"
        ) from None


def torch_dtype(name: str) -> torch.dtype:
    return _TORCH_DTYPES[name]


def compressor_codecs(name: str, level: int | None, *, itemsize: int, shuffle: bool) -> list[Any]:
    """Zarr v3 bytes-to-bytes codecs: one of :data:`COMPRESSORS`, then a checksum.

    ``zlib`` uses Zarr's standard ``gzip`` codec (DEFLATE, as zlib writes it, in a
    gzip frame) so that every Zarr v3 implementation can read it. Every chunk ends
    with a CRC-32C (:func:`checksum`), so damaged or torn chunks are detected.
    """
    from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

    if name not in COMPRESSORS:
        raise ValueError(f"unknown compressor {name!r}; choose one of {sorted(COMPRESSORS)}")
    lvl = COMPRESSORS[name] if level is None else int(level)
    compressor: Any
    if name == "zstd":
        compressor = ZstdCodec(level=lvl)
    elif name == "zlib":
        compressor = GzipCodec(level=lvl)
    else:
        compressor = BloscCodec(
            cname=name.split("-", 1)[1],  # type: ignore[arg-type]
            clevel=lvl,
            shuffle="shuffle" if shuffle and itemsize > 1 else "noshuffle",
            typesize=itemsize,
        )
    return [compressor, checksum()]


def dense_codecs(
    row: np.ndarray, compressor: str | None, level: int | None, precision: int | None
) -> list[Any]:
    """The inner codec chain of a raw (dense) segment whose rows are like ``row``.

    ``precision=N`` (floats only: float16, float32, float64 rows) first keeps ``N``
    mantissa bits, rounding to nearest, ties to even (numcodecs' ``BitRound``,
    ``numcodecs.bitround`` in the metadata): lossy, relative error at most
    ``2**-(N + 1)`` for normal numbers. The rounded rows are then compressed with
    ``compressor`` (default: Blosc LZ4 with bit shuffle, always: the zeroed low bits
    make it pay). Without ``precision``
    a chosen ``compressor`` is used as given; by default Blosc LZ4 with bit shuffle
    (``level``: its clevel, 5 if None) is used if it makes ``row`` (its first
    MiB) at least :data:`DENSE_MIN_SAVING` smaller, else Blosc LZ4 at level 1 without
    shuffle (a copy at memory speed for incompressible blocks, which still squeezes the
    fill rows of a partly filled chunk): the writer keeps that chain only for a short
    run's segment and stores longer ones as they are (``bytes``, ``crc32c``; see
    :func:`spikestore._segments.create_segment`). Each chain is Zarr's ``bytes`` codec, the
    compressor if any, and :func:`checksum`; all are codecs that Zarr and numcodecs ship.
    """
    from zarr.codecs import BloscCodec, BytesCodec

    itemsize = row.dtype.itemsize
    head: list[Any] = [BytesCodec()]
    bits = MANTISSA_BITS.get(row.dtype.name)
    if precision is not None and bits is not None:
        if precision < bits:
            head = [_bitround(precision), *head]
        if compressor is None:
            clevel = 5 if level is None else min(max(int(level), 0), 9)
            return [
                *head,
                BloscCodec(cname="lz4", clevel=clevel, shuffle="bitshuffle", typesize=itemsize),
                checksum(),
            ]
    if compressor is not None:
        return [*head, *compressor_codecs(compressor, level, itemsize=itemsize, shuffle=True)]
    clevel = 5 if level is None else min(max(int(level), 0), 9)
    if clevel and _saving(row, clevel) >= DENSE_MIN_SAVING:
        blosc = BloscCodec(
            cname=DEFAULT_DENSE.split("-", 1)[1],  # type: ignore[arg-type]
            clevel=clevel,
            shuffle="bitshuffle" if itemsize > 1 else "noshuffle",
            typesize=itemsize,
        )
        return [*head, blosc, checksum()]
    # Not worth compressing, but never stored bigger: Blosc LZ4 at level 1 without
    # shuffle copies incompressible blocks at memory speed (about 4 GB/s here) and
    # squeezes the fill rows of a short run's last chunk (stored uncompressed, a
    # 6-step layer took 10x its float32 bytes).
    if not clevel:  # level=0: no compression asked for
        return [*head, checksum()]
    fast = BloscCodec(cname="lz4", clevel=1, shuffle="noshuffle", typesize=itemsize)
    return [*head, fast, checksum()]


def _saving(row: np.ndarray, clevel: int) -> float:
    """The share of ``row``'s first bytes that the default dense compressor saves."""
    from numcodecs import Blosc

    flat = np.ascontiguousarray(row).reshape(-1)
    probe = flat[: max(1, _PROBE_BYTES // max(flat.itemsize, 1))]
    if not probe.nbytes:
        return 0.0
    shuffle = Blosc.BITSHUFFLE if probe.itemsize > 1 else Blosc.NOSHUFFLE
    codec = Blosc(DEFAULT_DENSE.split("-", 1)[1], clevel, shuffle)
    return 1.0 - len(codec.encode(probe)) / probe.nbytes


def _bitround(keepbits: int) -> Any:
    """Zarr's wrapper of numcodecs' ``BitRound``, without its warning that numcodecs
    codecs are not in the Zarr v3 specification (every Zarr-Python reads them)."""
    import warnings

    from zarr.codecs.numcodecs import BitRound

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr")
        return BitRound(keepbits=keepbits)


def checksum() -> Any:
    """The codec that ends every chunk's codec chain: Zarr's ``crc32c``."""
    from zarr.codecs import Crc32cCodec

    return Crc32cCodec()


def spike_bits(
    t: torch.Tensor, permute: tuple[int, ...] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(is_spikes, bits)`` on ``t``'s device without synchronising.

    ``is_spikes`` is a 0-d bool tensor: every element is exactly 0 or 1 (for
    floats, ``+0.0`` or ``1.0``; ``-0.0`` is not a spike since it would not
    round-trip). ``bits`` is ``t == 1`` as a bool tensor, with its axes in the
    order ``permute`` (a view; :func:`pack_bits` flattens it in that order).
    """
    if permute is not None:
        t = t.permute(permute)
    if t.dtype == torch.bool:
        return torch.ones((), dtype=torch.bool, device=t.device), t
    if t.dtype in _FLOAT8:
        # No comparisons or signbit for float8 on every device: compare the bit patterns
        # (+0.0 is all zero bits; -0.0 and NaN are other patterns).
        u = t.view(torch.uint8)
        ones = u == _FLOAT8[t.dtype]
        return (ones | (u == 0)).all(), ones
    ones = t == 1
    zeros = t == 0
    if t.is_floating_point():
        zeros &= ~torch.signbit(t)
    return (ones | zeros).all(), ones


#: The signed integer dtype of each element width: a view of a tensor's bits.
_INT_VIEWS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
#: The bit pattern of 1 of each dtype, as an integer of that width (see :func:`_one_bits`).
_ONE_BITS: dict[torch.dtype, Any] = {}
#: Elements looked at before a whole record is tested.
_HEAD = 64
#: A record packed time-last with fewer elements than this is transposed and packed;
#: larger ones are packed along their time axis with shifts (no transposed copy).
_SHIFT_MIN = 1 << 15
#: The most shift-and-or passes (bits of a group of neurons) worth a Python loop.
_SHIFT_MAX_BITS = 64


#: Per thread, a buffer reused for the 0/1 bytes of a record being packed: a fresh
#: large allocation may cost page faults (zero-filled pages) several times the pass
#: that fills it (glibc maps large blocks afresh, and the writer returns freed memory
#: to the system: ``spikestore.writer._malloc_trim``). Larger records get a fresh one.
_SCRATCH_MAX = 16 << 20
_scratch_local = threading.local()


def _scratch(nbytes: int) -> np.ndarray:
    """``nbytes`` uint8 of this thread's scratch buffer (contents undefined); never
    part of anything returned, so callers on other threads never see it change."""
    buf = getattr(_scratch_local, "buf", None)
    if buf is None or buf.size < nbytes:
        buf = np.empty(max(nbytes, 1 << 16), np.uint8)
        if nbytes <= _SCRATCH_MAX:
            _scratch_local.buf = buf
    return buf[:nbytes]


#: Records of at least this many elements are tested in one compiled pass when numba
#: is there and loaded (see :func:`_numba_loaded`): reading the values once instead of
#: twice saves about 50 us of 190 a 1.6 MB record not in cache.
_JIT_MIN = 1 << 16
_ONES: list[Any] = []  # [the compiled test, or None]: filled once, by the jit thread
#: [the compiled time-last reordering (``_interleave``), or None]: filled once after it.
_REPACK: list[Any] = []
_ONES_LOCK = threading.Lock()  # held for good by the caller that starts the jit thread
#: Held by the jit thread while it imports numba and compiles, and by a thread that
#: forks for the fork: a child forked meanwhile would inherit numba's import and
#: compiler locks held by a thread it does not have, and hang at its first ``import
#: numba`` (a DataLoader worker). So a fork waits for the compiles (once: about 0.45 s
#: from numba's cache, 1.7 s without it, the spike test 0.7 and the reordering 1.05).
_JIT_RUNNING = threading.Lock()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_JIT_RUNNING.acquire,
        after_in_parent=_JIT_RUNNING.release,
        after_in_child=_JIT_RUNNING.release,
    )


def _k_ones(u: np.ndarray, one: Any, ones: np.ndarray) -> bool:
    # ones[i] = u[i] == one, and whether every u[i] is 0 or one; no early exit, so
    # that the loop vectorises.
    bad = np.uint8(0)
    for i in range(u.size):
        v = u[i]
        o = np.uint8(v == one)
        ones[i] = o
        bad |= np.uint8(v != 0) ^ o
    return bad == 0


def _numba_loaded() -> bool:
    """Whether numba is imported already (by the MOTION codec's kernels, which conv
    layers' time-last spikes use, or by the program)."""
    return "numba" in sys.modules


def _ones_kernel() -> Any:
    """:func:`_k_ones` compiled (``njit(nogil=True, cache=True)``), or None: while
    the ``spikestore-jit`` thread, started by the first call once numba is loaded,
    compiles it (with the reordering: 0.45 s from numba's cache), records take the numpy path
    instead of stalling the caller. Until something else has imported numba the
    numpy path is taken: importing numba and compiling this kernel cost about 120 MiB
    of memory (61 for the import), 2.5x what a 100,000-step recording otherwise
    grows by (``bench_scale.py``), for a 20% faster test."""
    if _ONES:
        return _ONES[0]
    if not _numba_loaded():
        return None
    if _ONES_LOCK.acquire(blocking=False):
        if not numba_wanted():
            _ONES.append(None)
            return None
        try:
            # Not a daemon, whichever thread starts it (the writer thread is one): the
            # interpreter waits for the compiles at exit rather than killing them.
            threading.Thread(target=_jit, name="spikestore-jit", daemon=False).start()
        except RuntimeError:  # no new thread as the interpreter exits: numpy from now on
            _ONES.append(None)
    return None


#: ``(slot, build)`` of kernels other modules compile on the jit thread, after these:
#: ``build(numba)`` returns the compiled kernel, appended to ``slot`` (None if it fails).
_LATER: list[tuple[list[Any], Callable[[Any], Any]]] = []
#: Entries of ``_LATER`` a jit thread has taken to compile.
_LATER_TAKEN = 0
_LATER_LOCK = threading.Lock()


def compile_later(slot: list[Any], build: Callable[[Any], Any]) -> None:
    """Have a ``spikestore-jit`` thread append ``build(numba)`` (or None: no numba,
    or it failed) to ``slot``: the one that compiles this module's kernels, or, for a
    kernel registered after that one took the list, one that :func:`start_jit` starts."""
    with _LATER_LOCK:
        _LATER.append((slot, build))


def start_jit() -> None:
    """Start the jit thread if numba is loaded and it has not started (see
    :func:`_ones_kernel`), or a thread for the kernels registered since it took the
    list; the kernels appear in their slots when compiled."""
    global _LATER_TAKEN
    if not _ONES:
        _ones_kernel()
        return
    with _LATER_LOCK:
        if _LATER_TAKEN >= len(_LATER):
            return
        todo, _LATER_TAKEN = _LATER[_LATER_TAKEN:], len(_LATER)
    try:
        threading.Thread(
            target=_jit_later, args=(todo,), name="spikestore-jit", daemon=False
        ).start()
    except RuntimeError:  # no new thread as the interpreter exits: never compiled
        for slot, _ in todo:
            slot.append(None)


def _jit() -> None:
    global _LATER_TAKEN
    with _JIT_RUNNING:
        _ONES.append(_compiled_ones())
        _REPACK.append(_compiled_repack())
        with _LATER_LOCK:
            todo, _LATER_TAKEN = _LATER[_LATER_TAKEN:], len(_LATER)
        _build_later(todo)


def _jit_later(todo: list[tuple[list[Any], Callable[[Any], Any]]]) -> None:
    with _JIT_RUNNING:
        _build_later(todo)


def _build_later(todo: list[tuple[list[Any], Callable[[Any], Any]]]) -> None:
    nb = numba_module() if todo else None
    for slot, build in todo:
        try:
            slot.append(None if nb is None else build(nb))
        except Exception:  # pragma: no cover - a numba that cannot compile it
            slot.append(None)


def _compiled_repack() -> Any:
    """:mod:`._interleave`'s kernel compiled, or None (no numba)."""
    nb = numba_module()
    if nb is None:
        return None
    try:
        return compile_kernel(nb)
    except Exception:  # pragma: no cover - a numba that cannot compile: no reordering
        return None


def _compiled_ones() -> Any:
    """:func:`_k_ones` compiled for every integer view, or None (no numba)."""
    nb = numba_module()
    if nb is None:
        return None
    try:
        kernel = nb.njit(nogil=True, cache=True)(_k_ones)
        for width in (1, 2, 4, 8):  # each integer view's version, before first use
            z = np.zeros(1, f"u{width}" if width == 1 else f"i{width}")
            kernel(z, z[0], np.zeros(1, np.uint8))
    except Exception:  # pragma: no cover - a numba that cannot compile: numpy it is
        return None
    return kernel


def _one_bits(dtype: torch.dtype) -> Any:
    one = _ONE_BITS.get(dtype)
    if one is None:
        bits = torch.ones((), dtype=dtype).view(_INT_VIEWS[dtype.itemsize]).numpy()
        one = _ONE_BITS[dtype] = bits[()]
    return one


def spike_pack(t: torch.Tensor, permute: tuple[int, ...] | None = None) -> np.ndarray | None:
    """The packed bits of a CPU tensor that holds spikes, or None if it does not.

    The same test and the same bytes as :func:`spike_bits` then :func:`pack_bits`,
    in numpy on a view of the tensor's bits (no copy of the values): an element is
    a spike if its bits are those of ``0`` or of ``1`` in its dtype, so ``-0.0``,
    NaN, denormals and ``1.0000001`` are not. ``ones = bits == one`` and a spike
    record has as many ``ones`` as nonzero bit patterns; ``ones`` is then packed,
    in ``permute``'s axis order.
    """
    if t.dtype == torch.bool:
        ones = t.numpy()
    else:
        u = t.view(_INT_VIEWS[t.element_size()]).numpy()
        one = _one_bits(t.dtype)
        if u.size > _HEAD:
            # Most records that are not spikes (membrane potentials) fail here.
            head = u.flat[:_HEAD]
            if np.count_nonzero(head) != np.count_nonzero(head == one):
                return None
        buf = _scratch(u.size)
        ones = buf.view(np.bool_).reshape(u.shape)
        kernel = _ones_kernel() if u.size >= _JIT_MIN and u.flags.c_contiguous else None
        if kernel is not None:
            if not kernel(u.reshape(-1), one, buf):
                return None
        else:
            np.equal(u, one, out=ones)
            if np.count_nonzero(u) != np.count_nonzero(ones):
                return None
    return pack_ones(ones, tuple(t.shape), permute)


def pack_ones(
    ones: np.ndarray, shape: tuple[int, ...], permute: tuple[int, ...] | None
) -> np.ndarray:
    """``np.packbits`` of a bool array of ``shape`` flattened after ``permute``.

    A permutation that moves one axis (time) last, as :func:`~.layout.time_last`
    makes, is packed without a transposed copy when the record is large: a
    group of ``G`` neurons with ``T`` steps each fills ``L = lcm(T, 8) / 8``
    bytes, so bit ``b`` of a group (neuron ``b // T``, step ``b % T``) is one
    shift and one or over all groups at once: ``L * 8`` vectorised passes over
    ``1 / G`` of the bits each.
    """
    n = ones.size
    if permute is not None:
        permute = tuple(permute)
        # Axes of length 1 do not change the order of the elements.
        kept = [p for p in permute if shape[p] != 1]
        if kept != sorted(kept):
            ones = np.ascontiguousarray(ones).reshape(shape)
            moved = _moved_last(permute)
            if moved is not None and n >= _SHIFT_MIN:
                p_ = math.prod(shape[:moved])
                steps = shape[moved]
                r = n // (p_ * steps) if n else 0
                group = math.lcm(steps, 8) // steps
                if r % group == 0 and steps * group <= _SHIFT_MAX_BITS:
                    return _pack_time_last(ones.view(np.uint8), p_, steps, r, group)
            return np.packbits(ones.transpose(permute))
    return np.packbits(ones.reshape(-1))


def repack_later(shape: tuple[int, ...], permute: tuple[int, ...] | None) -> bool:
    """Whether a spike record of ``shape``, stored packed after ``permute``, is packed
    by the caller in its own order (one NumPy pass, :func:`spike_pack`) and put in
    ``permute``'s order on the writer thread, a block of rows at a time
    (:func:`repack_rows`): a large record whose time axis moves last, where the
    compiled reordering is ready (:mod:`._interleave`). Packing it time-last in the
    caller took a dozen NumPy passes, each letting the GIL go and taking it back
    from the writer's threads: 0.43-0.52 ms a ``[4, 8, 16, 28, 28]`` record in a
    recording, against 0.19 ms alone."""
    if permute is None or not _REPACK or _REPACK[0] is None:
        return False
    # What fits takes (2 or more steps, then 8 or more elements a plane) moves bits.
    return math.prod(shape) >= _SHIFT_MIN and fits(shape, tuple(permute)) is not None


def repack_rows(rows: np.ndarray, shape: tuple[int, ...], permute: tuple[int, ...]) -> np.ndarray:
    """Rows (``[n, nbytes]``) of bits of records of ``shape`` packed in their own
    order, packed after ``permute`` instead: the rows :func:`spike_pack` makes with
    ``permute``, for records :func:`repack_later` accepts (whole bytes)."""
    n = rows.shape[0]
    kernel = _REPACK[0] if _REPACK else None
    geometry = fits(shape, tuple(permute))
    if kernel is not None and geometry is not None:
        p_, steps, rb = geometry
        rows = np.ascontiguousarray(rows)
        return interleave(kernel, rows, n * p_, steps, rb).reshape(n, -1)
    whole = (n, *shape)
    ones = np.unpackbits(rows.reshape(-1)).view(np.bool_).reshape(whole)
    return pack_ones(ones, whole, (0, *[p + 1 for p in permute])).reshape(n, -1)


def _moved_last(permute: tuple[int, ...]) -> int | None:
    """The axis ``permute`` moves last keeping the others in order, or None."""
    a = permute[-1]
    if permute[:-1] == tuple(i for i in range(len(permute)) if i != a):
        return a
    return None


def _pack_time_last(o8: np.ndarray, p_: int, steps: int, r: int, group: int) -> np.ndarray:
    """Pack ``o8`` (0/1 bytes, shape ``[p_, steps, r]``) as ``[p_, r, steps]``.

    ``group`` neurons (``lcm(steps, 8)`` bits) fill whole bytes; every pass below
    is a vectorised shift-or over all groups.
    """
    src = o8.reshape(p_, steps, r // group, group)
    nbytes = steps * group // 8
    out = np.empty((p_, r // group, nbytes), np.uint8)
    acc8 = np.empty((p_, r // group), np.uint8)
    tmp8 = np.empty_like(acc8)
    if group == 1:
        # Byte j of a neuron: its steps 8j .. 8j + 7, one contiguous pass each, on
        # 8 neurons a word where they fill words (a 0/1 byte shifted by < 8 stays in
        # its byte; wide shifts vectorise better than byte shifts).
        w = 8 if r % 8 == 0 else 1
        word = np.dtype(f"<u{w}")
        acc = acc8.view(word)
        tmp = tmp8.view(word)
        for j in range(nbytes):
            np.left_shift(src[:, 8 * j, :, 0].view(word), 7, out=acc)
            for k in range(1, 8):
                np.left_shift(src[:, 8 * j + k, :, 0].view(word), 7 - k, out=tmp)
                acc |= tmp
            out[:, :, j] = acc8
        return out.reshape(-1)
    if steps < 8:
        # Take the group's neurons as one little-endian word: after the shifts, byte q
        # of ``acc`` holds neuron q's steps at bits 7 .. 8 - steps; each output byte
        # then takes the neurons whose bits it holds.
        # The shifts on 8 neurons a word where they fill words (a 0/1 byte shifted by
        # < 8 stays in its byte), then the group's neurons as one word.
        wide = np.dtype(f"<u{8 if r % 8 == 0 else group}")
        acc_w = np.empty((p_, r // wide.itemsize), wide)
        tmp = np.empty_like(acc_w)
        for s in range(steps):
            row = src[:, s].reshape(p_, r).view(wide)
            if s == 0:
                np.left_shift(row, 7, out=acc_w)
            else:
                np.left_shift(row, 7 - s, out=tmp)
                acc_w |= tmp
        acc = acc_w.view(f"<u{group}")
        if nbytes == 1:
            # steps 1, 2 or 4: neuron q's bits move from byte q to bits 7 - q * steps
            # down, and every other byte leaves the low byte or the word
            low = acc.copy()
            for q in range(1, group):
                low |= acc >> (q * (8 + steps))
            return low.astype(np.uint8).reshape(-1)
        for j in range(nbytes):
            acc8.fill(0)
            for q in range(group):
                d = q * steps - 8 * j  # neuron q's first bit, from byte j's first bit
                if not -steps < d < 8:
                    continue
                byte = (acc >> (8 * q)).astype(np.uint8)  # byte q (astype truncates)
                np.bitwise_or(acc8, byte >> d if d >= 0 else byte << -d, out=acc8)
            out[:, :, j] = acc8
        return out.reshape(-1)
    out.fill(0)
    for b in range(steps * group):
        q, s = divmod(b, steps)
        np.left_shift(src[:, s, :, q], 7 - b % 8, out=tmp8)
        col = out[:, :, b // 8]
        np.bitwise_or(col, tmp8, out=col)
    return out.reshape(-1)


def bit_positions(
    flat: Any, shape: tuple[int, ...], permute: list[int] | tuple[int, ...] | None
) -> np.ndarray:
    """Bit index ``i``, in a packed spike row, of each C-order flat element index
    ``flat`` of a record of ``shape`` packed after ``permute``; the element is bit
    ``7 - i % 8`` of byte ``i // 8`` (bit order big)."""
    flat = np.asarray(flat, dtype=np.int64)
    if permute is None:
        return flat
    nd = np.unravel_index(flat, shape)
    return np.asarray(
        np.ravel_multi_index([nd[p] for p in permute], [shape[p] for p in permute]), np.int64
    )


def pack_bits(bits: torch.Tensor) -> torch.Tensor:
    """Pack a bool tensor (flattened, C order) into uint8, MSB first, on its device."""
    flat = bits.reshape(-1)
    if flat.device.type == "cpu":
        return torch.from_numpy(np.packbits(flat.numpy()))
    n = flat.numel()
    pad = (-n) % 8
    u = flat.to(torch.uint8)
    if pad:
        u = torch.cat([u, u.new_zeros(pad)])
    weights = _BIT_WEIGHTS.get(u.device)
    if weights is None:
        weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8, device=u.device)
        _BIT_WEIGHTS[u.device] = weights
    return (u.view(-1, 8) * weights).sum(dim=1, dtype=torch.uint8)


def unpack_bits(packed: np.ndarray, numel: int) -> np.ndarray:
    """Inverse of :func:`pack_bits` for rows of packed bytes: (n, nbytes) -> (n, numel) uint8."""
    return np.unpackbits(packed, axis=-1, count=numel)


@dataclass
class Encoded:
    """One field of one record, ready for a segment row."""

    encoding: str
    dtype: str
    shape: tuple[int, ...]
    row: np.ndarray  # packed uint8 bytes, or the raw values in their storage dtype
    python_scalar: bool = False
    permute: tuple[int, ...] | None = None
    #: ``row`` holds packed bits in the record's own order, not ``permute``'s: the
    #: writer puts a block of such rows in order at once (:func:`repack_rows`).
    as_recorded: bool = False

    @property
    def key(self) -> tuple[Any, ...]:
        """Which segment the row goes to (see :meth:`segment_key`)."""
        return (self.encoding, self.dtype, self.shape, self.python_scalar, self.permute)

    @staticmethod
    def segment_key(desc: dict[str, Any]) -> tuple[Any, ...]:
        """The :attr:`key` of the rows a stored segment descriptor holds."""
        perm = desc.get("permute")
        return (
            desc["encoding"],
            desc["dtype"],
            tuple(desc["shape"]),
            desc.get("python_scalar", False),
            tuple(perm) if perm is not None else None,
        )


def _raw_row(t: torch.Tensor, name: str) -> np.ndarray:
    t = t.detach().cpu().contiguous()
    storage = DTYPES[name][0]
    if name in ("bfloat16", "float8_e4m3fn", "float8_e5m2"):
        view = torch.uint16 if storage == "uint16" else torch.uint8
        return t.view(view).numpy()
    return t.numpy()


def encode(
    t: torch.Tensor, *, python_scalar: bool = False, permute: tuple[int, ...] | None = None
) -> Encoded:
    """Encode one tensor: bit-packed if it holds spikes (see :func:`spike_bits`), else raw."""
    if t.numel() and not python_scalar:
        if t.device.type == "cpu":
            packed = spike_pack(t.detach(), permute)
            if packed is not None:
                return encode_packed(t.dtype, tuple(t.shape), packed, permute)
        else:
            flag, bits = spike_bits(t, permute)
            if bool(flag):
                return encode_packed(t.dtype, tuple(t.shape), pack_bits(bits).numpy(), permute)
    return encode_values(t, python_scalar=python_scalar)


def encode_packed(
    dtype: torch.dtype,
    shape: tuple[int, ...],
    packed: np.ndarray,
    permute: tuple[int, ...] | None,
    as_recorded: bool = False,
) -> Encoded:
    """A record already known to hold spikes, given as its packed bits (on the host),
    packed after ``permute`` or, if ``as_recorded``, in the record's own order."""
    return Encoded(
        SPIKE_ENCODING, dtype_name(dtype), tuple(shape), packed, permute=permute,
        as_recorded=as_recorded,
    )  # fmt: skip


def encode_values(t: torch.Tensor, *, python_scalar: bool = False) -> Encoded:
    """A record stored as its values, bit-exact in its own dtype, without a spike test."""
    name = dtype_name(t.dtype)
    return Encoded(RAW_ENCODING, name, tuple(t.shape), _raw_row(t, name), python_scalar)


def decode_rows(
    rows: np.ndarray,
    seg: dict[str, Any],
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Decode ``rows`` (n rows of one segment) to a tensor of shape (n, *record shape)."""
    name = seg["dtype"]
    shape = tuple(seg["shape"])
    n = rows.shape[0]
    dtype = torch_dtype(name)
    if seg["encoding"] == SPIKE_ENCODING:
        numel = int(np.prod(shape, dtype=np.int64))
        packed = torch.from_numpy(np.ascontiguousarray(rows))
        if device is not None and torch.device(device).type != "cpu":
            packed = packed.to(device)
            bits = _unpack_torch(packed, numel)
        else:
            bits = torch.from_numpy(unpack_bits(rows, numel))
        perm = seg.get("permute")
        if perm is not None:
            pshape = tuple(shape[p] for p in perm)
            inv = [0] * len(perm)
            for i, p in enumerate(perm):
                inv[p] = i
            out = bits.view(n, *pshape).permute(0, *[i + 1 for i in inv])
        else:
            out = bits.view(n, *shape)
        return out.to(dtype).contiguous()
    arr = np.ascontiguousarray(rows)
    out_t = torch.from_numpy(arr)
    if out_t.dtype != dtype:
        out_t = out_t.view(dtype)
    out_t = out_t.reshape(n, *shape)
    if device is not None:
        out_t = out_t.to(device)
    return out_t


def _unpack_torch(packed: torch.Tensor, numel: int) -> torch.Tensor:
    shifts = torch.arange(7, -1, -1, dtype=torch.uint8, device=packed.device)
    bits = (packed.unsqueeze(-1) >> shifts) & 1
    return bits.reshape(packed.shape[0], -1)[:, :numel]
