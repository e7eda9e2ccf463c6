"""The shard file's end (``spikestore._shard``): the index as a reader of a few chunks
parses it (``index_spans``) must agree with ``chunk_spans`` on every index, and refuse
what it refuses with the same error."""

from __future__ import annotations

import google_crc32c
import numpy as np
import pytest

from spikestore._shard import ABSENT, chunk_spans, index_spans, parse_index


def _index(entries: np.ndarray) -> bytes:
    raw = np.ascontiguousarray(entries, "<u8").tobytes()
    return raw + google_crc32c.value(raw).to_bytes(4, "little")


def _both(data: bytes, grid: tuple[int, ...], end: int) -> tuple[object, object]:
    def run(f):
        try:
            return f()
        except ValueError as exc:
            return f"ValueError: {exc}"

    want = run(
        lambda: [
            tuple(s) for s in chunk_spans(parse_index(data, grid), end).reshape(-1, 2).tolist()
        ]
    )
    got = run(lambda: index_spans(data, grid, end))
    return want, got


def test_index_spans_agree_with_chunk_spans_on_random_indexes():
    rng = np.random.default_rng(0)
    grid = (2, 3, 2)
    n = 12
    for _ in range(400):
        end = int(rng.integers(0, 5000))
        entries = rng.integers(0, 6000, (n, 2)).astype(np.uint64)
        for i in np.flatnonzero(rng.random(n) < 0.2):
            entries[i] = ABSENT
        if rng.random() < 0.2:  # one half absent: out of bounds
            entries[int(rng.integers(n)), 0] = np.uint64(ABSENT)
        data = b"junk" + _index(entries)
        want, got = _both(data, grid, end)
        assert got == want


def test_index_spans_refuse_a_damaged_or_short_index_as_parse_index_does():
    grid = (2, 2)
    entries = np.array([[0, 8], [8, 8], [16, 8], [ABSENT, ABSENT]], np.uint64)
    data = bytearray(_index(entries))
    assert index_spans(bytes(data), grid, 24) == [(0, 8), (8, 8), (16, 8), (-1, -1)]
    data[3] ^= 1
    with pytest.raises(ValueError, match="CRC-32C does not match"):
        index_spans(bytes(data), grid, 24)
    assert _both(bytes(data), grid, 24)[0] == _both(bytes(data), grid, 24)[1]
    with pytest.raises(ValueError, match="cannot hold its 68-byte index"):
        index_spans(bytes(data[:20]), grid, 24)
