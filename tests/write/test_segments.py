"""Open shards live in tail arrays; every shard file is written once."""

from __future__ import annotations

import collections
import itertools
import threading
import time
from pathlib import Path

import numpy as np
import pytest
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


# ------------------------------------------------- chunks encoded off Zarr's path
def _tail_pair(tmp_path, row, compressor):
    """Two identical tails of a new segment: one for the direct path, one for Zarr."""
    from spikestore._segments import SegmentOptions, create_segment

    grp = zarr.open_group(LocalStore(tmp_path / "t"), mode="w")
    spikes = row.dtype == np.uint8
    desc = {
        "array": "s0",
        "encoding": "bitpack" if spikes else "raw",
        "dtype": "float32",
        "shape": [3, 40] if spikes else list(row.shape),
        "rows": 0,
    }
    if spikes:
        desc.update(bit_order="big", permute=None)
    opts = SegmentOptions(compressor, None, 64, 1 << 10)
    main = create_segment(grp, desc, row, opts)
    return grp, desc, main


def _chunk_files(arr):
    root = arr.store_path.store.root / arr.path
    return {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("compressor", [None, "zstd", "blosc-zstd"])
@pytest.mark.parametrize("spikes", [True, False])
def test_direct_tail_chunks_are_zarrs_bytes(tmp_path, compressor, spikes):
    """The writer encodes a tail's chunks itself (on its encoder threads), completing a
    partly written chunk row from memory; the files are byte for byte Zarr's."""
    from spikestore._segments import Encoder, Segment

    g = torch.Generator().manual_seed(1)
    n = 50
    if spikes:
        bits = torch.rand(n, 120, generator=g) < 0.2
        rows = np.packbits(bits.numpy(), axis=1)
    else:
        rows = torch.randn(n, 6, 70, generator=g).numpy()
    grp, desc, main = _tail_pair(tmp_path, rows[0], compressor)
    seg = Segment(grp, desc, main, lambda: None, Encoder(2))
    # Zarr's own writes of the same rows into a copy of the tail.
    ref = seg.tail(0)
    ref_arr = grp.create_array(
        "ref",
        shape=ref.shape,
        dtype=ref.dtype,
        chunks=ref.chunks,
        serializer=ref.metadata.codecs[0],
        compressors=ref.metadata.codecs[1:],
        fill_value=0,
        config={"write_empty_chunks": True},
    )
    cuts = [0, 3, 4, 21, 40, n]  # unaligned pieces: each completes the last chunk row
    for a, b in itertools.pairwise(cuts):
        seg.write(rows[a:b])
        ref_arr[a:b] = rows[a:b]
        assert _chunk_files(seg.tail(0)).keys() >= _chunk_files(ref_arr).keys() - {
            Path("zarr.json")
        }
    mine, theirs = _chunk_files(seg.tail(0)), _chunk_files(ref_arr)
    theirs.pop(Path("zarr.json"))
    assert {k: mine[k] for k in theirs} == theirs
    np.testing.assert_array_equal(seg.tail(0)[:n], rows)


def test_direct_tail_write_reads_back_a_chunk_row_it_does_not_hold(tmp_path):
    """A writer that reopened a store does not hold the partial chunk row: it decodes it."""
    from spikestore._segments import Encoder, Segment

    rows = np.packbits((np.random.default_rng(2).random((30, 120)) < 0.3), axis=1)
    grp, desc, main = _tail_pair(tmp_path, rows[0], None)
    seg = Segment(grp, desc, main, lambda: None, Encoder(1))
    seg.write(rows[:5])
    seg._open = None
    seg.write(rows[5:30])
    np.testing.assert_array_equal(seg.tail(0)[:30], rows)


def test_encoder_waits_for_every_job_and_raises_the_first_error():
    from spikestore._segments import Encoder

    done = []

    def job(x):
        time.sleep(0.01 * (5 - x))  # jobs end out of order, some after the first error
        if x in (1, 3):
            raise ValueError(f"job {x}")
        done.append(x)
        return x

    enc = Encoder(3)
    with pytest.raises(ValueError, match="job 1"):
        enc.run(job, range(5))
    assert sorted(done) == [0, 2, 4]  # all ended before run() returned
    assert enc.run(lambda x: x * 2, [1, 2, 3]) == [2, 4, 6]
    enc.close()


def test_encoder_runs_fast_calls_on_the_calling_thread():
    """Calls under INLINE_CALL_S run on the caller, in order, without starting the
    pool (its threads only added GIL hand-offs beside a busy caller); the first slow
    call sends the rest to the pool's threads."""
    from spikestore import _segments
    from spikestore._segments import Encoder

    me = threading.current_thread().name
    enc = Encoder(2)
    assert enc.run(lambda x: (x, threading.current_thread().name), range(6)) == [
        (x, me) for x in range(6)
    ]
    assert enc._pool._pool is None  # no thread was started

    def job(x):
        if x == 2:
            time.sleep(2 * _segments.INLINE_CALL_S)
        return threading.current_thread().name

    names = enc.run(job, range(8))
    assert names[:3] == [me] * 3
    assert all(n.startswith("spikestore-enc") for n in names[3:]), names
    enc.close()


def test_encoder_stops_at_an_inline_error():
    """A call on the calling thread that raises ends run(): the calls after it never
    start."""
    from spikestore._segments import Encoder

    started = []

    def job(x):
        started.append(x)
        if x == 1:
            raise ValueError("job 1")
        return x

    enc = Encoder(2)
    with pytest.raises(ValueError, match="job 1"):
        enc.run(job, range(5))
    assert started == [0, 1]
    enc.close()


def test_encode_threads_setting(monkeypatch):
    from spikestore import _segments

    monkeypatch.setattr(_segments, "ENCODE_THREADS", None)
    monkeypatch.setenv("SPIKESTORE_ENCODE_THREADS", "3")
    assert _segments.encode_threads() == 3
    monkeypatch.setattr(_segments, "ENCODE_THREADS", 2)
    assert _segments.encode_threads() == 2
    monkeypatch.setattr(_segments, "ENCODE_THREADS", None)
    monkeypatch.setenv("SPIKESTORE_ENCODE_THREADS", "many")
    with pytest.raises(ValueError, match="SPIKESTORE_ENCODE_THREADS"):
        _segments.encode_threads()


@pytest.mark.parametrize("threads", [1, 2])
def test_store_written_with_encoder_threads_reads_back(tmp_path, monkeypatch, threads):
    from spikestore import _segments

    monkeypatch.setattr(_segments, "ENCODE_THREADS", threads)
    spikes, dense = records(300, shape=(64, 64))
    before = {t.ident for t in threading.enumerate()}
    with spikestore.StoreWriter(tmp_path / "s", shard_steps=64, flush_interval=0.0) as w:
        for s, d in zip(spikes, dense, strict=True):
            w.append("o", "sn", s)
            w.append("o", "v", d)
    # The encoder threads end with the writer thread.
    left = [t for t in threading.enumerate() if t.ident not in before]
    assert not [t for t in left if t.name.startswith("spikestore-enc")]
    st = spikestore.open(tmp_path / "s")
    assert all(bits_equal(a, b) for a, b in zip(st["o"]["sn"], spikes, strict=True))
    assert all(bits_equal(a, b) for a, b in zip(st["o"]["v"], dense, strict=True))


# ------------------------------------------- complete shards written from memory
def _inner_chunks(path, grid):
    """The encoded inner chunks of a shard file, by coordinates (absent ones left out)."""
    data = Path(path).read_bytes()
    n = int(np.prod(grid))
    index = np.frombuffer(data[-4 - 16 * n : -4], "<u8").reshape(*grid, 2)
    out = {}
    for c in itertools.product(*(range(g) for g in grid)):
        off, size = (int(x) for x in index[c])
        if off != 2**64 - 1:
            out[c] = data[off : off + size]
    return out


@pytest.mark.parametrize(
    "compressor, precision, first",
    [(None, None, 3), (None, None, 40), ("zstd", None, 3), (None, 7, 3), ("blosc-zstd", None, 3)],
)
def test_complete_shards_are_written_once_with_zarrs_chunk_bytes(
    tmp_path, monkeypatch, compressor, precision, first
):
    """A write that completes a shard encodes its new chunks in memory and writes the
    shard file once, with the rows already in the tail; every inner chunk is byte for
    byte what Zarr writes, and plain Zarr reads the rows back (a precision's BitRound
    included). Incompressible rows by default: a first write of 3 rows (a short run)
    keeps Blosc's copy, one of 40 (two chunk rows and more) stores them as they are,
    chunks written straight from the rows."""
    from spikestore import _segments
    from spikestore._segments import Encoder, Segment, SegmentOptions, _grid, create_segment

    monkeypatch.setattr(_segments, "MIN_DENSE_SHARD_BYTES", 0)  # small shards, small rows
    n = 300
    rows = torch.randn(n, 6, 70, generator=torch.Generator().manual_seed(3)).numpy()
    grp = zarr.open_group(LocalStore(tmp_path / "t"), mode="w")
    desc = {"array": "s0", "encoding": "raw", "dtype": "float32", "shape": [6, 70], "rows": 0}
    row_bytes = 6 * 70 * 4
    opts = SegmentOptions(
        compressor, None, 16, 1 << 10, precision=precision, dense_shard_bytes=64 * row_bytes
    )
    main = create_segment(grp, desc, rows[0], opts)
    seg = Segment(grp, desc, main, lambda: None, Encoder(2))
    assert seg._shards is not None  # the path under test
    shard, cr = seg.shard, seg.chunk_rows
    assert (shard, cr) == (64, 16)
    tail_sets = collections.Counter()
    real_write_tail = seg._write_tail

    def counting(tail, j, r0, r1, part):
        tail_sets[j] += len(part)
        return real_write_tail(tail, j, r0, r1, part)

    seg._write_tail = counting
    # 0-3 and 3-40 go to the tail (shard 0 open); 40-64 completes shard 0 from the
    # tail's rows and a partly written chunk row (32-40) held in memory; 64-192 is two
    # whole shards; 192-200 opens shard 3, 200-290 completes it and opens shard 4.
    cuts = [0, first, 40, 64, 192, 200, 290, n] if first < 40 else [0, 40, 64, 192, 200, 290, n]
    for a, b in itertools.pairwise(cuts):
        seg.write(rows[a:b])
    main = seg.main
    names = [c["name"] for c in main.metadata.to_dict()["codecs"][0]["configuration"]["codecs"]]
    if compressor is None and precision is None:
        assert names == (["bytes", "blosc", "crc32c"] if first < 32 else ["bytes", "crc32c"])
    # Zarr's own writes of the same rows into an array with the same codecs.
    ref = grp.create_array(
        "ref",
        shape=(n, 6, 70),
        dtype="float32",
        chunks=main.shards,
        serializer=main.metadata.codecs[0],
        compressors=None,
        fill_value=0,
        config={"write_empty_chunks": True},
    )
    ref[:] = rows
    assert tail_sets == {0: 40, 3: 8, 4: 44}  # rows that completed a shard skipped the tail
    assert desc["sealed"] == 256 and desc["rows"] == n
    grid = _grid(main)
    assert grid[0] == 4
    root = tmp_path / "t"
    for j in range(4):
        mine = _inner_chunks(root / "s0" / "c" / str(j) / "0" / "0", grid)
        theirs = _inner_chunks(root / "ref" / "c" / str(j) / "0" / "0", grid)
        assert mine == theirs, j
    seg.seal_partial()
    plain = zarr.open_array(root / "s0", mode="r")[:n]
    np.testing.assert_array_equal(plain, ref[:])
    if precision is None:
        np.testing.assert_array_equal(plain, rows)


def test_dense_shards_hold_about_the_write_buffer(tmp_path):
    """Raw segments get shards, and rows of inner chunks, of at most about
    ``max_buffer_bytes`` (one step a chunk for records too large for 16 steps), so a
    write forced by that bound completes whole shards; spike segments keep their long
    shards."""
    big = [torch.randn(64, 4096) for _ in range(40)]  # 1 MiB rows
    small = [torch.randn(16, 16) for _ in range(40)]  # 1 KiB rows
    spk = [(torch.rand(64, 4096) < 0.05).float() for _ in range(40)]
    with spikestore.StoreWriter(tmp_path / "s", max_buffer_bytes=4 << 20, flush_interval=1e3) as w:
        for b, s, k in zip(big, small, spk, strict=True):
            w.append("v", "big", b)
            w.append("v", "small", s)
            w.append("o", "spk", k)
    r = spikestore.open(tmp_path / "s")
    big_arr = r["v"]["big"].field(0).array(0)
    assert big_arr.chunks[0] == 1 and big_arr.shards[0] == 4  # shards of 4 MiB
    small_arr = r["v"]["small"].field(0).array(0)
    assert small_arr.shards[0] * 16 * 16 * 4 <= 4 << 20
    assert small_arr.shards[0] >= small_arr.chunks[0]
    assert r["o"]["spk"].field(0).array(0).shards[0] >= 1024
    assert all(bits_equal(a, b) for a, b in zip(r["v"]["big"], big, strict=True))
    assert all(bits_equal(a, b) for a, b in zip(r["v"]["small"], small, strict=True))


def test_a_tiny_buffer_bound_does_not_make_a_dense_file_per_step(tmp_path):
    """Review finding: dense shards were sized to max_buffer_bytes alone, so a bound of
    64 KiB gave one shard file (and one chunk) per step of a 64 KiB record. Shards and
    chunk rows now hold at least 1 MiB."""
    from spikestore._segments import MIN_DENSE_SHARD_BYTES

    rows = [torch.randn(64, 256) for _ in range(40)]  # 64 KiB each
    with spikestore.StoreWriter(tmp_path / "s", max_buffer_bytes=64 << 10) as w:
        for r in rows:
            w.append("v", "mem", r)
    arr = spikestore.open(tmp_path / "s")["v"]["mem"].field(0).array(0)
    assert arr.shards[0] * 64 * 256 * 4 >= MIN_DENSE_SHARD_BYTES
    assert arr.chunks[0] >= 4
    layer = spikestore.open(tmp_path / "s")["v"]["mem"]
    assert all(bits_equal(a, b) for a, b in zip(layer, rows, strict=True))
