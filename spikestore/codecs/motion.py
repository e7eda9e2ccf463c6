"""Motion-compensated context coding of spike planes: the MOTION mode of ``spikestore.spikes``.

Spikes of a convolutional layer recorded over ``T`` time steps are correlated in time
and space: with moving input a neuron tends to fire when its neighbour on the side the
input comes from fired one time step before. This module codes such bits by *context*:
each bit is predicted from already-coded bits of the same plane at the two previous
time steps, taken along the plane's motion ``(dy, dx)``, one of five candidates chosen
by the encoder per plane. Bits are grouped by context and the groups are coded with
the TREE mode of :mod:`spikestore.codecs.spikes`, which is close to the entropy of each
group, so the chunk costs about the conditional entropy of a bit given its context.

The payload layout is documented in :mod:`spikestore.codecs.spikes` (mode 3); this
module holds the transform only. Every operation is a whole-array numpy operation: the
encoder works on all ``T`` frames at once, the decoder frame by frame (each frame's
contexts need the frames before it).

:func:`estimate_packed`, :func:`encode` and :func:`decode` are what the codec calls, on
planes in their stored order ``(Q, H, W, T)``. When numba is installed (the ``fast``
extra) they run loops compiled by numba (on first use, cached on disk) that give the
same bytes (and estimates) as the numpy code, without its transposes, per-frame sorts
and views; the estimate, which the encoder makes for every chunk, reads its sample of
planes straight from the packed chunk and holds each pixel's ``T`` bits as one word
(T <= 56), so that motions and contexts are found for all frames at once.
``USE_NUMBA = False``, or the environment variable ``SPIKESTORE_NUMBA=0``, keeps the numpy code.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import numpy as np

__all__ = [
    "MOTIONS",
    "NCTX",
    "USE_NUMBA",
    "accelerated",
    "choose_motion",
    "contexts",
    "decode",
    "encode",
    "entropy_bits",
    "estimate_bits",
    "estimate_packed",
    "numba_module",
    "numba_wanted",
    "order_bits",
    "unorder_bits",
]

#: Whether :func:`estimate_bits`, :func:`encode` and :func:`decode` use numba: None for
#: "when importable, unless ``SPIKESTORE_NUMBA=0``"; False for the numpy code.
USE_NUMBA: bool | None = None
_NUMBA: list[Any] = []  # [the compiled kernels, or None], filled on first use

# Candidate motions (dy, dx) per plane, by index: still, right, down, left, up.
MOTIONS = ((0, 0), (0, 1), (1, 0), (0, -1), (-1, 0))
NCTX = 256  # 8 context bits
_PAD = 2


def _perpendicular(dy: int, dx: int) -> tuple[int, int]:
    return (dx, dy) if (dy, dx) != (0, 0) else (1, 0)


def _padded(x: np.ndarray) -> np.ndarray:
    """``(T, Q, H, W)`` bits -> zero-padded ``(T + 2, Q, H + 4, W + 4)``; frame t at t + 2."""
    t, q, h, w = x.shape
    xp = np.zeros((t + 2, q, h + 2 * _PAD, w + 2 * _PAD), np.uint8)
    xp[2:, :, _PAD : _PAD + h, _PAD : _PAD + w] = x
    return xp


def _features(xp: np.ndarray, t0: int, t1: int, planes: slice, motion: int) -> np.ndarray:
    """Context (uint8) of frames ``t0 <= t < t1`` of the ``planes`` of ``xp`` (a slice:
    planes are kept grouped by motion, so every term is a view), all with one motion."""
    dy, dx = MOTIONS[motion]
    ey, ex = _perpendicular(dy, dx)
    h = xp.shape[2] - 2 * _PAD
    w = xp.shape[3] - 2 * _PAD

    def f(k: int, oy: int, ox: int) -> np.ndarray:
        # bit of frame t - k at (y - oy, x - ox); zero before frame 0 and off the plane
        ys = slice(_PAD - oy, _PAD - oy + h)
        return xp[t0 + 2 - k : t1 + 2 - k, planes, ys, _PAD - ox : _PAD - ox + w]

    terms = (
        f(1, dy, dx),
        f(1, 0, 0),
        f(2, dy, dx),
        f(2, 0, 0),
        f(2, 2 * dy, 2 * dx),
        f(1, dy + ey, dx + ex),
        f(1, dy - ey, dx - ex),
        f(1, -dy, -dx),
    )
    ctx = terms[0].copy()
    for i, term in enumerate(terms[1:], 1):
        ctx |= term << np.uint8(i)
    return ctx


def _grouped(motion: np.ndarray) -> tuple[np.ndarray | None, list[tuple[int, slice]]]:
    """Plane order that groups planes by motion (None if they already are), and each
    motion's slice of that order."""
    perm = np.argsort(motion, kind="stable")
    counts = np.bincount(motion, minlength=len(MOTIONS))
    ends = np.cumsum(counts)
    groups = [
        (m, slice(int(e - c), int(e)))
        for m, (c, e) in enumerate(zip(counts, ends, strict=True))
        if c
    ]
    same = bool(np.array_equal(perm, np.arange(perm.size)))
    return (None if same else perm), groups


def choose_motion(x: np.ndarray) -> np.ndarray:
    """Per plane of ``x`` (``(T, Q, H, W)`` bits), the index in :data:`MOTIONS` whose
    shift of each frame best predicts the next one (fewest mismatches)."""
    t, q, h, w = x.shape
    xp = np.zeros((t, q, h + 2, w + 2), np.uint8)
    xp[:, :, 1:-1, 1:-1] = x
    errs = np.empty((len(MOTIONS), q), np.int64)
    nxt = x[1:]
    for i, (dy, dx) in enumerate(MOTIONS):
        prev = xp[:-1, :, 1 - dy : 1 - dy + h, 1 - dx : 1 - dx + w]
        errs[i] = np.count_nonzero(prev != nxt, axis=(0, 2, 3)) if t > 1 else 0
    errs[0] -= errs[0] // 64  # a tie-break towards "still"
    return errs.argmin(axis=0).astype(np.uint8)


def contexts(x: np.ndarray, motion: np.ndarray) -> np.ndarray:
    """Context of every bit of ``x`` (``(T, Q, H, W)``), all frames at once (encoder)."""
    perm, groups = _grouped(motion)
    xp = _padded(x if perm is None else x[:, perm])
    ctx = np.empty(x.shape, np.uint8)
    for m, planes in groups:
        ctx[:, planes] = _features(xp, 0, x.shape[0], planes, m)
    if perm is not None:
        ctx[:, perm] = ctx.copy()
    return ctx


def _rank_flip(ctx: np.ndarray, bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = np.bincount(ctx, minlength=NCTX)
    ones = np.bincount(ctx[bits.view(np.bool_)], minlength=NCTX)
    return _rank_flip_counts(n, ones)


def _rank_flip_counts(n: np.ndarray, ones: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``rank`` and ``flip`` from each context's count of bits ``n`` and of ones."""
    flip = 2 * ones > n
    share = np.where(flip, n - ones, ones) / np.maximum(n, 1)
    rank = np.empty(NCTX, np.uint8)
    rank[np.argsort(share, kind="stable")] = np.arange(NCTX, dtype=np.uint8)
    return rank, flip.astype(np.uint8)


def order_bits(
    x: np.ndarray, motion: np.ndarray, ctx: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group the bits of each frame of ``x`` by context: returns ``(stream, rank, flip)``.

    ``stream`` holds the bits of frame 0, then frame 1, ...; within a frame, in the
    order of their context's ``rank`` and, within a context, in C order. The bits of
    contexts with ``flip`` set are inverted. Contexts are ranked by their share of ones
    (after flipping) over the chunk, so each frame runs from sparse groups to dense.
    """
    if ctx is None:
        ctx = contexts(x, motion)
    t = x.shape[0]
    ctx = ctx.reshape(t, -1)
    bits = x.reshape(t, -1)
    rank, flip = _rank_flip(ctx.reshape(-1), bits.reshape(-1))
    stream = np.empty(bits.size, np.uint8)
    frame = bits.shape[1]
    for i in range(t):
        # one radix sort of uint8 keys per frame (a 16-bit key over all frames is slower)
        order = np.argsort(rank[ctx[i]], kind="stable")
        stream[i * frame : (i + 1) * frame] = bits[i, order] ^ flip[ctx[i, order]]
    return stream, rank, flip


def entropy_bits(ctx: np.ndarray, x: np.ndarray) -> float:
    """Empirical entropy of the bits ``x`` (``(T, ...)``) given their context and frame,
    in bits: about what context coding costs (the TREE coding of the stream adapts to
    each frame's groups), so the encoder can skip it when it cannot win."""
    return _entropy_counts(*_counts(ctx, x))


def _counts(ctx: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bits and ones of ``x`` (``(T, ...)``) per frame and context, ``(T * 256,)`` each."""
    t = x.shape[0]
    keys = ctx.reshape(t, -1).astype(np.intp)
    keys += (np.arange(t, dtype=np.intp) * NCTX)[:, None]
    key = keys.reshape(-1)
    n = np.bincount(key, minlength=t * NCTX)
    ones = np.bincount(key[x.reshape(-1).view(np.bool_)], minlength=t * NCTX)
    return n, ones


def _entropy_counts(n: np.ndarray, ones: np.ndarray) -> float:
    """:func:`entropy_bits` from the counts of bits and of ones per (frame, context)."""
    n = n.reshape(-1).astype(np.float64)
    p = ones.reshape(-1) / np.maximum(n, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    return float(np.nansum(n * h))


def unorder_bits(
    stream: np.ndarray,
    shape: tuple[int, int, int, int],
    motion: np.ndarray,
    rank: np.ndarray,
    flip: np.ndarray,
) -> np.ndarray:
    """Inverse of :func:`order_bits`: rebuild the ``(T, Q, H, W)`` bits frame by frame."""
    t, q, h, w = shape
    frame = q * h * w
    # xp holds the decoded frames with planes grouped by motion (see contexts)
    perm, groups = _grouped(motion)
    inverse = None if perm is None else np.argsort(perm)
    xp = np.zeros((t + 2, q, h + 2 * _PAD, w + 2 * _PAD), np.uint8)
    grouped = np.empty((q, h, w), np.uint8)
    for i in range(t):
        for m, planes in groups:
            grouped[planes] = _features(xp, i, i + 1, planes, m)[0]
        ctx = grouped if inverse is None else grouped[inverse]
        flat = ctx.reshape(-1)
        order = np.argsort(rank[flat], kind="stable")
        out = np.empty(frame, np.uint8)
        out[order] = stream[i * frame : (i + 1) * frame] ^ flip[flat[order]]
        decoded = out.reshape(q, h, w)
        xp[i + 2, :, _PAD : _PAD + h, _PAD : _PAD + w] = decoded if perm is None else decoded[perm]
    x = xp[2:, :, _PAD : _PAD + h, _PAD : _PAD + w]
    return np.ascontiguousarray(x if inverse is None else x[:, inverse])


# ------------------------------------------------- kernels, compiled by numba
# Plain Python over padded planes ``xp`` of shape ``(Q, H + 4, W + 4, T + 2)``: bit
# ``(q, y, x, t)`` at ``xp[q, y + 2, x + 2, t + 2]``, zeros around, so that every
# neighbour in space and every frame before 0 reads as 0 without a test. :func:`_numba`
# compiles them; each is self-contained (numba compiles what a kernel calls, and these
# names are plain functions until then). The contexts are those of :func:`_features`,
# the order that of ``np.argsort(..., kind="stable")`` (a counting sort per frame).
_DY = np.array([m[0] for m in MOTIONS], np.int64)
_DX = np.array([m[1] for m in MOTIONS], np.int64)
_WORD_MAX_T = 56  # _k_estimate's words: T bits (and 8 more while reading) in an int64
_REV = np.array([int(f"{b:08b}"[::-1], 2) for b in range(256)], np.uint8)
_SPREAD = np.array([sum(((b >> i) & 1) << (8 * i) for i in range(8)) for b in range(256)], np.int64)


def _k_choose(xp: np.ndarray, dys: np.ndarray, dxs: np.ndarray) -> np.ndarray:
    nq, h, w, t = xp.shape[0], xp.shape[1] - 4, xp.shape[2] - 4, xp.shape[3] - 2
    motion = np.zeros(nq, np.uint8)
    for q in range(nq):
        best = np.int64(0)
        best_m = 0
        for m in range(dys.size):
            dy, dx = dys[m], dxs[m]
            err = np.int64(0)
            for y in range(2, h + 2):
                for x in range(2, w + 2):
                    for i in range(2, t + 1):  # frame i - 2 predicts frame i - 1
                        err += xp[q, y - dy, x - dx, i] != xp[q, y, x, i + 1]
            if m == 0:
                err -= err // 64  # a tie-break towards "still"
            if m == 0 or err < best:
                best, best_m = err, m
        motion[q] = best_m
    return motion


def _k_contexts(
    xp: np.ndarray, motion: np.ndarray, dys: np.ndarray, dxs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    nq, h, w, t = xp.shape[0], xp.shape[1] - 4, xp.shape[2] - 4, xp.shape[3] - 2
    ctx = np.empty((nq, h, w, t), np.uint8)
    n = np.zeros((t, 256), np.int64)
    ones = np.zeros((t, 256), np.int64)
    for q in range(nq):
        dy, dx = dys[motion[q]], dxs[motion[q]]
        ey, ex = (1, 0) if dy == 0 and dx == 0 else (dx, dy)
        for y in range(2, h + 2):
            for x in range(2, w + 2):
                for i in range(2, t + 2):
                    c = (
                        xp[q, y - dy, x - dx, i - 1]
                        | (xp[q, y, x, i - 1] << 1)
                        | (xp[q, y - dy, x - dx, i - 2] << 2)
                        | (xp[q, y, x, i - 2] << 3)
                        | (xp[q, y - 2 * dy, x - 2 * dx, i - 2] << 4)
                        | (xp[q, y - dy - ey, x - dx - ex, i - 1] << 5)
                        | (xp[q, y - dy + ey, x - dx + ex, i - 1] << 6)
                        | (xp[q, y + dy, x + dx, i - 1] << 7)
                    )
                    ctx[q, y - 2, x - 2, i - 2] = c
                    n[i - 2, c] += 1
                    ones[i - 2, c] += xp[q, y, x, i]
    return ctx, n, ones


def _k_words(
    packed: np.ndarray, starts: np.ndarray, xw: np.ndarray, t: int, rev: np.ndarray
) -> None:
    # Each pixel's T bits as a word (bit i: frame i), read from the planes of
    # ``H * W * T`` bits at bits ``starts`` of ``packed`` (np.packbits, big), into ``xw``
    # (``(Q, H + 4, W + 4)``, zeros around; T <= 56, so that the buffer stays positive).
    # ``rev[b]`` is byte b bit-reversed.
    nq, h, w = xw.shape[0], xw.shape[1] - 4, xw.shape[2] - 4
    low = (np.int64(1) << t) - 1
    for q in range(nq):
        pos = starts[q] >> 3
        acc = np.int64(rev[packed[pos]]) >> (starts[q] & 7)  # bits in reading order
        have = 8 - (starts[q] & 7)
        for y in range(2, h + 2):
            for x in range(2, w + 2):
                while have < t:
                    pos += 1
                    acc |= np.int64(rev[packed[pos]]) << have
                    have += 8
                xw[q, y, x] = acc & low
                acc >>= t
                have -= t


def _k_estimate(
    xw: np.ndarray, t: int, dys: np.ndarray, dxs: np.ndarray, spread: np.ndarray
) -> np.ndarray:
    # :func:`_k_choose` then :func:`_k_contexts`' counts, bit-parallel over time, on the
    # words of :func:`_k_words` (T <= 56). ``spread[b]`` has bit i of b at bit 8 * i.
    # Returns counts ``(T, 512)``: ``[i, 2 * c + b]`` the bits of frame i in context c
    # that are b.
    nq, h, w = xw.shape[0], xw.shape[1] - 4, xw.shape[2] - 4
    low = (np.int64(1) << t) - 1
    cnt = np.zeros((t, 512), np.int64)
    later = low - 1  # frames 1 .. t - 1, each predicted from the one before
    m1 = np.int64(0x5555555555555555)
    m2 = np.int64(0x3333333333333333)
    m4 = np.int64(0x0F0F0F0F0F0F0F0F)
    h01 = np.int64(0x0101010101010101)
    still = np.int64(0)
    for q in range(nq):
        best = np.int64(0)
        best_m = 0
        for m in range(dys.size):
            dy, dx = dys[m], dxs[m]
            err = np.int64(0)
            for y in range(2, h + 2):
                for x in range(2, w + 2):
                    v = ((np.int64(xw[q, y - dy, x - dx]) << 1) ^ np.int64(xw[q, y, x])) & later
                    v = v - ((v >> 1) & m1)  # popcount
                    v = (v & m2) + ((v >> 2) & m2)
                    v = (v + (v >> 4)) & m4
                    err += (v * h01) >> 56
            if m == 0:
                err -= err // 64  # a tie-break towards "still"
            if m == 0 or err < best:
                best, best_m = err, m
        dy, dx = dys[best_m], dxs[best_m]
        ey, ex = (1, 0) if dy == 0 and dx == 0 else (dx, dy)
        for y in range(2, h + 2):
            for x in range(2, w + 2):
                v = np.int64(xw[q, y, x])
                b0 = np.int64(xw[q, y - dy, x - dx])
                b4 = np.int64(xw[q, y - 2 * dy, x - 2 * dx])
                b5 = np.int64(xw[q, y - dy - ey, x - dx - ex])
                b6 = np.int64(xw[q, y - dy + ey, x - dx + ex])
                b7 = np.int64(xw[q, y + dy, x + dx])
                if (v | b0 | b4 | b5 | b6 | b7) == 0:
                    still += 1  # context 0 and a 0 bit in every frame
                    continue
                # bit i of a_k is context bit k of frame i (see _k_contexts); eight
                # frames at a time, byte j of ``c`` is then the context of frame i + j
                a0, a1, a2, a3 = b0 << 1, v << 1, b0 << 2, v << 2
                a4, a5, a6, a7 = b4 << 2, b5 << 1, b6 << 1, b7 << 1
                for i in range(0, t, 8):
                    c = (
                        spread[(a0 >> i) & 255]
                        | (spread[(a1 >> i) & 255] << 1)
                        | (spread[(a2 >> i) & 255] << 2)
                        | (spread[(a3 >> i) & 255] << 3)
                        | (spread[(a4 >> i) & 255] << 4)
                        | (spread[(a5 >> i) & 255] << 5)
                        | (spread[(a6 >> i) & 255] << 6)
                        | (spread[(a7 >> i) & 255] << 7)
                    )
                    b = v >> i
                    for j in range(min(8, t - i)):
                        cnt[i + j, 2 * ((c >> (8 * j)) & 255) + ((b >> j) & 1)] += 1
    for i in range(t):
        cnt[i, 0] += still
    return cnt


def _k_estimate8(
    xs: np.ndarray,
    t: int,
    dys: np.ndarray,
    dxs: np.ndarray,
    lanes: np.ndarray,
    nvalid: np.ndarray,
) -> np.ndarray:
    # :func:`_k_estimate` for T <= 8, on eight pixels at once: ``xs[o + 2, q, y + 2, j]``
    # holds, in byte l, the word of pixel (y, 8 * j + l - o) (0 off the plane, and two
    # rows of zeros above and below); ``lanes[j]`` has bytes 0xFF where 8 * j + l is on
    # the plane, ``nvalid[j]`` of them (the first ones).
    nq, h, nj = xs.shape[1], xs.shape[2] - 4, xs.shape[3]
    lo = np.int64(0x0101010101010101)
    low = (np.int64(1) << t) - 1
    m1s = lo * (low - 1)  # bits 1 .. t - 1 of every byte: a byte shifted left by 1
    m2s = lo * (low - 3)  # bits 2 .. t - 1: by 2 (what crosses into the next byte goes)
    m1 = np.int64(0x5555555555555555)
    m2 = np.int64(0x3333333333333333)
    m4 = np.int64(0x0F0F0F0F0F0F0F0F)
    h01 = np.int64(0x0101010101010101)
    cnt = np.zeros((t, 512), np.int64)
    still = np.int64(0)
    for q in range(nq):
        best = np.int64(0)
        best_m = 0
        for m in range(dys.size):
            dy, dx = dys[m], dxs[m]
            err = np.int64(0)
            for y in range(2, h + 2):
                for j in range(nj):
                    v = ((xs[dx + 2, q, y - dy, j] << 1) ^ xs[2, q, y, j]) & m1s & lanes[j]
                    v = v - ((v >> 1) & m1)  # popcount
                    v = (v & m2) + ((v >> 2) & m2)
                    v = (v + (v >> 4)) & m4
                    err += (v * h01) >> 56
            if m == 0:
                err -= err // 64  # a tie-break towards "still"
            if m == 0 or err < best:
                best, best_m = err, m
        dy, dx = dys[best_m], dxs[best_m]
        ey, ex = (1, 0) if dy == 0 and dx == 0 else (dx, dy)
        for y in range(2, h + 2):
            for j in range(nj):
                v = xs[2, q, y, j]
                b0 = xs[dx + 2, q, y - dy, j]
                b4 = xs[2 * dx + 2, q, y - 2 * dy, j]
                b5 = xs[dx + ex + 2, q, y - dy - ey, j]
                b6 = xs[dx - ex + 2, q, y - dy + ey, j]
                b7 = xs[2 - dx, q, y + dy, j]
                a0 = (b0 << 1) & m1s
                a1 = (v << 1) & m1s
                a2 = (b0 << 2) & m2s
                a3 = (v << 2) & m2s
                a4 = (b4 << 2) & m2s
                a5 = (b5 << 1) & m1s
                a6 = (b6 << 1) & m1s
                a7 = (b7 << 1) & m1s
                if (a0 | a1 | a4 | a5 | a6 | a7 | v) & lanes[j] == 0:
                    still += nvalid[j]  # context 0 and a 0 bit in every frame
                    continue
                nl = nvalid[j]
                for i in range(t):  # byte l of c: the context of pixel 8 * j + l, frame i
                    c = (
                        ((a0 >> i) & lo)
                        | (((a1 >> i) & lo) << 1)
                        | (((a2 >> i) & lo) << 2)
                        | (((a3 >> i) & lo) << 3)
                        | (((a4 >> i) & lo) << 4)
                        | (((a5 >> i) & lo) << 5)
                        | (((a6 >> i) & lo) << 6)
                        | (((a7 >> i) & lo) << 7)
                    )
                    b = v >> i
                    for k in range(0, 8 * nl, 8):
                        cnt[i, 2 * ((c >> k) & 255) + ((b >> k) & 1)] += 1
    for i in range(t):
        cnt[i, 0] += still
    return cnt


def _k_order(xp: np.ndarray, ctx: np.ndarray, rank: np.ndarray, flip: np.ndarray) -> np.ndarray:
    nq, h, w, t = ctx.shape
    frame = nq * h * w
    stream = np.empty(t * frame, np.uint8)
    start = np.zeros(256, np.int64)
    for i in range(t):
        start[:] = 0
        for q in range(nq):
            for y in range(h):
                for x in range(w):
                    start[rank[ctx[q, y, x, i]]] += 1
        pos = i * frame
        for r in range(256):
            count = start[r]
            start[r] = pos
            pos += count
        for q in range(nq):
            for y in range(h):
                for x in range(w):
                    c = ctx[q, y, x, i]
                    r = rank[c]
                    stream[start[r]] = xp[q, y + 2, x + 2, i + 2] ^ flip[c]
                    start[r] += 1
    return stream


def _k_unorder(
    stream: np.ndarray,
    xp: np.ndarray,
    motion: np.ndarray,
    rank: np.ndarray,
    flip: np.ndarray,
    dys: np.ndarray,
    dxs: np.ndarray,
) -> None:
    nq, h, w, t = xp.shape[0], xp.shape[1] - 4, xp.shape[2] - 4, xp.shape[3] - 2
    frame = nq * h * w
    ctx = np.empty((nq, h, w), np.uint8)
    start = np.zeros(256, np.int64)
    for i in range(2, t + 2):
        start[:] = 0
        for q in range(nq):
            dy, dx = dys[motion[q]], dxs[motion[q]]
            ey, ex = (1, 0) if dy == 0 and dx == 0 else (dx, dy)
            for y in range(2, h + 2):
                for x in range(2, w + 2):
                    c = (
                        xp[q, y - dy, x - dx, i - 1]
                        | (xp[q, y, x, i - 1] << 1)
                        | (xp[q, y - dy, x - dx, i - 2] << 2)
                        | (xp[q, y, x, i - 2] << 3)
                        | (xp[q, y - 2 * dy, x - 2 * dx, i - 2] << 4)
                        | (xp[q, y - dy - ey, x - dx - ex, i - 1] << 5)
                        | (xp[q, y - dy + ey, x - dx + ex, i - 1] << 6)
                        | (xp[q, y + dy, x + dx, i - 1] << 7)
                    )
                    ctx[q, y - 2, x - 2] = c
                    start[rank[c]] += 1
        pos = (i - 2) * frame
        for r in range(256):
            count = start[r]
            start[r] = pos
            pos += count
        for q in range(nq):
            for y in range(h):
                for x in range(w):
                    c = ctx[q, y, x]
                    r = rank[c]
                    xp[q, y + 2, x + 2, i] = stream[start[r]] ^ flip[c]
                    start[r] += 1


def _eight_wide(xw: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``xs``, ``lanes`` and ``nvalid`` of :func:`_k_estimate8` from one-byte words ``xw``
    (``(Q, H + 4, W + 4)``, pixel (y, x) at ``[y + 2, x + 2]``): five copies shifted by
    -2 .. 2 pixels, 8 pixels an int64, and which bytes are pixels."""
    q = xw.shape[0]
    nj = -(-w // 8)
    xs = np.zeros((5, q, h + 4, nj * 8), np.uint8)
    for o in range(-2, 3):
        lo = max(0, o)  # byte x of the copy o + 2 is pixel x - o, for 0 <= x - o < w
        hi = max(lo, min(nj * 8, w + o))
        xs[o + 2, :, :, lo:hi] = xw[:, :, lo - o + _PAD : hi - o + _PAD]
    lanes = np.zeros(nj * 8, np.uint8)
    lanes[:w] = 0xFF
    nvalid = np.minimum(8, w - 8 * np.arange(nj, dtype=np.int64))
    return xs.view(np.int64), lanes.view(np.int64), nvalid


class _Kernels:
    """The kernels compiled (``njit(nogil=True, cache=True)``), with numpy glue."""

    def __init__(self, numba: Any) -> None:
        jit = numba.njit(nogil=True, cache=True)
        self._choose = jit(_k_choose)
        self._contexts = jit(_k_contexts)
        self._order = jit(_k_order)
        self._unorder = jit(_k_unorder)
        self._words = jit(_k_words)
        self._estimate = jit(_k_estimate)
        self._estimate8 = jit(_k_estimate8)

    @staticmethod
    def padded(xq: np.ndarray) -> np.ndarray:
        q, h, w, t = xq.shape
        xp = np.zeros((q, h + 2 * _PAD, w + 2 * _PAD, t + 2), np.uint8)
        xp[:, _PAD : _PAD + h, _PAD : _PAD + w, 2:] = xq
        return xp

    def estimate_counts(
        self, packed: np.ndarray, starts: np.ndarray, frame: tuple[int, int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Counts of bits and of ones per (frame, context), as :func:`context_counts`
        gives them with the motion :func:`choose_motion` picks, of the planes at bits
        ``starts`` of ``packed``; T at most :data:`_WORD_MAX_T`."""
        h, w, t = frame
        nb = 1 << max(0, (t - 1) // 8).bit_length()  # bytes a word
        xw = np.zeros((starts.size, h + 2 * _PAD, w + 2 * _PAD), f"<u{nb}")
        self._words(packed, starts.astype(np.int64), xw, t, _REV)
        if t <= 8:
            xs, lanes, nvalid = _eight_wide(xw, h, w)
            cnt = self._estimate8(xs, t, _DY, _DX, lanes, nvalid)
        else:
            cnt = self._estimate(xw, t, _DY, _DX, _SPREAD)
        return cnt[:, 0::2] + cnt[:, 1::2], cnt[:, 1::2]

    def choose_motion(self, xp: np.ndarray) -> np.ndarray:
        return self._choose(xp, _DY, _DX)

    def context_counts(
        self, xp: np.ndarray, motion: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._contexts(xp, motion, _DY, _DX)

    def order(
        self, xp: np.ndarray, ctx: np.ndarray, rank: np.ndarray, flip: np.ndarray
    ) -> np.ndarray:
        return self._order(xp, ctx, rank, flip)

    def unorder(
        self,
        stream: np.ndarray,
        shape: tuple[int, int, int, int],
        motion: np.ndarray,
        rank: np.ndarray,
        flip: np.ndarray,
    ) -> np.ndarray:
        q, h, w, t = shape
        xp = np.zeros((q, h + 2 * _PAD, w + 2 * _PAD, t + 2), np.uint8)
        self._unorder(stream, xp, motion, rank, flip, _DY, _DX)
        return xp[:, _PAD : _PAD + h, _PAD : _PAD + w, 2:]


# ------------------------------------------------------- the codec's entry points
_INSTALLED: list[bool] = []  # [whether numba is installed], looked up once


def numba_wanted() -> bool:
    """Whether compiled kernels are wanted and numba is installed, without importing it
    (:data:`USE_NUMBA`, ``SPIKESTORE_NUMBA``)."""
    use = USE_NUMBA
    if use is None:
        use = os.environ.get("SPIKESTORE_NUMBA", "1") != "0"
    if not use:
        return False
    if not _INSTALLED:  # a search of sys.path (30 us) where it is missing: once
        _INSTALLED.append(importlib.util.find_spec("numba") is not None)
    return _INSTALLED[0]


def numba_module() -> Any:
    """The ``numba`` module where compiled kernels are wanted, or None (numba missing,
    or turned off by :data:`USE_NUMBA` or ``SPIKESTORE_NUMBA=0``)."""
    if not numba_wanted():
        return None
    try:
        import numba
    except ImportError:
        return None
    return numba


def _numba() -> _Kernels | None:
    """The compiled kernels, or None (numba missing, or turned off)."""
    nb = numba_module()
    if nb is None:
        return None
    if not _NUMBA:
        _NUMBA.append(_Kernels(nb))
    return _NUMBA[0]


def accelerated() -> bool:
    """Whether :func:`estimate_bits`, :func:`encode` and :func:`decode` run compiled."""
    return _numba() is not None


def estimate_bits(xq: np.ndarray) -> float:
    """:func:`entropy_bits` of planes ``xq`` (``(Q, H, W, T)`` bits) coded with the
    motion :func:`choose_motion` picks for each."""
    nb = _numba()
    if nb is not None:
        q, h, w, t = xq.shape
        if t <= _WORD_MAX_T:
            starts = np.arange(q, dtype=np.int64) * (h * w * t)
            return _entropy_counts(*nb.estimate_counts(np.packbits(xq), starts, (h, w, t)))
        xp = nb.padded(xq)
        _, n, ones = nb.context_counts(xp, nb.choose_motion(xp))
        return _entropy_counts(n, ones)
    x = np.ascontiguousarray(xq.transpose(3, 0, 1, 2))
    return entropy_bits(contexts(x, choose_motion(x)), x)


def estimate_packed(
    packed: np.ndarray, starts: np.ndarray, frame: tuple[int, int, int], unbiased: bool = False
) -> float:
    """:func:`estimate_bits` of the planes of ``frame`` (``(H, W, T)``) bits that start at
    bits ``starts`` of ``packed`` (``uint8``, ``np.packbits`` order), read from the
    packed bytes (only these planes are unpacked, and only without numba).

    ``unbiased`` adds the Miller-Madow correction, ``1 / (2 ln 2)`` bits for each
    (frame, context) that holds both zeros and ones: the empirical entropy is about
    that much below the entropy the sample is drawn from, so that estimates on
    samples of different sizes compare.
    """
    h, w, t = frame
    nb = _numba()
    if nb is not None and t <= _WORD_MAX_T:
        n, ones = nb.estimate_counts(packed, starts, frame)
    else:
        plane = h * w * t
        if plane % 8 == 0 and not np.any(starts % 8):
            rows = packed[(starts // 8)[:, None] + np.arange(plane // 8)]
            bits = np.unpackbits(rows, axis=1)
        else:
            bits = np.unpackbits(packed)[starts[:, None] + np.arange(plane)]
        xq = bits.reshape(-1, h, w, t)
        if nb is not None:
            xp = nb.padded(xq)
            _, n, ones = nb.context_counts(xp, nb.choose_motion(xp))
        else:
            x = np.ascontiguousarray(xq.transpose(3, 0, 1, 2))
            n, ones = _counts(contexts(x, choose_motion(x)), x)
    bits_ = _entropy_counts(n, ones)
    if unbiased:
        bits_ += np.count_nonzero((ones > 0) & (ones < n)) / (2 * np.log(2))
    return bits_


def encode(xq: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MOTION transform of planes ``xq`` (``(Q, H, W, T)`` bits): ``(motion, stream,
    rank, flip)`` as :func:`choose_motion` and :func:`order_bits` give them."""
    nb = _numba()
    if nb is not None:
        xp = nb.padded(xq)
        motion = nb.choose_motion(xp)
        ctx, n, ones = nb.context_counts(xp, motion)
        rank, flip = _rank_flip_counts(n.sum(axis=0), ones.sum(axis=0))
        return motion, nb.order(xp, ctx, rank, flip), rank, flip
    x = np.ascontiguousarray(xq.transpose(3, 0, 1, 2))
    motion = choose_motion(x)
    stream, rank, flip = order_bits(x, motion, contexts(x, motion))
    return motion, stream, rank, flip


def decode(
    stream: np.ndarray,
    shape: tuple[int, int, int, int],
    motion: np.ndarray,
    rank: np.ndarray,
    flip: np.ndarray,
) -> np.ndarray:
    """Inverse of :func:`encode`: the ``(Q, H, W, T)`` bits (``shape``) of the planes."""
    q, h, w, t = shape
    nb = _numba()
    if nb is not None:
        return nb.unorder(stream, shape, motion, rank, flip)
    return unorder_bits(stream, (t, q, h, w), motion, rank, flip).transpose(1, 2, 3, 0)
