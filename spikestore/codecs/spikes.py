"""Lossless codec for packed spike chunks: the zarr v3 codec ``spikestore.spikes``.

A chunk is a 2-D ``uint8`` array of shape ``(S, Cb)``: ``S`` consecutive steps by
``Cb`` bytes of each step's packed record (``np.packbits(..., bitorder='big')``).
The codec stores it as a *byte-occupancy tree* whose levels are compressed with
Zstandard. For i.i.d. spikes it reaches 0.95-0.99 of the binary-entropy limit at
every firing rate; packed bytes + zstd alone reach 0.55-0.8 for sparse spikes
because zstd's byte-wise Huffman code cannot spend less than one bit on a zero byte.

Byte layout
-----------
All integers are unsigned little-endian. An encoded chunk is::

    offset  size  field
    0       2     magic b"SK"
    2       1     chunk layout version: 1, or 2 for a MOTION chunk
    3       1     mode: 0 = ZERO, 1 = RAW, 2 = TREE, 3 = MOTION (version 2 only)
    4       4     uint32 R, rows of the chunk (S)
    8       4     uint32 C, columns of the chunk in bytes (Cb)
    12      ...   payload of the mode

Let ``n0 = R * C`` be the number of chunk bytes, in C order (row-major).

- ``ZERO``: no payload; every byte of the chunk is 0.
- ``RAW``: payload is the ``n0`` chunk bytes, unmodified.
- ``TREE``: payload is::

      12      1        uint8 d, the depth (0 <= d <= 8)
      13      3        reserved, 0
      16      4*(d+1)  uint32 L[d], L[d-1], ..., L[0]: sizes of the streams that follow
      ...              stream d, stream d-1, ..., stream 0, back to back, sizes L[...]

  Level sizes are ``n[0] = n0`` and ``n[i+1] = ceil(n[i] / 8)``. Level ``i`` of the
  tree is a byte string ``B[i]`` of ``n[i]`` bytes, ``B[0]`` being the chunk itself;
  ``B[i+1] = np.packbits(B[i] != 0)`` (bit order big, the pad bits are 0) marks
  which bytes of ``B[i]`` are non-zero. Stream ``d`` is the Zstandard frame
  (numcodecs ``Zstd``) of ``B[d]``, ``n[d]`` bytes; for ``i < d`` stream ``i`` is the
  Zstandard frame of the non-zero bytes of ``B[i]`` in order, ``B[i][B[i] != 0]``.
  A stream whose decompressed size is 0 has ``L = 0`` and no bytes. Every frame
  records its decompressed size in its header. Decoding with numpy and numcodecs::

      b = Zstd.decode(stream[d])                      # n[d] bytes
      for i in range(d - 1, -1, -1):
          mask = np.unpackbits(b, count=n[i]).astype(bool)
          out = np.zeros(n[i], np.uint8)
          out[mask] = np.frombuffer(Zstd.decode(stream[i]), np.uint8)  # mask.sum() bytes
          b = out
      chunk = b.reshape(R, C)

  ``d = 0`` is plain Zstandard of the chunk bytes.
- ``MOTION`` (context coding of spike planes, :mod:`spikestore.codecs.motion`): each row's
  ``8 * C`` bits (``np.unpackbits``, bit order big) are ``P = 8 * C / (H * W * T)``
  planes of ``H * W * T`` bits in C order ``(y, x, t)``: a neuron's ``T`` time steps
  are contiguous. The chunk's ``Q = R * P`` planes, row by row, form bits
  ``X[t, q, y, x]``. Payload::

      12      4        uint32 H
      16      4        uint32 W
      20      4        uint32 T (2 <= T <= 4096)
      24      32       flip: 256 bits (np.packbits, big), one per context
      56      256      rank: uint8 per context, a permutation of 0..255
      312     4        uint32 Lm
      316     Lm       Zstandard frame of Q bytes: the motion m[q] of each plane, 0..4
      316+Lm  ...      a nested chunk (this layout, version 1, R = 1, C = n0) holding
                       the packed stream bits, np.packbits(stream)

  Plane ``q`` moves by ``(dy, dx) = [(0,0), (0,1), (1,0), (0,-1), (-1,0)][m[q]]``; let
  ``(ey, ex) = (dx, dy)``, or ``(1, 0)`` for ``(0, 0)``. With ``f(k, y, x)`` the bit
  ``X[t - k, q, y, x]`` (0 when ``t - k < 0`` or ``(y, x)`` is off the plane), the
  context of ``X[t, q, y, x]`` is the byte whose bits 0-7 are ``f(1, y-dy, x-dx)``,
  ``f(1, y, x)``, ``f(2, y-dy, x-dx)``, ``f(2, y, x)``, ``f(2, y-2dy, x-2dx)``,
  ``f(1, y-dy-ey, x-dx-ex)``, ``f(1, y-dy+ey, x-dx+ex)``, ``f(1, y+dy, x+dx)``. The
  stream is frame 0's ``Q * H * W`` bits, then frame 1's, and so on; within a frame
  the bits are sorted by ``rank[context]``, stably (ties keep C order ``(q, y, x)``),
  and each is XORed with ``flip[context]``. A decoder rebuilds frame ``t`` from
  frames ``t - 1`` and ``t - 2``: compute every context, sort the same way, and
  scatter the frame's slice of the stream back.

The encoder picks ZERO for an all-zero chunk, otherwise TREE, and RAW when TREE
would not be smaller than the chunk. It deepens the tree while the current level
has fewer than three quarters of its bytes non-zero, so dense chunks get ``d = 0``
and sparse chunks 1-4. Decoders must accept any valid ``d``. When the codec knows
the plane shape (``frame``) and the chunk holds whole planes, the encoder also
tries MOTION, choosing each plane's motion, ``rank`` and ``flip`` from the data
(decoders accept any), and keeps it when smaller than TREE.

Examples
--------
>>> import numpy as np
>>> a = np.packbits(np.random.default_rng(0).random((32, 800)) < 0.02, axis=1)
>>> np.array_equal(decode_chunk(encode_chunk(a), a.shape), a)
True
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numcodecs.zstd import Zstd
from zarr.abc.codec import ArrayBytesCodec
from zarr.registry import register_codec

from .._zarr import parse_named_configuration
from ..format import MAX_CHUNK_BYTES
from . import motion as _motion

if TYPE_CHECKING:
    from typing import Self

    from .._zarr import (
        JSON,
        ArraySpec,
        Buffer,
        ChunkGrid,
        NDBuffer,
        TBaseDType,
        TBaseScalar,
        ZDType,
    )

__all__ = [
    "CODEC_NAME",
    "FORMAT_VERSION",
    "MOTION_MAX_T",
    "SpikeCodec",
    "decode_chunk",
    "encode_chunk",
]

CODEC_NAME = "spikestore.spikes"
FORMAT_VERSION = 2
DEFAULT_LEVEL = 1

MODE_ZERO = 0
MODE_RAW = 1
MODE_TREE = 2
MODE_MOTION = 3

_MAGIC = b"SK"
_HEADER = struct.Struct("<2sBBII")
_TREE_HEADER = struct.Struct("<B3x")
_MAX_DEPTH = 8
# Deepen the tree while fewer than this share of the level's bytes are non-zero. Zstd's
# byte-wise Huffman code spends at least one bit on each zero byte, so a level with many
# zero bytes codes smaller as occupancy bitmap + non-zero bytes; measured on i.i.d.
# spikes, 0.65-0.8 give the same sizes and 0.9 only costs time.
_SPLIT_BELOW = 0.75
_MIN_SPLIT_BYTES = 64
# MOTION: after the common header, uint32 H, W, T, 32 bytes of flip bits, 256 bytes of
# context ranks and the uint32 size of the motion stream.
_MOTION_HEADER = struct.Struct("<III32s256sI")
MOTION_MAX_T = 4096  # frames are decoded one by one: bound the loop
_MOTION_MIN_BYTES = 1024  # smaller TREE chunks are not worth the side information
# Try MOTION only if its estimate is below this share of the TREE bytes (on i.i.d.
# spikes the estimate is 0.93-0.98 of TREE, on moving input 0.5-0.85).
_MOTION_TRY_BELOW = 0.92
# The estimate looks at about this many non-zero planes, and at least this many bits,
# first at a quarter of them: a first look at or above ``_MOTION_SKIP_FROM`` of the
# TREE bytes skips MOTION (i.i.d. spikes: 0.92-1.02, most at 0.95 or more), one below
# ``_MOTION_TRY_BELOW`` tries it (moving input), and one between looks again at the
# whole sample. On 2**16 bits alone the estimate scatters by a few percent more, which
# lost 1-2% of the bytes on a moving layer of ``bench_encoding.py``.
_MOTION_SAMPLE_PLANES = 16
_MOTION_SAMPLE_BITS = 1 << 18
_MOTION_FIRST_LOOK = 4
_MOTION_SKIP_FROM = 0.95


def _level_sizes(n0: int, depth: int) -> list[int]:
    sizes = [n0]
    for _ in range(depth):
        sizes.append((sizes[-1] + 7) // 8)
    return sizes


def _encode_flat(flat: np.ndarray, rows: int, cols: int, level: int) -> bytes:
    """ZERO, TREE or RAW encoding of the ``rows * cols`` bytes ``flat`` (version 1)."""
    nonzero = np.count_nonzero(flat)
    if nonzero == 0:
        return _HEADER.pack(_MAGIC, 1, MODE_ZERO, rows, cols)
    zstd = Zstd(level=level)
    streams: list[bytes] = []
    cur = flat
    while (
        len(streams) < _MAX_DEPTH
        and cur.size >= _MIN_SPLIT_BYTES
        and nonzero < _SPLIT_BELOW * cur.size
    ):
        mask = cur != 0
        # np.compress gathers 3-6x faster than cur[mask] at these densities (numpy 2)
        streams.append(zstd.encode(np.compress(mask, cur)))
        cur = np.packbits(mask)
        nonzero = np.count_nonzero(cur)
    streams.append(zstd.encode(cur))
    streams.reverse()
    depth = len(streams) - 1
    sizes = [len(s) for s in streams]
    body = b"".join(streams)
    payload_size = _TREE_HEADER.size + 4 * len(streams) + len(body)
    if payload_size >= flat.size:
        return _HEADER.pack(_MAGIC, 1, MODE_RAW, rows, cols) + flat.tobytes()
    return b"".join(
        (
            _HEADER.pack(_MAGIC, 1, MODE_TREE, rows, cols),
            _TREE_HEADER.pack(depth),
            struct.pack(f"<{len(sizes)}I", *sizes),
            body,
        )
    )


def _planes(frame: tuple[int, int, int] | None, rows: int, cols: int) -> int:
    """Planes of ``frame`` bits in the chunk, or 0 when MOTION does not apply."""
    if frame is None:
        return 0
    h, w, t = frame
    plane = h * w * t
    if not 2 <= t <= MOTION_MAX_T or plane == 0 or (cols * 8) % plane:
        return 0
    return rows * (cols * 8 // plane)


def _motion_share(
    flat: np.ndarray,
    live: np.ndarray,
    plane: int,
    frame: tuple[int, int, int],
    sample: int,
    budget: int,
) -> float:
    """MOTION's estimated bytes over ``budget``, from about ``sample`` of the ``live``
    planes (every k-th, the same ones for the same chunk)."""
    picked = live[:: max(1, live.size // max(1, sample))]
    estimate = _motion.estimate_packed(flat, picked * plane, frame) / 8
    estimate *= live.size / max(1, picked.size)
    return (estimate + _MOTION_HEADER.size) / budget


def _encode_motion(
    a: np.ndarray, frame: tuple[int, int, int], planes: int, level: int, budget: int
) -> bytes | None:
    """MOTION encoding of chunk ``a``, or None when it would not beat ``budget`` bytes."""
    h, w, t = frame
    rows, cols = a.shape
    plane = h * w * t
    flat = np.ascontiguousarray(a).reshape(-1)
    # Context coding costs about the conditional entropy: estimate it on a sample of
    # the non-zero planes (all-zero planes, such as the padding of a partial chunk,
    # cost next to nothing either way) and stop here when it cannot win. Planes and
    # the sample are read from the packed bytes.
    if plane % 8 == 0:
        live = np.flatnonzero(flat.reshape(planes, plane // 8).any(axis=1))
    else:
        live = np.flatnonzero(np.unpackbits(flat).reshape(planes, plane).any(axis=1))
    sample = max(_MOTION_SAMPLE_PLANES, -(-_MOTION_SAMPLE_BITS // plane))
    share = _motion_share(flat, live, plane, frame, sample // _MOTION_FIRST_LOOK, budget)
    if share >= _MOTION_SKIP_FROM:
        return None
    if share >= _MOTION_TRY_BELOW:
        share = _motion_share(flat, live, plane, frame, sample, budget)
        if share >= _MOTION_TRY_BELOW:
            return None
    bits = np.unpackbits(flat).reshape(planes, plane)
    motion, stream, rank, flip = _motion.encode(bits.reshape(planes, h, w, t))
    motion_frame = Zstd(level=level).encode(motion.tobytes())
    nested = _encode_flat(np.packbits(stream), 1, rows * cols, level)
    header = _MOTION_HEADER.pack(
        h, w, t, np.packbits(flip).tobytes(), rank.tobytes(), len(motion_frame)
    )
    out = b"".join((_HEADER.pack(_MAGIC, 2, MODE_MOTION, rows, cols), header, motion_frame, nested))
    return out if len(out) < budget else None


def encode_chunk(
    a: np.ndarray, level: int = DEFAULT_LEVEL, frame: tuple[int, int, int] | None = None
) -> bytes:
    """Encode one chunk of packed spikes (uint8, 1-D or 2-D) to bytes.

    Parameters
    ----------
    a : np.ndarray
        ``uint8`` array of shape ``(S, Cb)`` (a 1-D array is one row).
    level : int
        Zstandard level of the streams.
    frame : (H, W, T), optional
        Each row is a sequence of planes of ``H * W * T`` bits, time last (a
        convolutional layer's ``[..., H, W, T]`` record). Enables the MOTION mode,
        used when it is smaller than TREE.

    Returns
    -------
    bytes
        The encoded chunk, laid out as in the module docstring.
    """
    a = np.asarray(a)
    if a.dtype != np.uint8:
        raise TypeError(f"spike chunks must be uint8, got {a.dtype}")
    if a.ndim == 1:
        a = a.reshape(1, -1)
    if a.ndim != 2:
        raise ValueError(f"spike chunks must be 1-D or 2-D, got shape {a.shape}")
    rows, cols = a.shape
    flat = np.ascontiguousarray(a).reshape(-1)
    tree = _encode_flat(flat, rows, cols, level)
    planes = _planes(frame, rows, cols)
    if planes and len(tree) > _MOTION_MIN_BYTES and frame is not None:
        motion = _encode_motion(a, frame, planes, level, len(tree))
        if motion is not None:
            return motion
    return tree


def _zstd_content_size(frame: memoryview) -> int | None:
    """Decompressed size recorded in a zstd frame header, or None if absent/invalid."""
    if len(frame) < 6 or bytes(frame[:4]) != b"\x28\xb5\x2f\xfd":
        return None
    desc = frame[4]
    fcs_flag = desc >> 6
    single_segment = (desc >> 5) & 1
    pos = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[desc & 3]
    nbytes = (1 if single_segment else 0, 2, 4, 8)[fcs_flag]
    if nbytes == 0 or pos + nbytes > len(frame):
        return None
    size = int.from_bytes(frame[pos : pos + nbytes], "little")
    return size + 256 if nbytes == 2 else size


#: Zstandard regenerates at most one block (128 KiB) from each 4 bytes of a frame
#: (an RLE block: a 3-byte header and the byte repeated); a frame that claims more
#: than that of its size is refused before its output is allocated.
_ZSTD_MAX_BLOCK = 1 << 17


def _decode_stream(frame: memoryview, expected: int, what: str) -> np.ndarray:
    if expected == 0:
        if len(frame) != 0:
            raise ValueError(f"spike chunk: {what} should be empty but has {len(frame)} bytes")
        return np.zeros(0, np.uint8)
    size = _zstd_content_size(frame)
    if size != expected:
        raise ValueError(
            f"spike chunk: {what} holds {size} bytes according to its zstd header, "
            f"expected {expected}"
        )
    if expected > (len(frame) // 4 + 1) * _ZSTD_MAX_BLOCK:
        raise ValueError(
            f"spike chunk: {what} claims {expected} bytes from a {len(frame)}-byte zstd "
            "frame, more than Zstandard can regenerate (crafted or damaged)"
        )
    out = np.empty(expected, np.uint8)
    try:
        Zstd().decode(frame, out=out)
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"spike chunk: {what} is not a valid zstd frame: {err}") from err
    return out


def _decode_motion(rest: memoryview, rows: int, cols: int) -> np.ndarray:
    if len(rest) < _MOTION_HEADER.size:
        raise ValueError("spike chunk: truncated MOTION header")
    h, w, t, flip_bits, rank_bytes, motion_size = _MOTION_HEADER.unpack_from(rest)
    planes = _planes((h, w, t), rows, cols)
    if not planes:
        raise ValueError(
            f"spike chunk: MOTION frame ({h}, {w}, {t}) does not divide rows of {cols} bytes "
            f"or has T outside 2..{MOTION_MAX_T}"
        )
    rank = np.frombuffer(rank_bytes, np.uint8)
    if not np.array_equal(np.sort(rank), np.arange(_motion.NCTX)):
        raise ValueError("spike chunk: MOTION context ranks are not a permutation of 0..255")
    flip = np.unpackbits(np.frombuffer(flip_bits, np.uint8))
    pos = _MOTION_HEADER.size
    if len(rest) < pos + motion_size:
        raise ValueError("spike chunk: truncated MOTION motion stream")
    motion = _decode_stream(rest[pos : pos + motion_size], planes, "motion stream")
    if motion.size and motion.max() >= len(_motion.MOTIONS):
        raise ValueError(f"spike chunk: motion index {int(motion.max())} is out of range")
    nested = rest[pos + motion_size :]
    if len(nested) > 3 and nested[3] == MODE_MOTION:
        raise ValueError("spike chunk: a MOTION chunk cannot nest another MOTION chunk")
    packed = decode_chunk(nested, (rows * cols,))
    stream = np.unpackbits(packed)
    x = _motion.decode(stream, (planes, h, w, t), motion, rank, flip)
    return np.packbits(x.reshape(rows, cols * 8), axis=1)


def decode_chunk(
    data: bytes | bytearray | memoryview | np.ndarray, shape: tuple[int, ...]
) -> np.ndarray:
    """Decode bytes written by :func:`encode_chunk` to a ``uint8`` array of ``shape``.

    Parameters
    ----------
    data : bytes-like
        One encoded chunk.
    shape : tuple of int
        The expected chunk shape, ``(S, Cb)`` (or ``(n,)``); checked against the header
        before anything is allocated.

    Returns
    -------
    np.ndarray
        ``uint8`` array of ``shape``.

    Raises
    ------
    ValueError
        If the bytes are truncated, corrupt or describe another shape, or claim more
        than :data:`~spikestore.format.MAX_CHUNK_BYTES` decoded or more than their
        Zstandard frames can hold (checked before the output is allocated).
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) == 1:
        exp_rows, exp_cols = 1, shape[0]
    elif len(shape) == 2:
        exp_rows, exp_cols = shape
    else:
        raise ValueError(f"spike chunks must be 1-D or 2-D, got shape {shape}")
    raw: Any = data.reshape(-1) if isinstance(data, np.ndarray) else data
    buf = memoryview(raw).cast("B")
    if len(buf) < _HEADER.size:
        raise ValueError(
            f"spike chunk: {len(buf)} bytes is shorter than the {_HEADER.size}-byte header"
        )
    magic, version, mode, rows, cols = _HEADER.unpack_from(buf)
    if magic != _MAGIC:
        raise ValueError(f"spike chunk: bad magic {magic!r}, expected {_MAGIC!r}")
    if version > FORMAT_VERSION or version == 0:
        raise ValueError(
            f"spike chunk: format version {version} is not supported (max {FORMAT_VERSION})"
        )
    if (rows, cols) != (exp_rows, exp_cols):
        raise ValueError(
            f"spike chunk: header shape ({rows}, {cols}) does not match the expected "
            f"chunk shape ({exp_rows}, {exp_cols})"
        )
    n0 = rows * cols
    if n0 > MAX_CHUNK_BYTES:
        raise ValueError(
            f"spike chunk: ({rows}, {cols}) is {n0} bytes decoded, more than the "
            f"{MAX_CHUNK_BYTES} a chunk of the format may hold"
        )
    rest = buf[_HEADER.size :]
    if mode == MODE_ZERO:
        if len(rest):
            raise ValueError(f"spike chunk: ZERO mode with {len(rest)} trailing bytes")
        return np.zeros(shape, np.uint8)
    if mode == MODE_RAW:
        if len(rest) != n0:
            raise ValueError(f"spike chunk: RAW payload has {len(rest)} bytes, expected {n0}")
        return np.frombuffer(rest, np.uint8).copy().reshape(shape)
    if mode == MODE_MOTION and version >= 2:
        return _decode_motion(rest, rows, cols).reshape(shape)
    if mode != MODE_TREE:
        raise ValueError(f"spike chunk: unknown mode {mode} in a version-{version} chunk")

    if len(rest) < _TREE_HEADER.size:
        raise ValueError("spike chunk: truncated TREE header")
    (depth,) = _TREE_HEADER.unpack_from(rest)
    if depth > _MAX_DEPTH:
        raise ValueError(f"spike chunk: tree depth {depth} exceeds {_MAX_DEPTH}")
    nstreams = depth + 1
    table_end = _TREE_HEADER.size + 4 * nstreams
    if len(rest) < table_end:
        raise ValueError("spike chunk: truncated stream-size table")
    stream_sizes = struct.unpack_from(f"<{nstreams}I", rest, _TREE_HEADER.size)
    if table_end + sum(stream_sizes) != len(rest):
        raise ValueError(
            f"spike chunk: streams need {table_end + sum(stream_sizes)} payload bytes, "
            f"got {len(rest)}"
        )
    level_sizes = _level_sizes(n0, depth)
    pos = table_end
    frames = []
    for size in stream_sizes:
        frames.append(rest[pos : pos + size])
        pos += size
    top = _decode_stream(frames[0], level_sizes[depth], f"level-{depth} bitmap")
    if depth == 0:
        return top.reshape(shape)
    # Walk down the tree keeping only the positions of the non-zero bytes: the set bits
    # of level i+1 are found by unpacking just its non-zero bytes, so no level but the
    # top one is ever materialised in full, and the chunk is written by one scatter.
    idx = np.flatnonzero(np.unpackbits(top, count=level_sizes[depth - 1]).view(np.bool_))
    vals = _decode_stream(frames[1], idx.size, f"level-{depth - 1} values")
    for i in range(depth - 2, -1, -1):
        if np.any(vals == 0):
            raise ValueError(f"spike chunk: level-{i + 1} values contain a zero byte")
        bits = np.flatnonzero(np.unpackbits(vals).view(np.bool_))
        idx = idx[bits >> 3] * 8 + (bits & 7)
        if idx.size and idx[-1] >= level_sizes[i]:
            raise ValueError(f"spike chunk: level-{i + 1} marks a byte beyond level {i}")
        vals = _decode_stream(frames[depth - i], idx.size, f"level-{i} values")
    out = np.zeros(level_sizes[0], np.uint8)
    out[idx] = vals
    b = out
    return b.reshape(shape)


def _parse_level(data: JSON) -> int:
    if isinstance(data, bool) or not isinstance(data, int):
        raise TypeError(f"level must be an int, got {type(data).__name__}")
    if not -131072 <= data <= 22:
        raise ValueError(f"level must be a zstd level <= 22, got {data}")
    return data


def _parse_frame(data: Any) -> tuple[int, int, int] | None:
    if data is None:
        return None
    if (
        not isinstance(data, (list, tuple))
        or len(data) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in data)
    ):
        raise ValueError(f"frame must be three positive ints [H, W, T], got {data!r}")
    return (int(data[0]), int(data[1]), int(data[2]))


@dataclass(frozen=True)
class SpikeCodec(ArrayBytesCodec):
    """Array-to-bytes codec for packed spike chunks (``uint8``), name ``spikestore.spikes``.

    Parameters
    ----------
    level : int
        Zstandard level of the compressed streams (default 1).
    frame : [H, W, T], optional
        The rows hold planes of ``H * W * T`` bits, time last; lets the encoder use
        the MOTION mode (see the module docstring). Decoding never needs it.

    Examples
    --------
    >>> import zarr
    >>> arr = zarr.create_array(zarr.storage.MemoryStore(), shape=(64, 100), chunks=(32, 100),
    ...                         dtype="uint8", serializer=SpikeCodec(), compressors=())
    """

    is_fixed_size = False

    level: int = DEFAULT_LEVEL
    frame: tuple[int, int, int] | None = None

    def __init__(
        self,
        *,
        level: int = DEFAULT_LEVEL,
        frame: Any = None,
        version: int = FORMAT_VERSION,
    ) -> None:
        if isinstance(version, bool) or version not in (1, FORMAT_VERSION):
            raise ValueError(
                f"{CODEC_NAME} configuration version {version} is not supported "
                f"(this build reads versions 1 and {FORMAT_VERSION})"
            )
        object.__setattr__(self, "level", _parse_level(level))
        object.__setattr__(self, "frame", _parse_frame(frame))

    @classmethod
    def from_dict(cls, data: dict[str, JSON]) -> Self:
        _, configuration = parse_named_configuration(data, CODEC_NAME, require_configuration=False)
        return cls(**(configuration or {}))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, JSON]:
        # Without a frame no chunk is MOTION: such arrays stay readable by version-1
        # decoders (spikestore < 0.2), so they say version 1.
        config: dict[str, JSON] = {"level": self.level, "version": 1}
        if self.frame is not None:
            config["version"] = FORMAT_VERSION
            config["frame"] = list(self.frame)
        return {"name": CODEC_NAME, "configuration": config}

    def validate(
        self,
        *,
        shape: tuple[int, ...],
        dtype: ZDType[TBaseDType, TBaseScalar],
        chunk_grid: ChunkGrid,
    ) -> None:
        if dtype.to_native_dtype() != np.dtype(np.uint8):
            raise ValueError(f"{CODEC_NAME} needs a uint8 array, got {dtype}")
        if len(shape) not in (1, 2):
            raise ValueError(f"{CODEC_NAME} needs a 1-D or 2-D array, got {len(shape)} dimensions")

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        arr = decode_chunk(chunk_bytes.as_numpy_array(), chunk_spec.shape)
        return chunk_spec.prototype.nd_buffer.from_numpy_array(arr)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        data = encode_chunk(chunk_array.as_numpy_array(), self.level, self.frame)
        return chunk_spec.prototype.buffer.from_bytes(data)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        return await asyncio.to_thread(self._encode_sync, chunk_array, chunk_spec)

    def compute_encoded_size(self, input_byte_length: int, _chunk_spec: ArraySpec) -> int:
        # Variable-size output, like zarr's compressors; sharding only asks this of the
        # codecs of its index, never of the inner chunk codec.
        raise NotImplementedError


register_codec(CODEC_NAME, SpikeCodec)
