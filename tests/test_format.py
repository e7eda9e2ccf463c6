"""The format contract: fixture stores still read, plain zarr decodes every record,
and reading one step touches only the chunks that hold it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from zarr.storage import LocalStore

import spikestore
from spikestore import RankedStoreReader
from spikestore.testing import CountingStore, bits_equal, fixture_records

FIXTURES = Path(__file__).parent / "fixtures"


def _same(g, r) -> bool:
    """A record read back is the one recorded: types (namedtuples by name and fields),
    nesting and every tensor's bits."""
    if isinstance(r, tuple):
        if hasattr(r, "_fields"):
            if type(g).__name__ != type(r).__name__ or g._fields != r._fields:
                return False
        return isinstance(g, tuple) and len(g) == len(r) and all(map(_same, g, r))
    if isinstance(r, torch.Tensor):
        return bits_equal(g, r)
    return g == r


def check_records(store: spikestore.StoreReader, version: str = "1.3") -> None:
    for (mon, layer), recs in fixture_records(version).items():
        got = store[mon][layer]
        assert len(got) == len(recs), (mon, layer)
        for i, r in enumerate(recs):
            assert _same(got[i], r), (mon, layer, i)


def _leaves(r) -> list:
    if isinstance(r, tuple):
        return [leaf for x in r for leaf in _leaves(x)]
    return [r]


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2", "1.3", "1.5", "1.6", "1.7"])
def test_committed_fixture_store_still_reads(version):
    store = spikestore.open(FIXTURES / f"store_v{version}")
    assert store.version == version
    check_records(store, version)


def test_committed_v1_5_fixture_describes_its_run():
    """Format 1.5: run attributes, dt, layer dims, units, call order, record trees and
    marks survive in the committed store."""
    from spikestore.testing import FIXTURE_DIMS, FIXTURE_RUN, FIXTURE_UNITS

    store = spikestore.open(FIXTURES / "store_v1.5")
    assert store.attrs == FIXTURE_RUN["attrs"]
    assert (store.dt, store.time_unit) == (FIXTURE_RUN["dt"], FIXTURE_RUN["time_unit"])
    records = fixture_records("1.5")
    # Layers come back in the order they were first recorded, not by name.
    assert store["output"].layers == [lay for mon, lay in records if mon == "output"]
    for (mon, layer), recs in records.items():
        got = store[mon][layer]
        assert got.dims == FIXTURE_DIMS.get((mon, layer)), (mon, layer)
        assert got.units == FIXTURE_UNITS.get((mon, layer))
        mid = len(recs) // 2
        marks = got.marks()
        assert marks["epoch"].tolist() == [0] * mid + [1] * (len(recs) - mid), (mon, layer)
        assert marks["phase"].tolist() == ["train"] * mid + ["eval"] * (len(recs) - mid)
    lif = store["norse"]["lif"]
    assert lif.field_names == ["0", "1.v", "1.i"] and lif.time_axis == 0
    assert lif.field_index("v") == 1 and lif.field("i") is lif.fields[2]


def test_committed_v1_7_fixture_keeps_its_runs_apart():
    """Format 1.7: the second half was appended as a second run, with attrs of its own;
    each run's attrs and each layer's steps by run survive in the committed store."""
    from spikestore.testing import FIXTURE_RUN, FIXTURE_RUN2_ATTRS

    store = spikestore.open(FIXTURES / "store_v1.7")
    assert [r.attrs for r in store.runs] == [FIXTURE_RUN["attrs"], FIXTURE_RUN2_ATTRS]
    assert store.attrs == {**FIXTURE_RUN["attrs"], **FIXTURE_RUN2_ATTRS}
    assert store.runs[0].started < store.runs[1].started
    for (mon, layer), recs in fixture_records("1.7").items():
        mid, n = len(recs) // 2, len(recs)
        run, call = store[mon][layer].runs()
        assert run.tolist() == [0] * mid + [1] * (n - mid), (mon, layer)
        assert call.tolist() == [*range(mid), *range(n - mid)]
        assert store.runs[1].start(mon, layer) == mid
        assert store[mon][layer].marks()["epoch"].tolist() == [0] * mid + [1] * (n - mid)


def test_committed_ranked_fixture_store_still_reads():
    """Format 1.4: two ranks (gloo) each wrote the fixture records into one store."""
    store = spikestore.open(FIXTURES / "store_v1.4_ranked")
    assert isinstance(store, RankedStoreReader)
    assert store.version == "1.4" and store.ranks == [0, 1] and store.world_size == 2
    for r in store.ranks:
        assert store.rank(r).version == "1.4"
        check_records(store.rank(r), "1.4")
    recs = fixture_records("1.4")[("output", "features.0.sn")]
    layer = store["output"]["features.0.sn"]
    assert layer.lengths == {0: len(recs), 1: len(recs)}
    assert bits_equal(layer[3], torch.stack([recs[3], recs[3]]))


def test_fixture_v1_1_uses_the_new_encoding():
    meta = (FIXTURES / "store_v1.1" / "output" / "ms.sn" / "f0" / "s0" / "zarr.json").read_text()
    assert "spikestore.spikes" in meta and "crc32c" in meta
    layer = spikestore.open(FIXTURES / "store_v1.1")["output"]["ms.sn"]
    assert layer.segments[0]["permute"] == [1, 2, 3, 0]


def test_this_version_writes_what_the_fixture_holds(tmp_path):
    from spikestore.testing import write_fixture

    write_fixture(str(tmp_path / "s"))
    check_records(spikestore.open(tmp_path / "s"))


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2", "1.3"])
def test_appending_to_an_older_store_raises_its_version(tmp_path, version):
    import shutil

    from spikestore.testing import moving_spikes

    path = tmp_path / "s"
    shutil.copytree(FIXTURES / f"store_v{version}", path)
    recs = moving_spikes(torch.Generator().manual_seed(7), 20)
    with spikestore.StoreWriter(path, mode="a") as w:
        for r in recs:
            w.append("output", "conv.new", r, time_axis=0)
    store = spikestore.open(path)
    # The new arrays may hold MOTION chunks, layers time_axis, dims and order.
    assert store.version == ".".join(map(str, spikestore.FORMAT_VERSION))
    check_records(store, version)  # the old records are untouched
    layer = store["output"]["conv.new"]
    for i, r in enumerate(recs):
        assert torch.equal(layer[i], r)


PLAIN_READER = r"""
import json, struct, sys
from pathlib import Path
import numpy as np
import zarr
from numcodecs import Zstd

root_dir = Path(sys.argv[1])


MOTIONS = [(0, 0), (0, 1), (1, 0), (0, -1), (-1, 0)]
MODES = set()


def motion_chunk(data, r, c):
    # MOTION mode (3), from the documented layout: planes of H*W*T bits, time last.
    h, w, t = struct.unpack_from("<3I", data, 12)
    flip = np.unpackbits(np.frombuffer(data, np.uint8, 32, 24))
    rank = np.frombuffer(data, np.uint8, 256, 56)
    (lm,) = struct.unpack_from("<I", data, 312)
    q = r * (c * 8 // (h * w * t))
    motion = np.frombuffer(Zstd().decode(bytes(data[316:316 + lm])), np.uint8)
    stream = np.unpackbits(spike_chunk(data[316 + lm:], 1, r * c).reshape(-1))
    x = np.zeros((t, q, h, w), np.uint8)
    n = q * h * w
    for i in range(t):
        ctx = np.zeros((q, h, w), np.int64)
        for j in range(q):
            dy, dx = MOTIONS[motion[j]]
            ey, ex = (dx, dy) if (dy, dx) != (0, 0) else (1, 0)
            past = [np.pad(x[i - k, j], 2) if i - k >= 0 else np.zeros((h + 4, w + 4), np.uint8)
                    for k in (1, 2)]

            def f(k, oy, ox):  # X[i - k, j, y + oy, x + ox] for every (y, x)
                return past[k - 1][2 + oy:2 + oy + h, 2 + ox:2 + ox + w].astype(np.int64)

            terms = [f(1, -dy, -dx), f(1, 0, 0), f(2, -dy, -dx), f(2, 0, 0),
                     f(2, -2 * dy, -2 * dx), f(1, -dy - ey, -dx - ex),
                     f(1, -dy + ey, -dx + ex), f(1, dy, dx)]
            ctx[j] = sum(term << k for k, term in enumerate(terms))
        ctx = ctx.reshape(-1)
        order = np.argsort(rank[ctx], kind="stable")
        frame = np.zeros(n, np.uint8)
        frame[order] = stream[i * n:(i + 1) * n] ^ flip[ctx[order]]
        x[i] = frame.reshape(q, h, w)
    return np.packbits(x.transpose(1, 2, 3, 0).reshape(r, c * 8), axis=1)


def spike_chunk(data, rows, cols):
    # The byte layout documented in spikestore/codecs/spikes.py, with numpy + numcodecs.
    magic, version, mode, r, c = struct.unpack_from("<2sBBII", data, 0)
    assert magic == b"SK" and version in (1, 2) and (r, c) == (rows, cols)
    MODES.add(mode)
    if mode == 3:
        assert version == 2
        return motion_chunk(data, r, c)
    if mode == 0:
        return np.zeros((r, c), np.uint8)
    if mode == 1:
        return np.frombuffer(data, np.uint8, r * c, 12).reshape(r, c)
    d = data[12]
    sizes = struct.unpack_from(f"<{d + 1}I", data, 16)  # L[d], ..., L[0]
    pos = 16 + 4 * (d + 1)
    streams = []
    for size in sizes:
        streams.append(bytes(data[pos:pos + size]))
        pos += size
    n = [r * c]
    for _ in range(d):
        n.append(-(-n[-1] // 8))
    b = np.frombuffer(Zstd().decode(streams[0]), np.uint8) if sizes[0] else np.zeros(n[d], np.uint8)
    for i in range(d - 1, -1, -1):
        mask = np.unpackbits(b, count=n[i]).astype(bool)
        out = np.zeros(n[i], np.uint8)
        stream = streams[d - i]
        if stream:
            out[mask] = np.frombuffer(Zstd().decode(stream), np.uint8)
        b = out
    return b.reshape(r, c)


CHUNKS = {}


def spike_row(array_dir, meta, row):
    # Zarr's sharding_indexed layout: chunks back to back, then the index (offset,
    # nbytes as uint64 little-endian per inner chunk, C order) and its CRC-32C.
    shard = meta["chunk_grid"]["configuration"]["chunk_shape"]
    sharding = meta["codecs"][0]["configuration"]
    cr, cc = sharding["chunk_shape"]
    assert [c["name"] for c in sharding["codecs"]] == ["spikestore.spikes", "crc32c"]
    blob = (array_dir / "c" / str(row // shard[0]) / "0").read_bytes()
    grid = (shard[0] // cr, shard[1] // cc)
    n = grid[0] * grid[1]
    index = np.frombuffer(blob, "<u8", 2 * n, len(blob) - 4 - 16 * n)
    index = index.reshape(grid[0], grid[1], 2)
    i = (row % shard[0]) // cr
    parts = []
    for j in range(grid[1]):
        off, size = (int(x) for x in index[i, j])
        key = (str(array_dir), row // shard[0], i, j)
        if key not in CHUNKS:  # drop the CRC
            CHUNKS[key] = spike_chunk(memoryview(blob)[off:off + size - 4], cr, cc)
        chunk = CHUNKS[key]
        parts.append(chunk[row % cr])
    return np.concatenate(parts)[: meta["shape"][1]]


root = zarr.open_group(root_dir, mode="r")
meta = root.attrs["spikestore"]
assert meta["format"] == "spikestore" and meta["version"].startswith("1."), meta
out = {}
for mkey, mon in root.groups():
    for lkey, layer in mon.groups():
        lmeta = layer.attrs["spikestore"]
        fields = []
        for f in range(lmeta["fields"]):
            field = layer[f"f{f}"]
            fmeta = field.attrs["spikestore"]
            n = fmeta["committed_steps"]
            index = field["index"][:n]
            steps = []
            for k, r in index:
                if k < 0:
                    steps.append(None)
                    continue
                seg = fmeta["segments"][k]
                array_dir = root_dir / mkey / lkey / f"f{f}" / seg["array"]
                ameta = json.loads((array_dir / "zarr.json").read_text())
                if "spikestore.spikes" in json.dumps(ameta["codecs"]):
                    row = spike_row(array_dir, ameta, int(r))
                else:
                    row = field[seg["array"]][r]
                shape = seg["shape"]
                if seg["encoding"] == "bitpack":
                    perm = seg.get("permute") or list(range(len(shape)))
                    bits = np.unpackbits(row, count=int(np.prod(shape)))
                    rec = bits.reshape([shape[p] for p in perm]).transpose(np.argsort(perm))
                    rec = rec.astype(np.float64)
                else:
                    rec = np.asarray(row)
                    if seg["dtype"] == "bfloat16":  # upper half of a float32
                        rec = (rec.astype(np.uint32) << 16).view(np.float32)
                    rec = rec.astype(np.float64)
                steps.append(rec.tolist())
            fields.append(steps)
        out[mon.attrs["spikestore"]["name"] + "|" + lmeta["name"]] = fields
print(json.dumps({"loaded_spikestore": "spikestore" in sys.modules, "data": out,
                  "modes": sorted(MODES)}))
"""


@pytest.mark.parametrize(
    "version", ["1.0", "1.1", "1.2", "1.3", "1.4_ranked/rank00001", "1.5", "1.6", "1.7"]
)
def test_plain_zarr_decodes_every_record_without_spikestore(tmp_path, version):
    """docs/format.md and the codec's documented byte layout are enough to read a store
    (in a ranked store, each rank's folder is a store)."""
    script = tmp_path / "plain.py"
    script.write_text(PLAIN_READER)
    res = subprocess.run(
        [sys.executable, str(script), str(FIXTURES / f"store_v{version}")],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    result = json.loads(res.stdout)
    assert result["loaded_spikestore"] is False
    version = version[:3]
    if version >= "1.2":  # TREE and MOTION chunks (with TREE nested)
        assert result["modes"] == [2, 3]
    data = result["data"]
    for (mon, layer), recs in fixture_records(version).items():
        fields = data[f"{mon}|{layer}"]
        for i, r in enumerate(recs):
            for f, leaf in enumerate(_leaves(r)):
                got = fields[f][i]
                if leaf is None:
                    assert got is None
                    continue
                want = torch.as_tensor(leaf).to(torch.float64).numpy()
                np.testing.assert_array_equal(np.asarray(got, dtype=np.float64), want)


def test_one_step_reads_only_its_chunks(tmp_path):
    path = tmp_path / "s.spikes"
    g = torch.Generator().manual_seed(0)
    recs = [(torch.rand(8, 4096, generator=g) < 0.05).float() for _ in range(3000)]
    with spikestore.StoreWriter(path, shard_steps=1024) as w:
        for r in recs:
            w.append("output", "sn", r)
    counting = CountingStore(LocalStore(path, read_only=True))
    layer = spikestore.open(store=counting)["output"]["sn"]
    _ = layer.segments
    counting.reads.clear()
    assert bits_equal(layer[2500], recs[2500])
    data_reads = [k for k in counting.reads if "/s0/c/" in k]
    meta_reads = [k for k in counting.reads if k.endswith("zarr.json")]
    index_reads = [k for k in counting.reads if "/index/c/" in k]
    # Step 2500 lives in shard 2 (steps 2048..3071); one inner chunk row of it is read,
    # nothing from shards 0 and 1.
    assert data_reads and all("/s0/c/2/" in k for k in data_reads), counting.reads
    assert len(index_reads) == 1 and len(meta_reads) <= 2
    arr = layer.field(0).array(0)
    inner_per_row = -(-arr.shape[1] // arr.chunks[1])
    # Each inner chunk: one range read; plus the shard index (read once per shard).
    assert len(data_reads) <= inner_per_row + 1, data_reads
    counting.reads.clear()
    assert bits_equal(layer[2501], recs[2501])
    assert not [k for k in counting.reads if "/index/" in k]  # index chunk cached
