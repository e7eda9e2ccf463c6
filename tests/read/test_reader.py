"""The reader's public pieces: step indices, fields, sizes, and damage it must report."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from zarr.core.sync import sync
from zarr.storage import LocalStore

import spikestore
from spikestore import ReadError
from spikestore.reader import FieldReader, step_indices


# ------------------------------------------------------------- step_indices
@pytest.mark.parametrize(
    ("key", "want", "many"),
    [
        (0, [0], False),
        (-1, [4], False),
        (np.int32(-5), [0], False),
        (slice(None), [0, 1, 2, 3, 4], True),
        (slice(-2, None), [3, 4], True),
        (slice(None, None, -2), [4, 2, 0], True),
        (slice(7, 9), [], True),
        ([3, -1, 3], [3, 4, 3], True),
        ([], [], True),
        (range(1, 4), [1, 2, 3], True),
        (np.array([[1], [2]], dtype=np.uint8), [1, 2], True),
        (torch.tensor([0, -5]), [0, 0], True),
        (torch.tensor(2), [2], True),
        ([torch.tensor(1), np.int64(-1)], [1, 4], True),
        (np.array([3, 1], dtype=object), [3, 1], True),
        (np.array([], dtype=np.float64), [], True),
    ],
)
def test_step_indices_accepts(key, want, many) -> None:
    got, got_many = step_indices(key, 5)
    assert got.dtype == np.int64 and got.ndim == 1
    assert got.tolist() == want and got_many is many


@pytest.mark.parametrize(
    ("key", "match"),
    [
        (5, r"^step 5 is out of range for layer 'x': 5 steps, valid indices -5 to 4$"),
        (-6, r"step -6 is out of range .* -5 to 4"),
        ([0, 7, -9, 12, 5, 6, 8], r"^steps \[7, -9, 12, 5, 6, \.\.\.\] are out of range"),
        (np.array([2**63 + 1], dtype=np.uint64), r"steps \[9223372036854775809\] are out"),
        ([2**70, 1], r"steps \[1180591620717411303424\] are out"),
    ],
)
def test_step_indices_out_of_range(key, match) -> None:
    with pytest.raises(IndexError, match=match):
        step_indices(key, 5, where="layer 'x'")


def test_step_indices_names_what_and_empty_ranges() -> None:
    with pytest.raises(IndexError, match=r"^record 0 is out of range: there are no records$"):
        step_indices(0, 0, "record")
    with pytest.raises(IndexError, match=r"1 record, valid indices -1 to 0"):
        step_indices([1], 1, "record")


@pytest.mark.parametrize(
    "key",
    [
        True,
        np.bool_(False),
        1.0,
        "1",
        None,
        (1, 2),
        [True, False],
        np.array([0.5]),
        [1, None],
        np.array([1, 2.5], dtype=object),
        torch.tensor([1.0]),
    ],
)
def test_step_indices_refuses(key) -> None:
    with pytest.raises(TypeError, match=r"^record indices must be"):
        step_indices(key, 5, "record")


# ----------------------------------------------------------------- fixtures
def _write(path: Path) -> None:
    with spikestore.StoreWriter(path) as w:
        for i in range(6):
            w.append("o", "x", (torch.arange(8) % (i + 2) == 0).float())
            w.append("o", "y", torch.full((3,), i + 0.5))
            w.append("o", "pair", (torch.ones(2) * i, float(i)))


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("reader") / "s"
    _write(path)
    return path


# ------------------------------------------------------------ layer / fields
def test_layer_fields_are_public(store_path: Path) -> None:
    s = spikestore.open(store_path)
    pair = s["o"]["pair"]
    assert [type(f) for f in pair.fields] == [FieldReader, FieldReader]
    assert pair.field(1) is pair.fields[1]
    with pytest.raises(IndexError, match="2 field"):
        pair.field(2)
    fld = s["o"]["y"].field()
    assert fld.committed == 6 and [seg["encoding"] for seg in fld.segments] == ["raw"]
    idx = fld.index(0, 6)
    assert idx.shape == (6, 2) and (idx[:, 0] == 0).all()
    np.testing.assert_array_equal(fld.take(0, idx[[4, 1], 1], (slice(1, 2),)), [[4.5], [1.5]])
    assert [float(r[0]) for r in fld.read(np.array([5, 2]), None)] == [5.5, 2.5]
    assert fld.has_summary("summary")
    row = fld.summary("summary", np.array([3]))
    np.testing.assert_array_equal(row, [[3, 10.5, 3.5, 3.5, 3.5]])
    with pytest.raises(ValueError, match="not a summary array"):
        fld.summary("s0", np.array([0]))


def test_layer_index_errors_name_the_layer(store_path: Path) -> None:
    lay = spikestore.open(store_path)["o"]["x"]
    with pytest.raises(IndexError, match=r"monitor 'o', layer 'x': 6 steps, valid indices -6 to 5"):
        lay[6]
    with pytest.raises(TypeError):
        lay[1, 0]
    with pytest.raises(TypeError):
        lay[np.array([1.7])]  # was silently step 1
    with pytest.raises(TypeError):
        lay[[True, False]]  # was silently steps 1 and 0
    assert lay[np.array([], dtype=np.int64)].shape == (0, 8)  # a tensor, as every slice


def test_nbytes_stored_counts_files_and_skips_temporary_ones(tmp_path: Path) -> None:
    path = tmp_path / "s"
    _write(path)
    lay = spikestore.open(path)["o"]["x"]
    on_disk = sum(f.stat().st_size for f in (path / "o" / "x").rglob("*") if f.is_file())
    assert lay.nbytes_stored() == on_disk
    assert lay.nbytes_stored() == sync(LocalStore(path).getsize_prefix("o/x"))
    (path / "o" / "x" / "f0" / "zarr.json.0123abcd.partial").write_bytes(b"x" * 1000)
    assert lay.nbytes_stored() == on_disk


def test_nbytes_stored_while_a_writer_appends(tmp_path: Path) -> None:
    # A live writer renames temporary files into place all the time; measuring
    # used to stat files that had vanished since the listing (a few calls in a
    # thousand failed with FileNotFoundError).
    path = tmp_path / "s"
    g = torch.Generator().manual_seed(0)
    names = [f"l{i}" for i in range(4)]
    stop = threading.Event()
    with spikestore.StoreWriter(path, flush_interval=0.01, shard_steps=32) as w:
        for name in names:
            w.append("o", name, torch.randn(8192, generator=g))  # 32 KiB: 32-step shards
        w.flush()

        def append() -> None:
            while not stop.is_set():
                for name in names:
                    w.append("o", name, torch.randn(8192, generator=g))

        t = threading.Thread(target=append)
        t.start()
        try:
            layers = list(spikestore.open(path).layers())
            calls, t0 = 0, time.monotonic()
            while calls < 2000 and time.monotonic() - t0 < 10:
                for lay in layers:
                    assert lay.nbytes_stored() > 0
                    calls += 1
        finally:
            stop.set()
            t.join()
    assert len(spikestore.open(path)["o"]["l0"]) > 64


# --------------------------------------------------- missing field groups
def _edit_layer(path: Path, key: str, **change: object) -> None:
    meta = path / key / "zarr.json"
    doc = json.loads(meta.read_text())
    entry = doc["attributes"]["spikestore"]
    for k, v in change.items():
        if v is _DROP:
            entry.pop(k, None)
        else:
            entry[k] = v
    meta.write_text(json.dumps(doc))


_DROP = object()


@pytest.mark.parametrize(("layer", "field"), [("x", "f0"), ("pair", "f1")])
def test_missing_field_group_of_a_complete_layer_is_damage(
    tmp_path: Path, store_path: Path, layer: str, field: str
) -> None:
    path = tmp_path / "s"
    shutil.copytree(store_path, path)
    _edit_layer(path, f"o/{layer}", time_axis=None)
    shutil.rmtree(path / "o" / layer / field)
    s = spikestore.open(path)
    lay = s["o"][layer]  # still opens and lists, so the other layers stay readable
    assert sorted(s["o"]) == ["pair", "x", "y"]
    want = rf"^monitor 'o', layer '{layer}': field group is missing from the store .*: {field}$"
    for read in (len, lambda la: la[0], lambda la: la.fields, lambda la: la.segments):
        with pytest.raises(spikestore.ReadError, match=want):
            read(lay)
    assert "damaged" in repr(lay)
    assert len(s["o"]["y"]) == 6


def test_missing_field_group_of_an_old_layer_is_no_steps(tmp_path: Path, store_path: Path) -> None:
    # Stores before format 1.3 have no time_axis: a writer killed before the
    # field's first commit left the layer without its field group.
    path = tmp_path / "s"
    shutil.copytree(store_path, path)
    _edit_layer(path, "o/x", time_axis=_DROP)
    shutil.rmtree(path / "o" / "x" / "f0")
    lay = spikestore.open(path)["o"]["x"]
    assert len(lay) == 0 and lay[:].shape == (0,) and lay.records() == [] and lay.segments == []


def test_time_axis_is_read(tmp_path: Path, store_path: Path) -> None:
    path = tmp_path / "s"
    shutil.copytree(store_path, path)
    _edit_layer(path, "o/x", time_axis=0)
    _edit_layer(path, "o/y", time_axis=_DROP)
    s = spikestore.open(path)
    assert s["o"]["x"].time_axis == 0 and s["o"]["y"].time_axis is None


# ------------------------------------------------------------ damaged summaries
def _damage(path: Path, how: str) -> None:
    summary = path / "o" / "x" / "f0" / "summary"
    chunks = [f for f in (summary / "c").rglob("*") if f.is_file()]
    assert chunks
    for f in chunks:
        if how == "garbage":
            f.write_bytes(os.urandom(f.stat().st_size))
        elif how == "missing":
            f.unlink()
    if how == "json":
        (summary / "zarr.json").write_bytes(b"\x00 not json {")
    elif how == "json-not-array":
        (summary / "zarr.json").write_text('{"zarr_format": 3, "node_type": "array"}')


@pytest.mark.parametrize(
    ("how", "error"),
    [
        ("garbage", spikestore.ReadError),
        ("missing", spikestore.ReadError),  # was read as NaN: a rate of None, NaN rows
        ("json", spikestore.FormatError),
        ("json-not-array", spikestore.FormatError),  # was taken for "no summary"
    ],
)
def test_damaged_summary_raises_naming_the_layer(
    tmp_path: Path, store_path: Path, how: str, error: type
) -> None:
    from spikestore import analysis

    path = tmp_path / "s"
    shutil.copytree(store_path, path)
    _damage(path, how)
    lay = spikestore.open(path)["o"]["x"]
    for read in (analysis.mean_rate, analysis.summary, analysis.firing_rate):
        with pytest.raises(error, match=r"monitor 'o', layer 'x'"):
            read(lay)
    assert len(lay[:]) == 6  # the records themselves still read


# ------------------------------------------------------------- stacked reads
def _stack_reference(recs: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(recs)


@pytest.mark.parametrize(
    ("dtype", "shape", "time_axis"),
    [
        (torch.float32, (6, 64), None),
        (torch.float32, (4, 3, 5, 7), 0),  # permuted (time last), 420 bits: padded rows
        (torch.bfloat16, (3, 40), None),  # a dtype numpy lacks
        (torch.bool, (2, 3, 8), 1),
        (torch.int64, (5, 13), None),  # 65 bits: a padded last byte
        (torch.float16, (17,), None),
    ],
)
def test_stacked_spike_reads_match_the_records(
    tmp_path: Path, dtype: torch.dtype, shape: tuple[int, ...], time_axis: int | None
) -> None:
    # Stacked reads of spike records decode straight into the output tensor: values,
    # dtype, axis order and padding must be exactly those recorded, for every selection.
    g = torch.Generator().manual_seed(1)
    recs = [(torch.rand(shape, generator=g) < 0.3).to(dtype) for _ in range(40)]
    with spikestore.StoreWriter(tmp_path / "s", shard_steps=16, chunk_bytes=64) as w:
        for r in recs:
            w.append("m", "l", r, time_axis=time_axis)
    layer = spikestore.open(tmp_path / "s")["m"]["l"]
    for key in (slice(None), slice(3, 37, 2), [39, 0, 5, 5], slice(10, 11)):
        steps = range(len(recs))[key] if isinstance(key, slice) else key
        got = layer[key]
        want = _stack_reference([recs[i] for i in steps])
        assert got.dtype == dtype and got.shape == want.shape and got.is_contiguous()
        assert torch.equal(got, want), key
    assert torch.equal(layer[7], recs[7])


def test_a_slice_across_shapes_or_none_is_an_error_and_records_a_list(tmp_path: Path) -> None:
    # A slice is always one tensor: steps in two segments (shapes differ) or with a None
    # record are a ValueError naming them, not a list that has no .shape; records() is
    # the list. Steps of one segment of a multi-segment layer still stack.
    recs: list[torch.Tensor | None] = [torch.ones(2, 8), torch.zeros(3, 8), None, torch.ones(2, 8)]
    with spikestore.StoreWriter(tmp_path / "s") as w:
        for r in recs:
            w.append("m", "l", r)
    layer = spikestore.open(tmp_path / "s")["m"]["l"]
    with pytest.raises(
        ValueError,
        match=r"monitor 'm', layer 'l': steps 0\.\.3 do not stack.*shape \(2, 8\) float32 at "
        r"steps 0, 3; shape \(3, 8\) float32 at step 1; None at step 2\. layer\.records",
    ):
        layer[:]
    with pytest.raises(ValueError, match=r"steps 1\.\.2 do not stack"):
        layer.read(slice(1, 3))
    got = layer.records(slice(None))
    assert isinstance(got, list) and got[2] is None
    assert all(torch.equal(a, b) for a, b in zip(got[:2], recs[:2], strict=True))
    assert torch.equal(layer[[0, 3]], torch.ones(2, 2, 8))
    assert torch.equal(layer[1:2], torch.zeros(1, 3, 8))


def test_a_slice_is_a_tensor_whatever_the_dtypes(tmp_path: Path) -> None:
    # Float32 and bfloat16 steps (an eval pass under autocast) stack in their common
    # dtype; one step reads in its own; a layer of Python numbers stacks to 1-D.
    with spikestore.StoreWriter(tmp_path / "s") as w:
        w.append("m", "l", torch.full((2,), 0.5))
        w.append("m", "l", torch.full((2,), 0.25, dtype=torch.bfloat16))
        w.append("m", "l", torch.tensor([1.0, 0.0], dtype=torch.float8_e4m3fn))
        for x in (1, 2.5, True):
            w.append("m", "n", x)
    s = spikestore.open(tmp_path / "s")
    layer = s["m"]["l"]
    assert layer[1].dtype == torch.bfloat16
    assert layer[:2].dtype == torch.float32
    assert torch.equal(layer[:2], torch.tensor([[0.5] * 2, [0.25] * 2]))
    assert layer[:].dtype == torch.float64 == layer.dtype  # no common type with float8
    assert torch.equal(layer[:][2], torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert torch.equal(s["m"]["n"][:], torch.tensor([1.0, 2.5, 1.0], dtype=torch.float64))
    assert s["m"]["n"][-1] is True


def test_stacked_read_of_a_live_store_reads_the_tail(tmp_path: Path) -> None:
    # Rows past ``sealed`` live in a tail array while the writer is open.
    recs = [(torch.arange(64) % (i + 2) == 0).float() for i in range(40)]
    with spikestore.StoreWriter(tmp_path / "s", shard_steps=16) as w:
        for r in recs:
            w.append("m", "l", r)
        w.flush()
        layer = spikestore.open(tmp_path / "s")["m"]["l"]
        assert layer.segments[0].get("sealed", 40) < 40
        assert torch.equal(layer[:], torch.stack(recs))


def test_stack_of_records_uses_one_output(tmp_path: Path) -> None:
    from spikestore.reader._trees import _stack

    recs = [torch.randn(3, 4) for _ in range(5)]
    out = _stack(recs)
    assert torch.equal(out, torch.stack(recs)) and out.dtype == torch.float32
    bf = [r.to(torch.bfloat16) for r in recs]
    assert torch.equal(_stack(bf), torch.stack(bf))
    assert _stack([torch.ones(2), torch.ones(3)])[1].shape == (3,)


# ------------------------------------------- spike shards read without Zarr's sharding
def _spike_store(path: Path, steps: int = 50, shape: tuple[int, ...] = (4, 100), **kw) -> list:
    """Spike records in inner chunks of 16 steps and 16 bytes (small records: one shard
    of 16384 steps, mostly absent chunks) or, with ``big=True``, 64 KB rows in shards of
    16 steps, each one inner chunk row of four columns (the last shard partial)."""
    time_axis = kw.pop("time_axis", None)
    if kw.pop("big", False):
        shape, kw = (4, 131072), {**kw, "chunk_bytes": 1 << 18}
    g = torch.Generator().manual_seed(2)
    recs = [(torch.rand(shape, generator=g) < 0.2).float() for _ in range(steps)]
    recs[7] = torch.zeros(shape)
    kw.setdefault("chunk_bytes", 256)
    with spikestore.StoreWriter(path, shard_steps=16, **kw) as w:
        for r in recs:
            w.append("m", "l", r, time_axis=time_axis)
    return recs


def _shard_file(path: Path, shard: int) -> Path:
    return path / "m" / "l" / "f0" / "s0" / "c" / str(shard) / "0"


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    ("shape", "time_axis"),
    [((4, 100), None), ((5, 2, 3, 7), 0), ((3, 130), 1), ((4, 131072), "big")],
)
def test_spike_shards_are_read_directly_and_match_zarr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads: int, shape, time_axis
) -> None:
    from spikestore import reader
    from spikestore.reader import _field, _pool, _shards

    big = time_axis == "big"
    recs = _spike_store(tmp_path / "s", shape=shape, time_axis=None if big else time_axis, big=big)
    layer = spikestore.open(tmp_path / "s")["m"]["l"]
    fld = layer.field(0)
    arr = fld.array(0)
    assert _shards._spike_shards(arr) is not None
    calls: list[int] = []
    real = _shards._read_spike_rows

    def counted(*args: Any) -> Any:
        calls.append(len(args[2]))
        return real(*args)

    monkeypatch.setattr(_field, "_read_spike_rows", counted)
    monkeypatch.setattr(_pool, "_PARALLEL_BITS", 0)  # every read shares its chunks
    monkeypatch.setattr(reader, "READ_THREADS", threads)
    for key in (slice(None), slice(3, 47, 3), [49, 0, 5, 5, 17], slice(20, 21), slice(1, 49)):
        steps = range(len(recs))[key] if isinstance(key, slice) else key
        assert torch.equal(layer[key], _stack_reference([recs[i] for i in steps])), key
    for i in (0, 7, 16, 33, 49, -1):
        assert torch.equal(layer[i], recs[i])
    assert calls
    # the packed rows, read through the store, are Zarr's
    for rows in (np.arange(50), np.array([0, 15, 16, 31, 48, 49]), np.array([17])):
        want = np.asarray(arr.get_orthogonal_selection((rows,)))
        np.testing.assert_array_equal(fld.take(0, rows), want)
    nd = (2,) + (0,) * (len(shape) - 1)
    assert torch.equal(layer.neuron(nd, time_axis=False), torch.stack(recs)[(slice(None), *nd)])


def test_other_spike_codecs_and_raw_rows_are_read_through_zarr(tmp_path: Path) -> None:
    from spikestore.reader._shards import _spike_shards

    recs = _spike_store(tmp_path / "z", compressor="zstd")
    layer = spikestore.open(tmp_path / "z")["m"]["l"]
    assert _spike_shards(layer.field(0).array(0)) is None
    assert torch.equal(layer[:], torch.stack(recs))
    with spikestore.StoreWriter(tmp_path / "r") as w:
        w.append("m", "l", torch.randn(3, 5))
    assert _spike_shards(spikestore.open(tmp_path / "r")["m"]["l"].field(0).array(0)) is None


def _set_index(blob: bytes, grid: int, fn) -> bytes:
    import google_crc32c

    n = 16 * grid + 4
    index = np.frombuffer(blob[-n:-4], "<u8").reshape(-1, 2).copy()
    fn(index)
    raw = index.tobytes()
    return blob[:-n] + raw + np.uint32(google_crc32c.value(raw)).astype("<u4").tobytes()


@pytest.mark.parametrize(
    "damage", ["index_crc", "index_offset", "index_size", "chunk_crc", "truncate", "empty"]
)
def test_damaged_spike_shard_is_read_error_naming_its_steps(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "s"
    recs = _spike_store(path, steps=40, big=True)
    victim = _shard_file(path, 1)  # steps 16..31
    blob = victim.read_bytes()
    grid = 4  # one inner chunk row by four columns a shard
    if damage == "index_crc":
        blob = blob[:-1] + bytes([blob[-1] ^ 0x5A])
    elif damage == "index_offset":
        blob = _set_index(blob, grid, lambda ix: ix.__setitem__((2, 0), 2**63))
    elif damage == "index_size":
        blob = _set_index(blob, grid, lambda ix: ix.__setitem__((1, 1), 2))
    elif damage == "chunk_crc":
        blob = bytes([blob[0], blob[1] ^ 0x10]) + blob[2:]
    elif damage == "truncate":
        blob = blob[: len(blob) // 2]
    else:
        blob = b""
    victim.write_bytes(blob)
    layer = spikestore.open(path)["m"]["l"]
    # each read names the monitor, the layer and the steps it wanted of the damaged shard
    for key, steps in ((slice(None), "16..31"), (20, "20..20"), (slice(10, 40, 5), "20..30")):
        with pytest.raises(ReadError, match=rf"^monitor 'm', layer 'l': cannot read steps {steps}"):
            layer[key]
    with pytest.raises(ReadError, match=r"cannot read steps 31\.\.31 \(s0\): shard m/l/f0/s0/c/1"):
        layer[[31, 2]]
    # the other shards still read
    assert torch.equal(layer[:16], torch.stack(recs[:16]))
    assert torch.equal(layer[32:], torch.stack(recs[32:]))
    assert torch.equal(layer[35], recs[35])


def test_flipped_bytes_in_a_stored_chunk_raise_or_decode(tmp_path: Path) -> None:
    # A chunk damaged behind a CRC that still matches (fixed up, as an attacker could):
    # every read raises ReadError or gives a tensor of the record's shape, never a crash.
    import google_crc32c

    path = tmp_path / "s"
    _spike_store(path, steps=20)
    victim = _shard_file(path, 0)
    orig = victim.read_bytes()
    arr = spikestore.open(path)["m"]["l"].field(0).array(0)
    grid = (arr.shards[0] // arr.chunks[0]) * (arr.shards[1] // arr.chunks[1])
    index = np.frombuffer(orig[-(16 * grid + 4) : -4], "<u8").reshape(-1, 2)
    off, size = (int(v) for v in index[0])
    rng = np.random.default_rng(0)
    for pos in range(off, off + size - 4, 3):
        bad = bytearray(orig)
        bad[pos] ^= int(rng.integers(1, 256))
        crc = google_crc32c.value(bytes(bad[off : off + size - 4]))
        bad[off + size - 4 : off + size] = np.uint32(crc).astype("<u4").tobytes()
        victim.write_bytes(bytes(bad))
        layer = spikestore.open(path)["m"]["l"]
        for key in (slice(None), 3):
            try:
                got = layer[key]
            except ReadError as exc:
                assert "'l'" in str(exc) and "steps" in str(exc)
            else:
                assert got.shape[-2:] == (4, 100) and got.dtype == torch.float32
    # one step is read by byte ranges (its index, then its chunk row): damage there too
    victim.write_bytes(orig[:-1] + bytes([orig[-1] ^ 1]))
    with pytest.raises(ReadError, match=r"steps 3\.\.3 \(s0\): shard .* CRC-32C"):
        spikestore.open(path)["m"]["l"][3]


def test_share_runs_every_job_and_raises_the_first_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from spikestore import reader
    from spikestore.reader._pool import _share

    monkeypatch.setattr(reader, "READ_THREADS", 2)
    done: list[int] = []
    lock = threading.Lock()

    def ok(j: int) -> None:
        time.sleep(0.001)  # a job that takes a while: the threads share them
        with lock:
            done.append(j)

    _share(ok, range(40))
    assert sorted(done) == list(range(40))

    def boom(j: int) -> None:
        if j == 5:
            raise ValueError("job 5")
        time.sleep(0.001)  # the other jobs are still running when job 5 fails

    with pytest.raises(ValueError, match="job 5"):
        _share(boom, range(40))


def test_neuron_errors_name_the_layer_shape_and_range(tmp_path):
    """Item 8 of issue 11: raw numpy messages ("invalid entry in coordinates array",
    "parameter multi_index must be a sequence of length 3") became errors naming the
    layer, the record shape (and its dims) and the valid range."""
    path = tmp_path / "s"
    with spikestore.StoreWriter(path) as w:
        for _ in range(3):
            w.append("v", "sn", torch.rand(2, 3), dims=("batch", "neuron"))
    layer = spikestore.open(path)["v"]["sn"]
    shape = r"records of shape \[2, 3\] \(batch, neuron\)"
    three = rf"layer 'sn': neuron \(0, 0, 99\) has 3 indices; {shape}"
    with pytest.raises(IndexError, match=three):
        layer.neuron((0, 0, 99))
    axis = rf"index 9 on axis 1 \(neuron\) is out of range 0..2 for {shape}"
    with pytest.raises(IndexError, match=axis):
        layer.neuron((0, 9))
    with pytest.raises(IndexError, match=r"neuron 6 is out of range .* flat index is from 0 to 5"):
        layer.neuron(6)
    with pytest.raises(TypeError, match="a neuron is an int or a tuple of ints"):
        layer.neuron(1.5)
    assert torch.equal(layer.neuron((-1, -1)), layer.neuron(5))


def test_neuron_over_steps_that_recorded_a_number_first(tmp_path):
    """SpikingJelly's v is the float 0.0 before a neuron's first step: neuron() gives that
    number for every element there, in the promoted dtype (it failed with "Index put
    requires the source and destination dtypes match"); None steps are named."""
    path = tmp_path / "s"
    recs = [torch.rand(2, 3) for _ in range(3)]
    with spikestore.StoreWriter(path) as w:
        w.append("v", "sn", 0.0)
        for r in recs:
            w.append("v", "sn", r)
        w.append("v", "sn", None)
        w.append("pair", "lif", (torch.ones(2), torch.arange(2.0)))
    layer = spikestore.open(path)["v"]["sn"]
    got = layer.neuron(4, steps=slice(0, 4))
    assert got.dtype == torch.float64
    assert got.tolist() == [0.0] + [float(r.flatten()[4]) for r in recs]
    assert layer.neuron(4, steps=slice(1, 4)).dtype == torch.float32
    with pytest.raises(ValueError, match=r"layer 'sn' recorded None at step\(s\) \[4\]"):
        layer.neuron(0)
    pair = spikestore.open(path)["pair"]["lif"]
    assert pair.neuron(1, field=1).tolist() == [1.0] and pair.neuron(1, field="0").tolist() == [1.0]


def test_nbytes_metadata_counts_the_layers_zarr_json_on_any_store(tmp_path):
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync
    from zarr.storage import MemoryStore

    mem = MemoryStore()
    for store in (None, mem):
        path = None if store is not None else tmp_path / "s"
        with spikestore.StoreWriter(path, store=store) as w:
            for _ in range(5):
                w.append("v", "sn", torch.rand(3, 4))
        layer = spikestore.open(path, store=store)["v"]["sn"]
        if store is None:
            want = sum(f.stat().st_size for f in (tmp_path / "s" / "v" / "sn").rglob("zarr.json"))
        else:
            keys = [k for k in mem._store_dict if k.startswith("v/sn/") and k.endswith("zarr.json")]
            proto = default_buffer_prototype()
            want = sum(len(sync(mem.get(k, proto)).to_bytes()) for k in keys)
        assert 0 < layer.nbytes_metadata() == want < layer.nbytes_stored()
