"""Attacks on the direct reads of a local store: raw and Blosc rows read straight from
shard files (``reader/_direct.py``), a few rows of a spike chunk decoded alone
(``reader/_rows.py``), one neuron's byte column (``_read_spike_rows(cols=...)``,
``_field._spike_column``) and ``storage._localfs.open_file``.

A store folder is untrusted input: damaged, truncated, swapped or forged files, links
and special files must give a clear error naming the layer (or the right values),
never wrong values, a crash or a hang; a store replaced under a reader raises
``StoreReplacedError``. Every read that could block runs in a thread with a timeout.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import struct
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np
import pytest
import torch
from numcodecs.zstd import Zstd

import spikestore
from spikestore import ReadError, StoreReplacedError
from spikestore.codecs.spikes import decode_chunk
from spikestore.errors import SpikestoreError
from spikestore.reader._rows import chunk_rows
from spikestore.testing import bits_equal

N = 48
# f: float32, stored raw (bytes + crc32c); c: int32 counters, Blosc-compressed;
# s: spikes in several chunk columns; t: 5-D [T, B, C, H, W] spikes, time_axis=0.
NEURON = {"f": (1, 5, 7), "c": (1, 599), "s": (0, 5), "t": (0, 1, 2, 3, 4)}


def _records(seed: int) -> dict[str, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return {
        "f": [torch.randn((3, 20, 25), generator=g) for _ in range(N)],
        "c": [torch.arange(1200, dtype=torch.int32).reshape(2, 600) + i + seed for i in range(N)],
        "s": [(torch.rand((4, 1000), generator=g) < 0.1).float() for _ in range(N)],
        "t": [(torch.rand((3, 2, 4, 5, 6), generator=g) < 0.1).float() for _ in range(N)],
    }


def _write(path: Path, recs: dict[str, list[torch.Tensor]], mode: str = "w-") -> None:
    with spikestore.StoreWriter(path, mode=mode, shard_steps=16, chunk_bytes=1024) as w:
        for i in range(N):
            for name in ("f", "c", "s"):
                w.append("m", name, recs[name][i])
            w.append("m", "t", recs["t"][i], time_axis=0)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[torch.Tensor]]]:
    path = tmp_path_factory.mktemp("attack") / "base"
    recs = _records(1)
    _write(path, recs)
    return path, recs


@pytest.fixture
def store(built, tmp_path) -> tuple[Path, dict[str, list[torch.Tensor]]]:
    path = tmp_path / "s"
    shutil.copytree(built[0], path)
    return path, built[1]


def _within(fn: Callable[[], Any], seconds: float = 20.0) -> Any:
    """``fn()`` in a daemon thread: its result, or its exception re-raised; a test
    failure if it has not returned in ``seconds`` (a FIFO read blocks forever)."""
    res: dict[str, Any] = {}

    def go() -> None:
        try:
            res["v"] = fn()
        except BaseException as exc:
            res["e"] = exc

    th = threading.Thread(target=go, daemon=True)
    th.start()
    th.join(seconds)
    if th.is_alive():
        pytest.fail(f"read still blocked after {seconds} s (a hang)")
    if "e" in res:
        raise res["e"]
    return res["v"]


def _neuron_want(recs: list[torch.Tensor], idx: tuple[int, ...]) -> torch.Tensor:
    return torch.stack([r[idx] for r in recs])


READS: dict[str, Callable[[Any, str], Any]] = {
    "one": lambda lay, name: lay[3],
    "slice": lambda lay, name: lay[0:20],
    "neuron": lambda lay, name: lay.neuron(NEURON[name], time_axis=False),
}


def _refused(lay: Any, name: str, read: str, match: str = ".") -> None:
    with pytest.raises(SpikestoreError, match=match) as info:
        _within(lambda: READS[read](lay, name))
    assert f"layer '{name}'" in str(info.value) or f"/m/{name}/" in str(info.value)


def _shard(path: Path, name: str, *coords: int) -> Path:
    ndim = 2 if name in "st" else (4 if name == "f" else 3)
    tail = (list(coords) + [0] * ndim)[:ndim]
    return path.joinpath("m", name, "f0", "s0", "c", *map(str, tail))


def _grid(path: Path, name: str) -> tuple[int, int]:
    """(rank, inner chunks per shard) of layer ``name``'s segment array."""
    meta = json.loads((path / "m" / name / "f0" / "s0" / "zarr.json").read_text())
    shard = meta["chunk_grid"]["configuration"]["chunk_shape"]
    inner = meta["codecs"][0]["configuration"]["chunk_shape"]
    return len(shard), int(np.prod([s // c for s, c in zip(shard, inner, strict=True)]))


# -- shard files rebuilt with valid checksums: only the decoders can refuse them --------


def _read_shard(path: Path, ndim: int, n: int) -> tuple[bytes, list[bytes | None]]:
    data = path.read_bytes()
    isz, hsz = 16 * n + 4, 24 + 8 * ndim + 4 * n + 4
    index = np.frombuffer(data[len(data) - isz : len(data) - 4], "<u8").reshape(n, 2)
    head = data[len(data) - isz - hsz : len(data) - isz]
    absent = 2**64 - 1
    return head, [None if o == absent else data[o : o + s] for o, s in index.tolist()]


def _write_shard(path: Path, ndim: int, head: bytes, chunks: list[bytes | None]) -> None:
    n = len(chunks)
    body, idx, trailers = b"", np.full((n, 2), 2**64 - 1, "<u8"), []
    for k, c in enumerate(chunks):
        if c is None:
            trailers.append(0)
            continue
        idx[k] = (len(body), len(c))
        body += c
        trailers.append(int.from_bytes(c[-4:], "little"))
    pre = head[: 24 + 8 * ndim] + struct.pack(f"<{n}I", *trailers)
    raw = idx.tobytes()
    path.write_bytes(
        body
        + pre
        + struct.pack("<I", zlib.crc32(pre))
        + raw
        + google_crc32c.value(raw).to_bytes(4, "little")
    )


def _forge(path: Path, name: str, k: int, fn: Callable[[bytes], bytes]) -> None:
    """Inner chunk ``k`` of layer ``name``'s first shard replaced by ``fn(its body)``,
    with its CRC-32C, the shard header's list and checksum, and the index all made
    to match: a forged file that passes every checksum."""
    ndim, n = _grid(path, name)
    shard = _shard(path, name)
    head, chunks = _read_shard(shard, ndim, n)
    old = chunks[k]
    assert old is not None
    body = fn(old[:-4])
    chunks[k] = body + google_crc32c.value(body).to_bytes(4, "little")
    _write_shard(shard, ndim, head, chunks)


def test_a_shard_rebuilt_unchanged_reads_as_written(store):
    path, recs = store
    for name in "fcs":
        _forge(path, name, 0, lambda b: b)
    lay = spikestore.open(path)["m"]
    for name in "fcs":
        assert bits_equal(lay[name][3], recs[name][3])
        assert bits_equal(lay[name][0:20], torch.stack(recs[name][0:20]))


_BLOSC_FIELDS = ("version", "versionlz", "flags", "typesize", "nbytes", "blocksize", "cbytes")


@pytest.mark.parametrize(
    "change",
    [
        {"nbytes": 2**31},  # a huge decoded size
        {"nbytes": 0},
        {"cbytes": 2**31},
        {"typesize": 0},
        {"typesize": 255},
        {"flags": 0x02},  # claims to be stored as is
        {"flags": 0xFF},
        {"flags": 0x00},
        {"blocksize": 0},
        {"blocksize": 2**31},
        {"blocksize": 7},
        {"version": 9},
        {"versionlz": 9},
    ],
    ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()),
)
def test_a_forged_blosc_header_is_an_error_naming_layer_and_shard(store, change):
    path, recs = store

    def fn(body: bytes) -> bytes:
        v = dict(zip(_BLOSC_FIELDS, struct.unpack("<BBBBIII", body[:16]), strict=True))
        assert v["flags"] & 0x02 == 0  # the counters' chunks are compressed
        v.update(change)
        return struct.pack("<BBBBIII", *v.values()) + body[16:]

    _forge(path, "c", 0, fn)
    lay = spikestore.open(path)["m"]["c"]
    for read in ("one", "slice"):
        _refused(lay, "c", read, match=r"m/c/f0/s0/c/0/0/0.*inner chunk \(0, 0, 0\)")
    assert bits_equal(lay[40], recs["c"][40])  # the other shard still reads


def test_a_chunk_stored_by_blosc_as_is_reads_without_decoding_and_right(store):
    """A Blosc chunk rewritten as 'memcpyed' (its values as they are, as Blosc stores
    incompressible data) is a valid chunk: the direct read gives its values."""
    path, recs = store

    def fn(body: bytes) -> bytes:
        import numcodecs.blosc as nb

        raw = nb.decompress(body)
        v = dict(zip(_BLOSC_FIELDS, struct.unpack("<BBBBIII", body[:16]), strict=True))
        v.update(flags=0x02 | 0x01, cbytes=16 + len(raw))
        return struct.pack("<BBBBIII", *v.values()) + raw

    _forge(path, "c", 0, fn)
    lay = spikestore.open(path)["m"]["c"]
    assert bits_equal(lay[3], recs["c"][3])
    assert bits_equal(lay[0:20], torch.stack(recs["c"][0:20]))


def test_a_memcpyed_blosc_chunk_one_byte_short_is_refused(store):
    path, _ = store

    def fn(body: bytes) -> bytes:
        import numcodecs.blosc as nb

        raw = nb.decompress(body)[:-1]
        v = dict(zip(_BLOSC_FIELDS, struct.unpack("<BBBBIII", body[:16]), strict=True))
        v.update(flags=0x03, cbytes=16 + len(raw))
        return struct.pack("<BBBBIII", *v.values()) + raw

    _forge(path, "c", 0, fn)
    _refused(spikestore.open(path)["m"]["c"], "c", "one", match="Blosc")


def test_a_raw_chunk_of_the_wrong_length_with_valid_checksums_is_refused(store):
    path, recs = store
    _forge(path, "f", 0, lambda b: b[:-4])
    lay = spikestore.open(path)["m"]["f"]
    _refused(lay, "f", "one", match=r"holds \d+ bytes, not \d+")
    assert bits_equal(lay[40], recs["f"][40])


def test_two_chunks_swapped_inside_a_shard_are_refused_by_the_header_list(store):
    """The index's entries of two chunks exchanged (index CRC recomputed, shard header
    untouched): each chunk passes its own CRC-32C but is not the one listed."""
    path, recs = store
    for name in ("f", "s"):
        _, n = _grid(path, name)
        shard = _shard(path, name)
        data = bytearray(shard.read_bytes())
        isz = 16 * n + 4
        index = np.frombuffer(bytes(data[len(data) - isz : len(data) - 4]), "<u8").reshape(n, 2)
        index = index.copy()
        index[[0, 1]] = index[[1, 0]]
        raw = index.tobytes()
        data[len(data) - isz :] = raw + google_crc32c.value(raw).to_bytes(4, "little")
        shard.write_bytes(bytes(data))
    m = spikestore.open(path)["m"]
    for name in ("f", "s"):
        for read in ("one", "slice"):
            _refused(m[name], name, read, match="not the chunk its shard header lists")
    # neuron (0, 5) is byte 0, in chunk (0, 0); (1, 600) is in chunk (0, 3), untouched
    _refused(m["s"], "s", "neuron", match="not the chunk its shard header lists")
    assert torch.equal(m["s"].neuron((1, 600)), _neuron_want(recs["s"], (1, 600)))


def test_a_neuron_reads_its_column_though_another_column_is_damaged(store):
    """One neuron's history decodes only its column's chunks: a damaged chunk in
    another column leaves it right; one in its column is an error naming the chunk."""
    path, recs = store
    _, n = _grid(path, "s")
    shard = _shard(path, "s")
    data = bytearray(shard.read_bytes())
    isz = 16 * n + 4
    index = np.frombuffer(bytes(data[len(data) - isz : len(data) - 4]), "<u8").reshape(-1, 8, 2)
    off, size = (int(v) for v in index[0, 3])  # chunk row 0, byte columns 192..255
    data[off + size // 2] ^= 0x40
    shard.write_bytes(bytes(data))
    lay = spikestore.open(path)["m"]["s"]
    assert torch.equal(lay.neuron((0, 5)), _neuron_want(recs["s"], (0, 5)))
    assert torch.equal(lay.neuron((3, 999)), _neuron_want(recs["s"], (3, 999)))
    with pytest.raises(ReadError, match=r"layer 's'.*inner chunk \(0, 3\)"):
        lay.neuron((1, 600))  # flat 1600: byte 200, chunk column 3
    with pytest.raises(ReadError, match=r"layer 's'.*inner chunk \(0, 3\)"):
        lay[3]
    assert bits_equal(lay[20], recs["s"][20])  # chunk row 1


@pytest.mark.parametrize("name", ["f", "c", "s", "t"])
@pytest.mark.parametrize("keep", [100, -300])
def test_a_truncated_shard_is_an_error_for_every_read(store, name, keep):
    path, recs = store
    shard = _shard(path, name)
    data = shard.read_bytes()
    shard.write_bytes(data[:keep] if keep >= 0 else data[: len(data) + keep])
    lay = spikestore.open(path)["m"][name]
    for read in READS:
        _refused(lay, name, read)
    if name in "st":
        rate = spikestore.analysis.firing_rate(lay)  # from the summaries: unharmed
        want = [float(r.mean()) for r in recs[name]]
        assert np.allclose(rate, want)


@pytest.mark.parametrize(("a", "b"), [("s", "t"), ("f", "c")])
def test_a_shard_file_of_another_layer_is_refused(store, a, b):
    path, _ = store
    pa, pb = _shard(path, a), _shard(path, b)
    tmp = path / "swap"
    os.rename(pa, tmp)
    os.rename(pb, pa)
    os.rename(tmp, pb)
    m = spikestore.open(path)["m"]
    for name in (a, b):
        for read in READS:
            _refused(m[name], name, read, match="another array|not this segment|damaged|checksum")


def test_two_shards_of_one_array_swapped_are_refused(tmp_path):
    path = tmp_path / "two"
    g = torch.Generator().manual_seed(5)
    with spikestore.StoreWriter(path, shard_steps=16, chunk_bytes=1024) as w:
        for i in range(40):  # records this large: shards of 32 steps
            w.append("m", "f", torch.randn((3, 40, 50), generator=g))
            w.append("m", "c", torch.arange(6000, dtype=torch.int32).reshape(2, 3000) + i)
    for name in ("f", "c"):
        p0, p1 = _shard(path, name, 0), _shard(path, name, 1)
        tmp = path / "swap"
        os.rename(p0, tmp)
        os.rename(p1, p0)
        os.rename(tmp, p1)
    m = spikestore.open(path)["m"]
    for name in ("f", "c"):
        for read in READS:
            _refused(m[name], name, read, match="moved or swapped")
        _refused(m[name], name, "one", match=r"holds shard \(1")


# -- links and special files ---------------------------------------------------------


def _plant(kind: str, at: Path, outside: Path) -> None:
    if kind == "link":
        shutil.copy(at, outside)
        at.unlink()
        os.symlink(outside, at)
    elif kind == "fifo":
        at.unlink()
        os.mkfifo(at)
    elif kind == "device":
        if os.geteuid() != 0:
            pytest.skip("making a device file needs root")
        at.unlink()
        os.mknod(at, 0o666 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero
    else:  # a folder link in place of the shard's folder
        shutil.copytree(at.parent, outside)
        shutil.rmtree(at.parent)
        os.symlink(outside, at.parent)


@pytest.mark.parametrize("kind", ["link", "fifo", "device", "dirlink"])
@pytest.mark.parametrize("name", ["f", "c", "s", "t"])
def test_a_link_or_special_file_as_a_shard_is_refused_without_blocking(store, tmp_path, name, kind):
    path, recs = store
    _plant(kind, _shard(path, name), tmp_path / "outside")
    m = spikestore.open(path)["m"]
    for read in READS:
        _refused(m[name], name, read)
    other = "s" if name != "s" else "f"
    assert bits_equal(m[other][3], recs[other][3])


@pytest.mark.parametrize(("name", "kind"), [("f", "link"), ("s", "fifo"), ("t", "device")])
def test_a_link_or_special_file_as_a_shard_is_reported_as_what_it_is(store, tmp_path, name, kind):
    """README ("Untrusted stores") and docs/reliability.md: a link or special file
    anywhere in a store, a chunk included, is refused with ``UnsafeStoreError``.

    DEFECT: ``layer[i]`` and ``layer[a:b]`` report such a shard file as "missing from
    the store" (a plain ReadError from ``_checks.check_shards``, whose ``is_file``
    answers False for a link or a FIFO), so the user is told a file is missing while
    a link or FIFO sits there; only some paths (a raw layer's ``neuron``) raise
    ``UnsafeStoreError`` naming the link."""
    path, _ = store
    _plant(kind, _shard(path, name), tmp_path / "outside")
    what = {"link": "a symbolic link", "fifo": "a FIFO", "device": "a device file"}[kind]
    lay = spikestore.open(path)["m"][name]
    for read in READS:
        with pytest.raises(SpikestoreError) as info:
            _within(lambda read=read: READS[read](lay, name))
        chain = [info.value, info.value.__cause__]
        assert any(isinstance(e, spikestore.UnsafeStoreError) for e in chain) or (
            what in str(info.value)
        ), f"{read}: {type(info.value).__name__}: {info.value}"


def test_a_fifo_as_a_summary_chunk_is_refused_without_blocking(store):
    path, recs = store
    summary = path / "m" / "s" / "f0" / "summary" / "c" / "0" / "0"
    summary.unlink()
    os.mkfifo(summary)
    lay = spikestore.open(path)["m"]["s"]
    with pytest.raises(SpikestoreError, match="layer 's'"):
        _within(lambda: spikestore.analysis.firing_rate(lay))
    assert bits_equal(lay[3], recs["s"][3])  # the records do not need the summary


# -- a few rows of a spike chunk --------------------------------------------------------


def _tree_chunk(rows: int, cols: int, depth: int, streams: list[bytes]) -> np.ndarray:
    z = Zstd(level=1)
    frames = [z.encode(s) if s else b"" for s in streams]
    data = (
        struct.pack("<2sBBII", b"SK", 1, 2, rows, cols)
        + struct.pack("<B3x", depth)
        + struct.pack(f"<{len(frames)}I", *map(len, frames))
        + b"".join(frames)
    )
    return np.frombuffer(data, np.uint8)


def test_rows_of_a_depth_one_chunk_with_a_pad_bit_set_are_what_decode_chunk_gives():
    """``chunk_rows`` promises rows ``r0:r1`` of ``decode_chunk(data, shape)``, or
    ValueError where ``decode_chunk`` refuses.

    DEFECT: a depth-1 TREE chunk of ``n0`` bytes, ``n0 % 8 != 0``, whose level-1
    bitmap has a pad bit (past ``n0``) set: ``decode_chunk`` ignores the pad bit (as
    ``np.unpackbits(top, count=n0)`` does) and decodes the chunk, but ``chunk_rows``
    of rows touching the last bitmap byte counts the pad bit as a value and fails with
    an IndexError ("boolean index did not match"): neither the rows nor a ValueError.
    In ``_read_spike_rows`` that IndexError escapes its ``except ValueError`` and reads
    of one step fail where a slice of the same steps reads."""
    rows, cols = 7, 13  # n0 = 91: 5 pad bits in the last level-1 byte
    chunk = np.zeros((rows, cols), np.uint8)
    chunk[0, 0], chunk[6, 12] = 5, 9
    flat = chunk.reshape(-1)
    top = np.packbits(flat != 0)
    top[-1] |= 0x01  # a pad bit
    data = _tree_chunk(rows, cols, 1, [top.tobytes(), flat[flat != 0].tobytes()])
    want = decode_chunk(data, (rows, cols))
    assert np.array_equal(want, chunk)
    for r0, r1 in ((0, 1), (6, 7), (3, 7), (0, 7)):
        try:
            got = chunk_rows(data, (rows, cols), r0, r1)
        except ValueError:
            pytest.fail(f"rows {r0}:{r1}: refused though decode_chunk decodes the chunk")
        except Exception as exc:
            pytest.fail(f"rows {r0}:{r1}: {type(exc).__name__}: {exc}")
        assert np.array_equal(got, want[r0:r1])


def test_rows_of_forged_tree_chunks_match_decode_chunk_or_are_refused():
    """Streams decoded, changed (a bit flipped, a byte added or dropped, a zero value)
    and re-compressed, so every Zstandard frame is valid: ``chunk_rows`` gives what
    ``decode_chunk`` gives or refuses as it does. Chunks of whole bytes of bitmap
    (``n0 % 8 == 0``, as every chunk a writer makes: 16-row multiples)."""
    rng = np.random.default_rng(7)
    z = Zstd(level=1)
    from spikestore.codecs.spikes import encode_chunk

    tried = refused = 0
    for p in (0.002, 0.02, 0.1):
        for rows, cols in ((16, 245), (16, 64), (32, 5)):
            for _ in range(12):
                chunk = np.packbits(rng.random((rows, cols * 8)) < p, axis=1)
                enc = encode_chunk(chunk, level=1)
                if enc[3] != 2:
                    continue
                depth = enc[12]
                sizes = struct.unpack_from(f"<{depth + 1}I", enc, 16)
                pos, streams = 16 + 4 * (depth + 1), []
                for s in sizes:
                    streams.append(bytearray(z.decode(enc[pos : pos + s]) if s else b""))
                    pos += s
                k = int(rng.integers(len(streams)))
                s = streams[k]
                op = int(rng.integers(4))
                if op == 0 and s:
                    s[int(rng.integers(len(s)))] ^= 1 << int(rng.integers(8))
                elif op == 1:
                    s.append(int(rng.integers(256)))
                elif op == 2 and s:
                    del s[int(rng.integers(len(s)))]
                elif s:
                    s[int(rng.integers(len(s)))] = 0
                data = _tree_chunk(rows, cols, depth, [bytes(x) for x in streams])
                try:
                    want = decode_chunk(data, (rows, cols))
                except ValueError:
                    want = None
                for r0, r1 in ((0, 1), (rows // 2, rows // 2 + 2), (rows - 1, rows)):
                    if want is None:
                        with pytest.raises(ValueError):
                            chunk_rows(data, (rows, cols), r0, r1)
                    else:
                        assert np.array_equal(chunk_rows(data, (rows, cols), r0, r1), want[r0:r1])
                tried += 1
                refused += want is None
    assert tried > 60 and refused > 10


# -- replacement, concurrency, a live writer -----------------------------------------------


def test_a_store_replaced_under_a_reader_is_refused_on_every_direct_path(store):
    path, _ = store
    reader = spikestore.open(path)
    layers = {name: reader["m"][name] for name in NEURON}
    for lay in layers.values():
        lay[0]  # opened and read once
    _write(path, _records(2), mode="w")
    for name, lay in layers.items():
        for read in READS:
            with pytest.raises(StoreReplacedError, match=f"layer '{name}'"):
                _within(lambda lay=lay, read=read, name=name: READS[read](lay, name))
    with pytest.raises(StoreReplacedError):
        spikestore.analysis.firing_rate(layers["s"])
    fresh = reader.refresh()["m"]["s"]
    assert bits_equal(fresh[3], _records(2)["s"][3])


def test_one_segment_folder_replaced_under_a_reader_is_refused(store, tmp_path):
    """Only a layer's segment folder swapped for another store's (same shapes, valid
    files, shard headers naming the other segment): never the other store's values."""
    path, _ = store
    other = tmp_path / "other"
    _write(other, _records(3))
    reader = spikestore.open(path)
    layers = {name: reader["m"][name] for name in NEURON}
    for lay in layers.values():
        lay[0]
    for name in NEURON:
        seg = path / "m" / name / "f0" / "s0"
        shutil.rmtree(seg)
        shutil.copytree(other / "m" / name / "f0" / "s0", seg)
    for name, lay in layers.items():
        for read in READS:
            with pytest.raises(ReadError, match=f"layer '{name}'"):
                _within(lambda lay=lay, read=read, name=name: READS[read](lay, name))


def test_threads_reading_one_layer_at_once_get_the_right_values(store):
    path, recs = store
    m = spikestore.open(path)["m"]
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            for _ in range(6):
                for name in NEURON:
                    i = int(rng.integers(N))
                    assert bits_equal(m[name][i], recs[name][i])
                    a = int(rng.integers(N - 5))
                    assert bits_equal(m[name][a : a + 5], torch.stack(recs[name][a : a + 5]))
                    assert torch.equal(
                        m[name].neuron(NEURON[name], time_axis=False).to(recs[name][0].dtype),
                        _neuron_want(recs[name], NEURON[name]),
                    )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors[0]


def test_a_reader_during_a_live_writer_sees_committed_steps_right(tmp_path):
    path = tmp_path / "live"
    recs = _records(4)
    first = threading.Event()
    done = threading.Event()
    failure: list[BaseException] = []

    def writer() -> None:
        try:
            with spikestore.StoreWriter(path, flush_interval=0, chunk_bytes=1024) as w:
                for i in range(N):
                    for name in ("f", "s"):
                        w.append("m", name, recs[name][i])
                    w.append("m", "t", recs["t"][i], time_axis=0)
                    if i == 0:
                        w.flush()
                        first.set()
        except BaseException as exc:
            failure.append(exc)
        finally:
            first.set()
            done.set()

    th = threading.Thread(target=writer)
    th.start()
    assert first.wait(30)
    reader = spikestore.open(path)
    seen = 0
    while True:
        finished = done.is_set()
        reader = reader.refresh()
        for name in ("f", "s", "t"):
            lay = reader["m"][name]
            n = len(lay)
            if not n:
                continue
            seen = max(seen, n)
            assert bits_equal(lay[-1], recs[name][n - 1])
            idx = NEURON[name]
            got = lay.neuron(idx, time_axis=False)
            assert got.shape[0] >= n
            assert torch.equal(got[:n].to(recs[name][0].dtype), _neuron_want(recs[name][:n], idx))
        if finished:
            break
    th.join(30)
    assert not failure, failure[0]
    assert seen == N
