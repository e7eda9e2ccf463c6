"""Packed spike bits reordered time-last without unpacking them: a compiled kernel.

A multi-step record ``[..., T, N...]`` is packed by the caller in its own order (one
pass, :func:`~spikestore.codecs.rows.spike_pack`), so its bits come as ``T`` bit
planes per leading index, each plane all ``N`` neurons at one step. The stored order
is time-last: each neuron's ``T`` steps together. Per 8 neurons (one byte of each
plane), a 256-entry table spreads a plane's byte to the bits those 8 neurons' step
0 take in the time-last bytes; the other steps are the same bits shifted down by
the step (for ``T`` of 2, 4 or 8, where a neuron's steps never cross a byte), or-ed
together and stored as one little-endian word of ``T`` bytes. Time axes of a
multiple of 8 steps take 8 steps at a time, a byte per neuron each.

Reads and writes packed bytes only (about 12 us a ``[4, 100352]`` record, against
55 us to unpack it and pack it again with NumPy). The kernel is compiled with
numba (``nogil``) by ``spikestore.codecs.rows``' jit thread; nothing here imports
numba. Thread ownership: no state but the tables, built once and never changed.
"""

from __future__ import annotations

import math
import sys
import threading
from typing import Any

import numpy as np

__all__ = ["fits", "compile_kernel", "interleave"]

_TABLES: dict[int, np.ndarray] = {}
_TABLES_LOCK = threading.Lock()


def _table(steps: int) -> np.ndarray:
    """Byte ``v`` of a bit plane (neuron ``k`` at bit ``7 - k``) -> the bits of a
    little-endian word where neuron ``k``'s step 0 goes in the time-last order:
    bit ``7 - q % 8`` of byte ``q // 8``, ``q = k * steps``."""
    table = _TABLES.get(steps)
    if table is None:
        with _TABLES_LOCK:
            v = np.arange(256, dtype=np.uint64)
            table = np.zeros(256, np.uint64)
            for k in range(8):
                q = k * steps
                bit = (v >> np.uint64(7 - k)) & np.uint64(1)
                table |= bit << np.uint64(8 * (q // 8) + 7 - q % 8)
            _TABLES[steps] = table
    return table


def fits(shape: tuple[int, ...], permute: tuple[int, ...]) -> tuple[int, int, int] | None:
    """``(planes' leading count, steps, bytes a plane)`` where ``permute`` moves one
    axis (time) last and keeps the others in order, the planes fill whole bytes, and
    the steps are 2, 4, 8 or a multiple of 8; else None."""
    a = permute[-1]
    if permute[:-1] != tuple(i for i in range(len(permute)) if i != a):
        return None
    steps = shape[a]
    r = math.prod(shape[a + 1 :])
    if r % 8 or not (steps in (2, 4) or (steps and steps % 8 == 0)):
        return None
    if sys.byteorder != "little":  # pragma: no cover - the words are stored native
        return None
    return math.prod(shape[:a]), steps, r // 8


def _k_interleave(src: Any, p_: int, steps: int, rb: int, table: Any, out: Any) -> None:
    # src: [p_, steps, rb] bytes. Steps 2 and 4: out holds a word of `steps` bytes
    # per 8 neurons, [p_, rb]; steps 8g: bytes [p_, rb, 8 neurons, g].
    one, two, three, low = np.uint64(1), np.uint64(2), np.uint64(3), np.uint64(255)
    for p in range(p_):
        base = p * steps * rb
        o = p * rb
        if steps == 2:
            for b in range(rb):
                out[o + b] = table[src[base + b]] | (table[src[base + rb + b]] >> one)
        elif steps == 4:
            for b in range(rb):
                out[o + b] = (
                    table[src[base + b]]
                    | (table[src[base + rb + b]] >> one)
                    | (table[src[base + 2 * rb + b]] >> two)
                    | (table[src[base + 3 * rb + b]] >> three)
                )
        else:
            groups = steps // 8
            for b in range(rb):
                at = (o + b) * steps
                for g in range(groups):
                    s = base + 8 * g * rb + b
                    x = table[src[s]]
                    for t in range(1, 8):
                        x |= table[src[s + t * rb]] >> np.uint64(t)
                    for k in range(8):
                        out[at + k * groups + g] = np.uint8((x >> np.uint64(8 * k)) & low)


def compile_kernel(numba: Any) -> Any:
    """:func:`_k_interleave` compiled (``njit(nogil=True, cache=True)``) for each word
    it stores, before first use."""
    kernel = numba.njit(nogil=True, cache=True)(_k_interleave)
    src = np.zeros(8, np.uint8)
    for steps, word in ((2, np.uint16), (4, np.uint32), (8, np.uint8)):
        kernel(src, 1, steps, 1, _table(min(steps, 8)), np.zeros(8, word))
    return kernel


def interleave(kernel: Any, rows: np.ndarray, p_: int, steps: int, rb: int) -> np.ndarray:
    """``rows`` (bytes, C order: ``p_`` times ``steps`` planes of ``rb`` bytes)
    reordered time-last, as bytes of the same size."""
    src = rows.reshape(-1)
    if steps in (2, 4):
        out = np.empty(p_ * rb, np.uint16 if steps == 2 else np.uint32)
    else:
        out = np.empty(src.size, np.uint8)
    kernel(src, p_, steps, rb, _table(min(steps, 8)), out)
    return out.view(np.uint8)
