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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..format import DTYPES, RAW_ENCODING, SPIKE_ENCODING

__all__ = [
    "COMPRESSORS",
    "LEVELS",
    "DEFAULT_DENSE",
    "DEFAULT_SPIKES",
    "Encoded",
    "compressor_codecs",
    "checksum",
    "dtype_name",
    "torch_dtype",
    "spike_bits",
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
DEFAULT_DENSE = "blosc-zstd"

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
        flag, bits = spike_bits(t, permute)
        if bool(flag):
            return encode_packed(t.dtype, tuple(t.shape), pack_bits(bits).numpy(), permute)
    return encode_values(t, python_scalar=python_scalar)


def encode_packed(
    dtype: torch.dtype, shape: tuple[int, ...], packed: np.ndarray, permute: tuple[int, ...] | None
) -> Encoded:
    """A record already known to hold spikes, given as its packed bits (on the host)."""
    return Encoded(SPIKE_ENCODING, dtype_name(dtype), tuple(shape), packed, permute=permute)


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
