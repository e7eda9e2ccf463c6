"""Round trips, names, layouts and errors of the store (writer + reader)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import spikestore
from spikestore import RecordError
from spikestore.format import node_key
from spikestore.testing import bits_equal, records_strategy

FLOAT_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
INT_DTYPES = [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64]
ALL_DTYPES = [torch.bool, *FLOAT_DTYPES, *INT_DTYPES]


def roundtrip(tmp_path, records, **kw):
    path = tmp_path / "s.spikes"
    with spikestore.StoreWriter(path, **kw) as w:
        for r in records:
            w.append("m", "layer", r)
    return spikestore.open(path)["m"]["layer"]


records = records_strategy


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.lists(records(), min_size=1, max_size=4))
def test_roundtrip_any_record(tmp_path_factory, recs):
    tmp = tmp_path_factory.mktemp("rt")
    # One layer per record so that dtype and rank may differ between examples.
    path = tmp / "s.spikes"
    with spikestore.StoreWriter(path) as w:
        for i, r in enumerate(recs):
            w.append("m", f"l{i}", r)
            w.append("m", f"l{i}", r)
    store = spikestore.open(path)
    for i, r in enumerate(recs):
        layer = store["m"][f"l{i}"]
        assert len(layer) == 2
        assert bits_equal(layer[0], r) and bits_equal(layer[-1], r)


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("n", [*range(1, 18), 1000, 100_003])
def test_spikes_are_bitpacked_every_dtype_and_size(tmp_path, dtype, n):
    x = (torch.rand(n) < 0.3).to(dtype)
    layer = roundtrip(tmp_path, [x, 1 - x if dtype != torch.bool else ~x])
    assert layer.encodings == ["bitpack"]
    assert bits_equal(layer[0], x)
    seg = layer.segments[0]
    arr = layer.field(0).array(0)
    assert arr.dtype == np.dtype("uint8") and arr.shape == (2, (n + 7) // 8)
    assert seg["dtype"] == str(dtype).removeprefix("torch.")


def test_negative_zero_and_nan_are_not_spikes(tmp_path):
    recs = [torch.tensor([0.0, -0.0, 1.0]), torch.tensor([0.0, float("nan")])]
    path = tmp_path / "s.spikes"
    with spikestore.StoreWriter(path) as w:
        w.append("m", "a", recs[0])
        w.append("m", "b", recs[1])
    s = spikestore.open(path)
    assert s["m"]["a"].encodings == ["raw"] and bits_equal(s["m"]["a"][0], recs[0])
    assert s["m"]["b"].encodings == ["raw"] and bits_equal(s["m"]["b"][0], recs[1])


def test_empty_and_zero_d_records(tmp_path):
    recs = [torch.zeros(0), torch.zeros(3, 0, 2), torch.tensor(1.0), torch.tensor(0.25)]
    path = tmp_path / "s.spikes"
    with spikestore.StoreWriter(path) as w:
        for i, r in enumerate(recs):
            w.append("m", str(i), r)
    s = spikestore.open(path)
    for i, r in enumerate(recs):
        assert bits_equal(s["m"][str(i)][0], r)


def test_shapes_change_between_steps_and_slices(tmp_path):
    full = [(torch.rand(4, 8) < 0.2).float() for _ in range(70)]
    last = (torch.rand(3, 8) < 0.2).float()
    layer = roundtrip(tmp_path, [*full, last, *full[:5]])
    assert len(layer) == 76
    assert [s["shape"] for s in layer.segments] == [[4, 8], [3, 8]]
    assert bits_equal(layer[70], last)
    assert bits_equal(layer[-1], full[4])
    assert bits_equal(layer[0:70], torch.stack(full))
    stack_error = r"steps 68\.\.72 do not stack.*\(3, 8\) float32 at step 70"
    with pytest.raises(ValueError, match=stack_error):
        layer[68:73]  # a slice is one tensor or an error, never a list
    mixed = layer.records(slice(68, 73))
    assert isinstance(mixed, list) and len(mixed) == 5 and bits_equal(mixed[2], last)
    assert bits_equal(layer[[71, 0, -1]], torch.stack([full[0], full[0], full[4]]))
    assert len(list(layer)) == 76
    with pytest.raises(IndexError):
        layer[76]


def test_spike_layer_falls_back_to_raw_per_step(tmp_path):
    spikes = torch.tensor([0.0, 1.0, 1.0])
    dense = torch.tensor([0.5, 1.0, 2.0])
    layer = roundtrip(tmp_path, [spikes, dense, spikes])
    assert layer.encodings == ["bitpack", "raw"]
    assert [bits_equal(layer[i], r) for i, r in enumerate([spikes, dense, spikes])] == [True] * 3
    assert bits_equal(layer[:], torch.stack([spikes, dense, spikes]))


def test_structured_records(tmp_path):
    a = (torch.rand(2, 3) < 0.5).float()
    b = torch.randn(2, 3)
    path = tmp_path / "s.spikes"
    with spikestore.StoreWriter(path) as w:
        for i in range(3):
            w.append("m", "tuple", (a, b * i))
            w.append("m", "list", [a, None if i == 1 else b, 2.5])
            w.append("m", "num", i * 0.5)
            w.append("m", "int", i)
            w.append("m", "none", None)
    s = spikestore.open(path)["m"]
    spk, mem = s["tuple"][2]
    assert bits_equal(spk, a) and bits_equal(mem, b * 2)
    lst = s["list"][1]
    assert isinstance(lst, list) and lst[1] is None and lst[2] == 2.5
    assert s["num"][2] == 1.0 and isinstance(s["num"][2], float)
    assert s["int"].records() == [0, 1, 2] and isinstance(s["int"][1], int)
    assert torch.equal(s["int"][:], torch.tensor([0, 1, 2]))  # a slice: one tensor
    assert s["none"][0] is None and len(s["none"]) == 3


@pytest.mark.parametrize("compressor", ["zstd", "zlib", "blosc-lz4", "blosc-zstd"])
def test_each_compressor(tmp_path, compressor):
    spikes = (torch.rand(10, 100) < 0.05).float()
    dense = torch.randn(10, 100)
    path = tmp_path / "s.spikes"
    with spikestore.StoreWriter(path, compressor=compressor, level=3) as w:
        for _ in range(5):
            w.append("m", "s", spikes)
            w.append("m", "d", dense)
    s = spikestore.open(path)
    assert bits_equal(s["m"]["s"][4], spikes) and bits_equal(s["m"]["d"][4], dense)
    meta = json.loads((path / node_key("m") / "s" / "f0" / "s0" / "zarr.json").read_text())
    names = json.dumps(meta["codecs"])
    expected = {"zstd": "zstd", "zlib": "gzip", "blosc-lz4": "lz4", "blosc-zstd": "blosc"}
    assert expected[compressor] in names


def test_unknown_compressor(tmp_path):
    with pytest.raises(ValueError, match="unknown compressor"):
        spikestore.StoreWriter(tmp_path / "x", compressor="lzma")


NAMES = ["", "1", "features.0.sn", "..", ".", "../../escape", "/abs", "a/b", "a\\b", "__x",
         "_y", "名前", "x" * 300, "%", "%25", "zarr.json", "c"]


def test_any_module_name_stays_inside_the_root(tmp_path):
    root = tmp_path / "store.spikes"
    with spikestore.StoreWriter(root) as w:
        for i, name in enumerate(NAMES):
            w.append(name or "mon", name, torch.tensor([float(i)]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.spikes"]
    s = spikestore.open(root)
    for i, name in enumerate(NAMES):
        assert s[name or "mon"][name][0].item() == float(i)
    keys = {node_key(n) for n in NAMES}
    assert len(keys) == len(NAMES)
    assert all(len(k) <= 128 and k not in (".", "..") and "/" not in k for k in keys)


def test_bad_input_names_monitor_layer_step_and_keeps_data(tmp_path):
    path = tmp_path / "s.spikes"
    w = spikestore.StoreWriter(path)
    for _ in range(3):
        w.append("output", "sn1", torch.ones(4))
    with pytest.raises(RecordError, match=r"monitor 'output', layer 'sn1', step 3.*complex"):
        w.append("output", "sn1", torch.ones(4, dtype=torch.complex64))
    with pytest.raises(TypeError, match=r"monitor 'output', layer 'sn1', step 3.*str"):
        w.append("output", "sn1", "hello")
    with pytest.raises(RecordError, match=r"step 3.*rank 1 \(dtype float32\).*rank 2"):
        w.append("output", "sn1", torch.ones(4, 1, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"layer 'new', step 0.*set"):
        w.append("output", "new", {"a", "b"})
    with pytest.raises(RecordError, match=r"layer 'new', step 0.*str keys"):
        w.append("output", "new", {1: torch.ones(1)})
    w.append("output", "sn1", torch.zeros(4))
    w.close()
    layer = spikestore.open(path)["output"]["sn1"]
    assert len(layer) == 4 and bits_equal(layer[:3], torch.ones(3, 4))


def test_newer_major_version_is_refused(tmp_path):
    path = tmp_path / "s.spikes"
    with spikestore.StoreWriter(path) as w:
        w.append("m", "l", torch.ones(2))
    meta_file = path / "zarr.json"
    meta = json.loads(meta_file.read_text())
    meta["attributes"]["spikestore"]["version"] = "2.0"
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(spikestore.FormatError, match=r"format 2\.0"):
        spikestore.open(path)


def test_not_a_store(tmp_path):
    with pytest.raises(FileNotFoundError):
        spikestore.open(tmp_path / "missing")
    with pytest.raises(spikestore.FormatError):
        spikestore.open(tmp_path)
    (tmp_path / "data.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a spikestore store"):
        spikestore.StoreWriter(tmp_path)
    assert (tmp_path / "data.txt").read_text() == "keep me"


def test_mode_w_replaces_and_w_dash_refuses(tmp_path):
    path = tmp_path / "s.spikes"
    with spikestore.StoreWriter(path) as w:
        w.append("m", "old", torch.ones(2))
    with spikestore.StoreWriter(path, mode="w") as w:
        w.append("m", "new", torch.ones(2))
    assert spikestore.open(path)["m"].layers == ["new"]
    with pytest.raises(FileExistsError):
        spikestore.StoreWriter(path, mode="w-")


def test_memory_stays_bounded_queue(tmp_path):
    """A small byte bound on the queue still records everything (the caller waits)."""
    path = tmp_path / "s.spikes"
    x = torch.randn(64, 64)
    bounds = {"max_queue_bytes": 64 * 64 * 4 * 2, "max_buffer_bytes": 1 << 16}
    with spikestore.StoreWriter(path, **bounds) as w:
        for i in range(200):
            w.append("m", "v", x + i)
    layer = spikestore.open(path)["m"]["v"]
    assert len(layer) == 200 and bits_equal(layer[199], x + 199)


def test_neuron_history(tmp_path):
    g = torch.Generator().manual_seed(0)
    recs = [(torch.rand(3, 50, generator=g) < 0.3).float() for _ in range(300)]
    dense = [torch.randn(3, 50, generator=g) for _ in range(300)]
    path = tmp_path / "s.spikes"
    with spikestore.StoreWriter(path, chunk_bytes=256) as w:
        for r, d in zip(recs, dense, strict=True):
            w.append("m", "s", r)
            w.append("m", "d", d)
    s = spikestore.open(path)["m"]
    stack, dstack = torch.stack(recs), torch.stack(dense)
    for idx in [(0, 0), (2, 49), (1, 17)]:
        assert bits_equal(s["s"].neuron(idx), stack[:, idx[0], idx[1]])
        assert bits_equal(s["d"].neuron(idx), dstack[:, idx[0], idx[1]])
    assert bits_equal(s["s"].neuron(67, slice(10, 20)), stack[10:20, 1, 17])


def test_permuted_spike_rows_decode(tmp_path):
    """Segments whose rows were packed from a permuted record decode to the original."""
    from spikestore.codecs import decode_rows, encode

    x = (torch.rand(4, 2, 3) < 0.5).float()
    enc = encode(x, permute=(1, 2, 0))
    assert np.array_equal(enc.row, np.packbits(x.permute(1, 2, 0).flatten().numpy() != 0))
    seg = {"encoding": "bitpack", "dtype": "float32", "shape": [4, 2, 3], "permute": [1, 2, 0]}
    assert bits_equal(decode_rows(enc.row[None], seg)[0], x)


def test_device_option_and_reader_repr(tmp_path):
    layer = roundtrip(tmp_path, [torch.ones(2, 2)])
    assert layer.read(0, device="cpu").device.type == "cpu"
    assert "2 steps" not in repr(layer) and "1 steps" in repr(layer)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_records_pack_on_device(tmp_path):
    x = (torch.rand(1000, device="cuda") < 0.1).float()
    v = torch.randn(1000, device="cuda")
    path = tmp_path / "s.spikes"
    with spikestore.StoreWriter(path) as w:
        w.append("m", "s", x)
        w.append("m", "v", v)
    s = spikestore.open(path)
    assert s["m"]["s"].encodings == ["bitpack"]
    assert bits_equal(s["m"]["s"][0], x.cpu()) and bits_equal(s["m"]["v"][0], v.cpu())
    assert bits_equal(s["m"]["s"].read(0, device="cuda").cpu(), x.cpu())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_records_from_several_devices_in_one_store(tmp_path):
    """cuda and cpu records of one layer, and a tensor on a device other than the current
    one (its packing is ordered by an event on its own device), all read back exactly."""
    devices = ["cpu", "cuda:0"] + (["cuda:1"] if torch.cuda.device_count() > 1 else [])
    g = torch.Generator().manual_seed(3)
    recs = [(torch.rand(4, 257, generator=g) < 0.2).float() for _ in range(12)]
    path = tmp_path / "s.spikes"
    with torch.cuda.device(0), spikestore.StoreWriter(path) as w:
        for i, r in enumerate(recs):
            w.append("m", "s", r.to(devices[i % len(devices)]))
            w.append("m", "v", (r * 0.5).to(devices[i % len(devices)]))
    s = spikestore.open(path)
    for i, r in enumerate(recs):
        assert bits_equal(s["m"]["s"][i], r) and bits_equal(s["m"]["v"][i], r * 0.5)


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_float8_records_round_trip_and_spikes_are_packed(tmp_path, dtype):
    """float8 records (which have no signbit or comparison on the CPU) are stored; 0/1
    values as packed spikes, others (with -0.0 and NaN) bit-exactly."""
    g = torch.Generator().manual_seed(5)
    spikes = (torch.rand(4, 9, generator=g) < 0.3).to(dtype)
    other = torch.tensor([0.0, 1.0, -0.0, float("nan"), 2.0]).to(dtype)
    path = tmp_path / "s.spikes"
    with spikestore.StoreWriter(path) as w:
        w.append("m", "s", spikes)
        w.append("m", "o", other)
    s = spikestore.open(path)
    assert s["m"]["s"].encodings == ["bitpack"] and s["m"]["o"].encodings == ["raw"]
    assert bits_equal(s["m"]["s"][0], spikes) and bits_equal(s["m"]["o"][0], other)


def test_time_axis_packs_time_last_and_reads_back(tmp_path):
    g = torch.Generator().manual_seed(3)
    recs = [(torch.rand(4, 2, 3, 5, generator=g) < 0.2).float() for _ in range(40)]
    path = tmp_path / "s.spikes"
    with spikestore.StoreWriter(path) as w:
        for r in recs:
            w.append("output", "sn", r, time_axis=0)
    layer = spikestore.open(path)["output"]["sn"]
    assert layer.segments[0]["permute"] == [1, 2, 3, 0]
    assert bits_equal(layer[:], torch.stack(recs))
    assert bits_equal(layer.neuron((2, 1, 2, 4), time_axis=False), torch.stack(recs)[:, 2, 1, 2, 4])
    # numbered without the time axis, as analysis does: T values per step
    assert bits_equal(layer.neuron((1, 2, 4)), torch.stack(recs)[:, :, 1, 2, 4].reshape(-1))
    row = layer.field(0).array(0)[7]
    assert np.array_equal(row, np.packbits(recs[7].permute(1, 2, 3, 0).flatten().numpy() != 0))


def test_default_spike_codec_is_registered_and_recorded(tmp_path):
    layer = roundtrip(tmp_path, [(torch.rand(64, 64) < 0.01).float() for _ in range(5)])
    meta_file = tmp_path / "s.spikes" / "m" / "layer" / "f0" / "s0" / "zarr.json"
    meta = json.loads(meta_file.read_text())
    assert "spikestore.spikes" in json.dumps(meta["codecs"])
    assert len(layer) == 5
