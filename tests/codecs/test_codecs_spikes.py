"""Tests of the spike chunk codec ``spikestore.spikes`` (spikestore/codecs/spikes.py).

Regenerate the committed fixtures (only when the format version changes)::

    python tests/codecs/test_codecs_spikes.py --write-fixtures
"""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from spikestore.codecs.spikes import (
    CODEC_NAME,
    MODE_RAW,
    MODE_TREE,
    MODE_ZERO,
    SpikeCodec,
    decode_chunk,
    encode_chunk,
)
from spikestore.testing import assert_chunk_flips_raise_or_decode

FIXTURES = Path(__file__).parents[1] / "fixtures" / "spikecodec_v1"
REPO = Path(__file__).resolve().parents[2]

SHAPES = [(1, 1), (1, 17), (3, 5), (32, 1), (64, 4096), (5, 333)]
DENSITIES = [0.0, 1e-4, 0.01, 0.05, 0.2, 0.5, 0.9, 1.0]


def spikes(shape: tuple[int, int], p: float, seed: int = 0) -> np.ndarray:
    """Packed Bernoulli(p) rows; the pad bits of each row are 0 like np.packbits makes them."""
    rows, cols = shape
    nbits = max(cols * 8 - 3, 1)  # leave pad bits at the end of each row
    bits = np.random.default_rng(seed).random((rows, nbits)) < p
    out = np.packbits(bits, axis=1)
    assert out.shape == shape
    return out


def roundtrip(a: np.ndarray) -> bytes:
    data = encode_chunk(a)
    back = decode_chunk(data, a.shape)
    assert back.dtype == np.uint8
    assert back.shape == a.shape
    np.testing.assert_array_equal(back, a)
    return data


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("p", DENSITIES)
def test_roundtrip_densities(shape: tuple[int, int], p: float) -> None:
    roundtrip(spikes(shape, p))


@pytest.mark.parametrize("shape", SHAPES)
def test_roundtrip_all_ff(shape: tuple[int, int]) -> None:
    roundtrip(np.full(shape, 0xFF, np.uint8))


def test_modes_are_chosen_from_the_data() -> None:
    assert roundtrip(np.zeros((64, 512), np.uint8))[3] == MODE_ZERO
    sparse = roundtrip(spikes((64, 512), 0.001))
    assert sparse[3] == MODE_TREE and sparse[12] >= 2
    assert roundtrip(spikes((64, 512), 0.5))[3] == MODE_RAW


def test_sparse_chunk_is_near_entropy() -> None:
    p = 0.01
    a = np.packbits(np.random.default_rng(1).random((64, 8192 * 8)) < p, axis=1)
    h = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    assert len(encode_chunk(a)) * 8 < 1.1 * h * a.size * 8


def test_non_contiguous_and_1d_input() -> None:
    a = spikes((40, 64), 0.05)
    view = a[::2, 3:50]
    np.testing.assert_array_equal(decode_chunk(encode_chunk(view), view.shape), view)
    flat = a.reshape(-1)
    np.testing.assert_array_equal(decode_chunk(encode_chunk(flat), flat.shape), flat)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    hnp.arrays(
        np.uint8,
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=70),
        elements=st.sampled_from([0, 0, 0, 0, 1, 2, 128, 255, 0x5A]),
    )
)
def test_roundtrip_hypothesis_sparse_bytes(a: np.ndarray) -> None:
    roundtrip(a)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(hnp.arrays(np.uint8, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40)))
def test_roundtrip_hypothesis_any_bytes(a: np.ndarray) -> None:
    roundtrip(a)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    rows=st.integers(1, 64),
    cols=st.integers(1, 300),
    p=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_roundtrip_hypothesis_bernoulli(rows: int, cols: int, p: float, seed: int) -> None:
    roundtrip(spikes((rows, cols), p, seed))


# ---------------------------------------------------------------- zarr integration


def make_array(path: Path, data: np.ndarray, chunks: tuple[int, int], shards: tuple[int, int]):
    arr = zarr.create_array(
        zarr.storage.LocalStore(path),
        shape=data.shape,
        dtype="uint8",
        chunks=chunks,
        shards=shards,
        serializer=SpikeCodec(),
        compressors=(),
        fill_value=0,
    )
    arr[...] = data
    return arr


def test_zarr_sharded_roundtrip_with_edge_chunks(tmp_path: Path) -> None:
    # 150 x 70 with 64-step shards of 16-step chunks: edge shards and edge chunks on both axes
    data = np.concatenate([spikes((50, 70), p, i) for i, p in enumerate((0.01, 0.2, 0.0))])
    arr = make_array(tmp_path / "a.zarr", data, chunks=(16, 24), shards=(64, 48))
    np.testing.assert_array_equal(arr[...], data)
    np.testing.assert_array_equal(arr[17:101, 5:66], data[17:101, 5:66])
    reopened = zarr.open_array(zarr.storage.LocalStore(tmp_path / "a.zarr"), mode="r")
    np.testing.assert_array_equal(reopened[...], data)
    meta = json.loads((tmp_path / "a.zarr" / "zarr.json").read_text())
    inner = meta["codecs"][0]["configuration"]["codecs"]
    assert inner[0] == {"name": CODEC_NAME, "configuration": {"level": 1, "version": 1}}


def test_zarr_partial_writes_and_resize(tmp_path: Path) -> None:
    data = spikes((100, 40), 0.05)
    arr = make_array(
        tmp_path / "b.zarr", np.zeros((60, 40), np.uint8), chunks=(16, 40), shards=(32, 40)
    )
    arr.resize((100, 40))
    arr[:50] = data[:50]
    arr[50:] = data[50:]
    np.testing.assert_array_equal(arr[...], data)


def test_plain_zarr_open_in_a_fresh_process(tmp_path: Path) -> None:
    data = spikes((70, 33), 0.02)
    make_array(tmp_path / "c.zarr", data, chunks=(16, 33), shards=(64, 33))
    np.save(tmp_path / "expected.npy", data)
    script = (
        "import sys, numpy as np, zarr, spikestore.codecs.spikes\n"
        "a = zarr.open(sys.argv[1], mode='r')\n"
        "assert np.array_equal(a[...], np.load(sys.argv[2]))\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "c.zarr"), str(tmp_path / "expected.npy")],
        check=True,
        cwd=REPO,
        timeout=120,
    )


def test_codec_dict_roundtrip() -> None:
    for codec in (SpikeCodec(), SpikeCodec(level=5), SpikeCodec(level=-3)):
        d = codec.to_dict()
        assert d["name"] == CODEC_NAME
        assert json.loads(json.dumps(d)) == d
        assert SpikeCodec.from_dict(d) == codec
    assert SpikeCodec.from_dict({"name": CODEC_NAME}) == SpikeCodec()
    assert zarr.registry.get_codec_class(CODEC_NAME) is SpikeCodec


@pytest.mark.parametrize(
    "config",
    [{"level": 1, "version": 3}, {"level": 99}, {"level": "1"}, {"level": 1, "extra": True}],
)
def test_codec_rejects_unknown_configuration(config: dict) -> None:
    with pytest.raises((TypeError, ValueError)):
        SpikeCodec.from_dict({"name": CODEC_NAME, "configuration": config})


def test_codec_rejects_other_dtypes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="uint8"):
        zarr.create_array(
            zarr.storage.MemoryStore(),
            shape=(8, 8),
            dtype="int16",
            serializer=SpikeCodec(),
            compressors=(),
        )


# ---------------------------------------------------------------- corrupt input


def tree_chunk() -> tuple[np.ndarray, bytes]:
    a = spikes((32, 256), 0.01)
    data = encode_chunk(a)
    assert data[3] == MODE_TREE and data[12] >= 2
    return a, data


def test_truncated_bytes_raise_value_error() -> None:
    a, data = tree_chunk()
    for n in list(range(0, 40)) + list(range(40, len(data), 7)) + [len(data) - 1]:
        with pytest.raises(ValueError):
            decode_chunk(data[:n], a.shape)
    with pytest.raises(ValueError):
        decode_chunk(data + b"\0", a.shape)


def test_flipped_bytes_raise_value_error_or_decode() -> None:
    assert_chunk_flips_raise_or_decode(*tree_chunk())


def test_header_checks() -> None:
    a, data = tree_chunk()
    with pytest.raises(ValueError, match="does not match"):
        decode_chunk(data, (16, 256))
    with pytest.raises(ValueError, match="magic"):
        decode_chunk(b"XX" + data[2:], a.shape)
    with pytest.raises(ValueError, match="version"):
        decode_chunk(data[:2] + b"\x09" + data[3:], a.shape)
    with pytest.raises(ValueError, match="mode"):
        decode_chunk(data[:3] + b"\x07" + data[4:], a.shape)
    with pytest.raises(ValueError, match="depth"):
        decode_chunk(data[:12] + b"\xff" + data[13:], a.shape)


def test_huge_sizes_are_refused_before_allocating() -> None:
    # A header claiming a 2**32-byte chunk, and a zstd frame claiming 2**40 bytes: both
    # must fail on validation, not on a multi-GB allocation.
    header = struct.pack("<2sBBII", b"SK", 1, MODE_RAW, 0xFFFFFFFF, 0xFFFFFFFF)
    with pytest.raises(ValueError):
        decode_chunk(header, (0xFFFFFFFF, 0xFFFFFFFF))
    frame = b"\x28\xb5\x2f\xfd" + bytes([0xE0]) + (1 << 40).to_bytes(8, "little") + b"\0" * 8
    body = struct.pack("<B3xI", 0, len(frame)) + frame
    data = struct.pack("<2sBBII", b"SK", 1, MODE_TREE, 4, 4) + body
    with pytest.raises(ValueError, match="zstd header"):
        decode_chunk(data, (4, 4))


# ---------------------------------------------------------------- committed fixtures


def fixture_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(20240601)
    return {
        "zero": np.zeros((4, 9), np.uint8),
        "raw": rng.integers(0, 256, (3, 21), dtype=np.uint8),
        "tree_d0": np.packbits(rng.random((16, 256 * 8)) < 0.3, axis=1),
        "tree_d1": np.packbits(rng.random((16, 32 * 8)) < 0.04, axis=1),
        "tree_deep": np.packbits(rng.random((64, 128 * 8)) < 0.002, axis=1),
    }


EXPECTED_MODES = {
    "zero": (MODE_ZERO, None),
    "raw": (MODE_RAW, None),
    "tree_d0": (MODE_TREE, 0),
    "tree_d1": (MODE_TREE, 1),
    "tree_deep": (MODE_TREE, 3),
}


def write_fixtures() -> None:
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for name, a in fixture_arrays().items():
        data = encode_chunk(a)
        mode, depth = EXPECTED_MODES[name]
        assert data[3] == mode and (depth is None or data[12] == depth), (name, data[3], data[12])
        (FIXTURES / f"{name}.bin").write_bytes(data)
        np.save(FIXTURES / f"{name}.npy", a)


@pytest.mark.parametrize("name", sorted(EXPECTED_MODES))
def test_committed_fixture_decodes(name: str) -> None:
    data = (FIXTURES / f"{name}.bin").read_bytes()
    expected = np.load(FIXTURES / f"{name}.npy", allow_pickle=False)
    mode, depth = EXPECTED_MODES[name]
    assert data[3] == mode and (depth is None or data[12] == depth)
    np.testing.assert_array_equal(decode_chunk(data, expected.shape), expected)


# ---------------------------------------------------------------- benchmark smoke run


def test_benchmark_quick_runs(capsys: pytest.CaptureFixture[str]) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import bench_encoding
    finally:
        sys.path.pop(0)
    assert bench_encoding.main(["--quick", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "| zlib recipe |" in out and "Targets:" in out


if __name__ == "__main__":
    if "--write-fixtures" in sys.argv:
        write_fixtures()
        print(f"wrote {FIXTURES}")
    else:
        print(__doc__)


@pytest.mark.parametrize("steps", range(1, 10))
def test_time_last_packing_by_shifts_matches_a_transpose(steps: int) -> None:
    """Records large enough for the shift path of rows.pack_ones, with the time axis
    first or in the middle, neurons that fill 8-byte words or not."""
    from spikestore.codecs.layout import time_last
    from spikestore.codecs.rows import _SHIFT_MIN, pack_ones

    rng = np.random.default_rng(steps)
    for shape, axis in (
        ((steps, 3, 8192), 0),
        ((steps, 5, 8196), 0),
        ((3, steps, 6000), 1),
        ((3, steps, 6004), 1),
    ):
        assert math.prod(shape) >= _SHIFT_MIN or steps == 1
        ones = rng.random(shape) < 0.3
        perm = time_last(axis, len(shape))
        want = np.packbits(ones.transpose(perm) if perm else ones)
        np.testing.assert_array_equal(pack_ones(ones, shape, perm), want)
