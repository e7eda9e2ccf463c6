"""Reads that bypass Zarr: rows of raw segments straight from their shard files
(``reader/_direct.py``), a few rows of a spike chunk decoded alone (``reader/_rows.py``)
and time-last spikes unpacked in numpy. Each must give what Zarr and ``decode_chunk``
give, and refuse what they refuse."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import zarr

import spikestore
from spikestore import ReadError
from spikestore.codecs.spikes import decode_chunk, encode_chunk
from spikestore.errors import SpikestoreError
from spikestore.reader._direct import raw_layout
from spikestore.reader._rows import chunk_rows
from spikestore.testing import bits_equal


def _chunks():
    rng = np.random.default_rng(0)
    for p in (0.0, 1e-4, 0.002, 0.02, 0.05, 0.4, 0.95):  # tree depths 0 to 4, ZERO, RAW
        for rows, cols in ((16, 2009), (16, 245), (7, 13), (1, 5), (64, 128), (3, 1)):
            bits = rng.random((rows, cols * 8)) < p
            yield p, np.packbits(bits, axis=1)


def test_rows_of_a_spike_chunk_are_those_decode_chunk_gives():
    seen_depths = set()
    for _, chunk in _chunks():
        rows, cols = chunk.shape
        enc = np.frombuffer(encode_chunk(chunk, level=1), np.uint8)
        if enc[3] == 2:
            seen_depths.add(int(enc[12]))
        full = decode_chunk(enc, (rows, cols))
        assert np.array_equal(full, chunk)
        for r0 in range(rows):
            for r1 in {r0 + 1, min(rows, r0 + 3), rows}:
                got = chunk_rows(enc, (rows, cols), r0, r1)
                assert got.dtype == np.uint8 and got.shape == (r1 - r0, cols)
                assert np.array_equal(got, full[r0:r1])
    assert seen_depths >= {0, 1, 2, 3}


def test_rows_of_a_damaged_spike_chunk_are_refused_as_decode_chunk_refuses():
    """Any byte of a chunk changed: both decoders refuse it, or both give the same."""
    rng = np.random.default_rng(1)
    tried = refused = 0
    for _, chunk in _chunks():
        rows, cols = chunk.shape
        enc = np.frombuffer(encode_chunk(chunk, level=1), np.uint8)
        for pos in rng.choice(len(enc), min(len(enc), 12), replace=False):
            bad = enc.copy()
            bad[pos] ^= 1 << int(rng.integers(8))
            try:
                want = decode_chunk(bad, (rows, cols))
            except ValueError:
                want = None
            for r0, r1 in ((0, 1), (rows // 2, rows // 2 + 1), (rows - 1, rows)):
                if want is None:
                    with pytest.raises(ValueError):
                        chunk_rows(bad, (rows, cols), r0, r1)
                else:
                    assert np.array_equal(chunk_rows(bad, (rows, cols), r0, r1), want[r0:r1])
            tried += 1
            refused += want is None
    assert tried > 100 and refused > 20


def _write(path: Path, recs: list[torch.Tensor], **kw) -> None:
    with spikestore.StoreWriter(path, **kw) as w:
        for x in recs:
            w.append("m", "x", x)


def _check_reads(path: Path, recs: list[torch.Tensor]) -> None:
    lay = spikestore.open(path)["m"]["x"]
    n = len(recs)
    for i in (0, 1, n // 2, n - 1):
        assert bits_equal(lay[i], recs[i])
    assert bits_equal(lay[3 : n - 2], torch.stack(recs[3 : n - 2]))
    pick = [n - 1, 0, 5, 5, n // 3]
    for got, i in zip(lay.records(pick), pick, strict=True):
        assert bits_equal(got, recs[i])
    assert bits_equal(lay[:], torch.stack(recs))


CASES = {
    # random floats: Blosc stores their chunks as they are (no decoding at all)
    "stored": lambda g, i: torch.randn((3, 40, 50), generator=g),
    # counters: Blosc compresses them (bit shuffle)
    "compressed": lambda g, i: torch.arange(6000, dtype=torch.int32).reshape(2, 3000) + i,
    # float64 records wider than one chunk, cut unevenly at the record's edge
    "edges": lambda g, i: torch.randn(70001, generator=g, dtype=torch.float64),
    "bfloat16": lambda g, i: torch.randn((5, 7), generator=g).to(torch.bfloat16),
    "int16": lambda g, i: torch.randint(-9, 9, (4, 4, 4), generator=g, dtype=torch.int16),
}


@pytest.mark.parametrize("case", list(CASES))
def test_raw_segments_read_from_their_shard_files_as_written(tmp_path, case):
    g = torch.Generator().manual_seed(3)
    recs = [CASES[case](g, i) for i in range(40)]
    path = tmp_path / "s"
    _write(path, recs, shard_steps=16)
    lay = spikestore.open(path)["m"]["x"]
    fld = lay.field(0)
    assert all(raw_layout(fld.array(k)) is not None for k in range(len(fld.segments)))
    _check_reads(path, recs)


def test_a_chain_read_through_zarr_reads_the_same(tmp_path):
    """A compressor the direct reads do not handle: the rows come through Zarr."""
    g = torch.Generator().manual_seed(4)
    recs = [torch.randn((6, 9), generator=g) for _ in range(30)]
    path = tmp_path / "s"
    _write(path, recs, compressor="zstd")
    fld = spikestore.open(path)["m"]["x"].field(0)
    assert raw_layout(fld.array(0)) is None
    _check_reads(path, recs)


def _first_chunk_byte(shard: Path) -> None:
    data = bytearray(shard.read_bytes())
    data[40] ^= 0x10
    shard.write_bytes(bytes(data))


def test_a_damaged_raw_chunk_is_an_error_naming_its_shard(tmp_path):
    g = torch.Generator().manual_seed(5)
    recs = [torch.randn((3, 40, 50), generator=g) for _ in range(40)]
    path = tmp_path / "s"
    _write(path, recs, shard_steps=16)
    _first_chunk_byte(path / "m/x/f0/s0/c/1/0/0/0")
    lay = spikestore.open(path)["m"]["x"]
    with pytest.raises(ReadError, match=r"m/x/f0/s0/c/1/0/0/0.*CRC-32C"):
        lay[35]  # shards of 32 rows: the second one's first chunk
    assert bits_equal(lay[3], recs[3])
    assert bits_equal(lay[20], recs[20])


def test_a_link_on_the_way_to_a_raw_shard_is_never_followed(tmp_path):
    g = torch.Generator().manual_seed(6)
    recs = [torch.randn((3, 40, 50), generator=g) for _ in range(40)]
    path = tmp_path / "s"
    _write(path, recs, shard_steps=16)
    folder = path / "m/x/f0/s0/c/1"
    shutil.copytree(folder, tmp_path / "elsewhere")
    shutil.rmtree(folder)
    os.symlink(tmp_path / "elsewhere", folder)
    lay = spikestore.open(path)["m"]["x"]
    with pytest.raises(SpikestoreError, match=r"missing from the store|symbolic link"):
        lay[35]  # the shard behind the link is not the store's
    assert bits_equal(lay[3], recs[3])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int8, torch.bool])
def test_time_last_spikes_unpack_to_their_records(tmp_path, dtype):
    g = torch.Generator().manual_seed(7)
    recs = [(torch.rand((3, 2, 5, 6, 7), generator=g) < 0.2).to(dtype) for _ in range(30)]
    path = tmp_path / "s"
    with spikestore.StoreWriter(path) as w:
        for x in recs:
            w.append("m", "x", x, time_axis=0)
    lay = spikestore.open(path)["m"]["x"]
    assert lay.field(0).segments[0]["permute"] is not None
    for i in (0, 13, 29):
        assert bits_equal(lay[i], recs[i])
    for got, i in zip(lay.records([4, 2, 2, 28]), [4, 2, 2, 28], strict=True):
        assert bits_equal(got, recs[i])
    assert bits_equal(lay[:], torch.stack(recs))


def test_neuron_of_a_wide_spike_record_decodes_only_its_column_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import spikestore.codecs.spikes as spikes_codec
    import spikestore.reader._shards as shards_mod

    g = torch.Generator().manual_seed(5)
    data = (torch.rand((64, 4, 8, 16, 28, 28), generator=g) < 0.05).float()
    path = tmp_path / "run.spikes"
    with spikestore.StoreWriter(path) as w:
        for x in data:
            w.append("output", "sn", x, time_axis=0)
    layer = spikestore.open(path)["output"]["sn"]
    arr = zarr.open_array(str(path / "output" / "sn" / "f0" / "s0"), mode="r")
    row_chunks = -(-64 // arr.chunks[0])
    col_chunks = -(-arr.shape[1] // arr.chunks[1])
    assert col_chunks > 1  # the record spans several chunk columns
    calls = []
    for mod, name in ((spikes_codec, "decode_chunk"), (shards_mod, "chunk_rows")):
        real = getattr(mod, name)

        def counted(*a: Any, _real: Any = real, **k: Any) -> Any:
            calls.append(1)
            return _real(*a, **k)

        monkeypatch.setattr(mod, name, counted)
    for idx in [(1, 2, 3, 4, 5), (3, 7, 15, 27, 27), (0, 0, 0, 0, 0)]:
        calls.clear()
        got = layer.neuron(idx, time_axis=False)  # the whole record: time included
        assert torch.equal(got, data[(slice(None), *idx)])
        assert len(calls) == row_chunks, (len(calls), row_chunks, col_chunks)
