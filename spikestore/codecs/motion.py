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
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "MOTIONS",
    "NCTX",
    "choose_motion",
    "contexts",
    "entropy_bits",
    "order_bits",
    "unorder_bits",
]

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
    t = x.shape[0]
    keys = ctx.reshape(t, -1).astype(np.intp)
    keys += (np.arange(t, dtype=np.intp) * NCTX)[:, None]
    key = keys.reshape(-1)
    n = np.bincount(key, minlength=t * NCTX).astype(np.float64)
    ones = np.bincount(key[x.reshape(-1).view(np.bool_)], minlength=t * NCTX)
    p = ones / np.maximum(n, 1)
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
