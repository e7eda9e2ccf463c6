"""Reading stores from other processes: plain Zarr decodes spike segments without torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import spikestore
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
