"""Long runs: crash safety, resume and append, live reading, one writer, faults, hostile metadata.

Crash and live-reading tests drive ``python -m spikestore.testing recorder`` in a
subprocess; its
records are a pure function of (layer, step), so every record that survives a
``SIGKILL`` can be checked exactly.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import shutil
import signal
import subprocess
import time
from concurrent.futures import wait
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import zarr
from zarr.storage import LocalStore, WrapperStore

import spikestore
from spikestore import (
    FormatError,
    ReadError,
    RecordError,
    StoreLockedError,
    StoreWriter,
    WriteError,
)
from spikestore.testing import (
    RECORDER_LAYERS,
    FullDiskStore,
    WriteBudget,
    recorder_check,
    recorder_lines,
    recorder_value,
    same_record,
    spawn_recorder,
)
from spikestore.testing import wait_for as _wait_for

HERE = Path(__file__).parent
REPO = Path(__file__).parents[2]


class Expected:
    """Caches the recorder's values so repeated full checks stay cheap."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str, int], Any] = {}

    def __call__(self, mon: str, lay: str, step: int) -> Any:
        key = (mon, lay, step)
        if key not in self._cache:
            self._cache[key] = recorder_value(mon, lay, step)
        return self._cache[key]


def check_all(reader: spikestore.StoreReader, expected: Expected, start: int = 0) -> dict:
    """Check every record from ``start`` on; return {"mon/lay": steps}."""
    return recorder_check(reader, start, expected)


def _spawn(path: Path, log: Path, *args: str) -> subprocess.Popen:
    return spawn_recorder(str(path), log, *args, cwd=REPO)


_lines = recorder_lines


def _on_disk(path: Path, mon: str, lay: str) -> int:
    """Committed steps of a layer, 0 while it does not exist yet."""
    reader = spikestore.open(path)
    return len(reader[mon][lay]) if mon in reader and lay in reader[mon] else 0


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (but the lock file) and its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != spikestore.writer.LOCK_FILE
    }


# ----------------------------------------------------------- 1. crash safety
def _kill_cycles(tmp_path: Path, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    path = tmp_path / "run.spikes"
    expected = Expected()
    # A first clean run creates the store; every later run appends to it.
    log = tmp_path / "log0.txt"
    proc = _spawn(path, log, "--mode", "w", "--steps", "60", "--flush-every", "30")
    assert proc.wait(60) == 0, log.read_text()
    floor = check_all(spikestore.open(path), expected)
    assert all(v == 60 for v in floor.values()), floor
    checked = 0
    for k in range(kills):
        log = tmp_path / f"log{k + 1}.txt"
        proc = _spawn(
            path, log, "--flush-every", str(rng.choice([7, 20, 50])), "--sleep", "0.001"
        )
        if rng.random() < 0.2:
            # Anywhere from interpreter start-up to the first writes.
            time.sleep(rng.uniform(0.0, 1.5))
        else:
            _wait_for(lambda log=log: any("ready" in x for x in _lines(log)), what="start")
            time.sleep(rng.uniform(0.0, 1.0))  # a random moment of the recording
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL, log.read_text()
        lines = _lines(log)
        flushed = [x["flushed"] for x in lines if "flushed" in x]
        reader = spikestore.open(path)
        counts = check_all(reader, expected, start=0 if k % 5 == 4 else checked)
        for key, n in counts.items():
            # Steps never vanish, and whatever was flushed survived.
            assert n >= floor[key], (key, n, floor[key])
            if flushed:
                assert n >= flushed[-1][key], (key, n, flushed[-1][key])
        floor = counts
        checked = min(counts.values())
    # Resume after the last kill: numbering continues from what survived.
    log = tmp_path / "final.txt"
    proc = _spawn(path, log, "--steps", "25", "--flush-every", "10")
    assert proc.wait(60) == 0, log.read_text()
    done = next(x["done"] for x in _lines(log) if "done" in x)
    assert done == {key: n + 25 for key, n in floor.items()}
    counts = check_all(spikestore.open(path), expected)
    assert counts == done


def test_sigkill_at_random_moments(tmp_path: Path) -> None:
    _kill_cycles(tmp_path, kills=20, seed=1234)


@pytest.mark.slow
def test_sigkill_at_random_moments_long(tmp_path: Path) -> None:
    seed = int(os.environ.get("SPIKESTORE_KILL_SEED", time.time()))
    print(f"SPIKESTORE_KILL_SEED={seed}")
    _kill_cycles(tmp_path, kills=60, seed=seed)


def test_flush_interval_commits_without_new_records(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with StoreWriter(path, flush_interval=0.2) as w:
        for i in range(5):
            w.append("output", "a", torch.full((3,), float(i)))
        # No new record arrives: the timer alone must commit them.
        _wait_for(lambda: _on_disk(path, "output", "a") == 5, 10.0, "timed commit")
        t0 = time.monotonic()
        w.append("output", "a", torch.full((3,), 5.0))
        _wait_for(lambda: _on_disk(path, "output", "a") == 6, 10.0, "timed commit")
        assert time.monotonic() - t0 < 3.0  # 0.2 s and a loaded machine's delays


def test_buffered_bytes_are_bounded(tmp_path: Path) -> None:
    path = tmp_path / "s"
    row = 64 * 1024
    with StoreWriter(path, flush_interval=3600, max_buffer_bytes=4 * row) as w:
        for i in range(20):
            w.append("v", "a", torch.full((row // 4,), float(i)))
        # Far sooner than flush_interval, the byte bound forces a write: at whole
        # inner-chunk rows (16 steps here), and at the latest at 4x the bound. The
        # rows leave memory for their segment's files; the commit (index, summary,
        # commit point) waits for the flush interval, a flush or close.
        def written() -> int:
            lay = w._sink.layers.get(("v", "a"))
            return lay.fields[0].written if lay is not None else 0

        _wait_for(lambda: written() >= 16, 5.0, "byte-bound write")
        assert w._sink.buffered_bytes <= 4 * 4 * row
        assert _on_disk(path, "v", "a") == 0
        w.flush()
        assert _on_disk(path, "v", "a") == 20


# -------------------------------------------------------- 2. resume and append
def test_append_mode_continues_numbering(tmp_path: Path) -> None:
    path = tmp_path / "s"
    expected = Expected()
    for run in range(3):
        with StoreWriter(path, mode="w" if run == 0 else "a") as w:
            for mon, lay in RECORDER_LAYERS:
                assert w.steps(mon, lay) == 10 * run
            for i in range(10):
                for mon, lay in RECORDER_LAYERS:
                    step = 10 * run + i
                    assert w.append(mon, lay, expected(mon, lay, step)) == step
    counts = check_all(spikestore.open(path), expected)
    assert set(counts.values()) == {30}


def _record_20_steps(path: Path) -> Expected:
    """A store at ``path`` with 20 steps of every recorder layer; their expected values."""
    expected = Expected()
    with StoreWriter(path) as w:
        for step in range(20):
            for m, n in RECORDER_LAYERS:
                w.append(m, n, expected(m, n, step))
    return expected


@pytest.mark.parametrize(
    ("mon", "lay", "bad"),
    [
        ("output", "sn1", torch.zeros(4, 33, 1)),  # rank
        ("output", "sn1", (torch.zeros(4, 33),)),  # structure
        ("output", "sn1", "text"),  # unsupported type
        ("output", "pair", (torch.zeros(2, 8, dtype=torch.uint8), 1.0)),  # field count
        ("output", "pair", [torch.zeros(2, 8, dtype=torch.uint8), 1.0, 2]),  # list vs tuple
    ],
)
def test_append_mismatch_is_record_error_and_changes_nothing(
    tmp_path: Path, mon: str, lay: str, bad: Any
) -> None:
    path = tmp_path / "s"
    expected = _record_20_steps(path)
    before = snapshot(path)
    with StoreWriter(path, mode="a") as w:
        exc = TypeError if isinstance(bad, str) else RecordError
        with pytest.raises(exc, match=rf"{mon}.*{lay}.*step 20"):
            w.append(mon, lay, bad)
        assert w.steps(mon, lay) == 20
    after = snapshot(path)
    # The opening is a run of its own (format 1.7), which recorded nothing: the root's
    # run list grew by one entry, and nothing else changed.
    runs = [_run_list(x) for x in (before, after)]
    assert runs[1][:-1] == runs[0] and runs[1][-1]["first"] == {}
    assert {k: v for k, v in after.items() if k != "zarr.json"} == {
        k: v for k, v in before.items() if k != "zarr.json"
    }
    # The layer still takes the right records, numbered on.
    with StoreWriter(path, mode="a") as w:
        assert w.append(mon, lay, expected(mon, lay, 20)) == 20
    assert len(spikestore.open(path)[mon][lay]) == 21


def _run_list(files: dict[str, bytes]) -> list[Any]:
    return json.loads(files["zarr.json"])["attributes"]["spikestore_run"]["runs"]


@pytest.mark.parametrize(
    ("mon", "lay", "other"),
    [
        ("output", "sn1", torch.zeros(4, 33, dtype=torch.float64)),  # dtype
        ("output", "pair", (torch.zeros(2, 8, dtype=torch.uint8), 1.0, 2.5)),  # int -> float
    ],
)
def test_append_of_another_dtype_is_a_new_segment(
    tmp_path: Path, mon: str, lay: str, other: Any
) -> None:
    """A record of another dtype was refused like a mismatch; it is now recorded as a
    shape change is, and the steps before it read back unchanged."""
    path = tmp_path / "s"
    expected = _record_20_steps(path)
    with StoreWriter(path, mode="a") as w:
        assert w.append(mon, lay, other) == 20
    layer = spikestore.open(path)[mon][lay]
    assert len(layer) == 21
    assert same_record(layer.records(slice(20, 21))[0], other)
    for step in range(20):
        assert same_record(layer.records(slice(step, step + 1))[0], expected(mon, lay, step))


# ------------------------------------------------------------ 3. live reading
def test_reader_sees_consistent_prefix_of_a_live_recording(tmp_path: Path) -> None:
    path = tmp_path / "live.spikes"
    log = tmp_path / "log.txt"
    proc = _spawn(
        path, log, "--mode", "w", "--steps", "600", "--flush-every", "1000000",
        "--flush-interval", "0.05", "--sleep", "0.002", "--shard-steps", "32",
    )
    expected = Expected()
    try:
        _wait_for(lambda: (path / "zarr.json").exists(), what="the store")
        reader = spikestore.open(path)
        seen = {f"{m}/{n}": 0 for m, n in RECORDER_LAYERS}
        polls = grew = 0
        while True:
            running = proc.poll() is None
            before = dict(seen)
            reader.refresh()
            counts = check_all(reader, expected, start=min(seen.values()))
            for key, n in counts.items():
                assert n >= seen[key], f"{key} went back from {seen[key]} to {n}"
            seen = counts
            polls += 1
            grew += seen != before
            if not running:
                break
            time.sleep(0.02)  # the reader's poll interval: it samples until the recorder ends
        assert proc.returncode == 0, log.read_text()
        assert set(seen.values()) == {600}
        assert grew >= 3, f"only {grew} of {polls} polls saw new steps"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ----------------------------------------------------------- 4. one writer
def test_second_writer_is_refused_and_killed_writer_does_not_block(tmp_path: Path) -> None:
    path = tmp_path / "s"
    log = tmp_path / "log.txt"
    proc = _spawn(path, log, "--mode", "w", "--sleep", "0.01")
    try:
        _wait_for(lambda: any("ready" in x for x in _lines(log)), what="recorder start")
        for mode in ("a", "w"):
            with pytest.raises(StoreLockedError, match=rf"another writer \(pid {proc.pid}"):
                StoreWriter(path, mode=mode)
        assert (path / "zarr.json").exists()  # mode="w" did not clear the store
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (path / spikestore.writer.LOCK_FILE).exists()  # left behind, but not held
    with StoreWriter(path, mode="a") as w:
        n = w.steps("output", "sn1")
        assert w.append("output", "sn1", recorder_value("output", "sn1", n)) == n
    assert len(spikestore.open(path)["output"]["sn1"]) == n + 1


# -------------------------------------------------------------------- 5. faults
@pytest.mark.parametrize("writes", [0, 1, 2, 3, 5, 8, 13])
def test_full_disk_surfaces_as_write_error(tmp_path: Path, writes: int) -> None:
    path = tmp_path / "s"
    budget = WriteBudget(None)
    store = FullDiskStore(LocalStore(path), budget)
    expected = Expected()
    w = StoreWriter(store=store, flush_interval=3600)
    for step in range(30):
        for m, n in RECORDER_LAYERS:
            w.append(m, n, expected(m, n, step))
    w.flush()
    budget.writes = writes
    for step in range(30, 100):
        for m, n in RECORDER_LAYERS:
            w.append(m, n, expected(m, n, step))
    with pytest.raises(WriteError, match=rf"{path.name}.*monitor '\w+', layer '\w+'") as ei:
        w.flush()
    assert "No space left" in str(ei.value)
    with pytest.raises(WriteError):
        w.append("output", "sn1", expected("output", "sn1", 100))
    with pytest.raises(WriteError):
        w.close()
    counts = check_all(spikestore.open(path), expected)
    assert min(counts.values()) >= 30


def test_background_failure_raises_at_next_append(tmp_path: Path) -> None:
    budget = WriteBudget(None)
    w = StoreWriter(store=FullDiskStore(LocalStore(tmp_path / "s"), budget), flush_interval=0.05)
    w.append("output", "a", torch.ones(4))
    w.flush()
    budget.writes = 0
    w.append("output", "a", torch.ones(4))
    # The timed write fails in the background.
    _wait_for(lambda: w._worker._error is not None, 20.0, "the background failure")
    with pytest.raises(WriteError, match="layer 'a'"):
        w.append("output", "a", torch.ones(4))
    with pytest.raises(WriteError):
        w.close()
    assert len(spikestore.open(tmp_path / "s")["output"]["a"]) == 1


def test_real_full_disk_on_tmpfs(tmp_path: Path) -> None:
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a tmpfs")
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {res.stderr.decode().strip()}")
    try:
        path = mnt / "s"
        g = torch.Generator().manual_seed(0)
        rows = [torch.randn(64, 64, generator=g) for _ in range(8)]
        w = StoreWriter(path, flush_interval=3600, shard_steps=8)
        committed = 0
        with pytest.raises(WriteError, match=rf"{path}.*layer 'lif'.*No space left"):
            for step in range(10_000):
                w.append("v", "lif", rows[step % 8])
                if step % 8 == 7:
                    w.flush()
                    committed = step + 1
        with pytest.raises(WriteError):
            w.close()
        assert committed > 0
        layer = spikestore.open(path)["v"]["lif"]
        assert len(layer) >= committed
        for step, rec in enumerate(layer.records()):
            assert torch.equal(rec, rows[step % 8])
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def _write_plain(path: Path, steps: int = 200) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    data = torch.randn(steps, 64, 256, generator=g)
    with StoreWriter(path, shard_steps=32) as w:
        for i in range(steps):
            w.append("v", "lif", data[i])
            w.append("output", "sn", (data[i] > 1).float())
    return data


def _shards(path: Path, layer: str) -> list[Path]:
    files = [p for p in (path / layer / "f0" / "s0" / "c").rglob("*") if p.is_file()]
    return sorted(files, key=lambda p: [int(x) for x in p.relative_to(path).parts[5:]])


@pytest.mark.parametrize("damage", ["delete", "truncate", "garbage"])
def test_damaged_shard_is_read_error_and_other_steps_read(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "s"
    data = _write_plain(path)
    shards = _shards(path, "v/lif")
    assert len(shards) >= 3
    victim = shards[1]
    if damage == "delete":
        victim.unlink()
    elif damage == "truncate":
        victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    else:
        victim.write_bytes(os.urandom(victim.stat().st_size))
    layer = spikestore.open(path)["v"]["lif"]
    # Find the damaged range by reading step by step.
    broken = []
    for step in range(200):
        try:
            rec = layer[step]
        except ReadError as exc:
            msg = str(exc)
            assert "'v'" in msg and "'lif'" in msg and str(step) in msg, msg
            broken.append(step)
        else:
            assert torch.equal(rec, data[step]), step
    assert broken, "damage went unnoticed"
    assert broken == list(range(broken[0], broken[-1] + 1)) and len(broken) < 200
    with pytest.raises(ReadError, match=rf"steps {broken[0]}\.\."):
        layer[broken[0] : broken[-1] + 1]
    # Other layers are untouched.
    sn = spikestore.open(path)["output"]["sn"][:]
    assert torch.equal(sn, (data > 1).float())


def test_missing_index_chunk_is_read_error(tmp_path: Path) -> None:
    path = tmp_path / "s"
    _write_plain(path, steps=40)
    for p in (path / "v" / "lif" / "f0" / "index" / "c").rglob("*"):
        if p.is_file():
            p.unlink()
    layer = spikestore.open(path)["v"]["lif"]
    with pytest.raises(ReadError, match=r"'lif'.*steps 0\.\.0"):
        layer[0]
    assert spikestore.open(path)["output"]["sn"][5].shape == (64, 256)


def test_silent_steps_still_write_every_shard(tmp_path: Path) -> None:
    """All-zero blocks are written too, so a missing shard always means damage."""
    path = tmp_path / "s"
    with StoreWriter(path, shard_steps=32) as w:
        for _ in range(100):
            w.append("output", "sn", torch.zeros(64, 256))
            w.append("output", "none", None)
    layer = spikestore.open(path)["output"]["sn"]
    assert torch.equal(layer[:], torch.zeros(100, 64, 256))
    assert spikestore.open(path)["output"]["none"].records() == [None] * 100
    assert _shards(path, "output/sn")
    assert list((path / "output" / "none" / "f0" / "index" / "c").rglob("*"))


# ---------------------------------------------------------- 7. hostile metadata
def _edit_attrs(node: Path, fn) -> None:
    meta = node / "zarr.json"
    doc = json.loads(meta.read_text())
    fn(doc["attributes"]["spikestore"])
    meta.write_text(json.dumps(doc))


def _small_store(path: Path) -> None:
    with StoreWriter(path) as w:
        for i in range(10):
            w.append("output", "sn", (torch.arange(24).reshape(4, 6) % (i + 2) == 0).float())
            w.append("v", "lif", torch.full((3, 5), float(i)))


@pytest.mark.parametrize("version", ["x", "1", "1.0.0", 3, None, "99.0"])
def test_bad_version_is_format_error(tmp_path: Path, version: Any) -> None:
    path = tmp_path / "s"
    _small_store(path)
    _edit_attrs(path, lambda a: a.__setitem__("version", version))
    with pytest.raises(FormatError):
        spikestore.open(path)
    with pytest.raises(FormatError):
        StoreWriter(path, mode="a")


def test_unparseable_json_is_format_error(tmp_path: Path) -> None:
    path = tmp_path / "s"
    _small_store(path)
    (path / "zarr.json").write_text("{not json")
    with pytest.raises(FormatError):
        spikestore.open(path)
    _small_store(tmp_path / "t")
    (tmp_path / "t" / "v" / "lif" / "f0" / "zarr.json").write_text("[1, 2")
    with pytest.raises((FormatError, ReadError)):
        spikestore.open(tmp_path / "t")["v"]["lif"][0]


SEG_TAMPER = {
    "huge shape": lambda s: s.__setitem__("shape", [2**40, 2**40]),
    "shape not matching the array": lambda s: s.__setitem__("shape", [3, 7]),
    "negative dim": lambda s: s.__setitem__("shape", [-1, 5]),
    "dtype not matching the array": lambda s: s.__setitem__("dtype", "float64"),
    "escaping array name": lambda s: s.__setitem__("array", "../../../../etc"),
    "absolute array name": lambda s: s.__setitem__("array", "/etc/passwd"),
    "rows past the array": lambda s: s.__setitem__("rows", 10**12),
    "unknown encoding": lambda s: s.__setitem__("encoding", "pickle"),
}


@pytest.mark.parametrize("case", sorted(SEG_TAMPER))
def test_tampered_segment_is_clear_error(tmp_path: Path, case: str) -> None:
    path = tmp_path / "s"
    _small_store(path)
    _edit_attrs(path / "v" / "lif" / "f0", lambda a: SEG_TAMPER[case](a["segments"][0]))
    with pytest.raises((FormatError, ReadError), match="lif"):
        spikestore.open(path)["v"]["lif"][:]
    assert torch.equal(spikestore.open(path)["output"]["sn"][0], torch.ones(4, 6) * 0 + (
        torch.arange(24).reshape(4, 6) % 2 == 0
    ).float())


@pytest.mark.parametrize("steps", [10**12, 11, -1, "10", 2**70])
def test_tampered_committed_steps(tmp_path: Path, steps: Any) -> None:
    path = tmp_path / "s"
    _small_store(path)
    _edit_attrs(path / "v" / "lif" / "f0", lambda a: a.__setitem__("committed_steps", steps))
    with pytest.raises((FormatError, ReadError), match="lif"):
        layer = spikestore.open(path)["v"]["lif"]
        layer[len(layer) - 1]


@pytest.mark.parametrize("entry", [(7, 0), (0, 10**6), (-2, 0), (0, -5)])
def test_index_values_out_of_range(tmp_path: Path, entry: tuple[int, int]) -> None:
    path = tmp_path / "s"
    _small_store(path)
    index = zarr.open_array(LocalStore(path / "v" / "lif" / "f0" / "index"), mode="r+")
    index[4] = np.asarray(entry, dtype=np.int32)
    layer = spikestore.open(path)["v"]["lif"]
    with pytest.raises(ReadError, match=r"'lif'.*step.*4"):
        layer[4]
    with pytest.raises(ReadError):
        layer[:]
    assert torch.equal(layer[3], torch.full((3, 5), 3.0))
    assert torch.equal(layer[5], torch.full((3, 5), 5.0))


def test_huge_array_chunks_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "s"
    _small_store(path)
    meta = path / "v" / "lif" / "f0" / "s0" / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["shape"] = [2**40, 3, 5]
    doc["chunk_grid"]["configuration"]["chunk_shape"] = [2**40, 3, 5]
    meta.write_text(json.dumps(doc))
    with pytest.raises((FormatError, ReadError), match="lif"):
        spikestore.open(path)["v"]["lif"][0]


def test_bad_layer_metadata(tmp_path: Path) -> None:
    path = tmp_path / "s"
    _small_store(path)
    # A damaged layer is left out of its monitor (with a warning) and named when asked for.
    _edit_attrs(path / "v" / "lif", lambda a: a.__setitem__("fields", 10**9))
    with pytest.warns(UserWarning), pytest.raises(ReadError, match=r"damaged.*field count"):
        spikestore.open(path)["v"]["lif"]
    _edit_attrs(path / "v" / "lif", lambda a: a.__setitem__("structure", "pickle"))
    with pytest.warns(UserWarning), pytest.raises(ReadError, match=r"damaged.*structure"):
        spikestore.open(path)["v"]["lif"]


@pytest.mark.parametrize(
    "name", ["../../escape", "/abs/path", "..", ".", "a/../../b", "__x", "c:\\x", "\x00", "é" * 200]
)
def test_names_cannot_escape_the_root(tmp_path: Path, name: str) -> None:
    root = tmp_path / "inner" / "s"
    with StoreWriter(root) as w:
        w.append(name, name, torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inner"]
    assert sorted(p.name for p in (tmp_path / "inner").iterdir()) == ["s"]
    for p in root.rglob("*"):
        assert p.resolve().is_relative_to(root.resolve())
    assert torch.equal(spikestore.open(root)[name][name][0], torch.ones(3))


def test_buffer_bound_writes_commit_at_least_every_max_uncommitted_steps(tmp_path: Path) -> None:
    """Writes forced by the buffer bound do not commit, but a field never keeps more
    than MAX_UNCOMMITTED_STEPS written steps uncommitted: with the flush interval far
    off, steps are committed anyway (their pending index entries and summaries would
    otherwise pile up; see bench_scale's peak RSS)."""
    from spikestore._commit import MAX_UNCOMMITTED_STEPS

    n = 3 * MAX_UNCOMMITTED_STEPS + 100
    seen: list[tuple[int, int]] = []
    with StoreWriter(tmp_path / "s", flush_interval=3600, max_buffer_bytes=64 << 10) as w:
        for i in range(n):
            w.append("v", "a", torch.full((256,), float(i)))  # 1 KiB: a forced write each 64
            if i % 50 == 49:

                def look() -> None:
                    f = w._sink.layers[("v", "a")].fields[0]
                    seen.append((f.written, f.committed))

                w._worker.call(look)
        assert all(written - committed < MAX_UNCOMMITTED_STEPS for written, committed in seen)
        assert seen[-1][1] >= MAX_UNCOMMITTED_STEPS  # committed without a flush
        assert _on_disk(tmp_path / "s", "v", "a") >= MAX_UNCOMMITTED_STEPS


def _steps_named(message: str) -> tuple[int, int]:
    import re

    m = re.search(r"steps (\d+)\.\.(\d+)", message)
    assert m, message
    return int(m.group(1)), int(m.group(2))


def test_a_failed_write_names_every_step_it_leaves_uncommitted(tmp_path: Path) -> None:
    """Regression: writes forced by the buffer bound do not commit, so when a later
    write failed on a full disk the steps written before it (not committable either)
    were lost without being named: the error said "steps 896..927" while 544 steps
    were committed. The error now names every step not committed."""
    budget = WriteBudget(None)
    path = tmp_path / "s"
    w = StoreWriter(store=FullDiskStore(LocalStore(path), budget), flush_interval=3600)
    x = torch.randn(64, 1024)  # 256 KiB records: 32 fill the buffer bound
    for i in range(10):
        w.append("v", "lif", x + i)
    w.flush()
    budget.writes = 60
    with pytest.raises(WriteError) as err:
        for i in range(10, 3000):
            w.append("v", "lif", x + i)
        w.flush()
    with contextlib.suppress(WriteError):
        w.close()
    layer = spikestore.open(path)["v"]["lif"]
    first, last = _steps_named(str(err.value))
    assert first == len(layer) and last >= first
    assert all(torch.equal(layer[k], x + k) for k in range(len(layer)))


def test_a_full_disk_names_exactly_the_steps_it_leaves_uncommitted(tmp_path: Path) -> None:
    """Regression: a disk that filled up at a field's commit point (its zarr.json) gave
    "failed at monitor 'm', layer 'a', steps 2..1", though step 1 was not committed:
    the field counted it committed before its commit point was written (and so did
    what the error says is lost). For every point where the disk fills, the layer the
    error names is named with exactly its steps not on disk, a single step as "step 1",
    never an empty range; so is each layer said not committed."""
    import re

    named = re.compile(r"monitor 'm', layer '(\w)', (?:step (\d+)(?!\.)|steps (\d+)\.\.(\d+))")
    for writes in range(20):
        path = tmp_path / f"s{writes}"
        budget = WriteBudget(None)
        w = StoreWriter(store=FullDiskStore(LocalStore(path), budget), flush_interval=3600)
        for name in "ab":
            w.append("m", name, torch.zeros(3))
        w.flush()
        budget.writes = writes
        for name in "ab":
            w.append("m", name, torch.ones(3))
        try:
            w.flush()
        except WriteError as exc:
            text = str(exc)
        else:
            assert writes > 4  # the commit went through: every write point was tried
            with contextlib.suppress(WriteError):
                w.close()  # sealing may fill the disk
            break
        with contextlib.suppress(WriteError):
            w.close()
        for m in re.finditer(r"steps (\d+)\.\.(\d+)", text):
            assert int(m.group(1)) < int(m.group(2)), (writes, text)
        failed_at, _, lost = text.partition("; not committed: ")
        where = re.search(r" failed at monitor 'm', layer '(\w)'(.*?): OSError", failed_at)
        assert where, (writes, text)
        stored = spikestore.open(path)["m"]
        name = where.group(1)
        if len(stored[name]) == 1:
            assert where.group(2) == ", step 1", (writes, text)
        else:
            assert "committed after all" in where.group(2), (writes, text)
        if lost:  # each layer's steps accepted and not committed
            uncommitted = {
                m.group(1): (int(m.group(2) or m.group(3)), int(m.group(2) or m.group(4)))
                for m in named.finditer(lost)
            }
            for name in "ab":
                want = (1, 1) if len(stored[name]) == 1 else None
                assert uncommitted.get(name) == want, (writes, name, len(stored[name]), text)


class _BigWritesFail(WrapperStore):
    """Refuses writes of more than 1 MiB with ENOSPC once ``fail`` is set (a disk with
    room for metadata only)."""

    fail = False

    def _with_store(self, store: Any) -> _BigWritesFail:
        return type(self)(store)

    async def set(self, key: str, value: Any) -> None:
        if type(self).fail and len(value) > 1 << 20:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), key)
        await self._store.set(key, value)


def test_steps_written_before_a_failed_write_are_committed(tmp_path: Path) -> None:
    """After a failed write, the steps written before it (whole records, not yet
    committed because forced writes do not commit) are committed if the store still
    takes the commit's small writes; the error names only the steps lost."""
    path = tmp_path / "s"
    _BigWritesFail.fail = False
    w = StoreWriter(store=_BigWritesFail(LocalStore(path)), flush_interval=3600)
    x = torch.randn(64, 1024)  # 256 KiB records; dense shards of 8 MiB (32 steps)
    try:
        for i in range(100):
            w.append("v", "lif", x + i)
        # Forced writes of 96 steps done, their shard files too (written in the
        # background: a write still running when the store starts failing would fail
        # too), none committed.
        fields = [f for lay in w._sink.layers.values() for f in lay.fields]
        w._worker.call(lambda: wait([fut for f in fields for _, _, fut in f.in_flight]))
        assert _on_disk(path, "v", "lif") == 0
        _BigWritesFail.fail = True
        with pytest.raises(WriteError) as err:
            for i in range(100, 400):
                w.append("v", "lif", x + i)
            w.flush()
    finally:
        _BigWritesFail.fail = False
        with contextlib.suppress(WriteError):
            w.close()
    layer = spikestore.open(path)["v"]["lif"]
    first, last = _steps_named(str(err.value))
    assert len(layer) >= 96 and first == len(layer) and last >= first
    assert all(torch.equal(layer[k], x + k) for k in range(len(layer)))


def test_forced_writes_commit_once_the_oldest_record_waited_half_the_interval(
    tmp_path: Path,
) -> None:
    """Regression: a forced write (buffer bound) did not commit even when its records
    were nearly flush_interval old, so the timer's commit then waited for that write and
    records were committed up to 1.5 s after their append with flush_interval=1."""
    path = tmp_path / "s"
    with StoreWriter(path, flush_interval=6.0, max_buffer_bytes=64 << 10) as w:
        t0 = time.monotonic()
        # 16 KiB records: the bound forces a write every 4 to 16 steps; records young.
        for i in range(20):
            w.append("v", "a", torch.full((4096,), float(i)))
        w._worker.call(lambda: None)
        assert w._sink.layers[("v", "a")].fields[0].written >= 16
        assert _on_disk(path, "v", "a") == 0
        time.sleep(3.1)  # older than half the interval
        for i in range(20, 40):
            w.append("v", "a", torch.full((4096,), float(i)))
        w._worker.call(lambda: None)
        committed = _on_disk(path, "v", "a")
        assert time.monotonic() - t0 < 6.0, "too slow to tell the timer from the forced write"
        assert committed >= 32


def test_threads_that_never_let_the_queue_empty_still_get_commits(tmp_path):
    """Three threads appending small records as fast as they can kept the writer
    thread's drain (take everything queued, then commit) from ever ending: after 20 s
    and 278,000 records nothing was committed, so a kill would have lost it all."""
    import threading

    path = tmp_path / "s"
    w = spikestore.StoreWriter(path, flush_interval=0.05)
    stop = threading.Event()

    def produce(name: str) -> None:
        while not stop.is_set():
            w.append("m", name, torch.rand(3, 4))

    threads = [threading.Thread(target=produce, args=(f"t{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    try:

        def committed() -> int:
            store = spikestore.open(path)
            if "m" in store and len(store["m"]) == 3:
                return min(len(lay) for lay in store["m"].values())
            return 0

        _wait_for(lambda: committed() > 0, 10.0, "a commit of every thread's layer")
    finally:
        stop.set()
        for t in threads:
            t.join()
        w.close()
