"""Open shards live in tail arrays; every shard file is written once."""

from __future__ import annotations

import collections

import numpy as np
import torch
import zarr
from zarr.storage import LocalStore, WrapperStore

import spikestore
from spikestore.testing import bits_equal


class CountingWrites(WrapperStore):
    def __init__(self, store):
        super().__init__(store)
        self.sets: collections.Counter[str] = collections.Counter()

    async def set(self, key, value):
        self.sets[key] += 1
        return await self._store.set(key, value)


def records(n, shape=(3, 40), seed=0):
    g = torch.Generator().manual_seed(seed)
    spikes = [(torch.rand(shape, generator=g) < 0.1).float() for _ in range(n)]
    dense = [torch.randn(shape, generator=g) for _ in range(n)]
    return spikes, dense


def test_each_shard_file_is_written_once_despite_frequent_commits(tmp_path):
    # Rows big enough that shards hold shard_steps=32 steps: 32 KiB packed, 64 KiB dense.
    spikes, _ = records(100, shape=(512, 512))
    _, dense = records(100, shape=(128, 128))
    store = CountingWrites(LocalStore(tmp_path / "s"))
    with spikestore.StoreWriter(store=store, shard_steps=32, flush_interval=0.0) as w:
        for i, (s, d) in enumerate(zip(spikes, dense, strict=True)):
            w.append("output", "sn", s)
            w.append("v", "sn", d)
            if i % 5 == 0:
                w.flush()  # commit often: each 32-step shard is committed ~7 times
    r = spikestore.open(tmp_path / "s")
    for layer in (r["output"]["sn"], r["v"]["sn"]):
        assert layer.field(0).array(0).shards[0] == 32
    shard_writes = {k: n for k, n in store.sets.items() if "/s0/c/" in k}
    assert len(shard_writes) == 2 * 4  # 3 full shards and the partial one, two layers
    assert set(shard_writes.values()) == {1}, shard_writes
    assert bits_equal(r["output"]["sn"][:], torch.stack(spikes))
    assert bits_equal(r["v"]["sn"][:], torch.stack(dense))
    # A closed store keeps no tails: plain Zarr sees one array per segment.
    group = zarr.open_group(tmp_path / "s" / "v" / "sn" / "f0", mode="r")
    assert sorted(group.array_keys()) == ["index", "s0", "summary", "summary_axis0"]
    assert group["s0"].shape == (100, 128, 128)


def test_append_reopens_a_partial_shard(tmp_path):
    spikes, dense = records(100)
    path = tmp_path / "s"
    for lo, hi in [(0, 20), (20, 45), (45, 46), (46, 100)]:
        with spikestore.StoreWriter(path, mode="a", shard_steps=32) as w:
            for s, d in zip(spikes[lo:hi], dense[lo:hi], strict=True):
                w.append("output", "sn", s)
                w.append("v", "sn", d)
        r = spikestore.open(path)
        assert len(r["v"]["sn"]) == hi
        assert bits_equal(r["output"]["sn"][:], torch.stack(spikes[:hi]))
        assert bits_equal(r["v"]["sn"][:], torch.stack(dense[:hi]))
        seg = r["v"]["sn"].segments[0]
        assert seg["rows"] == seg["sealed"] == hi


def test_stale_reader_follows_rows_into_shards(tmp_path):
    """A reader that never refreshes still reads right while the writer seals and
    reuses tails (the writer commits each seal before a tail is reused)."""
    _, dense = records(100, shape=(128, 128))  # 64 KiB rows: 16-step shards
    path = tmp_path / "s"
    w = spikestore.StoreWriter(path, shard_steps=16)
    for d in dense[:10]:
        w.append("v", "sn", d)
    w.flush()
    stale = spikestore.open(path)["v"]["sn"]
    assert stale.segments[0]["sealed"] == 0 and len(stale) == 10
    rng = np.random.default_rng(0)
    for i in range(10, 100):
        w.append("v", "sn", dense[i])
        if i % 7 == 0:
            w.flush()
            # Rows 0..9 were in tail 0, then sealed into shard 0; tail 0 was then
            # reused for shards 2, 4, ...: the stale reader must still get them right.
            j = int(rng.integers(10))
            assert bits_equal(stale[j], dense[j])
    assert stale.field(0).array(0).shards[0] == 16
    w.close()
    assert bits_equal(stale[:], torch.stack(dense[:10]))
