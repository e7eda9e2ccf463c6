"""Per-time spike counts of time-last packed rows (``summary._time_last_axis0``): the
same counts as unpacking the bits, for every time length and shape."""

from __future__ import annotations

import numpy as np
import pytest

from spikestore import summary
from spikestore.summary import summarize_spikes


def _time_last_rows(x: np.ndarray) -> tuple[tuple[int, ...], np.ndarray]:
    """Records ``x`` (``[m, T, ...]``) packed as the writer packs them time-last."""
    n = x.ndim - 1
    permute = (*range(1, n), 0)
    rows = [np.packbits(np.moveaxis(r, 0, -1).reshape(-1)) for r in x]
    return permute, np.stack(rows)


@pytest.mark.parametrize("path", ["popcount", "tables", "unpacked"])
@pytest.mark.parametrize("t", [1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 16, 24, 64])
@pytest.mark.parametrize("rest", [(1,), (3,), (5, 7), (2, 3, 5), (16, 28, 28)])
def test_time_last_counts_match_the_unpacked_bits(
    monkeypatch: pytest.MonkeyPatch, path: str, t: int, rest: tuple[int, ...]
) -> None:
    if path == "unpacked":  # the general path, which unpacks the bits
        monkeypatch.setattr(summary, "_TIME_LAST_MAX", 0)
    if path == "tables":  # NumPy < 2.0, without bitwise_count: byte tables
        # (_POPCOUNT, the byte table, was also a bool flag, so this path raised)
        monkeypatch.setattr(summary, "_BITWISE_COUNT", None)
    rng = np.random.default_rng(t * 1000 + sum(rest))
    m = 3
    x = (rng.random((m, t, *rest)) < 0.3).astype(np.uint8)
    permute, block = _time_last_rows(x)
    rows, axis0 = summarize_spikes((t, *rest), permute, block)
    want = x.reshape(m, t, -1).sum(axis=2)
    assert axis0 is not None
    np.testing.assert_array_equal(axis0, want.astype(np.float64))
    np.testing.assert_array_equal(rows[:, 1], x.reshape(m, -1).sum(axis=1))


def test_all_ones_and_all_zeros() -> None:
    for fill in (0, 1):
        x = np.full((2, 6, 5, 3), fill, np.uint8)
        permute, block = _time_last_rows(x)
        _, axis0 = summarize_spikes((6, 5, 3), permute, block)
        assert axis0 is not None
        np.testing.assert_array_equal(axis0, np.full((2, 6), 15.0 * fill))
