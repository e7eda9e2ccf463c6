"""Work the writer thread hands to its encoder threads without waiting: raw records'
summaries, and the folders of the next shard file (see ``spikestore._segments``)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import spikestore
from spikestore import summary as summary_mod
from spikestore._segments import Encoder, Segment, create_segment
from spikestore.errors import UnsafeStoreError
from spikestore.format import segment_descriptor
from spikestore.storage import ConfinedLocalStore, DurableLocalStore
from spikestore.storage._files import dir_maker
from spikestore.storage._localfs import make_dirs


def _expected(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    v = x.to(torch.float64).numpy()
    good = v[~np.isnan(v)]
    if not good.size:  # all NaN: no min, max or mean; rows of NaN sum to 0
        return np.array([v.size, 0.0, np.nan, np.nan, np.nan]), np.zeros(len(v))
    row = [v.size, good.sum(), good.min(), good.max(), good.mean()]
    return np.array(row), np.nansum(v, axis=tuple(range(1, v.ndim)))


@pytest.mark.parametrize("threads", [1, 2])
def test_raw_summaries_from_encoder_threads_match_the_records(tmp_path, monkeypatch, threads):
    """With encoder threads the summaries are computed there (futures the writer
    collects before the commit), with one thread on the writer thread: the same rows."""
    monkeypatch.setattr("spikestore._segments.ENCODE_THREADS", threads)
    where: set[str] = set()
    real = summary_mod.summarize

    def spy(enc):  # type: ignore[no-untyped-def]
        where.add(threading.current_thread().name)
        return real(enc)

    monkeypatch.setattr(summary_mod, "summarize", spy)
    g = torch.Generator().manual_seed(3)
    recs = [torch.randn(3, 5, 7, generator=g) * 100 for _ in range(23)]
    recs[4][1, 2, 3] = float("nan")
    recs[9][:] = float("nan")
    path = tmp_path / "s"
    with spikestore.StoreWriter(path, shard_steps=4, flush_interval=0.0) as w:
        for i, r in enumerate(recs):
            w.append("m", "v", r)
            if i % 6 == 5:
                w.flush()
    if threads == 1:
        assert where == {"spikestore-writer"}, where
    else:
        assert where and all(n.startswith("spikestore-bg") for n in where), where
    grp = spikestore.open(path)["m"]["v"].field(0).group
    stored, axis0 = np.asarray(grp["summary"][:]), np.asarray(grp["summary_axis0"][:])
    assert stored.shape == (len(recs), 5)
    for i, r in enumerate(recs):
        want, want0 = _expected(r)
        np.testing.assert_allclose(stored[i], want, rtol=1e-12, equal_nan=True)
        np.testing.assert_allclose(axis0[i], want0, rtol=1e-12, equal_nan=True)


def test_a_summary_future_is_collected_before_the_rows_are_written(tmp_path):
    """FieldSummary.write takes a future's result, not the future."""
    from concurrent.futures import ThreadPoolExecutor

    import zarr

    from spikestore.codecs import encode

    grp = zarr.open_group(tmp_path / "g", mode="w")
    fs = summary_mod.FieldSummary()
    x = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    with ThreadPoolExecutor(1) as pool:
        fs.add(encode(x), pool.submit)
        fs.add(None, pool.submit)
        fs.write(grp, 0, 2)
    rows = np.asarray(grp["summary"][:2])
    np.testing.assert_array_equal(rows[0], [24, 276, 0, 23, 11.5])
    assert np.isnan(rows[1]).all()
    np.testing.assert_array_equal(grp["summary_axis0"][0], [15, 51, 87, 123])


def _segment(
    tmp_path: Path, store_cls: type = ConfinedLocalStore, chunk_bytes: int = 1 << 17
) -> Segment:
    import zarr

    from spikestore._segments import SegmentOptions

    store = store_cls(tmp_path / "s")
    grp = zarr.open_group(store, mode="w", path="m/l/f0")
    # 256 KiB of noise: 4 rows to a 1 MiB shard, stored as they are (bytes, crc32c)
    row = np.random.default_rng(1).standard_normal((2, 128, 256)).astype(np.float32)
    desc = segment_descriptor(0, "raw", "float32", (2, 128, 256))
    opts = SegmentOptions(None, None, 4, chunk_bytes, dense_shard_bytes=1 << 20)
    main = create_segment(grp, desc, row, opts)
    return Segment(grp, desc, main, lambda: None, Encoder(2))


def _shard_folders(tmp_path: Path) -> list[str]:
    c = tmp_path / "s" / "m" / "l" / "f0" / "s0" / "c"
    return sorted(os.listdir(c)) if c.is_dir() else []


def test_next_shard_folders_are_made_ahead_and_removed_if_unused(tmp_path):
    seg = _segment(tmp_path)
    assert seg.shard == 4
    seg.prepare(1)
    assert seg._ahead is not None and seg._ahead[1] is not None
    seg._ahead[1].result()  # made on an encoder thread
    folder = tmp_path / "s/m/l/f0/s0/c/1/0/0"
    assert folder.is_dir() and not any(folder.iterdir())
    rows = np.random.default_rng(0).standard_normal((6, 2, 128, 256)).astype(np.float32)
    seg.write(rows[:4])  # shard 0 written; shard 1 gets its file later
    seg.write(rows[4:6])
    seg.prepare(2)  # shard 1 started: shard 2's folders, which get no row
    seg.seal_partial()
    seg.drop_tails()
    assert _shard_folders(tmp_path) == ["0", "1"]  # no folder left for shard 2
    np.testing.assert_array_equal(seg.main[:6], rows)


def test_no_folders_made_ahead_for_a_shard_already_written(tmp_path):
    seg = _segment(tmp_path)
    seg.write(np.ones((4, 2, 128, 256), np.float32))
    seg.prepare(0)
    assert seg._ahead is None


def test_durable_stores_make_no_folders_ahead(tmp_path):
    """A durable store's folder is fsync-ed by the write that makes it, before the
    commit: never by another thread that the commit does not wait for."""
    seg = _segment(tmp_path, DurableLocalStore)
    assert dir_maker(seg.main.store_path.store) is None
    seg.prepare(1)
    assert seg._ahead is None and _shard_folders(tmp_path) == []


def test_make_dirs_refuses_a_link_on_the_way(tmp_path):
    root = tmp_path / "s"
    (root / "a").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (root / "a" / "c").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafeStoreError, match="symbolic link"):
        make_dirs(root, "a/c/1/0/0")
    assert not any((tmp_path / "elsewhere").iterdir())
    make_dirs(root, "a/b/1/0/file")
    assert (root / "a/b/1/0").is_dir() and not (root / "a/b/1/0/file").exists()


def test_a_closed_store_has_a_folder_only_for_each_shard_written(tmp_path):
    path = tmp_path / "s"
    x = torch.randn(4, 8, 16, 28, 28)  # 1.6 MB a step: shards of a few steps
    with spikestore.StoreWriter(path) as w:
        for _ in range(10):
            w.append("m", "v", x, time_axis=0)
    lay = spikestore.open(path)["m"]["v"]
    arr = lay.field(0).array(0)
    shards = -(-10 // int(arr.shards[0]))
    assert shards > 1
    c = path / "m" / "v" / "f0" / "s0" / "c"
    assert sorted(os.listdir(c), key=int) == [str(j) for j in range(shards)]
    assert torch.equal(lay[9], x)


@pytest.mark.parametrize("threads", [1, 2])
def test_shards_of_raw_rows_carry_each_chunks_crc(tmp_path, threads):
    """Whole shards of raw rows are written from the rows, each chunk's CRC-32C computed
    on the encoder's threads (or the writer's, with one): Zarr checks them on reading."""
    import zarr

    seg = _segment(tmp_path, chunk_bytes=1 << 15)
    seg._encoder = Encoder(threads)
    assert seg._shards is not None and seg._shards.plain
    # More chunks than batches of checksums: a batch holds several chunks.
    assert len(seg._shards._jobs(0, np.zeros((4, 2, 128, 256), np.float32))) > 16
    rows = np.random.default_rng(5).standard_normal((9, 2, 128, 256)).astype(np.float32)
    seg.write(rows[:8])  # two whole shards
    seg.write(rows[8:])
    seg.seal_partial()
    back = zarr.open_array(seg.main.store_path.store, path=seg.main.path, mode="r")
    np.testing.assert_array_equal(back[:9], rows)
    shard = tmp_path / "s/m/l/f0/s0/c/1/0/0/0"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF  # a flipped byte in the first chunk's rows
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"(?i)checksum|crc"):
        zarr.open_array(seg.main.store_path.store, path=seg.main.path, mode="r")[4:8]
