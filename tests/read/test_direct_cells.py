"""Large raw records: one step a chunk, a step read straight into its output, and a
neuron's history read from the chunks that hold it (``reader/_direct.py``), without
Zarr. Each read must give what the writer was given and what plain Zarr reads, and a
damaged chunk must still be named."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

import spikestore
from spikestore import ReadError
from spikestore.codecs.layout import layout
from spikestore.reader import _direct
from spikestore.testing import bits_equal

#: The writer's smallest buffer bound (1 MiB): records over 64 KiB get one-step chunks.
BUF = 1 << 20


def test_records_too_large_for_16_steps_a_chunk_get_one_step_chunks():
    # 1.6 MB conv membrane potentials under the default 8 MiB bound: one step a chunk,
    # 256 KiB cut where chunks tile the record (4 channels of 8, not 5).
    chunks, shards = layout((4, 8, 16, 28, 28), 4, 4, 1 << 18, 8 << 20, None, 8 << 20)
    assert chunks == (1, 1, 4, 16, 28, 28)
    assert shards[0] == 4 and shards[1:] == (4, 8, 16, 28, 28)
    # Records small enough for 16 steps keep them.
    assert layout((64, 100), 4, 4, 1 << 18, 8 << 20, None, 8 << 20)[0][0] == 16


def _write(path: Path, recs: list[torch.Tensor], buf: int = BUF) -> None:
    with spikestore.StoreWriter(path, max_buffer_bytes=buf) as w:
        for x in recs:
            w.append("m", "v", x, time_axis=0)


def _recs(shape: tuple[int, ...], n: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) for _ in range(n)]


#: (4, 8, 4000) under 1 MiB: one-step chunks of [1, 2, 8, 4000], two a step, tiling it;
#: (3, 7, 1001) under 8 MiB: 16-step chunks of [16, 1, 4, 1001], clipped at the edge.
CASES = [((4, 8, 4000), BUF, True), ((3, 7, 1001), 8 << 20, False)]


@pytest.mark.parametrize(("shape", "buf", "one_step"), CASES)
def test_steps_and_neurons_read_as_written_and_as_zarr_reads(tmp_path, shape, buf, one_step):
    recs = _recs(shape, 19, 1)
    path = tmp_path / "s"
    _write(path, recs, buf)
    arr = zarr.open_array(path / "m/v/f0/s0", mode="r")
    assert (arr.metadata.codecs[0].chunk_shape[0] == 1) == one_step
    lay = spikestore.open(path)["m"]["v"]
    for i in (0, 5, 16, 18):  # the last shard is not full
        assert bits_equal(lay[i], recs[i])
        assert np.array_equal(arr[i], recs[i].numpy())
    assert bits_equal(lay[2:17], torch.stack(recs[2:17]))
    t, *rest = shape
    for cell in [(0, 0), (rest[0] - 1, rest[1] - 1), (rest[0] // 2, 999)]:
        want = torch.stack([x[:, cell[0], cell[1]] for x in recs])
        got = lay.neuron(cell)
        assert bits_equal(got.reshape(len(recs), t), want)
        assert np.array_equal(arr[:, :, cell[0], cell[1]], want.numpy())
        part = lay.neuron(cell, steps=[17, 3, 4])
        assert bits_equal(part.reshape(3, t), want[[17, 3, 4]])


def test_a_step_of_tiled_chunks_is_read_in_place(tmp_path, monkeypatch):
    """Each step's chunks lie back to back and tile it: one ``preadv`` into the output,
    no chunk read into a scratch buffer and copied."""
    recs = _recs((4, 8, 4000), 9, 2)
    path = tmp_path / "s"
    _write(path, recs)
    lay = spikestore.open(path)["m"]["v"]

    def no_scratch(size: int) -> np.ndarray:
        raise AssertionError("a chunk was read chunk by chunk")

    monkeypatch.setattr(_direct, "_scratch", no_scratch)
    for i in range(9):
        assert bits_equal(lay[i], recs[i])


def test_a_neuron_of_a_raw_segment_is_read_without_zarr(tmp_path, monkeypatch):
    recs = _recs((4, 8, 4000), 9, 3)
    path = tmp_path / "s"
    _write(path, recs)
    lay = spikestore.open(path)["m"]["v"]

    plain = zarr.Array.get_orthogonal_selection

    def through_zarr(self, *args, **kw):
        if self.path.endswith("/s0"):
            raise AssertionError("the segment's chunks read through Zarr")
        return plain(self, *args, **kw)  # the step index

    monkeypatch.setattr(zarr.Array, "get_orthogonal_selection", through_zarr)
    got = lay.neuron((3, 7))
    assert bits_equal(got.reshape(9, 4), torch.stack([x[:, 3, 7] for x in recs]))


def _damage(path: Path, step: int, chunk: int) -> None:
    """Flip a byte inside inner chunk ``chunk`` of step ``step``'s chunk row."""
    from spikestore._shard import chunk_spans, footer_size, parse_index

    arr = zarr.open_array(path / "m/v/f0/s0", mode="r")
    inner = arr.metadata.codecs[0].chunk_shape
    grid = tuple(s // c for s, c in zip(arr.shards, inner, strict=True))
    shard = path / "m/v/f0/s0/c" / str(step // arr.shards[0])
    shard = shard.joinpath(*["0"] * (arr.ndim - 1))
    data = bytearray(shard.read_bytes())
    n = footer_size(arr.ndim, int(np.prod(grid)), header=True)
    foot = np.frombuffer(bytes(data[-n:]), np.uint8)
    spans = chunk_spans(parse_index(foot, grid), len(data) - n).reshape(-1, 2)
    per_row = int(np.prod(grid[1:]))
    off = int(spans[(step % arr.shards[0]) * per_row + chunk][0])
    data[off + 100] ^= 0x04
    shard.write_bytes(bytes(data))


def test_a_damaged_chunk_read_in_place_is_named_and_the_rest_reads(tmp_path):
    recs = _recs((4, 8, 4000), 12, 4)
    path = tmp_path / "s"
    _write(path, recs)
    _damage(path, 6, 1)
    lay = spikestore.open(path)["m"]["v"]
    # Shards of 2 steps: step 6 is chunk row 0 of the fourth, its chunk (1, 0, 0) times
    # 2 and 3 of the record.
    where = r"m/v/f0/s0/c/3/0/0/0: inner chunk \(0, 1, 0, 0\).*CRC-32C"
    with pytest.raises(ReadError, match=where):
        lay[6]
    with pytest.raises(ReadError, match=r"inner chunk \(0, 1, 0, 0\).*CRC-32C"):
        lay.neuron((3, 5))  # its history at times 2, 3 of step 6 lies in the damaged chunk
    for i in (0, 5, 7, 11):  # the damaged shard's other steps too
        assert bits_equal(lay[i], recs[i])
    assert bits_equal(
        lay.neuron((3, 5), steps=slice(0, 4)).reshape(4, 4),
        torch.stack([x[:, 3, 5] for x in recs[:4]]),
    )


def test_a_step_of_more_chunks_than_one_preadv_takes_reads_whole(tmp_path):
    """600 chunks a step: more buffers than one ``preadv`` may take (1,024, two a
    chunk), read in several calls."""
    g = torch.Generator().manual_seed(5)
    recs = [torch.randn((600, 256), generator=g) for _ in range(3)]
    path = tmp_path / "s"
    with spikestore.StoreWriter(path, max_buffer_bytes=BUF, chunk_bytes=1024) as w:
        for x in recs:
            w.append("m", "v", x)
    arr = zarr.open_array(path / "m/v/f0/s0", mode="r")
    assert tuple(arr.metadata.codecs[0].chunk_shape) == (1, 1, 256)
    lay = spikestore.open(path)["m"]["v"]
    for i in range(3):
        assert bits_equal(lay[i], recs[i])


def test_a_step_longer_than_one_read_may_be_is_read_in_several(tmp_path, monkeypatch):
    """A step read in place stays within the longest read a store file allows (65 MiB:
    steps of huge records are longer), here lowered to 300 KB for 1 MB steps."""
    from spikestore.storage import _localfs

    recs = _recs((4, 8, 8000), 3, 6)  # 1 MB steps, chunks of [1, 1, 8, 8000]: 256 KB
    path = tmp_path / "s"
    _write(path, recs)
    monkeypatch.setattr(_localfs, "MAX_READ_BYTES", 300_000)
    lay = spikestore.open(path)["m"]["v"]
    for i in range(3):
        assert bits_equal(lay[i], recs[i])


def test_shards_reaching_past_the_record_read_the_right_steps(tmp_path):
    """Review finding: a segment whose shards reach a chunk past the record on a later
    axis (valid Zarr; spikestore's writer never makes it) read another step's values
    through the in-place path, every check passing: a chunk row there holds more
    chunks than the record's row."""
    import json
    import math
    import shutil

    import google_crc32c

    from spikestore._shard import ShardFooter, footer_size, index_size, parse_shard_header

    recs = _recs((4, 8, 4000), 8, 7)
    path = tmp_path / "s"
    _write(path, recs)
    a = path / "m/v/f0/s0"
    data = zarr.open_array(a, mode="r")[...]
    meta = json.loads((a / "zarr.json").read_text())
    inner = meta["codecs"][0]["configuration"]["chunk_shape"]
    shard = meta["chunk_grid"]["configuration"]["chunk_shape"]
    old_n = math.prod(s // c for s, c in zip(shard, inner, strict=True))
    tail = (a / "c/0/0/0/0").read_bytes()[-footer_size(4, old_n, True) :]
    seg_id = parse_shard_header(tail[: len(tail) - index_size(old_n)], 4, old_n)[0]
    new_shard = [4, shard[1] + inner[1], *shard[2:]]  # one chunk past the record
    meta["chunk_grid"]["configuration"]["chunk_shape"] = new_shard
    (a / "zarr.json").write_text(json.dumps(meta))
    grid = tuple(s // c for s, c in zip(new_shard, inner, strict=True))
    shutil.rmtree(a / "c")
    for s in range(2):
        foot, body = ShardFooter(grid), []
        for cr in range(4):
            for c1 in range(grid[1]):
                lo = c1 * inner[1]
                if lo >= data.shape[1]:
                    continue
                chunk = np.ascontiguousarray(data[s * 4 + cr, lo : lo + inner[1]]).tobytes()
                chunk += google_crc32c.value(chunk).to_bytes(4, "little")
                foot.place((cr, c1, 0, 0), (chunk,))
                body.append(chunk)
        (a / f"c/{s}/0/0").mkdir(parents=True)
        (a / f"c/{s}/0/0/0").write_bytes(b"".join(body) + foot.end(seg_id, (s, 0, 0, 0)))
    assert np.array_equal(zarr.open_array(a, mode="r")[...], data)
    lay = spikestore.open(path)["m"]["v"]
    for i in range(8):
        assert bits_equal(lay[i], recs[i])
    assert bits_equal(lay[0:8], torch.stack(recs))


def test_cell_selections_the_direct_reads_take():
    shape = (4, 8, 4000)
    assert _direct.cell_selection((slice(None), 3, 7), shape)
    assert _direct.cell_selection((2,), shape)
    assert _direct.cell_selection((), shape)
    # negative, past the axis, a partial slice, a bool, too many: through Zarr
    for rest in [(-1,), (4,), (slice(0, 2),), (True,), (0, 0, 0, 0), (slice(None), 8, 0)]:
        assert not _direct.cell_selection(rest, shape), rest


def _counting_footers(footers: list[str]):
    """``_direct._footer`` that notes the key of every shard file whose footer it reads."""
    real = _direct._footer

    def counted(f, key, *args):
        footers.append(key)
        return real(f, key, *args)

    return counted


def test_a_shard_footer_read_before_is_used_only_for_the_same_file(tmp_path):
    """A shard file's index and shard header are read and checked once per file: a
    later step of the same shard reads no footer again, but a file renamed over it,
    or changed in place, has its own read and checked."""
    recs = _recs((4, 8, 4000), 8, 8)  # shards of 2 steps
    path = tmp_path / "s"
    _write(path, recs)
    lay = spikestore.open(path)["m"]["v"]
    footers = []
    counted = _counting_footers(footers)
    import unittest.mock

    with unittest.mock.patch.object(_direct, "_footer", counted):
        assert bits_equal(lay[2], recs[2])
        assert bits_equal(lay[3], recs[3])  # the same shard file: its footer is known
        assert footers == ["m/v/f0/s0/c/1/0/0/0"]
        shard = path / "m/v/f0/s0/c/1/0/0/0"
        own = shard.read_bytes()
        # Another file renamed over it (a copy of shard 0: every check would pass on
        # the footer cached, and the bytes read would be steps 0 and 1).
        other = path / "m/v/f0/s0/c/0/0/0/0"
        tmp = shard.with_name("new")
        tmp.write_bytes(other.read_bytes())
        tmp.replace(shard)
        with pytest.raises(ReadError, match=r"c/1/0/0/0: the file holds shard \(0, 0, 0, 0\)"):
            lay[2]
        # The right bytes back, written in place (the same inode): read and checked again.
        with open(shard, "r+b") as f:
            f.write(own)
            f.truncate()
        n = len(footers)
        assert bits_equal(lay[2], recs[2])
        assert len(footers) == n + 1
        assert bits_equal(lay[3], recs[3])
        assert len(footers) == n + 1
        # Its index damaged in place, the size kept (its times move on): read, refused.
        bad = bytearray(own)
        bad[-2] ^= 1
        with open(shard, "r+b") as f:
            f.write(bad)
        st = shard.stat()
        os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        with pytest.raises(ReadError, match=r"c/1/0/0/0: the index's CRC-32C does not match"):
            lay[3]


def test_footers_kept_are_dropped_oldest_first_not_all_at_once(tmp_path, monkeypatch):
    """With more shard files read than footers kept, the first read is dropped, not the
    whole cache: reading the last few shards again parses no footer (it parsed most of
    them again when the cache was cleared as it filled)."""
    recs = _recs((4, 8, 4000), 10, 5)  # shards of 2 steps: 5 files
    path = tmp_path / "s"
    _write(path, recs)
    lay = spikestore.open(path)["m"]["v"]
    footers = []
    counted = _counting_footers(footers)
    monkeypatch.setattr(_direct, "_FOOTERS", 4)
    monkeypatch.setattr(_direct, "_footer", counted)
    for i in (0, 2, 4, 6, 8):  # five shard files, four kept
        assert bits_equal(lay[i], recs[i])
    assert len(footers) == 5
    for i in (3, 5, 7, 9):  # the last four files: all kept
        assert bits_equal(lay[i], recs[i])
    assert len(footers) == 5
    assert bits_equal(lay[1], recs[1])  # the first, dropped: read again
    assert footers[-1] == "m/v/f0/s0/c/0/0/0/0"


def test_a_missing_shard_file_is_named_at_once_not_read_again(tmp_path, monkeypatch):
    """A shard file that is not there is not read again and again as a file being
    replaced is (it stays missing): the error comes without the retries' waits."""
    from spikestore.reader import _field

    recs = _recs((4, 8, 4000), 8, 9)
    path = tmp_path / "s"
    _write(path, recs)
    lay = spikestore.open(path)["m"]["v"]
    (path / "m/v/f0/s0/c/2/0/0/0").unlink()
    waits = []
    monkeypatch.setattr(_field.time, "sleep", waits.append)
    with pytest.raises(ReadError, match=r"m/v/f0/s0/c/2/0/0/0 of s0 is missing from the store"):
        lay[5]
    with pytest.raises(ReadError, match=r"m/v/f0/s0/c/2/0/0/0 of s0 is missing from the store"):
        lay.neuron((1, 2))
    assert waits == []
    assert bits_equal(lay[3], recs[3])
