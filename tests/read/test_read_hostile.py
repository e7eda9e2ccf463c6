"""Reading stores that changed or were tampered with: a reader never returns another
step's data or zeros for a step it cannot read. A store replaced under a reader is a
StoreReplacedError saying to refresh(); shard files or index chunks in each other's
place, a lost chunk and a chunk larger than a writer makes are errors naming the file;
a damaged monitor or layer leaves the others readable."""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

import spikestore
from spikestore import FormatError, ReadError, StoreReplacedError
from spikestore.testing import bits_equal, fixture_records

FIXTURES = Path(__file__).parents[1] / "fixtures"


# The records of "generation" ``gen`` of a store, as plain formulas, so that the writer
# processes below (given their source) and the checks here agree: a spike record holds
# its step and generation in bits, a float record holds them in its values.
def spikes(gen: int, step: int) -> torch.Tensor:
    bits = [(step >> b) & 1 for b in range(33)] + [(gen >> b) & 1 for b in range(33)]
    x = torch.tensor(bits, dtype=torch.float32).reshape(2, 33)
    return torch.cat([x, 1 - x])


def values(gen: int, step: int) -> torch.Tensor:
    return torch.arange(20, dtype=torch.float32).repeat(4, 1) / 64 + gen * 1000 + step


def steps_of(gen: int) -> int:
    return 20 + (gen % 7) * 5


WRITER = "\n\n".join(
    [
        "import sys\nimport torch\nimport spikestore",
        *(inspect.getsource(f) for f in (spikes, values, steps_of)),
        """
path, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
steps = int(sys.argv[4]) if len(sys.argv) > 4 else None
for gen in range(first, last + 1):
    with spikestore.StoreWriter(path, mode="w", attrs={"gen": gen}) as w:
        for i in range(steps if steps is not None else steps_of(gen)):
            w.append("output", "sn", spikes(gen, i))
            w.append("v", "lif", values(gen, i))
print("done", flush=True)
""",
    ]
)


def _writer(tmp_path: Path, path: Path, first: int, last: int, steps: int | None = None):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    args = [sys.executable, str(script), str(path), str(first), str(last)]
    if steps is not None:
        args.append(str(steps))
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _write(tmp_path: Path, path: Path, gen: int, steps: int) -> None:
    proc = _writer(tmp_path, path, gen, gen, steps)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err


def _gen_step(layer: str, rec: torch.Tensor) -> tuple[int, int] | None:
    """(generation, step) a record was written for, or None if it is no record of
    :data:`RECORDS` (zeros, a mix of two)."""
    if layer == "sn":
        bits = rec[:2].reshape(-1).to(torch.int64).tolist()
        step = sum(b << i for i, b in enumerate(bits[:33]))
        gen = sum(b << i for i, b in enumerate(bits[33:]))
        ok = bits_equal(rec, spikes(gen, step))
    else:
        base = float(rec[0, 0])
        gen, step = int(base // 1000), int(base % 1000)
        ok = bits_equal(rec, values(gen, step))
    return (gen, step) if ok else None


# ------------------------------------------------------------------ replaced stores
@pytest.mark.parametrize("new_steps", [10, 50])
def test_a_store_replaced_under_a_reader_is_an_error_never_zeros(tmp_path, new_steps):
    """A reader opened on a 50-step store that another process replaces (mode="w") with
    fewer steps, or as many of other data, reads no step of the new store as one of the
    old (zeros past the new store's end, its records within it): every read, whatever
    the reader had cached, is a StoreReplacedError saying to refresh(); after refresh()
    it reads the new store."""
    path = tmp_path / "s"
    _write(tmp_path, path, 1, 50)
    store = spikestore.open(path)
    used = {n: store[m][n] for m, n in (("output", "sn"), ("v", "lif"))}
    for name, lay in used.items():  # index cached, arrays open, shards seen
        assert _gen_step(name, lay[0]) == (1, 0)
        assert _gen_step(name, lay[30]) == (1, 30)
    assert used["lif"].field(0).summary("summary", np.arange(3)) is not None
    untouched = spikestore.open(path)  # only its metadata read
    fresh = {"sn": untouched["output"]["sn"], "lif": untouched["v"]["lif"]}

    _write(tmp_path, path, 2, new_steps)
    for layers in (used, fresh):
        for lay in layers.values():
            for i in (0, 5, 14, 21, 49):
                with pytest.raises(StoreReplacedError, match=r"replaced.*refresh\(\)"):
                    lay[i]
            with pytest.raises(StoreReplacedError):
                lay[10:30]
            with pytest.raises(StoreReplacedError):
                lay.neuron(3, slice(0, 20))
    for layers in (used, fresh):
        with pytest.raises(StoreReplacedError):
            layers["lif"].field(0).summary("summary", np.arange(5))

    store.refresh()
    for m, name in (("output", "sn"), ("v", "lif")):
        lay = store[m][name]
        assert len(lay) == new_steps
        assert [_gen_step(name, lay[i]) for i in range(new_steps)] == [
            (2, i) for i in range(new_steps)
        ]


def test_reads_while_a_store_is_replaced_again_and_again_are_right_or_an_error(tmp_path):
    """Another process replaces the store (mode="w") again and again while this one
    reads it: each read gives the record of that step of the store the reader opened
    (the same generation for every read until an error), or an error; after an error
    the reader refreshes. Before format 1.6 some reads gave zeros or the new store's
    records."""
    path = tmp_path / "s"
    _write(tmp_path, path, 0, steps_of(0))
    proc = _writer(tmp_path, path, 1, 40)
    rng = np.random.default_rng(0)
    counts = {"right": 0, "replaced": 0, "other error": 0, "wrong": 0}
    wrong: list[str] = []
    store = None
    seen: dict[str, int] = {}
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if store is None:
                store = spikestore.open(path)
                layers = {"sn": store["output"]["sn"], "lif": store["v"]["lif"]}
                seen = {}
            name = "sn" if rng.random() < 0.5 else "lif"
            lay = layers[name]
            n = len(lay)
            if not n:
                store = None
                continue
            i = int(rng.integers(n))
            got = _gen_step(name, lay[i])
        except StoreReplacedError:
            counts["replaced"] += 1
            store = None
            continue
        except (ReadError, FormatError, OSError, KeyError) as exc:
            # A store caught half replaced: no monitors yet, a group gone meanwhile.
            counts["other error"] += 1
            store = None
            if counts["other error"] < 3:
                print(type(exc).__name__, exc)
            continue
        gen = seen.setdefault(name, got[0]) if got is not None else None
        if got is None or got != (gen, i):
            counts["wrong"] += 1
            wrong.append(f"{name}[{i}] read as {got} (generation {gen} until then)")
            store = None
        else:
            counts["right"] += 1
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    print(counts)
    assert counts["wrong"] == 0, wrong[:10]
    assert counts["right"] > 100 and counts["replaced"] > 0, counts


# ------------------------------------------------------------------ bound positions
def _big_store(path: Path, steps: int = 40) -> dict[str, list[torch.Tensor]]:
    """Records of 64 KiB: shards of 16 steps, so 40 steps make three shard files."""
    g = torch.Generator().manual_seed(3)
    recs = {
        "sn": [(torch.rand(8, 65536, generator=g) < 0.01).float() for _ in range(steps)],
        "lif": [torch.randn(16384, generator=g) for _ in range(steps)],
    }
    with spikestore.StoreWriter(path, shard_steps=16) as w:
        for i in range(steps):
            w.append("output", "sn", recs["sn"][i])
            w.append("v", "lif", recs["lif"][i])
            w.append("v", "other", recs["lif"][i] * 2)
    return recs


def _swap(a: Path, b: Path) -> None:
    tmp = a.with_name(a.name + ".swap")
    os.replace(a, tmp)
    os.replace(b, a)
    os.replace(tmp, b)


@pytest.mark.parametrize("layer", ["sn", "lif"])
def test_swapped_shard_files_are_an_error_not_other_steps(tmp_path, layer):
    """Two shard files of one segment swapped (a sync tool or a hand copy gone wrong):
    the steps they hold are an error naming the file, never each other's records;
    the shard that stayed in place reads as ever."""
    path = tmp_path / "s"
    recs = _big_store(path)
    mon = "output" if layer == "sn" else "v"
    seg = path / mon / layer / "f0" / "s0" / "c"
    _swap(seg / "0" / "0", seg / "1" / "0")
    lay = spikestore.open(path)[mon][layer]
    for i in (0, 5, 16, 31):
        with pytest.raises(ReadError, match="moved or swapped") as err:
            lay[i]
        assert not isinstance(err.value, StoreReplacedError)
        assert "s0/c/" in str(err.value)
    with pytest.raises(ReadError, match="moved or swapped"):
        lay[0:20]
    assert bits_equal(lay[35], recs[layer][35])
    assert bits_equal(lay[32:40], torch.stack(recs[layer][32:40]))


def test_a_shard_file_of_another_array_is_an_error(tmp_path):
    """A shard file of another layer's segment, of the same shape, put in one's place."""
    path = tmp_path / "s"
    recs = _big_store(path)
    shutil.copyfile(path / "v/other/f0/s0/c/1/0", path / "v/lif/f0/s0/c/1/0")
    lay = spikestore.open(path)["v"]["lif"]
    with pytest.raises(ReadError, match="another array"):
        lay[20]
    assert bits_equal(lay[3], recs["lif"][3])


def _drop_chunk(shard: Path, grid: int) -> None:
    """Mark the first inner chunk of a shard file absent in its index (the index's
    CRC-32C made to match), as if the chunk had been lost."""
    import google_crc32c

    data = bytearray(shard.read_bytes())
    start = len(data) - 4 - 16 * grid
    data[start : start + 16] = b"\xff" * 16
    index = bytes(data[start:-4])
    data[-4:] = google_crc32c.value(index).to_bytes(4, "little")
    shard.write_bytes(bytes(data))


@pytest.mark.parametrize("layer", ["sn", "lif"])
def test_a_chunk_lost_from_its_shard_is_an_error_not_zeros(tmp_path, layer):
    """A shard file whose index lost a chunk of committed rows: those steps are an
    error naming the shard (Zarr reads an absent chunk as zeros), not a replacement."""
    path = tmp_path / "s"
    recs = _big_store(path)
    mon = "output" if layer == "sn" else "v"
    arr = path / mon / layer / "f0" / "s0"
    meta = json.loads((arr / "zarr.json").read_text())
    shard = meta["chunk_grid"]["configuration"]["chunk_shape"]
    inner = meta["codecs"][0]["configuration"]["chunk_shape"]
    grid = int(np.prod([s // c for s, c in zip(shard, inner, strict=True)]))
    _drop_chunk(arr / "c" / "1" / "0", grid)
    lay = spikestore.open(path)[mon][layer]
    with pytest.raises(ReadError, match=f"{mon}/{layer}/f0/s0/c/1/0.*absent") as err:
        lay[16]
    assert not isinstance(err.value, StoreReplacedError)
    assert bits_equal(lay[3], recs[layer][3])


@pytest.mark.parametrize("steps", [200, 65600])
def test_swapped_index_chunks_do_not_remap_steps(tmp_path, monkeypatch, steps):
    """Two chunk files of a field's step index swapped: reading the steps they cover is
    an error, not the records of the steps the other chunk points at. 200 steps: index
    chunks of 64 steps (a writer's choice); 65,600: the standard 65,536."""
    import spikestore._commit as commit

    if steps == 200:
        monkeypatch.setattr(commit, "INDEX_CHUNK", 64)
    path = tmp_path / "s"
    with spikestore.StoreWriter(path) as w:
        for i in range(steps):
            w.append("m", "x", float(i))
    index = path / "m/x/f0/index/c"
    _swap(index / "0" / "0", index / "1" / "0")
    lay = spikestore.open(path)["m"]["x"]
    for i in (0, 70, steps - 1):
        with pytest.raises(ReadError, match="step index chunk"):
            lay[i]


# ------------------------------------------------------------------ damaged nodes
def test_a_damaged_monitor_leaves_the_others_readable(tmp_path):
    """A monitor's zarr.json damaged (cut short): the store opens with a warning naming
    it, the other monitors read as ever, and indexing the damaged one is an error
    naming it."""
    path = tmp_path / "s"
    _write(tmp_path, path, 1, 12)
    meta = path / "output" / "zarr.json"
    meta.write_bytes(meta.read_bytes()[:60])
    with pytest.warns(UserWarning, match="monitor.*'output'"):
        store = spikestore.open(path)
    assert store.monitors == ["v"] and "output" in store.damaged
    assert "output" not in store
    assert _gen_step("lif", store["v"]["lif"][11]) == (1, 11)
    with pytest.raises(ReadError, match="monitor 'output' is damaged"):
        store["output"]


def _layer_meta(path: Path, key: str) -> tuple[Path, dict]:
    file = path / key / "zarr.json"
    return file, json.loads(file.read_text())


@pytest.mark.parametrize("damage", ["time_axis", "shape", "unparseable"])
def test_a_damaged_layer_leaves_its_siblings_readable(tmp_path, damage):
    """A layer whose metadata the reader refuses (a time_axis of 40, a 33-dimensional
    record shape in its field's metadata, a zarr.json that is not JSON) is left out of
    its monitor with a warning, and indexing it names it; the monitor's other layers
    and `spikestore info` read as ever."""
    path = tmp_path / "s"
    with spikestore.StoreWriter(path) as w:
        for i in range(5):
            w.append("output", "bad", torch.ones(3) * i)
            w.append("output", "good", torch.ones(2) * i)
    if damage == "time_axis":
        file, meta = _layer_meta(path, "output/bad")
        meta["attributes"]["spikestore"]["time_axis"] = 40
        file.write_text(json.dumps(meta))
    elif damage == "shape":
        file, meta = _layer_meta(path, "output/bad/f0")
        meta["attributes"]["spikestore"]["segments"][0]["shape"] = [1] * 33
        file.write_text(json.dumps(meta))
    else:
        (path / "output/bad/zarr.json").write_text('{"zarr_format": 3, "node_type": "gr')
    with pytest.warns(UserWarning, match="layer"):
        mon = spikestore.open(path)["output"]
        assert mon.layers == ["good"]
    assert list(mon.damaged) == ["bad"]
    assert torch.equal(mon["good"][4], torch.ones(2) * 4)
    with pytest.raises(ReadError, match="layer 'bad' is damaged"):
        mon["bad"]
    res = subprocess.run(
        [sys.executable, "-m", "spikestore", "info", str(path)], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    assert "good" in res.stdout


# ------------------------------------------------------------------ memory bombs
def _zstd_of_zeros(n: int) -> bytes:
    """A Zstandard frame of ``n`` zero bytes made of RLE blocks (4 bytes per 128 KiB),
    written by hand: what a crafted store needs to claim gigabytes in kilobytes."""
    block = 1 << 17
    out = bytearray(b"\x28\xb5\x2f\xfd")
    out.append(0xE0)  # 8-byte content size, single segment
    out += n.to_bytes(8, "little")
    left = n
    while left:
        size = min(block, left)
        left -= size
        header = (1 if not left else 0) | (1 << 1) | (size << 3)  # last, RLE, size
        out += header.to_bytes(3, "little") + b"\x00"
    return bytes(out)


BOMB_READ = """
import resource, sys, tracemalloc
import spikestore
layer = spikestore.open(sys.argv[1])["v"]["x"]
tracemalloc.start()
try:
    layer[0]
    outcome = "read"
except Exception as exc:
    outcome = f"{type(exc).__name__}: {exc}"
peak = tracemalloc.get_traced_memory()[1]
print(outcome)
print(peak)
"""


def test_a_crafted_chunk_claiming_gigabytes_is_refused_unread(tmp_path):
    """A 66 KB store: a real one whose raw segment claims one chunk of 2**29 float32
    (a Zstandard frame of 2 GiB of zeros, 64 KB). Reading step 0 allocated 2 GiB; now it
    is a ReadError naming the array's zarr.json, and the read allocates next to
    nothing (measured in a process of its own)."""
    import google_crc32c

    path = tmp_path / "s"
    with spikestore.StoreWriter(path, compressor="zstd") as w:
        w.append("v", "x", torch.full((4,), 0.5))
    field = path / "v" / "x" / "f0"
    n = 1 << 29
    fmeta = json.loads((field / "zarr.json").read_text())
    seg = fmeta["attributes"]["spikestore"]["segments"][0]
    seg["shape"] = [n]
    (field / "zarr.json").write_text(json.dumps(fmeta))
    ameta = json.loads((field / "s0" / "zarr.json").read_text())
    ameta["shape"] = [1, n]
    ameta["chunk_grid"]["configuration"]["chunk_shape"] = [1, n]
    ameta["codecs"] = [
        {"name": "bytes", "configuration": {"endian": "little"}},
        {"name": "zstd", "configuration": {"level": 1, "checksum": False}},
        {"name": "crc32c"},
    ]
    ameta["dimension_names"] = ["step", "dim_0"]
    ameta["attributes"]["spikestore"]["shape"] = [n]
    (field / "s0" / "zarr.json").write_text(json.dumps(ameta))
    shutil.rmtree(field / "s0" / "c")
    (field / "s0" / "c" / "0").mkdir(parents=True)
    frame = _zstd_of_zeros(4 * n)
    chunk = frame + google_crc32c.value(frame).to_bytes(4, "little")
    (field / "s0" / "c" / "0" / "0").write_bytes(chunk)
    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    assert total < 80_000

    script = tmp_path / "bomb.py"
    script.write_text(BOMB_READ)
    res = subprocess.run([sys.executable, str(script), str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    outcome, peak = res.stdout.strip().splitlines()[-2:]
    assert outcome.startswith("ReadError") and "v/x/f0/s0/zarr.json" in outcome, outcome
    assert int(peak) < 16 << 20, (outcome, int(peak))


def test_spike_chunks_claiming_more_than_they_hold_are_refused_before_allocating():
    """The spikestore.spikes codec checks a chunk's claims before it allocates: a header
    declaring more than the format's largest chunk, and a 30-byte Zstandard stream
    claiming 64 MiB."""
    import struct

    from spikestore.codecs.spikes import decode_chunk

    header = struct.Struct("<2sBBII")
    huge = header.pack(b"SK", 1, 0, 1 << 15, 1 << 16)  # ZERO mode, 2 GiB
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="more than"):
            decode_chunk(huge, (1 << 15, 1 << 16))
        rows, cols = 1 << 10, 1 << 16  # 64 MiB, a chunk the format allows
        frame = bytearray(_zstd_of_zeros(rows * cols)[:30])
        tree = (
            header.pack(b"SK", 1, 2, rows, cols)
            + struct.pack("<B3x", 0)
            + struct.pack("<I", len(frame))
            + bytes(frame)
        )
        with pytest.raises(ValueError, match="claims"):
            decode_chunk(tree, (rows, cols))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak


def test_the_writer_never_makes_a_chunk_the_reader_refuses(tmp_path):
    """The chunk bounds are the format's, kept by the writer: an absurd chunk_bytes gives
    chunks within them, and the store reads back."""
    from spikestore.codecs.layout import layout
    from spikestore.format import MAX_CHUNK_BYTES, MAX_CHUNKS_PER_SHARD

    for shape, itemsize in (((1 << 20,), 4), ((4, 3, 64, 64), 8), ((1 << 17,), 1)):
        for chunk_bytes in (1, 64, 1 << 18, 1 << 40):
            chunks, shards = layout(shape, itemsize, 2048, chunk_bytes)
            assert np.prod(chunks) * itemsize <= MAX_CHUNK_BYTES
            count = np.prod([-(-s // c) for s, c in zip(shards, chunks, strict=True)])
            assert count <= MAX_CHUNKS_PER_SHARD
    path = tmp_path / "s"
    x = torch.randn(3, 1 << 16)
    with spikestore.StoreWriter(path, chunk_bytes=1 << 40) as w:
        w.append("v", "x", x)
    assert torch.equal(spikestore.open(path)["v"]["x"][0], x)


# ------------------------------------------------------------------ format 1.6
def _same(g, r) -> bool:
    if isinstance(r, tuple):
        return isinstance(g, tuple) and len(g) == len(r) and all(map(_same, g, r))
    if isinstance(r, torch.Tensor):
        return bits_equal(g, r)
    return g == r


def test_committed_v1_6_fixture_reads_and_binds_its_shards():
    """The committed 1.6 store reads back; its segments have ids and its shard files
    shard headers, which plain Zarr skips (see test_format for the plain reader)."""
    store = spikestore.open(FIXTURES / "store_v1.6")
    assert store.version == "1.6"
    for (mon, layer), recs in fixture_records("1.6").items():
        got = store[mon][layer]
        assert len(got) == len(recs)
        assert all(_same(got[i], r) for i, r in enumerate(recs)), (mon, layer)
        for f in got.fields:
            assert all(len(s["id"]) == 32 for s in f.segments)
    shard = (FIXTURES / "store_v1.6/output/features.0.sn/f0/s0/c/0/0").read_bytes()
    assert b"SKSH" in shard


PLAIN_RAW = """
import json, sys
import numpy as np
import zarr
arr = zarr.open_array(sys.argv[1], mode="r")
print(json.dumps({"spikestore": "spikestore" in sys.modules, "rows": arr[:].tolist()}))
"""


def test_plain_zarr_reads_a_segment_with_shard_headers(tmp_path):
    """A process that never imports spikestore reads a 1.6 segment with plain Zarr: the
    shard header is bytes no index entry points at."""
    path = tmp_path / "s"
    x = [torch.randn(4, 5, dtype=torch.float64) for _ in range(3)]
    with spikestore.StoreWriter(path) as w:
        for r in x:
            w.append("v", "x", r)
    shard = (path / "v/x/f0/s0/c/0/0/0").read_bytes()
    assert b"SKSH" in shard
    script = tmp_path / "plain.py"
    script.write_text(textwrap.dedent(PLAIN_RAW))
    res = subprocess.run(
        [sys.executable, str(script), str(path / "v/x/f0/s0")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["spikestore"] is False
    np.testing.assert_array_equal(np.asarray(out["rows"]), torch.stack(x).numpy())


KILLED_WITH_AN_EMPTY_SEGMENT = textwrap.dedent(
    """
    import os, sys, time, torch, spikestore
    w = spikestore.StoreWriter(sys.argv[1], mode="w", flush_interval=2.0,
                               max_buffer_bytes=4096, chunk_bytes=1024)
    a = torch.arange(16.0) + 0.5  # never spikes
    for i in range(20):
        w.append("m", "l", a + i)
    w.append("m", "l", torch.ones(3))  # a second segment, committed before it has rows
    time.sleep(1.2)                    # older than half the flush interval
    for i in range(50):
        w.append("m", "l", a)
    deadline = time.monotonic() + 60
    while len(spikestore.open(sys.argv[1])["m"]["l"]) < 20:  # the forced writes' commit
        assert time.monotonic() < deadline, "not committed"
        time.sleep(0.01)
    os.kill(os.getpid(), 9)
    """
)


def test_appending_after_a_kill_is_not_a_replacement_for_open_readers(tmp_path):
    """A segment committed with no rows yet is made anew (with a new id) by a writer
    appending after a killed one: readers opened before raised StoreReplacedError on
    every read, though nothing they had read changed."""
    path = tmp_path / "s"
    subprocess.run([sys.executable, "-c", KILLED_WITH_AN_EMPTY_SEGMENT, str(path)], timeout=120)
    layer = spikestore.open(path)["m"]["l"]
    n = len(layer)
    assert n >= 20
    with spikestore.StoreWriter(path, mode="a", flush_interval=0.1) as w:
        w.append("m", "l", torch.ones(3))
        w.append("m", "l", torch.arange(16.0) + 0.5)
        w.flush()
        for s in (0, 5, 19):
            assert torch.equal(layer[s], torch.arange(16.0) + 0.5 + s)
    assert len(spikestore.open(path)["m"]["l"]) == n + 2


@pytest.mark.parametrize("claimed", [2_000_000, 10**12])
def test_a_committed_count_past_the_step_index_is_damage_found_at_open(tmp_path, claimed):
    """An edited ``committed_steps`` was trusted until the first read: ``len(layer)`` said
    10**12, and ``info``, analyses and the viewer sized arrays by it (3.7 GB, then a
    MemoryError, for 2e8). A long count is now checked against the step index when the
    store is opened: the layer is left out as damaged, the others read."""
    from spikestore import analysis
    from spikestore.cli import info

    path = tmp_path / "s"
    with spikestore.StoreWriter(path) as w:
        for i in range(10):
            w.append("output", "bad", torch.ones(2, 3))
            w.append("output", "good", torch.full((2, 3), float(i)))
    meta = path / "output" / "bad" / "f0" / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["spikestore"]["committed_steps"] = claimed
    meta.write_text(json.dumps(doc))
    tracemalloc.start()
    try:
        store = spikestore.open(path)
        with pytest.warns(UserWarning, match="cannot hold"):
            layers = store["output"].layers  # layers open when their monitor is used
        assert layers == ["good"] and "bad" in store["output"].damaged
        assert len(analysis.firing_rate(store["output"]["good"])) == 10
        summary = info(str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [r["layer"] for r in summary["layers"]] == ["good"]
    assert any("bad" in w and "cannot hold" in w for w in summary["warnings"])
    assert peak < 64 << 20
