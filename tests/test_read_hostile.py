"""Reading stores that were damaged: a damaged monitor or layer leaves the others
readable."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import spikestore
from spikestore.reader import ReadError
from spikestore.testing import bits_equal


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
