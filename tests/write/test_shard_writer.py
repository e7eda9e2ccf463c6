"""Whole shard files written in the background (``spikestore._segments.ShardWriter``):
off the writer thread, at most two at a time, every one ended before the commit
that names its steps, and a failed one costs only the steps from the first with a
row in it on."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import spikestore
import spikestore._segments as segments
from spikestore import StoreWriter, WriteError

ROWS = 64 * 1024  # float32: 256 KiB records
#: One step a chunk (16 steps would pass the buffer bound) and 4 steps a shard file.
OPTS: dict[str, Any] = {"flush_interval": 3600, "shard_steps": 4, "max_buffer_bytes": 1 << 20}


def _record(i: int) -> torch.Tensor:
    return torch.arange(ROWS, dtype=torch.float32).reshape(64, 1024) + i


def _assert_steps(path: Path, n: int, record: Any = None) -> None:
    """The layer holds exactly ``n`` steps, each ``record(i)`` (default :func:`_record`)."""
    record = record or _record
    layer = spikestore.open(path)["v"]["lif"]
    assert len(layer) == n
    assert all(torch.equal(layer[i], record(i)) for i in range(n))


class _Writes:
    """Wraps ``write_parts`` as the shard writer calls it: who writes which key, how
    many at once, optionally slowly or failing from the ``fail_at``-th shard file."""

    def __init__(self, delay: float = 0.0, fail_at: int | None = None) -> None:
        self.real = segments.write_parts
        self.delay = delay
        self.fail_at = fail_at
        self.lock = threading.Lock()
        self.threads: list[str] = []
        self.now = 0
        self.most = 0
        self.shards = 0

    def __call__(self, store: Any, key: str, parts: Any) -> None:
        name = threading.current_thread().name
        with self.lock:
            self.threads.append(name)
            self.now += 1
            self.most = max(self.most, self.now)
            self.shards += 1
            n = self.shards
        try:
            time.sleep(self.delay)
            if self.fail_at is not None and n >= self.fail_at:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), key)
            self.real(store, key, parts)
        finally:
            with self.lock:
                self.now -= 1


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> Any:
    def make(**kw: Any) -> _Writes:
        w = _Writes(**kw)
        monkeypatch.setattr(segments, "write_parts", w)
        return w

    return make


def test_whole_shards_are_written_off_the_writer_thread_two_at_a_time(
    tmp_path: Path, writes: Any
) -> None:
    w = writes(delay=0.05)
    path = tmp_path / "s"
    with StoreWriter(path, **OPTS) as sw:
        for i in range(40):
            sw.append("v", "lif", _record(i))
    assert w.shards >= 9
    assert all(t.startswith("spikestore-shard") for t in w.threads[:9]), w.threads
    assert w.most == segments.SHARD_WRITES == 2
    _assert_steps(path, 40)


def test_a_flush_returns_once_the_shard_files_it_commits_are_written(
    tmp_path: Path, writes: Any
) -> None:
    w = writes(delay=0.2)
    path = tmp_path / "s"
    with StoreWriter(path, **OPTS) as sw:
        for i in range(8):
            sw.append("v", "lif", _record(i))
        sw.flush()
        assert w.now == 0
        _assert_steps(path, 8)


def test_a_failed_background_shard_write_loses_only_the_steps_from_its_write_on(
    tmp_path: Path, writes: Any
) -> None:
    """The fourth shard file fails (steps 12..15) while later ones are being written:
    the commit that waits for it commits steps 0..11, the error names the steps from
    12 on, and the store takes appends again from step 12."""
    w = writes(fail_at=4)
    path = tmp_path / "s"
    sw = StoreWriter(path, **OPTS)
    with pytest.raises(WriteError, match=r"layer 'lif', steps 12\.\.\d+.*No space left"):
        for i in range(40):
            sw.append("v", "lif", _record(i))
        sw.flush()
    with contextlib.suppress(WriteError):
        sw.close()
    assert w.shards >= 4
    _assert_steps(path, 12)
    w.fail_at = None
    with StoreWriter(path, mode="a", **OPTS) as sw:
        assert sw.steps("v", "lif") == 12
        for i in range(12, 30):
            sw.append("v", "lif", _record(i))
    _assert_steps(path, 30)


def test_without_shard_writer_threads_the_writer_thread_writes(
    tmp_path: Path, writes: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = writes()
    monkeypatch.setattr(segments, "SHARD_WRITES", 0)
    path = tmp_path / "s"
    with StoreWriter(path, **OPTS) as sw:
        for i in range(12):
            sw.append("v", "lif", _record(i))
    assert w.threads and not any(t.startswith("spikestore-shard") for t in w.threads)
    assert len(spikestore.open(path)["v"]["lif"]) == 12


def test_a_failed_shard_after_one_completed_from_a_tail_keeps_the_steps_read_from_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (found by an attack on the first version): a writer reopening a store
    whose last shard was partial wrote, in one write, shard 0 from its tail (inline),
    shard 1 in the background (which failed) and rows 8..10 into tail 0 again. The
    failure put the segment back to where it was before that write (rows 0 and 1 in
    tail 0) and committed steps 0..13, so steps 0 and 1 read back as steps 20 and 21.
    Now the segment ends before the failed shard (rows 0..3, all in shard 0), and the
    steps kept are those before the first with a row in shard 1."""
    a, b = (64, 1024), (1024, 64)
    opts = {**OPTS, "max_buffer_bytes": 3 << 20}

    def record(i: int) -> torch.Tensor:
        shape = b if 2 <= i < 14 else a
        return torch.arange(ROWS, dtype=torch.float32).reshape(shape) + 1000 * i

    path = tmp_path / "s"
    with StoreWriter(path, **opts) as sw:
        for i in range(2):
            sw.append("v", "lif", record(i))
    real = segments.write_parts

    def fail_shard_1(store: Any, key: str, parts: Any) -> None:
        if key == "v/lif/f0/s0/c/1/0/0":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), key)
        real(store, key, parts)

    monkeypatch.setattr(segments, "write_parts", fail_shard_1)
    sw = StoreWriter(path, mode="a", **opts)
    with pytest.raises(WriteError, match=r"layer 'lif', steps 16\.\.22.*No space left"):
        for i in range(2, 23):  # 12 records of b (segment 1), then 9 of a (rows 2..10)
            sw.append("v", "lif", record(i))
        sw.flush()
    with contextlib.suppress(WriteError):
        sw.close()
    monkeypatch.setattr(segments, "write_parts", real)
    _assert_steps(path, 16, record)  # rows 2 and 3 of segment 0 (steps 14, 15): shard 0
    with StoreWriter(path, mode="a", **opts) as sw:
        for i in range(16, 23):
            sw.append("v", "lif", record(i))
    _assert_steps(path, 23, record)
