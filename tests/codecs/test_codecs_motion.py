"""Tests of the MOTION mode of ``spikestore.spikes`` (spikestore/codecs/motion.py) and of the
writer's use of it for time-last convolutional records."""

from __future__ import annotations

import importlib.util
import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import spikestore
from spikestore.codecs import motion as _motion
from spikestore.codecs import spikes as _spikes
from spikestore.codecs.layout import layout as _layout
from spikestore.codecs.layout import spike_frame as _spike_frame
from spikestore.codecs.spikes import (
    CODEC_NAME,
    MODE_MOTION,
    SpikeCodec,
    _encode_flat,
    _encode_motion,
    decode_chunk,
    encode_chunk,
)
from spikestore.testing import assert_chunk_flips_raise_or_decode


def moving_planes(
    q: int, h: int, w: int, t: int, seed: int = 0, noise: float = 0.005
) -> tuple[np.ndarray, np.ndarray]:
    """``(T, Q, H, W)`` bits: random edges, each plane moving by its own candidate
    motion one pixel per time step (zeros enter at the edge), plus noise; and the
    motion index of each plane."""
    rng = np.random.default_rng(seed)
    motions = rng.integers(0, len(_motion.MOTIONS), q)
    x = np.zeros((t, q, h, w), np.uint8)
    for j, m in enumerate(motions):
        dy, dx = _motion.MOTIONS[m]
        big = rng.random((h + 2 * t, w + 2 * t)) < 0.2
        for i in range(t):
            oy, ox = t - i * dy, t - i * dx
            x[i, j] = big[oy : oy + h, ox : ox + w]
    x |= (rng.random(x.shape) < noise).astype(np.uint8)
    return x, motions


def to_chunk(x: np.ndarray, rows: int) -> np.ndarray:
    """``(T, Q, H, W)`` bits -> ``(rows, Cb)`` packed rows of whole time-last planes."""
    return np.packbits(x.transpose(1, 2, 3, 0).reshape(rows, -1), axis=1)


def test_motion_mode_roundtrips_and_beats_tree() -> None:
    x, _ = moving_planes(64, 16, 16, 8)
    a = to_chunk(x, 16)
    tree = encode_chunk(a)
    data = encode_chunk(a, frame=(16, 16, 8))
    assert data[2:4] == bytes([2, MODE_MOTION])
    assert len(data) < 0.6 * len(tree)
    np.testing.assert_array_equal(decode_chunk(data, a.shape), a)


def test_choose_motion_finds_each_planes_motion() -> None:
    x, motions = moving_planes(40, 12, 12, 6, noise=0.0)
    np.testing.assert_array_equal(_motion.choose_motion(x), motions)


def test_contexts_follow_the_documented_definition() -> None:
    x, motions = moving_planes(5, 6, 7, 4, seed=3)
    ctx = _motion.contexts(x, motions)
    t, q, h, w = x.shape

    def f(i: int, k: int, j: int, y: int, xx: int) -> int:
        if i - k < 0 or not (0 <= y < h and 0 <= xx < w):
            return 0
        return int(x[i - k, j, y, xx])

    for i in range(t):
        for j in range(q):
            dy, dx = _motion.MOTIONS[motions[j]]
            ey, ex = (dx, dy) if (dy, dx) != (0, 0) else (1, 0)
            for y in range(h):
                for xx in range(w):
                    bits = [
                        f(i, 1, j, y - dy, xx - dx),
                        f(i, 1, j, y, xx),
                        f(i, 2, j, y - dy, xx - dx),
                        f(i, 2, j, y, xx),
                        f(i, 2, j, y - 2 * dy, xx - 2 * dx),
                        f(i, 1, j, y - dy - ey, xx - dx - ex),
                        f(i, 1, j, y - dy + ey, xx - dx + ex),
                        f(i, 1, j, y + dy, xx + dx),
                    ]
                    assert ctx[i, j, y, xx] == sum(b << n for n, b in enumerate(bits))


@pytest.mark.parametrize(
    ("frame", "rows"),
    [((1, 5, 2), 8), ((3, 3, 3), 4), ((5, 7, 16), 3), ((2, 2, 2), 1), ((16, 16, 8), 2)],
)
@pytest.mark.parametrize("p", [0.0, 0.01, 0.3, 1.0])
def test_forced_motion_roundtrips_any_geometry(frame: tuple[int, int, int], rows: int, p: float):
    h, w, t = frame
    # whole planes per row: 8 planes when a plane is not a whole number of bytes
    per_row = 8 // math.gcd(8, h * w * t) * 2
    rng = np.random.default_rng(1)
    x = (rng.random((t, rows * per_row, h, w)) < p).astype(np.uint8)
    a = to_chunk(x, rows)
    data = _encode_motion(a, frame, rows * per_row, 1, budget=1 << 30)
    assert data is not None and data[3] == MODE_MOTION
    np.testing.assert_array_equal(decode_chunk(data, a.shape), a)


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 6),
    w=st.integers(1, 6),
    t=st.integers(2, 5),
    rows=st.integers(1, 4),
    p=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_forced_motion_roundtrips_hypothesis(h, w, t, rows, p, seed) -> None:
    per_row = 8 // math.gcd(8, h * w * t)
    rng = np.random.default_rng(seed)
    x = (rng.random((t, rows * per_row, h, w)) < p).astype(np.uint8)
    a = to_chunk(x, rows)
    data = _encode_motion(a, (h, w, t), rows * per_row, 1, budget=1 << 30)
    assert data is not None
    np.testing.assert_array_equal(decode_chunk(data, a.shape), a)


def test_motion_is_skipped_when_it_cannot_win_or_does_not_apply() -> None:
    rng = np.random.default_rng(0)
    iid = np.packbits(rng.random((16, 64 * 8 * 8 * 8)) < 0.05, axis=1)
    assert encode_chunk(iid, frame=(8, 8, 8)) == encode_chunk(iid)  # no structure: TREE
    x, _ = moving_planes(64, 16, 16, 8)
    a = to_chunk(x, 16)
    # rows that are not whole planes, T = 1, or no frame: never MOTION
    assert encode_chunk(a, frame=(16, 15, 8))[3] != MODE_MOTION
    assert encode_chunk(a, frame=(16, 16, 1))[3] != MODE_MOTION
    assert _spike_frame((5000, 2, 4, 4), (1, 2, 3, 0)) is None  # T > 4096
    assert encode_chunk(a)[3] != MODE_MOTION


def motion_chunk() -> tuple[np.ndarray, bytes]:
    x, _ = moving_planes(16, 8, 8, 4, seed=2)
    a = to_chunk(x, 4)
    data = _encode_motion(a, (8, 8, 4), 16, 1, budget=1 << 30)
    assert data is not None and data[3] == MODE_MOTION
    return a, data


def test_corrupt_motion_chunks_raise_value_error() -> None:
    a, data = motion_chunk()
    for n in list(range(0, 330, 3)) + list(range(330, len(data), 5)):
        with pytest.raises(ValueError):
            decode_chunk(data[:n], a.shape)
    with pytest.raises(ValueError, match="version-1"):
        decode_chunk(data[:2] + b"\x01" + data[3:], a.shape)  # MOTION needs version 2
    bad = bytearray(data)
    bad[56] = bad[57]  # rank no longer a permutation
    with pytest.raises(ValueError, match="permutation"):
        decode_chunk(bytes(bad), a.shape)
    bad = bytearray(data)
    struct.pack_into("<I", bad, 12, 7)  # H = 7 does not divide the rows
    with pytest.raises(ValueError, match="does not divide"):
        decode_chunk(bytes(bad), a.shape)
    (lm,) = struct.unpack_from("<I", data, 312)
    nested = 316 + lm
    bad = bytearray(data)
    bad[nested + 3] = MODE_MOTION
    with pytest.raises(ValueError, match="nest"):
        decode_chunk(bytes(bad), a.shape)
    from numcodecs.zstd import Zstd

    motion = np.full(16, 9, np.uint8)  # out-of-range motion index
    frame = Zstd(1).encode(motion.tobytes())
    bad = bytearray(data[:312]) + struct.pack("<I", len(frame)) + frame + data[nested:]
    with pytest.raises(ValueError, match="motion index"):
        decode_chunk(bytes(bad), a.shape)


def test_flipped_bytes_in_motion_chunks_raise_or_decode() -> None:
    assert_chunk_flips_raise_or_decode(*motion_chunk(), stride=2)


def test_codec_configuration_with_frame() -> None:
    codec = SpikeCodec(frame=[34, 34, 16])
    d = codec.to_dict()
    assert d == {
        "name": CODEC_NAME,
        "configuration": {"level": 1, "version": 2, "frame": [34, 34, 16]},
    }
    assert SpikeCodec.from_dict(json.loads(json.dumps(d))) == codec
    assert SpikeCodec().to_dict()["configuration"] == {"level": 1, "version": 1}
    for bad in ([1, 2], [0, 1, 1], "x", [1.5, 2, 2], [True, 2, 2]):
        with pytest.raises(ValueError, match="frame"):
            SpikeCodec(frame=bad)
    with pytest.raises(ValueError, match="version"):
        SpikeCodec.from_dict({"name": CODEC_NAME, "configuration": {"version": 3}})


def test_layout_aligns_chunks_to_whole_planes() -> None:
    for frame in [(34, 34, 16), (3, 3, 3), (17, 17, 16), (28, 28, 16)]:
        unit = math.lcm(8, math.prod(frame)) // 8
        for planes in (1, 7, 256):
            row = math.ceil(planes * math.prod(frame) / 8)
            chunks, shards = _layout((row,), 1, 2048, 1 << 18, frame=frame)
            assert chunks[1] % unit == 0 and chunks[1] >= unit
            # as wide as the byte budget allows: whole row, or within one unit of it
            budget = (1 << 18) // chunks[0]
            assert chunks[1] >= min(math.ceil(row / unit) * unit, budget - unit + 1)
            assert shards[1] % chunks[1] == 0 and shards[1] >= row
    assert _spike_frame((16, 8, 4, 12, 12), (1, 2, 3, 4, 0)) == (12, 12, 16)
    assert _spike_frame((16, 8, 12, 12), (1, 2, 3, 0)) == (12, 12, 16)
    assert _spike_frame((16, 8, 256), (1, 2, 0)) is None  # fully connected
    assert _spike_frame((16, 8, 4, 12, 12), None) is None  # not time-last
    assert _spike_frame((1, 8, 4, 12, 12), (1, 2, 3, 4, 0)) is None  # T = 1


def shard_modes(path: Path) -> set[tuple[int, int]]:
    """(version, mode) of every spike chunk header found in the shard files under path."""
    found = set()
    for f in path.rglob("c/*/*"):
        blob = f.read_bytes()
        pos = blob.find(b"SK")
        while pos >= 0:
            if pos + 4 <= len(blob) and blob[pos + 2] in (1, 2) and blob[pos + 3] <= 3:
                found.add((blob[pos + 2], blob[pos + 3]))
            pos = blob.find(b"SK", pos + 1)
    return found


def test_writer_codes_moving_conv_records_with_motion(tmp_path: Path) -> None:
    # [T, B, C, H, W] records of moving edges, recorded time-last
    recs = []
    for s in range(20):
        x, _ = moving_planes(2 * 3, 12, 12, 8, seed=s)
        recs.append(torch.from_numpy(x.reshape(8, 2, 3, 12, 12)).float())
    fc = [(torch.rand(8, 2, 40) < 0.1).float() for _ in range(20)]
    with spikestore.StoreWriter(tmp_path / "s") as w:
        for r, f in zip(recs, fc, strict=True):
            w.append("output", "conv", r, time_axis=0)
            w.append("output", "fc", f, time_axis=0)
    meta = json.loads((tmp_path / "s/output/conv/f0/s0/zarr.json").read_text())
    sharding = meta["codecs"][0]["configuration"]
    assert sharding["codecs"][0]["configuration"]["frame"] == [12, 12, 8]
    assert sharding["chunk_shape"][1] % (12 * 12 * 8 // 8) == 0
    fc_meta = json.loads((tmp_path / "s/output/fc/f0/s0/zarr.json").read_text())
    assert "frame" not in json.dumps(fc_meta["codecs"])
    assert (2, MODE_MOTION) in shard_modes(tmp_path / "s/output/conv")
    layer = spikestore.open(tmp_path / "s")["output"]["conv"]
    for i, r in enumerate(recs):
        torch.testing.assert_close(layer[i], r, rtol=0, atol=0)
    torch.testing.assert_close(layer[3:7], torch.stack(recs[3:7]), rtol=0, atol=0)
    stacked = torch.stack(recs)
    for nd in [(0, 0, 0, 0, 0), (7, 1, 2, 11, 11), (3, 0, 1, 5, 6)]:
        got = layer.neuron(nd, time_axis=False)
        torch.testing.assert_close(got, stacked[(slice(None), *nd)], rtol=0, atol=0)
    from spikestore import analysis

    ids = [0, 17, 863]
    got = analysis.traces(layer, ids, time_axis=False)  # flat ids into the whole record
    np.testing.assert_array_equal(np.asarray(got), stacked.reshape(20, -1)[:, ids].numpy())
    fcl = spikestore.open(tmp_path / "s")["output"]["fc"]
    torch.testing.assert_close(fcl[:], torch.stack(fc), rtol=0, atol=0)


def test_motion_chunks_are_smaller_than_tree_on_the_same_rows() -> None:
    x, _ = moving_planes(48, 20, 20, 16, seed=5)
    a = to_chunk(x, 16)
    flat = _encode_flat(a.reshape(-1), *a.shape, 1)
    assert len(encode_chunk(a, frame=(20, 20, 16))) < 0.5 * len(flat)


def test_predictability_benchmark_quick_runs(capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    repo = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(repo / "benchmarks"))
    try:
        import bench_predictability
    finally:
        sys.path.pop(0)
    assert bench_predictability.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "| L0 conv" in out and "| L1 conv" in out


# ------------------------------------------- numba kernels against the numpy code
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
HAVE_NUMBA = importlib.util.find_spec("numba") is not None
PATHS = ["numpy", pytest.param("numba", marks=pytest.mark.skipif(not HAVE_NUMBA, reason="numba"))]


@pytest.fixture(params=PATHS)
def motion_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test with the numpy code and, when numba is importable, the compiled one."""
    monkeypatch.setattr(_motion, "USE_NUMBA", request.param == "numba")
    assert _motion.accelerated() is (request.param == "numba")
    return str(request.param)


def _both(fn: Any) -> tuple[Any, Any]:
    """``fn()`` with the numpy code, then with numba (the numpy result twice without it)."""
    old = _motion.USE_NUMBA
    try:
        _motion.USE_NUMBA = False
        a = fn()
        _motion.USE_NUMBA = None if HAVE_NUMBA else False
        return a, fn()
    finally:
        _motion.USE_NUMBA = old


def _fixture_motion_chunks() -> list[tuple[np.ndarray, bytes, tuple[int, int, int], str]]:
    """(chunk, stored bytes, frame, where) of every spike chunk in the committed stores'
    segments that have a MOTION frame, read from their shard files (index at the end)."""
    out = []
    for meta_path in sorted(FIXTURES.glob("store_v*/**/s0/zarr.json")):
        meta = json.loads(meta_path.read_text())
        if '"frame"' not in json.dumps(meta.get("codecs")):
            continue
        shard = meta["codecs"][0]["configuration"]
        inner = tuple(shard["chunk_shape"])
        frame = tuple(shard["codecs"][0]["configuration"]["frame"])
        outer = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
        grid = int(np.prod([o // i for o, i in zip(outer, inner, strict=True)]))
        for f in sorted((meta_path.parent / "c").rglob("*")):
            if not f.is_file():
                continue
            blob = f.read_bytes()
            index = np.frombuffer(blob[-(16 * grid + 4) : -4], "<u8").reshape(-1, 2)
            for off, size in index:
                if off == 2**64 - 1:
                    continue
                data = blob[int(off) : int(off + size) - 4]  # less the CRC-32C
                out.append((decode_chunk(data, inner), data, frame, f"{f}@{off}"))
    return out


def test_fixture_stores_hold_motion_chunks() -> None:
    chunks = _fixture_motion_chunks()
    assert chunks and any(data[3] == MODE_MOTION for _, data, _, _ in chunks)


def test_numba_and_numpy_give_identical_bytes_on_the_fixture_chunks() -> None:
    for a, data, frame, where in _fixture_motion_chunks():
        enc_np, enc_nb = _both(lambda a=a, frame=frame: encode_chunk(a, 1, frame))
        assert enc_np == enc_nb, where
        dec_np, dec_nb = _both(lambda data=data, a=a: decode_chunk(data, a.shape))
        np.testing.assert_array_equal(dec_np, a, err_msg=where)
        np.testing.assert_array_equal(dec_nb, a, err_msg=where)
        if data[3] == MODE_MOTION:  # forced, so that the MOTION coder itself is compared
            planes = a.shape[0] * (a.shape[1] * 8 // math.prod(frame))
            forced = _both(
                lambda a=a, frame=frame, p=planes: _encode_motion(a, frame, p, 1, 1 << 30)
            )
            assert forced[0] == forced[1], where


@pytest.mark.parametrize("name", ["raw", "tree_d0", "tree_d1", "tree_deep", "zero"])
def test_spikecodec_fixtures_encode_to_their_bytes_either_way(motion_path: str, name: str) -> None:
    a = np.load(FIXTURES / "spikecodec_v1" / f"{name}.npy")
    data = (FIXTURES / "spikecodec_v1" / f"{name}.bin").read_bytes()
    np.testing.assert_array_equal(decode_chunk(data, a.shape), a)
    assert encode_chunk(a) == data


def test_motion_roundtrips_and_matches_on_moving_planes(motion_path: str) -> None:
    x, motions = moving_planes(64, 16, 16, 8)
    np.testing.assert_array_equal(_motion.choose_motion(x), motions)
    a = to_chunk(x, 16)
    data = encode_chunk(a, frame=(16, 16, 8))
    assert data[3] == MODE_MOTION
    np.testing.assert_array_equal(decode_chunk(data, a.shape), a)
    other = _both(lambda: encode_chunk(a, frame=(16, 16, 8)))
    assert other[0] == other[1] == data


@settings(max_examples=30, deadline=None)
@given(
    h=st.integers(1, 6),
    w=st.integers(1, 6),
    t=st.integers(2, 6),
    rows=st.integers(1, 3),
    p=st.floats(0.0, 1.0),
    moving=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_numba_and_numpy_agree_on_any_geometry(h, w, t, rows, p, moving, seed) -> None:
    per_row = 8 // math.gcd(8, h * w * t)
    q = rows * per_row
    if moving:
        x, _ = moving_planes(q, h, w, t, seed=seed, noise=p * 0.1)
    else:
        x = (np.random.default_rng(seed).random((t, q, h, w)) < p).astype(np.uint8)
    a = to_chunk(x, rows)
    enc = _both(lambda: _encode_motion(a, (h, w, t), q, 1, budget=1 << 30))
    assert enc[0] == enc[1] and enc[0] is not None
    dec = _both(lambda: decode_chunk(enc[0], a.shape))
    np.testing.assert_array_equal(dec[0], a)
    np.testing.assert_array_equal(dec[1], a)
    xq = np.ascontiguousarray(x.transpose(1, 2, 3, 0))
    est = _both(lambda: _motion.estimate_bits(xq))
    assert est[0] == est[1]


def test_numba_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_motion, "USE_NUMBA", None)
    monkeypatch.setenv("SPIKESTORE_NUMBA", "0")
    assert not _motion.accelerated()
    monkeypatch.setenv("SPIKESTORE_NUMBA", "1")
    assert _motion.accelerated() is HAVE_NUMBA


def test_whether_numba_is_installed_is_looked_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where numba is missing, finding that out searches ``sys.path`` (about 30 us):
    the codec asks for every chunk, so it is looked up once."""
    import importlib.util

    looked: list[str] = []
    monkeypatch.setattr(_motion, "USE_NUMBA", None)
    monkeypatch.delenv("SPIKESTORE_NUMBA", raising=False)
    monkeypatch.setattr(_motion, "_INSTALLED", [])
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: looked.append(name))
    for _ in range(5):
        assert not _motion.numba_wanted()
        assert _motion.numba_module() is None
    assert looked == ["numba"]


@pytest.mark.parametrize("t", [2, 3, 4, 8, 9, 16, 17, 33, 56, 57, 64])
def test_estimate_packed_matches_estimate_bits(t: int) -> None:
    """The encoder's trial reads planes from the packed chunk at any bit offset (planes
    of a whole number of bytes or not) and estimates exactly what the numpy
    estimate_bits does on the unpacked planes, with numba (words up to T = 56, then the
    plane kernels) and without."""
    for h, w, q in ((5, 7, 6), (4, 4, 5), (1, 3, 4), (3, 19, 2), (2, 16, 3)):
        x, _ = moving_planes(q, h, w, t, seed=t + h, noise=0.05)
        xq = np.ascontiguousarray(x.transpose(1, 2, 3, 0))
        plane = h * w * t
        packed = np.packbits(xq.reshape(-1))
        for picked in (np.arange(q), np.arange(0, q, 2), np.array([q - 1]), np.arange(0)):
            sub = xq[picked]
            starts = picked * plane
            frame = (h, w, t)
            want = _both(lambda sub=sub: _motion.estimate_bits(sub))[0]
            got = _both(lambda b=packed, s=starts, f=frame: _motion.estimate_packed(b, s, f))
            assert got[0] == got[1] == want, (h, w, q, picked)
        starts = np.arange(q) * plane
        biased, unbiased = (_motion.estimate_packed(packed, starts, (h, w, t), u) for u in (0, 1))
        assert unbiased >= biased


def test_motion_trial_reads_packed_planes_as_before() -> None:
    """The trial on packed planes keeps the decisions of unpacking the whole chunk: the
    same chunks are MOTION, and the i.i.d. ones (of whole-byte planes or not) TREE."""
    rng = np.random.default_rng(7)
    for frame, rows, per_row in (((8, 8, 8), 16, 64), ((5, 7, 3), 8, 8 * 8), ((28, 28, 4), 4, 8)):
        plane = math.prod(frame)
        iid = np.packbits(rng.random((rows, per_row * plane)) < 0.05, axis=1)
        assert encode_chunk(iid, frame=frame) == encode_chunk(iid)
        h, w, t = frame
        x, _ = moving_planes(rows * per_row, h, w, t, seed=rows)
        a = to_chunk(x, rows)
        assert encode_chunk(a, frame=frame)[3] == MODE_MOTION


@pytest.mark.parametrize(
    ("shares", "tried"),
    [
        ((0.97,), False),
        ((0.95,), False),
        ((0.5,), True),
        ((0.93, 0.95), False),
        ((0.93, 0.9), True),
    ],
)
def test_motion_trial_looks_at_the_whole_sample_only_when_close(
    monkeypatch: pytest.MonkeyPatch, shares: tuple[float, ...], tried: bool
) -> None:
    """A first look at a quarter of the sample decides clear cases; one between
    ``_MOTION_TRY_BELOW`` and ``_MOTION_SKIP_FROM`` looks again at the whole sample."""
    frame, rows, per_row = (28, 28, 4), 16, 41
    plane = math.prod(frame)
    planes = rows * per_row
    a = np.packbits(np.random.default_rng(3).random((rows, per_row * plane)) < 0.05, axis=1)
    budget = 1 << 30
    looks: list[int] = []

    def estimate(packed: np.ndarray, starts: np.ndarray, frame: Any) -> float:
        share = shares[len(looks)]
        looks.append(starts.size)
        # (bits / 8 * planes / picked + header) / budget == share
        return 8 * (share * budget - _spikes._MOTION_HEADER.size) * starts.size / planes

    monkeypatch.setattr(_motion, "estimate_packed", estimate)
    data = _encode_motion(a, frame, planes, 1, budget)
    assert (data is not None) == tried
    assert len(looks) == len(shares)
    whole = max(_spikes._MOTION_SAMPLE_PLANES, -(-_spikes._MOTION_SAMPLE_BITS // plane))
    # every k-th plane: at least the sample, fewer than 5 / 4 of it
    assert whole // 4 <= looks[0] < whole * 5 / 16
    if len(looks) == 2:
        assert whole <= looks[1] < whole * 5 / 4
