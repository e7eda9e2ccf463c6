"""Reading stores from other processes: plain Zarr without torch, and dask graphs that
describe a store instead of holding it open (pickled small, opened once per worker, a
fixed prefix of a live store)."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import spikestore
from spikestore import analysis as A
from spikestore.testing import moving_spikes

# ------------------------------------------------------------- plain zarr, no torch
PLAIN_ZARR = r"""
import json, sys
sys.modules["torch"] = None  # any import of torch now fails
import numpy as np
import zarr

root, out = sys.argv[1], sys.argv[2]
arrays = {}
for name in json.loads(sys.argv[3]):
    arrays[name] = zarr.open_array(f"{root}/{name}", mode="r")[...]
np.savez(out, **{k.replace("/", "|"): v for k, v in arrays.items()})
print(json.dumps({
    "codec_module_loaded": "spikestore.codecs.spikes" in sys.modules,
    "spikestore_modules": sorted(m for m in sys.modules if m.startswith("spikestore")),
}))
"""


def _spike_segments(store: spikestore.StoreReader) -> dict[str, tuple[np.ndarray, list]]:
    """Every spike segment's path in the store, its packed rows as the reader reads
    them, and the layer's records."""
    out = {}
    for layer in store.layers():
        fld = layer.field(0)
        for k, seg in enumerate(fld.segments):
            if seg["encoding"] != "bitpack":
                continue
            rows = fld.take(k, np.arange(seg["rows"]))
            out[f"{fld.group.path}/{seg['array']}"] = (rows, [layer, seg])
    return out


def test_plain_zarr_decodes_spike_segments_without_torch(tmp_path: Path) -> None:
    """Zarr resolves the ``spikestore.spikes`` codec through its entry point, which
    imports spikestore's codec modules only: no torch, no reader."""
    path = tmp_path / "s.spikes"
    g = torch.Generator().manual_seed(3)
    iid = [(torch.rand(4, 700, generator=g) < 0.03).float() for _ in range(150)]
    moving = moving_spikes(g, 40)
    with spikestore.StoreWriter(path) as w:
        for r in iid:
            w.append("output", "fc.sn", r)
        for r in moving:
            w.append("output", "conv.sn", r, time_axis=0)
    store = spikestore.open(path)
    want = _spike_segments(store)
    assert len(want) == 2
    script = tmp_path / "plain.py"
    script.write_text(PLAIN_ZARR)
    res = subprocess.run(
        [sys.executable, str(script), str(path), str(tmp_path / "out.npz"), json.dumps(list(want))],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["codec_module_loaded"]
    assert not {"spikestore.reader", "spikestore.codecs.rows"} & set(info["spikestore_modules"])
    got = np.load(tmp_path / "out.npz")
    for name, (rows, (layer, seg)) in want.items():
        plain = got[name.replace("/", "|")]
        assert plain.dtype == np.uint8 and plain.shape == rows.shape
        assert plain.tobytes() == rows.tobytes(), name
        # The bytes are the records: unpack (time-last for multi-step layers) and compare.
        shape, perm = seg["shape"], seg.get("permute") or list(range(len(seg["shape"])))
        for i in range(len(layer)):
            bits = np.unpackbits(plain[i], count=int(np.prod(shape)))
            rec = bits.reshape([shape[p] for p in perm]).transpose(np.argsort(perm))
            assert np.array_equal(rec, layer[i].numpy()), (name, i)


def test_import_spikestore_is_cheap() -> None:
    code = (
        "import sys; sys.modules['torch'] = None; import spikestore; "
        "from spikestore import FormatError, RecordError, FORMAT_VERSION; "
        "print(sorted(m for m in sys.modules if m.startswith('spikestore')))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "spikestore.reader" not in res.stdout and "spikestore.writer" not in res.stdout
    # The lazy names are the package's public ones, and resolve.
    from spikestore import StoreWriter, open

    assert StoreWriter is spikestore.writer.StoreWriter and open is spikestore.reader.open
    assert set(spikestore.__all__) <= set(dir(spikestore))
    with pytest.raises(AttributeError):
        spikestore.no_such_name  # noqa: B018


# ----------------------------------------------------------------- graphs, locally
def _write(path: Path, steps: int, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with spikestore.StoreWriter(path, mode="w") as w:
        for _ in range(steps):
            w.append("output", "sn", (torch.rand(8, 300, generator=g) < 0.1).float())
            w.append("v", "sn", torch.randn(8, 40, generator=g))


def test_graph_pickles_a_description_not_an_open_store(tmp_path: Path) -> None:
    pytest.importorskip("dask.array")
    path = tmp_path / "s.spikes"
    _write(path, 1000)
    store = spikestore.open(path)
    before = A._cached_readers()
    for monitor in ("output", "v"):
        x = A.to_dask(store[monitor]["sn"])
        graph = x.__dask_graph__()
        data = pickle.dumps(graph)
        assert len(data) < 100_000, len(data)
        for word in (b"LocalStore", b"StoreReader", b"LayerReader", b"zarr"):
            assert word not in data, word
        # Same store, layer and steps: the same graph names, whoever builds it.
        assert A.to_dask(spikestore.open(path)[monitor]["sn"]).name == x.name
        # A copy reads through this process's cached reader, opened once.
        copy = pickle.loads(pickle.dumps(A.LayerArray(store[monitor]["sn"])))
        assert np.array_equal(copy[10:20], A.to_numpy(store[monitor]["sn"], slice(10, 20)))
    after = A._cached_readers()
    assert after["readers"] == before["readers"] + 1 and after["open"] == before["open"] + 1


def test_array_is_the_prefix_committed_when_built(tmp_path: Path) -> None:
    pytest.importorskip("dask.array")
    path = tmp_path / "s.spikes"
    _write(path, 100)
    store = spikestore.open(path)
    x = A.to_dask(store["v"]["sn"])
    arr = pickle.loads(pickle.dumps(A.LayerArray(store["v"]["sn"])))
    want = x.compute(scheduler="sync")
    g = torch.Generator().manual_seed(9)
    with spikestore.StoreWriter(path, mode="a") as w:
        for _ in range(300):
            w.append("v", "sn", torch.randn(8, 40, generator=g))
    assert x.shape[0] == 100 and np.array_equal(x.compute(scheduler="threads"), want)
    assert arr.shape[0] == 100 and np.array_equal(arr[...], want)
    assert np.array_equal(pickle.loads(pickle.dumps(x)).compute(scheduler="sync"), want)
    with pytest.raises(IndexError):
        arr[[100]]


# --------------------------------------------------------------- distributed cluster
def _loop_rates(layer: spikestore.LayerReader, n: int, threshold: float | None) -> np.ndarray:
    """Per-neuron rates from a plain loop over decoded records."""
    total = np.zeros(layer.shape, dtype=np.float64)
    for i in range(n):
        rec = layer[i].numpy()
        total += rec if threshold is None else (rec > threshold)
    return total / n


def _dask_rates(x, threshold: float | None):  # type: ignore[no-untyped-def]
    hits = x.astype(np.float64) if threshold is None else (x > threshold).astype(np.float64)
    return hits.sum(axis=0) / x.shape[0]


def test_distributed_cluster_reads_a_live_store(tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    path = tmp_path / "live.spikes"
    g = torch.Generator().manual_seed(5)
    writer = spikestore.StoreWriter(path, flush_interval=0.02)
    stop = threading.Event()

    def append(n: int) -> None:
        for _ in range(n):
            if stop.is_set():
                return
            writer.append("output", "sn", (torch.rand(8, 300, generator=g) < 0.1).float())
            writer.append("v", "sn", torch.randn(8, 40, generator=g))
            time.sleep(0.002)  # a training step's pace, not a wait

    try:
        append(700)
        writer.flush()
        store = spikestore.open(path)
        spikes, v = store["output"]["sn"], store["v"]["sn"]
        n_spikes, n_v = len(spikes), len(v)
        x_spikes, x_v = A.to_dask(spikes), A.to_dask(v)
        assert x_spikes.shape[0] == n_spikes == 700 and x_v.shape[0] == n_v == 700
        appender = threading.Thread(target=append, args=(100_000,))
        appender.start()
        with (
            distributed.LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                dashboard_address=None,
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            # Small blocks so that both workers get several tasks.
            x_spikes, x_v = x_spikes.rechunk((50, -1, -1)), x_v.rechunk((50, -1, -1))
            rates = client.compute([_dask_rates(x_spikes, None), _dask_rates(x_v, 0.5)])
            got_spikes, got_v = client.gather(rates)
            values = client.compute(x_v).result()
            opens = client.run(A._cached_readers)
            # A graph built later, past what the workers' readers saw: they read the
            # store's metadata again instead of opening it again.
            wait_until = time.monotonic() + 20
            while len(spikestore.open(path)["v"]["sn"]) <= n_v + 100:
                assert time.monotonic() < wait_until, "the writer did not commit"
                time.sleep(0.05)
            later = spikestore.open(path)["v"]["sn"]
            x_later = A.to_dask(later).rechunk((50, -1, -1))
            n_later = x_later.shape[0]
            later_values = client.compute(x_later[n_v:]).result()
            opens_later = client.run(A._cached_readers)
        stop.set()
        appender.join()
    finally:
        stop.set()
        writer.close()
    # Bit for bit what a single-process loop over the same committed prefix gives,
    # although the writer kept appending while the cluster read.
    assert np.array_equal(got_spikes, _loop_rates(spikes, n_spikes, None))
    assert np.array_equal(got_v, _loop_rates(v, n_v, 0.5))
    assert np.array_equal(values, np.stack([v[i].numpy() for i in range(n_v)]))
    final = spikestore.open(path)["v"]["sn"]
    assert len(final) > n_later > n_v
    assert np.array_equal(later_values, final[n_v:n_later].numpy())
    # One open per worker process, and no second one for the later graph.
    assert len(opens) == 2 and all(o["open"] == 1 and o["readers"] == 1 for o in opens.values())
    assert all(o["open"] == 1 and o["readers"] == 1 for o in opens_later.values()), opens_later
