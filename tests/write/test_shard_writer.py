"""Whole shard files written in the background (``spikestore._segments.ShardWriter``):
off the writer thread, at most two at a time, every one ended before the commit
that names its steps, and a failed one costs only the steps from its write on."""

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
    layer = spikestore.open(path)["v"]["lif"]
    assert len(layer) == 40
    assert all(torch.equal(layer[i], _record(i)) for i in range(40))


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
        layer = spikestore.open(path)["v"]["lif"]
        assert len(layer) == 8
        assert all(torch.equal(layer[i], _record(i)) for i in range(8))


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
    layer = spikestore.open(path)["v"]["lif"]
    assert len(layer) == 12
    assert all(torch.equal(layer[i], _record(i)) for i in range(12))
    w.fail_at = None
    with StoreWriter(path, mode="a", **OPTS) as sw:
        assert sw.steps("v", "lif") == 12
        for i in range(12, 30):
            sw.append("v", "lif", _record(i))
    layer = spikestore.open(path)["v"]["lif"]
    assert len(layer) == 30
    assert all(torch.equal(layer[i], _record(i)) for i in range(30))


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
