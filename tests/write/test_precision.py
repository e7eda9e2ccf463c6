"""Dense (non-spike) segments: the default codec chain chosen per segment, and the opt-in
lossy ``precision=`` (spikestore/codecs/rows.py ``dense_codecs``, ``StoreWriter``)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import spikestore
from spikestore.codecs import rows

pytestmark = pytest.mark.filterwarnings("ignore:Numcodecs codecs are not in the Zarr")


def membrane(steps: int, shape: tuple[int, ...], seed: int = 0) -> list[torch.Tensor]:
    """LIF membrane potential under noisy input (tau 2, threshold 1, hard reset)."""
    g = torch.Generator().manual_seed(seed)
    v = torch.zeros(shape)
    out = []
    for _ in range(steps):
        v = v + (torch.randn(shape, generator=g) * 0.6 + 0.1 - v) / 2.0
        v = torch.where(v >= 1.0, torch.zeros_like(v), v)
        out.append(v.clone())
    return out


def codec_names(path: Path, monitor: str, layer: str, seg: str = "s0") -> list[str]:
    arr = zarr.open_group(path, mode="r")[f"{monitor}/{layer}/f0/{seg}"]
    return [c["name"] for c in arr.metadata.to_dict()["codecs"][0]["configuration"]["codecs"]]


def blosc_config(path: Path, monitor: str, layer: str, seg: str = "s0") -> dict:
    arr = zarr.open_group(path, mode="r")[f"{monitor}/{layer}/f0/{seg}"]
    inner = arr.metadata.to_dict()["codecs"][0]["configuration"]["codecs"]
    return next(c["configuration"] for c in inner if c["name"] == "blosc")


def segment_bytes(path: Path) -> int:
    """Bytes of the chunk files of every segment (not the index or summaries)."""
    return sum(
        f.stat().st_size
        for f in path.rglob("*")
        if f.is_file()
        and "/c/" in f.as_posix()
        and f.relative_to(path).parts[3][0] == "s"
        and not f.relative_to(path).parts[3].startswith("summary")
    )


def test_default_is_lossless_and_picks_compression_only_where_it_pays(tmp_path: Path) -> None:
    v = membrane(20, (16, 512))
    ints = [torch.arange(4096, dtype=torch.int64) // 7 + i for i in range(20)]
    odd = [torch.randn(16, 512, dtype=torch.float64) * 1e3 for _ in range(20)]
    with spikestore.StoreWriter(tmp_path / "s") as w:
        for i in range(20):
            w.append("m", "v", v[i])
            w.append("m", "ints", ints[i])
            w.append("m", "f64", odd[i])
    store = spikestore.open(tmp_path / "s")
    for name, recs in (("v", v), ("ints", ints), ("f64", odd)):
        back = store["m"][name][:]
        for i, r in enumerate(recs):
            assert back[i].dtype == r.dtype
            # Bit for bit, -0.0 and NaN payloads included (tests elsewhere); here values.
            assert torch.equal(back[i].view(-1).view(torch.uint8), r.view(-1).view(torch.uint8))
    # Membrane potentials save < 20 % with LZ4 + bit shuffle: LZ4 level 1 without
    # shuffle (a copy, fill rows squeezed). Counters compress a lot.
    assert codec_names(tmp_path / "s", "m", "v") == ["bytes", "blosc", "crc32c"]
    assert codec_names(tmp_path / "s", "m", "ints") == ["bytes", "blosc", "crc32c"]
    assert codec_names(tmp_path / "s", "m", "f64") == ["bytes", "blosc", "crc32c"]
    shuffles = {n: blosc_config(tmp_path / "s", "m", n)["shuffle"] for n in ("v", "ints", "f64")}
    assert shuffles == {"v": "noshuffle", "ints": "bitshuffle", "f64": "noshuffle"}


def test_dense_codecs_rule() -> None:
    zeros = np.zeros((64, 64), np.float32)
    noise = np.random.default_rng(0).random((64, 64), dtype=np.float32)
    names = lambda cs: [type(c).__name__ for c in cs]  # noqa: E731
    assert names(rows.dense_codecs(zeros, None, None, None)) == [
        "BytesCodec",
        "BloscCodec",
        "Crc32cCodec",
    ]
    assert names(rows.dense_codecs(noise, None, None, None)) == [
        "BytesCodec",
        "BloscCodec",
        "Crc32cCodec",
    ]
    blosc = rows.dense_codecs(zeros, None, None, None)[1]
    assert (blosc.cname.value, blosc.shuffle.value, blosc.clevel) == ("lz4", "bitshuffle", 5)
    # Incompressible rows: a copy at memory speed that still squeezes fill rows.
    fast = rows.dense_codecs(noise, None, None, None)[1]
    assert (fast.cname.value, fast.shuffle.value, fast.clevel) == ("lz4", "noshuffle", 1)
    # level 0 means no compression; a chosen compressor is used as given.
    assert names(rows.dense_codecs(zeros, None, 0, None)) == ["BytesCodec", "Crc32cCodec"]
    assert names(rows.dense_codecs(noise, "zstd", None, None)) == [
        "BytesCodec",
        "ZstdCodec",
        "Crc32cCodec",
    ]
    # precision: BitRound first, then compression, for floats only.
    assert names(rows.dense_codecs(noise, None, None, 7)) == [
        "BitRound",
        "BytesCodec",
        "BloscCodec",
        "Crc32cCodec",
    ]
    assert names(rows.dense_codecs(noise, "zlib", None, 7)) == [
        "BitRound",
        "BytesCodec",
        "GzipCodec",
        "Crc32cCodec",
    ]
    assert "BitRound" not in names(rows.dense_codecs(zeros.astype(np.int32), None, None, 3))
    assert "BitRound" not in names(rows.dense_codecs(zeros.view(np.uint32), None, None, 3))
    # More bits than the dtype has: nothing to round, still compressed.
    assert names(rows.dense_codecs(noise, None, None, 23)) == [
        "BytesCodec",
        "BloscCodec",
        "Crc32cCodec",
    ]


@pytest.mark.parametrize("bits", [0, 1, 5, 7, 10, 16, 22])
def test_precision_error_bound_and_size(tmp_path: Path, bits: int) -> None:
    recs = membrane(40, (32, 1024))
    with spikestore.StoreWriter(tmp_path / "s", precision=bits) as w:
        for r in recs:
            w.append("v", "lif", r)
    back = spikestore.open(tmp_path / "s")["v"]["lif"][:]
    want = torch.stack(recs)
    assert segment_bytes(tmp_path / "s") > 0
    nz = want != 0
    rel = ((back - want).abs()[nz] / want.abs()[nz]).max().item()
    assert rel <= 2.0 ** -(bits + 1)
    assert torch.equal(back[~nz], want[~nz])  # zeros stay zero
    assert codec_names(tmp_path / "s", "v", "lif") == [
        "numcodecs.bitround",
        "bytes",
        "blosc",
        "crc32c",
    ]
    if bits <= 5:
        assert want.numel() * 4 / segment_bytes(tmp_path / "s") >= 3.0


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    a=hnp.arrays(
        st.sampled_from([np.float16, np.float32, np.float64]),
        hnp.array_shapes(min_dims=1, max_dims=2, max_side=40),
        elements=st.floats(allow_nan=False, allow_infinity=False, width=16),
    ),
    bits=st.integers(0, 30),
)
def test_precision_bound_any_floats(a: np.ndarray, bits: int) -> None:
    """The documented bound, through the codec chain the writer builds (normal numbers)."""
    chain = rows.dense_codecs(a, None, None, bits)
    br = chain[0] if type(chain[0]).__name__ == "BitRound" else None
    if br is None:
        assert bits >= rows.MANTISSA_BITS[a.dtype.name]
        return
    out = br._codec.decode(br._codec.encode(a.copy())).reshape(a.shape)
    info = np.finfo(a.dtype)
    normal = np.abs(a) >= info.smallest_normal
    finite = np.isfinite(out)
    err = np.abs(out.astype(np.float64) - a.astype(np.float64))
    assert (err[normal & finite] <= 2.0 ** -(bits + 1) * np.abs(a[normal & finite])).all()
    sub = ~normal
    assert (err[sub] <= 2.0 ** -(bits + 1) * float(info.smallest_normal)).all()
    assert (out[a == 0] == 0).all()


def test_precision_ignores_spikes_and_exact_dtypes(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    spikes = (torch.rand(8, 16, 64, generator=g) < 0.2).float()
    bf = torch.randn(16, 64).to(torch.bfloat16)
    ints = torch.arange(1024, dtype=torch.int32)
    with spikestore.StoreWriter(tmp_path / "s", precision=2) as w:
        w.append("m", "spikes", spikes, time_axis=0)
        w.append("m", "bf16", bf)
        w.append("m", "ints", ints)
        w.append("m", "num", 0.123456789)
    store = spikestore.open(tmp_path / "s")
    assert torch.equal(store["m"]["spikes"][0], spikes)
    assert store["m"]["spikes"].segments[0]["encoding"] == "bitpack"
    assert "numcodecs.bitround" not in codec_names(tmp_path / "s", "m", "spikes")
    assert torch.equal(store["m"]["bf16"][0].view(torch.int16), bf.view(torch.int16))
    assert torch.equal(store["m"]["ints"][0], ints)
    # A Python float is a float64 record: rounded like any float.
    assert abs(store["m"]["num"][0] - 0.123456789) <= 0.123456789 * 2.0**-3


def test_precision_store_reads_with_plain_zarr(tmp_path: Path) -> None:
    recs = membrane(5, (4, 300))
    with spikestore.StoreWriter(tmp_path / "s", precision=7) as w:
        for r in recs:
            w.append("v", "lif", r)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root = zarr.open_group(tmp_path / "s", mode="r")
        field = root["v/lif/f0"]
        seg = field.attrs["spikestore"]["segments"][0]
        rows_ = np.asarray(field[seg["array"]][:5])
    want = torch.stack(recs).numpy()
    assert rows_.dtype == np.float32
    assert np.all(np.abs(rows_ - want) <= 2.0**-8 * np.abs(want))


def test_precision_survives_append_mode(tmp_path: Path) -> None:
    recs = membrane(6, (4, 300))
    with spikestore.StoreWriter(tmp_path / "s", precision=7) as w:
        for r in recs[:3]:
            w.append("v", "lif", r)
    with spikestore.StoreWriter(tmp_path / "s", mode="a", precision=7) as w:
        for r in recs[3:]:
            w.append("v", "lif", r)
    back = spikestore.open(tmp_path / "s")["v"]["lif"][:]
    assert back.shape == (6, 4, 300)
    want = torch.stack(recs)
    assert torch.all((back - want).abs() <= 2.0**-8 * want.abs())


@pytest.mark.parametrize("bad", [-1, 53, 7.0, True, "7"])
def test_precision_is_validated(tmp_path: Path, bad: object) -> None:
    with pytest.raises(ValueError, match="precision"):
        spikestore.StoreWriter(tmp_path / "s", precision=bad)  # type: ignore[arg-type]
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())


def test_precision_none_is_exact_for_edge_values(tmp_path: Path) -> None:
    x = torch.tensor([-0.0, math.nan, math.inf, -math.inf, 1e-45, 3.4028235e38, 1.0000001])
    x = torch.cat([x, torch.tensor([0x7F800001], dtype=torch.int32).view(torch.float32)])
    with spikestore.StoreWriter(tmp_path / "s") as w:
        w.append("m", "x", x)
    back = spikestore.open(tmp_path / "s")["m"]["x"][0]
    assert torch.equal(back.view(torch.int32), x.view(torch.int32))


def test_a_short_run_of_incompressible_floats_is_not_stored_bigger(tmp_path) -> None:
    """The default for incompressible rows must still squeeze a partly filled chunk's
    fill rows: stored uncompressed, 6 steps of a 75 KB membrane potential took about
    10x their float32 bytes (the demo's v_seq layers showed "x f32 0.3")."""
    import torch

    import spikestore

    g = torch.Generator().manual_seed(0)
    recs = [torch.randn(6, 8, 8, 14, 14, generator=g) for _ in range(6)]
    with spikestore.StoreWriter(tmp_path / "s") as w:
        for r in recs:
            w.append("v", "sn1", r, time_axis=0)
    layer = spikestore.open(tmp_path / "s")["v"]["sn1"]
    assert all(torch.equal(layer[i], r) for i, r in enumerate(recs))
    assert layer.nbytes_stored() < 1.1 * layer.nbytes_float32() + 64_000
