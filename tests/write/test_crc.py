"""``spikestore._crc``: CRC-32C of large buffers with the GIL released."""

from __future__ import annotations

import threading
import time

import google_crc32c
import numpy as np
import pytest

from spikestore import _crc


@pytest.mark.parametrize("n", [0, 1, 7, _crc.GIL_FREE_BYTES - 1, _crc.GIL_FREE_BYTES, 1 << 20])
def test_the_crc_is_google_crc32cs(n: int) -> None:
    data = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8)
    want = google_crc32c.value(data.tobytes())
    assert _crc.crc32c([data]) == want
    assert _crc.crc32c([data.tobytes()]) == want
    assert _crc.crc32c([memoryview(data.tobytes())]) == want
    half = n // 2
    assert _crc.crc32c([data[:half], data[half:].tobytes()]) == want  # parts continue
    assert _crc.crc32c([data[half:]], _crc.crc32c([data[:half]])) == want
    floats = np.random.default_rng(n).standard_normal(n // 4 + 1).astype(np.float32)
    assert _crc.crc32c([floats]) == google_crc32c.value(floats.tobytes())


def test_a_strided_buffer_is_refused() -> None:
    a = np.zeros((1 << 17, 2), np.uint8)[:, 0]
    with pytest.raises(ValueError, match="C-contiguous"):
        _crc.crc32c([a])


def test_large_buffers_release_the_gil() -> None:
    """Another Python thread runs while a CRC of 1 GiB (of the zero page: no memory) is
    computed. Only the middle of each call counts, 10 ms from either end: a thread
    that holds the GIL in the call may still hand it over for one switch interval
    (5 ms) just before or after it, but never inside it."""
    assert _crc.gil_free()
    data = np.zeros(1 << 30, np.uint8)
    calls: list[tuple[float, float]] = []
    ticks: list[float] = []
    done = threading.Event()

    def crc() -> None:
        for _ in range(3):
            t0 = time.perf_counter()
            _crc.crc32c([data])
            calls.append((t0, time.perf_counter()))
        done.set()

    t = threading.Thread(target=crc)
    t.start()
    while not done.is_set():
        ticks.append(time.perf_counter())
    t.join()
    inside = [sum(t0 + 0.01 < x < t1 - 0.01 for x in ticks) for t0, t1 in calls]
    assert all(t1 - t0 > 0.025 for t0, t1 in calls), calls  # a middle to look at
    assert sorted(inside)[1] > 100, inside
