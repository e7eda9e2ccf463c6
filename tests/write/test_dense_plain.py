"""Dense rows that do not compress: stored without a compressor, written straight from
the rows (``spikestore._segments``), segment arrays grown ahead of their rows and cut
to them on close, and the caller's copy of a record (``spikestore._staging``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

import spikestore
from spikestore import _segments
from spikestore._staging import host_copy, stage

pytestmark = pytest.mark.filterwarnings("ignore:Numcodecs codecs are not in the Zarr")


def _noise(steps: int, shape: tuple[int, ...], seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) for _ in range(steps)]


def _codecs(path: Path, node: str) -> list[str]:
    meta = json.loads((path / node / "zarr.json").read_text())
    return [c["name"] for c in meta["codecs"][0]["configuration"]["codecs"]]


def _shape(path: Path, node: str) -> list[int]:
    return json.loads((path / node / "zarr.json").read_text())["shape"]


def test_incompressible_floats_are_stored_as_they_are(tmp_path: Path) -> None:
    """40 steps of noise (a first write of 40 rows, chunks of 16): no compressor, the
    rows bit for bit, read by plain Zarr in a process that never imports spikestore."""
    recs = _noise(40, (8, 64, 64))
    recs[3][0, 0, :4] = torch.tensor([float("nan"), -0.0, float("inf"), -float("inf")])
    with spikestore.StoreWriter(tmp_path / "s", flush_interval=1e3) as w:
        for r in recs:
            w.append("v", "lif", r, time_axis=0)
    assert _codecs(tmp_path / "s", "v/lif/f0/s0") == ["bytes", "crc32c"]
    layer = spikestore.open(tmp_path / "s")["v"]["lif"]
    back = layer[:]
    assert torch.equal(back.view(torch.int32), torch.stack(recs).view(torch.int32))
    # Fill rows of the last chunk row (48 rows for 40) and the shard files' indexes.
    assert layer.nbytes_stored() < 1.25 * layer.nbytes_float32()
    np.save(tmp_path / "want.npy", torch.stack(recs).numpy())
    code = (
        "import sys, numpy as np, zarr\n"
        f"a = zarr.open_group({str(tmp_path / 's')!r}, mode='r')['v/lif/f0/s0']\n"
        f"want = np.load({str(tmp_path / 'want.npy')!r})\n"
        "assert a.shape == want.shape, a.shape\n"
        "assert np.array_equal(a[:].view(np.int32), want.view(np.int32))\n"
        "assert 'spikestore' not in sys.modules and 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)


def test_a_plain_segment_takes_appends(tmp_path: Path) -> None:
    recs = _noise(50, (8, 64, 64), seed=1)
    with spikestore.StoreWriter(tmp_path / "s", flush_interval=1e3) as w:
        for r in recs[:37]:
            w.append("v", "lif", r)
    with spikestore.StoreWriter(tmp_path / "s", mode="a", flush_interval=1e3) as w:
        for r in recs[37:]:
            w.append("v", "lif", r)
    assert _codecs(tmp_path / "s", "v/lif/f0/s0") == ["bytes", "crc32c"]
    back = spikestore.open(tmp_path / "s")["v"]["lif"][:]
    assert torch.equal(back, torch.stack(recs))
    assert _shape(tmp_path / "s", "v/lif/f0/s0")[0] == 50


def test_a_short_first_write_keeps_blosc(tmp_path: Path) -> None:
    """A first write of fewer rows than two chunk rows (and than a shard) makes the array
    again with Blosc's copy; later writes and appends go on in it."""
    recs = _noise(30, (8, 64, 64), seed=2)
    with spikestore.StoreWriter(tmp_path / "s", flush_interval=1e3) as w:
        for r in recs[:5]:
            w.append("v", "lif", r)
        w.flush()
        for r in recs[5:]:
            w.append("v", "lif", r)
    assert _codecs(tmp_path / "s", "v/lif/f0/s0") == ["bytes", "blosc", "crc32c"]
    assert torch.equal(spikestore.open(tmp_path / "s")["v"]["lif"][:], torch.stack(recs))


def test_segment_arrays_grow_ahead_and_are_cut_on_close(tmp_path: Path, monkeypatch) -> None:
    """The segment's ``zarr.json`` is not rewritten for every shard (it was, 500 times
    for 2,000 steps of a 1.6 MB record); a live reader reads the rows committed while
    the array is longer; the closed array has exactly its rows."""
    resizes: list[int] = []
    real = _segments.Segment._resize

    def counting(self: _segments.Segment, rows: int) -> None:
        resizes.append(rows)
        real(self, rows)

    monkeypatch.setattr(_segments.Segment, "_resize", counting)
    recs = _noise(200, (4, 64, 64), seed=3)  # 64 KiB rows
    path = tmp_path / "s"
    with spikestore.StoreWriter(path, max_buffer_bytes=1 << 20, flush_interval=1e3) as w:
        for r in recs[:150]:
            w.append("v", "lif", r)
        w.flush()
        live = spikestore.open(path)["v"]["lif"]
        assert len(live) == 150
        assert torch.equal(live[140:150], torch.stack(recs[140:150]))
        assert _shape(path, "v/lif/f0/s0")[0] >= 150
        for r in recs[150:]:
            w.append("v", "lif", r)
    shard = zarr.open_array(path / "v/lif/f0/s0", mode="r").shards[0]
    assert shard == 16
    assert len(resizes) <= 6, resizes  # 200 rows, 13 shards: doubling, then cut once
    assert _shape(path, "v/lif/f0/s0")[0] == 200
    assert torch.equal(spikestore.open(path)["v"]["lif"][:], torch.stack(recs))


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.randn(3, 5, 7),
        lambda: torch.randn(5, 7, 3).permute(2, 0, 1),
        lambda: torch.randn(6, 8)[::2, 1:],
        lambda: torch.randn(3, 5).to(torch.bfloat16),
        lambda: torch.randn(4, 5).to(torch.float8_e4m3fn),
        lambda: torch.randn(4, 5).to(torch.float8_e5m2).t(),
        lambda: torch.randn(4, 5).to(torch.float16),
        lambda: torch.arange(12, dtype=torch.int64).reshape(3, 4).t(),
        lambda: torch.tensor([True, False, True]),
        lambda: torch.tensor(2.5),
        lambda: torch.randn(2, 3)._neg_view(),
    ],
)
def test_the_callers_copy_is_exact_contiguous_and_its_own(make) -> None:
    """The caller's copy (made by NumPy, not torch's threads) of any stored dtype and
    any strides: the same bits, contiguous, memory of its own."""

    def bits(x: torch.Tensor) -> torch.Tensor:
        return x.resolve_neg().contiguous().reshape(-1).view(torch.uint8)

    t = make()
    c = host_copy(t)
    assert c.dtype == t.dtype and c.shape == t.shape and c.is_contiguous()
    assert torch.equal(bits(c), bits(t))
    assert c.untyped_storage().data_ptr() != t.untyped_storage().data_ptr()
    if t.is_neg():
        return  # a negative view is not a record (the spike test refuses it)
    staged = stage(t, t.ndim == 0, None)
    if staged.values is not None:
        assert torch.equal(bits(staged.values), bits(t))


def test_plain_rows_in_a_zarr_store_off_disk() -> None:
    """Off local disk the shard files are joined from the same parts (no file writer)."""
    from zarr.storage import MemoryStore

    st = MemoryStore()
    recs = _noise(70, (8, 64, 64), seed=4)
    with spikestore.StoreWriter(store=st, flush_interval=1e3) as w:
        for r in recs[:3]:
            w.append("v", "lif", r)
        w.flush()  # a short first write: Blosc's copy, tails joined off disk too
        for r in recs[3:]:
            w.append("v", "lif", r)
        for r in recs:
            w.append("v", "big", r)
    store = spikestore.open(store=st)
    assert torch.equal(store["v"]["lif"][:], torch.stack(recs))
    assert torch.equal(store["v"]["big"][:], torch.stack(recs))
    arr = zarr.open_group(st, mode="r")["v/big/f0/s0"]
    assert arr.shape == (70, 8, 64, 64)
    names = [c["name"] for c in arr.metadata.to_dict()["codecs"][0]["configuration"]["codecs"]]
    assert names == ["bytes", "crc32c"]


def test_a_killed_writers_longer_arrays_read_and_take_appends(tmp_path: Path) -> None:
    """A copy of a live store (as a killed writer leaves it): segment arrays longer
    than their rows; the reader reads the committed rows, a writer appends, and the
    closed store's arrays have exactly their rows again."""
    import shutil

    recs = _noise(120, (4, 64, 64), seed=5)
    live, dead = tmp_path / "live", tmp_path / "dead"
    with spikestore.StoreWriter(live, max_buffer_bytes=1 << 20, flush_interval=1e3) as w:
        for r in recs[:90]:
            w.append("v", "lif", r)
        w.flush()
        shutil.copytree(live, dead)
    assert _shape(dead, "v/lif/f0/s0")[0] > 90
    assert torch.equal(spikestore.open(dead)["v"]["lif"][:], torch.stack(recs[:90]))
    with spikestore.StoreWriter(dead, mode="a", flush_interval=1e3) as w:
        for r in recs[90:]:
            w.append("v", "lif", r)
    assert torch.equal(spikestore.open(dead)["v"]["lif"][:], torch.stack(recs))
    assert _shape(dead, "v/lif/f0/s0")[0] == 120


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.randn(3, 4),
        lambda: torch.randn(4, 3).t(),
        lambda: torch.randn(3).to(torch.bfloat16),
        lambda: torch.randn(5).to(torch.float8_e5m2),
        lambda: torch.randn(5).to(torch.float8_e4m3fn),
        lambda: torch.tensor(3.5),
        lambda: torch.arange(6).reshape(2, 3) + 2,
    ],
)
def test_the_writers_row_of_a_copy_is_encode_values_row(make) -> None:
    """The writer thread's row of a staged copy, made without torch calls, is the row
    ``encode_values`` makes: same dtype name, shape, stored dtype and bytes."""
    from spikestore.codecs import encode_values

    t = make()
    scalar = t.ndim == 0
    got = stage(t, scalar, None).encode()
    want = encode_values(t.contiguous(), python_scalar=scalar)
    assert got.key == want.key
    assert got.row.dtype == want.row.dtype and got.row.shape == want.row.shape
    assert got.row.flags.c_contiguous and got.row.tobytes() == want.row.tobytes()


def test_rows_of_one_row_chunks_are_written_from_themselves(tmp_path: Path, monkeypatch) -> None:
    """Records so large that an inner chunk holds part of one row (1.6 MB: chunks of
    one row, shards of 4) reach their segment as the list of rows the caller's copies
    made, never stacked into one block; whole shards, tails (a flush mid-shard),
    the partial shard at close and an append after it read back bit for bit."""
    given: list[str] = []
    write = _segments.Segment.write

    def spy(self, block):
        given.append(type(block).__name__)
        return write(self, block)

    monkeypatch.setattr(_segments.Segment, "write", spy)
    recs = _noise(11, (4, 8, 16, 28, 28), seed=3)
    recs[5][1, 2, 3, 4, :3] = torch.tensor([float("nan"), -0.0, float("inf")])
    path = tmp_path / "s"
    with spikestore.StoreWriter(path, flush_interval=1e3) as w:
        for i, r in enumerate(recs[:9]):
            w.append("v", "lif", r, time_axis=0)
            if i == 5:
                w.flush()  # steps 4-5 go to the tail, 6-7 complete the shard from it
    with spikestore.StoreWriter(path, mode="a") as w:
        for r in recs[9:]:
            w.append("v", "lif", r, time_axis=0)
    meta = json.loads((path / "v/lif/f0/s0/zarr.json").read_text())
    assert meta["codecs"][0]["configuration"]["chunk_shape"][0] == 1
    assert given and set(given) == {"list"}, given
    back = spikestore.open(path)["v"]["lif"][:]
    assert torch.equal(back.view(torch.int32), torch.stack(recs).view(torch.int32))


def test_the_writer_thread_makes_no_torch_call_for_cpu_spikes(tmp_path: Path, monkeypatch) -> None:
    """Spikes packed on the CPU reach the writer thread as NumPy's bits: it makes their
    row, and drops it, without a torch call (each releases and takes back the GIL, and a
    busy caller holds it: 30,000 ``[1, 1024]`` records through the writer took 43-56 us
    a record with a tensor's ``numpy()`` there, 29-31 without). Values already were
    (``Staged.array``); the rows read back as written, also through a monitor's
    ``records``."""
    import threading

    from spikestore.monitor import OutputMonitor

    calls: list[str] = []
    numpy = torch.Tensor.numpy

    def spy(self, *args, **kwargs):
        calls.append(threading.current_thread().name)
        return numpy(self, *args, **kwargs)

    g = torch.Generator().manual_seed(5)
    recs = [(torch.rand((3, 1, 1024), generator=g) < 0.1).float() for _ in range(20)]
    monkeypatch.setattr(torch.Tensor, "numpy", spy)
    net = torch.nn.Sequential(torch.nn.Identity())
    with OutputMonitor(net, torch.nn.Identity, store=tmp_path / "s") as mon:
        for r in recs:
            net(r)
        kept = [mon.records[i] for i in range(len(recs))]
    assert not [c for c in calls if c.startswith("spikestore")], calls
    monkeypatch.undo()
    back = spikestore.open(tmp_path / "s")["output"]["0"][:]
    assert torch.equal(back, torch.stack(recs))
    assert all(torch.equal(a, b) for a, b in zip(kept, recs, strict=True))
