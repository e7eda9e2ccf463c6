"""The writer's promises under threads, forks, crashes and bad input (spikestore.writer and the
commit timing, locks, schema, CLI, errors, durability), through the public API only.

Every test is bounded in time: threads are joined with timeouts, polls have deadlines,
subprocesses have timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import zarr
from torch import nn
from zarr.storage import LocalStore, WrapperStore

import spikestore
from spikestore import (
    FormatError,
    ReadError,
    RecordError,
    StoreWriter,
    WriteError,
)
from spikestore.cli import main as cli_main
from spikestore.monitor import OutputMonitor
from spikestore.testing import FullDiskStore, WriteBudget, same_record
from spikestore.testing import wait_for as _wait_for

# ---------------------------------------------------------------- helpers
_same = same_record


def _has_layer(path: Path, mon: str, lay: str) -> bool:
    reader = spikestore.open(path)
    return mon in reader and lay in reader[mon]


def _committed(path: Path, mon: str, lay: str) -> int:
    reader = spikestore.open(path)
    return len(reader[mon][lay]) if mon in reader and lay in reader[mon] else 0


def _run_threads(target: Any, n: int, timeout: float = 60.0) -> list[BaseException]:
    errors: list[BaseException] = []

    def run(t: int) -> None:
        try:
            target(t)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(t,), daemon=True) for t in range(n)]
    for th in threads:
        th.start()
    deadline = time.monotonic() + timeout
    for th in threads:
        th.join(max(0.0, deadline - time.monotonic()))
    assert not any(th.is_alive() for th in threads), "appending threads did not finish"
    return errors


def _spikes(shape: tuple[int, ...], seed: int, p: float = 0.2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) < p).float()


# ------------------------------------------------------------ 1. threads
def test_threads_appending_to_one_layer_get_distinct_steps_and_their_values(
    tmp_path: Path,
) -> None:
    """Concurrent appends to one layer get steps 0..N-1 and each step holds its own value."""
    path = tmp_path / "s"
    n_threads, per = 4, 300
    barrier = threading.Barrier(n_threads)
    results: list[tuple[int, torch.Tensor]] = []
    lock = threading.Lock()
    w = StoreWriter(path, max_buffer_bytes=4096, flush_interval=0.01)

    def work(t: int) -> None:
        barrier.wait(30)
        mine = []
        for i in range(per):
            v = torch.tensor([t, i], dtype=torch.int64)
            mine.append((w.append("output", "l", v), v))
        with lock:
            results.extend(mine)

    try:
        errors = _run_threads(work, n_threads)
    finally:
        w.close()
    assert not errors, errors
    steps = sorted(s for s, _ in results)
    assert steps == list(range(n_threads * per)), "append returned duplicate or missing steps"
    layer = spikestore.open(path)["output"]["l"]
    assert len(layer) == n_threads * per
    recs = layer.records()
    bad = [(s, v.tolist(), recs[s]) for s, v in results if not _same(recs[s], v)]
    assert not bad, f"{len(bad)} steps read back another append's value, e.g. {bad[:3]}"


def test_threads_creating_many_new_layers_concurrently(tmp_path: Path) -> None:
    """Threads that create and fill many new layers at once lose and mix up no record."""
    path = tmp_path / "s"
    n_threads, rounds, n_layers = 8, 5, 24
    names = [f"l{i}" for i in range(n_layers)]
    barrier = threading.Barrier(n_threads)
    results: list[tuple[str, int, torch.Tensor]] = []
    lock = threading.Lock()
    w = StoreWriter(path, max_buffer_bytes=2048, flush_interval=0.05)

    def work(t: int) -> None:
        rng = random.Random(t)
        barrier.wait(30)
        mine = []
        for r in range(rounds):
            order = names[:]
            rng.shuffle(order)
            for name in order:
                v = torch.tensor([t, r, int(name[1:])], dtype=torch.int64)
                mine.append((name, w.append("output", name, v), v))
        with lock:
            results.extend(mine)

    try:
        errors = _run_threads(work, n_threads)
    finally:
        w.close()  # must not raise
    assert not errors, errors
    store = spikestore.open(path)
    assert sorted(store["output"]) == sorted(names)
    for name in names:
        layer = store["output"][name]
        assert len(layer) == n_threads * rounds, (name, len(layer))
        recs = layer.records()
        pairs = sorted((int(x[0]), int(x[1])) for x in recs)
        assert pairs == [(t, r) for t in range(n_threads) for r in range(rounds)], name
        assert all(int(x[2]) == int(name[1:]) for x in recs), f"{name} holds another layer's"
    for name, step, v in results:
        assert _same(store["output"][name][step], v), (name, step, v)


# --------------------------------------------------------------- 2. fork
_TRY_LOCK = """
import sys
import spikestore
try:
    w = spikestore.StoreWriter(sys.argv[1], mode="a")
except spikestore.StoreLockedError:
    print("LOCKED")
else:
    w.close()
    print("ACQUIRED")
"""


def test_forked_child_can_neither_write_nor_release_the_parents_lock(tmp_path: Path) -> None:
    """A fork's copy of a writer cannot append, and its close() does not unlock the parent."""
    path = tmp_path / "s"
    w = StoreWriter(path, flush_interval=0.05)
    for i in range(5):
        w.append("output", "a", torch.full((3,), float(i)))
    w.flush()  # the writer thread is idle when we fork
    pid = os.fork()
    if pid == 0:  # the child
        code = 3
        try:
            signal.alarm(20)
            try:
                w.append("output", "a", torch.full((3,), 99.0))
            except BaseException:
                code = 0
            try:
                w.close()
            except BaseException:
                pass
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    child = os.waitstatus_to_exitcode(status)
    res = subprocess.run(
        [sys.executable, "-c", _TRY_LOCK, str(path)], capture_output=True, text=True, timeout=120
    )
    try:
        for i in range(5, 10):
            assert w.append("output", "a", torch.full((3,), float(i))) == i
    finally:
        w.close()
    assert "LOCKED" in res.stdout, (
        f"another process got the lock after the forked child closed: {res.stdout}{res.stderr}"
    )
    assert child == 0, f"the forked child's append did not raise (child exit {child})"
    layer = spikestore.open(path)["output"]["a"]
    assert len(layer) == 10
    for i in range(10):
        assert torch.equal(layer[i], torch.full((3,), float(i)))


# ------------------------------------------------------- 3. bad tensors
def _bad_value(kind: str) -> tuple[Any, Any]:
    """(bad value, a good value of the same dtype and rank for the same layer)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "sparse_coo":
            return torch.zeros(4, 4).to_sparse(), torch.ones(4, 4) * 2
        if kind == "sparse_csr":
            return torch.zeros(4, 4).to_sparse_csr(), torch.ones(4, 4) * 2
        if kind == "nested":
            bad = torch.nested.nested_tensor([torch.zeros(2), torch.zeros(3)])
            return bad, torch.full((2, 3), 2.0)
        if kind == "meta":
            return torch.empty(3, device="meta"), torch.full((3,), 2.0)
        if kind == "int_2_70":
            return 2**70, 5
        if kind == "quantized":
            return torch.quantize_per_tensor(torch.ones(4), 0.1, 0, torch.quint8), torch.ones(4)
    raise KeyError(kind)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(
    "kind", ["sparse_coo", "sparse_csr", "nested", "meta", "int_2_70", "quantized"]
)
def test_unstorable_value_is_refused_at_append(tmp_path: Path, kind: str) -> None:
    """An unstorable tensor or number raises RecordError at append; nothing recorded is hurt."""
    path = tmp_path / "s"
    bad, good = _bad_value(kind)
    w = StoreWriter(path, flush_interval=0.05)
    closed = False
    try:
        a_vals = [torch.arange(6, dtype=torch.float32) * (i + 3) for i in range(5)]
        for i, v in enumerate(a_vals):
            assert w.append("probe", "layer_a", v) == i
        for i in range(3):
            assert w.append("probe", "bad_layer", good) == i
        with pytest.raises(RecordError) as ei:
            w.append("probe", "bad_layer", bad)
        msg = str(ei.value)
        assert "probe" in msg and "bad_layer" in msg and re.search(r"step\s*3\b", msg), msg
        # The layer goes on with its numbering: the refused value took no step.
        assert w.append("probe", "bad_layer", good) == 3
        closed = True
        w.close()  # must not raise
    finally:
        if not closed:
            with contextlib.suppress(Exception):
                w.close()
    store = spikestore.open(path)
    assert len(store["probe"]["layer_a"]) == 5
    for i, v in enumerate(a_vals):
        assert _same(store["probe"]["layer_a"][i], v)
    layer_b = store["probe"]["bad_layer"]
    assert len(layer_b) == 4
    for i in range(4):
        assert _same(layer_b[i], good)


# ---------------------------------------------------- 4. mode="a" adoption
def test_append_mode_does_not_adopt_a_non_store_folder(tmp_path: Path) -> None:
    """mode="a" on a non-empty folder that is not a store raises and leaves it unchanged."""
    d = tmp_path / "notes"
    d.mkdir()
    (d / "notes.txt").write_text("keep me\n")
    try:
        w = StoreWriter(d, mode="a")
    except (FileExistsError, FormatError):
        pass
    else:
        w.close()
        pytest.fail(f"mode='a' adopted a folder that is not a store: {sorted(os.listdir(d))}")
    assert set(os.listdir(d)) == {"notes.txt"}
    assert (d / "notes.txt").read_text() == "keep me\n"


# ------------------------------------------------- 5. crash-safe clearing
_CLEAR_SCRIPT = r"""
import json, os, shutil, signal, sys
import spikestore

template, work = sys.argv[1], sys.argv[2]
state = {"active": False, "n": 0, "kill_at": 0, "log": []}


def wrap(mod, name):
    real = getattr(mod, name)

    def fake(*args, **kwargs):
        if state["active"]:
            state["n"] += 1
            state["log"].append(f"{name} {args[0] if args else ''}")
            if state["n"] == state["kill_at"]:
                os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)

    setattr(mod, name, fake)


for name in ("unlink", "remove", "rmdir", "rename", "replace"):
    wrap(os, name)
wrap(shutil, "rmtree")


def clear(k, path):
    shutil.copytree(template, path)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.alarm(60)
            state["kill_at"] = k
            state["active"] = True
            w = spikestore.StoreWriter(path, mode="w")
            state["active"] = False
            w.close()
            with open(path + ".calls.json", "w") as f:
                json.dump(state["log"], f)
            code = 0
        except BaseException as exc:
            print(f"k={k}: {exc!r}", file=sys.stderr)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


count_path = os.path.join(work, "count")
rc = clear(0, count_path)
calls = []
if rc == 0:
    with open(count_path + ".calls.json") as f:
        calls = json.load(f)
n = len(calls)
ks = set(range(1, 9))
# The calls that touch the root's zarr.json (and their neighbours) are the dangerous ones.
root_meta = os.path.join(count_path, "zarr.json")
for i, c in enumerate(calls, 1):
    if root_meta in c or c.rstrip("/").endswith(count_path):
        ks.update({i - 1, i, i + 1})
ks.update({n // 3, n // 2, (2 * n) // 3, n})
ks = sorted(k for k in ks if 1 <= k <= max(n, 8))[:24]
results = {k: clear(k, os.path.join(work, f"k{k}")) for k in ks}
print(json.dumps({"count_rc": rc, "calls": calls, "results": results}))
"""


def test_clearing_an_existing_store_is_crash_safe(tmp_path: Path) -> None:
    """A mode="w" clear killed at any file operation leaves a path that opens or is cleared."""
    template = tmp_path / "template"
    with StoreWriter(template) as w:
        for i in range(6):
            w.append("output", "sn1", _spikes((4, 16), i))
            w.append("output", "sn2", _spikes((8,), 100 + i))
            w.append("v", "lif", torch.full((3, 5), float(i)))
            w.append("input", "x", (torch.ones(2) * i, float(i)))
    work = tmp_path / "work"
    work.mkdir()
    res = subprocess.run(
        [sys.executable, "-c", _CLEAR_SCRIPT, str(template), str(work)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["count_rc"] == 0, f"clearing without a kill failed: {res.stderr[-3000:]}"
    results = {int(k): rc for k, rc in out["results"].items()}
    killed = [k for k, rc in results.items() if rc == -signal.SIGKILL]
    assert killed, f"no clear was killed: {results}; calls: {out['calls']}"
    failures = []
    for k in sorted(results):
        path = work / f"k{k}"
        try:
            spikestore.open(path)
        except FormatError:
            pass
        except FileNotFoundError:
            if path.exists():
                failures.append(f"k={k}: open raised FileNotFoundError on an existing path")
        except Exception as exc:
            failures.append(f"k={k}: open raised {exc!r}")
        try:
            with StoreWriter(path, mode="w") as w:
                w.append("output", "new", torch.arange(4.0))
                w.append("output", "new", torch.arange(4.0) + 1)
        except Exception as exc:
            call = out["calls"][k - 1] if 0 < k <= len(out["calls"]) else "?"
            failures.append(f"k={k} (killed at {call!r}): mode='w' raised {exc!r}")
            continue
        layer = spikestore.open(path)["output"]["new"]
        assert len(layer) == 2 and torch.equal(layer[1], torch.arange(4.0) + 1), k
    assert not failures, "\n".join(failures)


# ------------------------------------------------------ 6. record age
class _SlowStore(WrapperStore):
    """Blocks the first ``set`` of a key under ``slow/`` for ``state['delay']`` seconds."""

    def __init__(self, store: Any, state: dict[str, Any]) -> None:
        super().__init__(store)
        self.state = state

    def _with_store(self, store: Any) -> _SlowStore:
        return type(self)(store, self.state)

    async def set(self, key: str, value: Any) -> None:
        st = self.state
        slow = key.startswith("slow/")
        if slow and st["armed"]:
            st["armed"] = False
            st["started"].set()
            await asyncio.sleep(st["delay"])  # the writer waits; the event loop does not
        await self._store.set(key, value)
        if slow:
            st["slow_end"] = time.monotonic()


def test_record_age_counts_from_append_not_from_dequeue(tmp_path: Path) -> None:
    """A record appended while the writer is blocked is committed within flush_interval of
    its append, or right after the blocked write ends if that is later."""
    path = tmp_path / "s"
    # Counted from the dequeue, the commit would come flush_interval after the blocked
    # write ends: 3 s late, twice the slack a loaded machine gets.
    flush_interval, delay, slack = 3.0, 3.0, 1.5
    state: dict[str, Any] = {
        "armed": True,
        "started": threading.Event(),
        "delay": delay,
        "slow_end": None,
    }
    w = StoreWriter(store=_SlowStore(LocalStore(path), state), flush_interval=flush_interval)
    flusher = None
    try:
        w.append("slow", "s", torch.randn(64))
        # Make the slow layer's write start now, in the background.
        flusher = threading.Thread(target=w.flush, daemon=True)
        flusher.start()
        assert state["started"].wait(15), "the slow layer was never written"
        t0 = time.monotonic()
        w.append("fast", "x", torch.randn(8))
        _wait_for(lambda: _committed(path, "fast", "x") >= 1, 20.0, "the fast record's commit")
        t_commit = time.monotonic()
        slow_end = state["slow_end"]
    finally:
        if flusher is not None:
            flusher.join(20)
        w.close()
    assert slow_end is not None
    due = max(t0 + flush_interval, slow_end)
    assert t_commit <= due + slack, (
        f"committed {t_commit - t0:.2f} s after its append; due {due - t0:.2f} s after it "
        f"(flush_interval {flush_interval} s, blocked write ended {slow_end - t0:.2f} s after)"
    )


# ---------------------------------------------------- 7. resumed time_axis
def test_append_mode_keeps_the_layers_time_axis(tmp_path: Path) -> None:
    """Records appended with mode="a" keep the layer's time-last packing (permute)."""
    path = tmp_path / "s"
    recs = [_spikes((8, 2, 16), i, p=0.3) for i in range(40)]
    with StoreWriter(path) as w:
        for i in range(20):
            assert w.append("output", "ms", recs[i], time_axis=0) == i
    with StoreWriter(path, mode="a") as w:
        for i in range(20, 40):
            assert w.append("output", "ms", recs[i], time_axis=0) == i
    layer = spikestore.open(path)["output"]["ms"]
    spike_segs = [s for s in layer.segments if "permute" in s]
    assert spike_segs, layer.segments
    assert all(list(s["permute"] or []) == [1, 2, 0] for s in spike_segs), layer.segments
    assert len(layer) == 40
    for i, r in enumerate(layer.records()):
        assert _same(r, recs[i]), i


# ---------------------------------------------------- 8. early first commit
def test_first_commit_comes_early(tmp_path: Path) -> None:
    """A new monitor and layer appear on disk within seconds even with a long flush_interval."""
    path = tmp_path / "s"
    w = StoreWriter(path, flush_interval=30)
    w2 = StoreWriter(tmp_path / "m", flush_interval=30)
    mon = None
    try:
        w.append("output", "a", torch.ones(3))
        _wait_for(lambda: _has_layer(path, "output", "a"), 3.0, "layer output/a on disk")
        assert _committed(path, "output", "a") in (0, 1)

        net = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
        mon = OutputMonitor(net, nn.ReLU, store=w2)
        with torch.no_grad():
            net(torch.randn(2, 4))
        (name,) = mon.monitored_layers
        _wait_for(lambda: _has_layer(tmp_path / "m", "output", name), 3.0, "monitor layer")
    finally:
        if mon is not None:
            mon.close()
        w2.close()
        w.close()


# ------------------------------------------------------- 9. lock leak
def test_refusing_a_plain_zarr_group_does_not_leak_the_lock(tmp_path: Path) -> None:
    """A refused mode="a" open releases its lock: trying again raises FormatError again."""
    d = tmp_path / "plain"
    zarr.open_group(d, mode="w", zarr_format=3).create_array("x", shape=(2,), dtype="i4")
    for _ in range(2):
        with pytest.raises(FormatError):
            StoreWriter(d, mode="a")


# ------------------------------------------- 10. failed append, same schema
def test_failed_first_append_leaves_the_layer_schema_unset(tmp_path: Path) -> None:
    """A failed first append does not fix the layer's dtype, rank or structure."""
    path = tmp_path / "s"
    good = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    w = StoreWriter(path)
    try:
        with pytest.raises(Exception):  # noqa: B017 - any error, but an error
            w.append("m", "meta", torch.empty(2, 3, 4, dtype=torch.float16, device="meta"))
        assert w.append("m", "meta", good) == 0
        with pytest.raises((TypeError, RecordError)):
            w.append("m", "tuple", (torch.zeros(2), object()))
        assert w.append("m", "tuple", good) == 0
    finally:
        w.close()
    store = spikestore.open(path)
    for name in ("meta", "tuple"):
        assert len(store["m"][name]) == 1, name
        assert _same(store["m"][name][0], good), name


# ------------------------------------------------------- 11. CLI
def _spike_store(path: Path) -> None:
    with StoreWriter(path) as w:
        for i in range(20):
            w.append("output", "sn", _spikes((4, 16), i))
            w.append("v", "lif", torch.full((3,), float(i)))


def _check_cli(capsys: Any, path: Path) -> None:
    capsys.readouterr()
    try:
        rc = cli_main(["info", str(path)])
    except BaseException as exc:  # SystemExit included
        pytest.fail(f"spikestore info raised {exc!r}")
    err = capsys.readouterr().err
    if rc != 0:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("spikestore: error:"), err


@pytest.mark.parametrize("damage", ["summary_chunk", "summary_metadata"])
def test_cli_and_mean_rate_on_a_damaged_summary(tmp_path: Path, capsys: Any, damage: str) -> None:
    """A damaged summary gives `info` a clean exit and mean_rate a ReadError/FormatError."""
    from spikestore import analysis

    path = tmp_path / "s"
    _spike_store(path)
    summary = path / "output" / "sn" / "f0" / "summary"
    assert summary.is_dir()
    if damage == "summary_chunk":
        files = [p for p in (summary / "c").rglob("*") if p.is_file()]
        assert files
        for p in files:
            p.write_bytes(b"\x8a garbage \xff" * 11)
    else:
        (summary / "zarr.json").write_text("{not json")
    _check_cli(capsys, path)
    with pytest.raises((ReadError, FormatError)):
        analysis.mean_rate(spikestore.open(path)["output"]["sn"])


def test_cli_info_on_a_store_being_written(tmp_path: Path, capsys: Any) -> None:
    """`spikestore info` on a store that is being written always succeeds."""
    path = tmp_path / "s"
    w = StoreWriter(
        path, flush_interval=0.01, shard_steps=32, chunk_bytes=1 << 10, max_queue_bytes=1 << 16
    )
    stop = threading.Event()
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            i = 0
            while not stop.is_set() and i < 20_000:
                w.append("output", "a", _spikes((8, 16), i % 50))
                w.append("output", "b", _spikes((3, 7), i % 50, p=0.5))
                w.append("v", "c", torch.full((5,), float(i)))
                i += 1
                time.sleep(0.001)  # a training step's pace, not a wait
        except BaseException as exc:
            errors.append(exc)

    th = threading.Thread(target=produce, daemon=True)
    th.start()
    codes = []
    try:
        _wait_for(lambda: _committed(path, "v", "c") > 0, 10.0, "the first commit")
        deadline = time.monotonic() + 20
        while len(codes) < 30 and time.monotonic() < deadline:
            capsys.readouterr()
            try:
                rc = cli_main(["info", str(path)])
            except BaseException as exc:
                rc = f"raised {exc!r}"
            err = capsys.readouterr().err
            codes.append((rc, err.strip()))
            # The next `info` sees a newer commit (or the producer has failed).
            seen = _committed(path, "v", "c")
            _wait_for(
                lambda seen=seen: errors or _committed(path, "v", "c") > seen, 10.0, "a commit"
            )
    finally:
        stop.set()
        th.join(20)
        w.close()
    assert not errors, errors
    assert len(codes) == 30
    bad = [c for c in codes if c[0] != 0]
    assert not bad, bad


# -------------------------------------------------------- 12. errors
@pytest.mark.parametrize("writes", [0, 2])
def test_full_disk_error_names_the_steps(tmp_path: Path, writes: int) -> None:
    """A WriteError from a full disk names the steps that were being written."""
    budget = WriteBudget(None)
    w = StoreWriter(store=FullDiskStore(LocalStore(tmp_path / "s"), budget), flush_interval=3600)
    for i in range(30):
        w.append("output", "sn", _spikes((4, 16), i))
    w.flush()
    budget.writes = writes
    for i in range(30, 60):
        w.append("output", "sn", _spikes((4, 16), i))
    with pytest.raises(WriteError) as ei:
        w.flush()
    with pytest.raises(WriteError):
        w.close()
    msg = str(ei.value)
    assert re.search(r"steps? \d+", msg), msg
    assert len(spikestore.open(tmp_path / "s")["output"]["sn"]) >= 30


def test_deleted_field_directory_is_a_read_error(tmp_path: Path) -> None:
    """A committed layer whose field directory is gone raises, instead of reading as empty."""
    path = tmp_path / "s"
    _spike_store(path)
    shutil.rmtree(path / "output" / "sn" / "f0")
    store = spikestore.open(path)
    raised = None
    try:
        layer = store["output"]["sn"]
        n = len(layer)
        _ = layer[0]
    except (ReadError, FormatError) as exc:
        raised = exc
    except IndexError:
        pytest.fail(f"the layer reads as {n} steps instead of raising")
    assert raised is not None, "reading a layer without its field directory raised nothing"
    assert "sn" in str(raised), raised
    # Other layers still read.
    assert torch.equal(store["v"]["lif"][19], torch.full((3,), 19.0))


def test_record_larger_than_the_queue_bound_is_accepted(tmp_path: Path) -> None:
    """A record larger than max_queue_bytes waits for an empty queue and is then taken."""
    path = tmp_path / "s"
    big = torch.randn(1 << 18, generator=torch.Generator().manual_seed(1))  # 1 MiB
    small = [torch.full((10,), float(i)) for i in range(3)]
    w = StoreWriter(path, max_queue_bytes=1 << 16)
    done: list[int] = []

    def work(_: int) -> None:
        done.append(w.append("v", "s", small[0]))
        done.append(w.append("v", "big", big))
        done.append(w.append("v", "s", small[1]))
        done.append(w.append("v", "big", big * 2))
        done.append(w.append("v", "s", small[2]))

    try:
        errors = _run_threads(work, 1, timeout=30)
    finally:
        w.close()
    assert not errors, errors
    assert done == [0, 0, 1, 1, 2]
    store = spikestore.open(path)
    assert _same(store["v"]["big"][0], big) and _same(store["v"]["big"][1], big * 2)
    assert [bool(torch.equal(store["v"]["s"][i], small[i])) for i in range(3)] == [True] * 3


# ---------------------------------------------------------- 13. durable
def test_durable_fsyncs_data_before_the_commit(tmp_path: Path, monkeypatch: Any) -> None:
    """durable=True fsyncs data chunks, directories and the field's commit zarr.json,
    the data before the commit."""
    path = tmp_path / "s"
    log: list[tuple[str, bool]] = []
    log_lock = threading.Lock()

    def recorder(real: Any) -> Any:
        def fsync(fd: int) -> None:
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                target = "?"
            with log_lock:
                log.append((target, os.path.isdir(target)))
            real(fd)

        return fsync

    monkeypatch.setattr(os, "fsync", recorder(os.fsync))
    monkeypatch.setattr(os, "fdatasync", recorder(os.fdatasync))
    root = str(path.resolve())
    data = re.compile(r"/f\d+/s[^/]*/c(/|$)")
    commit = re.compile(r"/f\d+/zarr[^/]*$")

    def check(entries: list[tuple[str, bool]], which: str) -> None:
        rel = [(p[len(root) :] if p.startswith(root) else p, d) for p, d in entries]
        data_at = [i for i, (p, d) in enumerate(rel) if not d and data.search(p)]
        commit_at = [i for i, (p, d) in enumerate(rel) if not d and commit.search(p)]
        dirs = [p for p, d in rel if d]
        shown = [p + ("/" if d else "") for p, d in rel]
        assert data_at, f"{which}: no data chunk was fsynced: {shown}"
        assert dirs, f"{which}: no directory was fsynced: {shown}"
        assert commit_at, f"{which}: no field zarr.json was fsynced: {shown}"
        assert max(data_at) < max(commit_at), f"{which}: data fsynced after the commit: {shown}"

    w = StoreWriter(path, durable=True, flush_interval=3600)
    try:
        for i in range(20):
            w.append("output", "sn", _spikes((4, 16), i))
            w.append("v", "lif", torch.full((3,), float(i)))
        w.flush()
        with log_lock:
            first = list(log)
            log.clear()
        check(first, "first flush")
        for i in range(20, 40):
            w.append("output", "sn", _spikes((4, 16), i))
            w.append("v", "lif", torch.full((3,), float(i)))
        w.flush()
        with log_lock:
            second = list(log)
        check(second, "second flush")
    finally:
        w.close()
    layer = spikestore.open(path)["v"]["lif"]
    assert len(layer) == 40 and torch.equal(layer[39], torch.full((3,), 39.0))


# ------------------------------------------------ exit, arguments, odd records
@pytest.mark.parametrize(
    "kwargs",
    [
        {"level": 99},
        {"level": -(1 << 20)},
        {"compressor": "zlib", "level": 10},
        {"compressor": "blosc-lz4", "level": -1},
        {"level": 1.5},
        {"flush_interval": -1},
        {"flush_interval": float("nan")},
        {"shard_steps": 0},
        {"max_queue_bytes": 0},
        {"max_buffer_bytes": -1},
        {"chunk_bytes": -5},
    ],
)
def test_bad_writer_arguments_are_refused_at_once(tmp_path: Path, kwargs: dict) -> None:
    """Arguments that would make every later write fail are refused by the constructor,
    which leaves nothing behind."""
    with pytest.raises(ValueError):
        StoreWriter(tmp_path / "s", **kwargs)
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())


@pytest.mark.parametrize("value", [(), []])
def test_empty_tuple_or_list_is_refused(tmp_path: Path, value: Any) -> None:
    """An empty tuple or list has no field: RecordError, and it takes no step."""
    with StoreWriter(tmp_path / "s") as w:
        with pytest.raises(RecordError, match=r"layer 'l', step 0.*no field"):
            w.append("m", "l", value)
        assert w.append("m", "l", (torch.ones(2), 1)) == 0
    assert len(spikestore.open(tmp_path / "s")["m"]["l"]) == 1


def test_monitor_sharing_a_writer_closes_quietly_in_a_forked_child(tmp_path: Path) -> None:
    """monitor.close() in a forked child neither raises nor touches the parent's store."""
    net = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    w = StoreWriter(tmp_path / "s")
    mon = OutputMonitor(net, nn.ReLU, store=w)
    net(torch.ones(1, 3))
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            mon.close()
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    net(torch.ones(1, 3))
    mon.close()
    w.close()
    assert len(spikestore.open(tmp_path / "s")["output"]["1"]) == 2


@pytest.mark.parametrize("damage", ["layer_json", "field_json", "field_group", "index"])
def test_appending_to_a_damaged_layer_is_a_format_error(tmp_path: Path, damage: str) -> None:
    """mode="a" on a layer with damaged metadata raises FormatError naming the layer, and
    never renumbers its steps; other layers still append."""
    path = tmp_path / "s"
    with StoreWriter(path) as w:
        for i in range(3):
            w.append("m", "bad", torch.full((2,), float(i)))
            w.append("m", "good", torch.full((2,), float(i)))
    lay = path / "m" / "bad"
    if damage == "layer_json":
        (lay / "zarr.json").write_text("{not json")
    elif damage == "field_json":
        (lay / "f0" / "zarr.json").write_text("{not json")
    elif damage == "field_group":
        shutil.rmtree(lay / "f0")
    else:
        shutil.rmtree(lay / "f0" / "index")
    with StoreWriter(path, mode="a") as w:
        with pytest.raises(spikestore.FormatError, match="layer 'bad'"):
            w.append("m", "bad", torch.zeros(2))
        assert w.append("m", "good", torch.zeros(2)) == 3


def test_a_refused_first_record_makes_no_layer(tmp_path: Path) -> None:
    """A layer whose only record was refused is not among the writer's layers."""
    with StoreWriter(tmp_path / "s") as w:
        with pytest.raises(RecordError):
            w.append("m", "l", torch.zeros(3).to_sparse())
        w.append("m", "ok", torch.zeros(3))
        assert w.layers == [("m", "ok")]
    assert spikestore.open(tmp_path / "s")["m"].layers == ["ok"]


# ------------------------------------------------ the writer thread's bookkeeping
def _sink(tmp_path):
    from spikestore._commit import Sink
    from spikestore._segments import SegmentOptions
    from spikestore._stored import fresh_root, open_root
    from spikestore.storage import storage_for

    st = storage_for(tmp_path / "s", None, durable=False)
    zstore, zmode = st.open("w")
    root = open_root(zstore, zmode, "test", "s")
    fresh_root(root, "test")
    return st, Sink(root, SegmentOptions(None, None, 64, 1 << 12), "s")


def test_sink_tracks_buffered_bytes_and_the_oldest_record(tmp_path):
    """Kept up to date per record and per write, not summed over every layer."""
    from spikestore.codecs import encode

    st, sink = _sink(tmp_path)
    try:
        spikes = encode((torch.rand(8, 64) < 0.2).float())
        dense = encode(torch.randn(4, 5))
        assert sink.buffered_bytes == 0 and sink.oldest is None
        sink.take("m", "a", "tensor", None, 0, [spikes], 10.0)
        sink.take("m", "b", "tuple", None, 0, [dense, None], 11.0)
        sink.take("m", "a", "tensor", None, 1, [spikes], 12.0)
        want = 2 * spikes.row.nbytes + dense.row.nbytes
        assert sink.buffered_bytes == want
        assert sink.oldest == 10.0
        sink.write_layer(sink.layers[("m", "a")])
        assert sink.buffered_bytes == dense.row.nbytes
        assert sink.oldest == 11.0
        sink.write_all()
        assert sink.buffered_bytes == 0 and sink.oldest is None
        sink.take("m", "a", "tensor", None, 2, [spikes], 13.0)
        assert sink.oldest == 13.0
        fields = [f for lay in sink.layers.values() for f in lay.fields]
        assert sink.buffered_bytes == sum(f.buffered_bytes for f in fields)
    finally:
        sink.close()
        st.release()


@pytest.mark.parametrize(
    ("shape", "permute"),
    [
        ((64,), None),
        ((3, 40), None),  # 40 bits per first-axis index: whole bytes
        ((3, 7), None),  # 7 bits: unpacked
        ((5, 2, 3), None),
        ((4, 3, 8), (1, 2, 0)),  # time axis packed last
        ((2, 3, 4, 5), (1, 2, 3, 0)),
        ((1, 5000), None),
    ],
)
def test_block_spike_summaries_equal_per_step_summaries(shape, permute):
    """Spike summaries are computed a block of steps at a time; the stored values are
    those of each step on its own."""
    from spikestore.codecs import encode
    from spikestore.summary import summarize, summarize_spikes

    g = torch.Generator().manual_seed(3)
    recs = [(torch.rand(shape, generator=g) < p).float() for p in (0.0, 1.0, 0.1, 0.5, 0.9)]
    encs = [encode(r, permute=permute) for r in recs]
    assert all(e.encoding == "bitpack" for e in encs)
    rows, axis0 = summarize_spikes(shape, permute, np.stack([e.row for e in encs]))
    for i, (r, e) in enumerate(zip(recs, encs, strict=True)):
        one, one0 = summarize(e)
        np.testing.assert_array_equal(rows[i], one)
        # ... and those of the record summarised as plain values.
        raw, raw0 = summarize(_raw(r))
        np.testing.assert_array_equal(one, raw)
        if len(shape) >= 2:
            np.testing.assert_array_equal(axis0[i], one0)
            np.testing.assert_array_equal(one0, raw0)
        else:
            assert axis0 is None and one0 is None


def _raw(t):
    from spikestore.codecs import encode_values

    return encode_values(t)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_an_open_writer_leaves_large_allocations_of_the_process_fast(tmp_path):
    """Regression: a writer fixed glibc's mmap threshold at 128 KiB for the whole
    process, so every large tensor the network allocated afterwards was a fresh
    mapping whose pages fault in (2-3x slower recording of dense layers, and the
    training itself slowed). Now the writer only trims freed memory after its writes:
    a 1 MiB block freed and allocated again reuses its pages."""
    import resource

    def faults_per_alloc() -> float:
        a = np.ones(1 << 18, np.float32)  # 1 MiB
        del a
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(50):
            a = np.ones(1 << 18, np.float32)
            del a
        return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 50

    with spikestore.StoreWriter(tmp_path / "s") as w:
        w.append("m", "l", torch.randn(64, 4096))
        w.flush()
        # A fresh mapping of 1 MiB faults in 256 pages; a reused block none.
        assert faults_per_alloc() < 64


# ------------------------------------------------------------ safe by default
def test_default_mode_refuses_an_existing_store_and_names_both_ways_out(tmp_path: Path) -> None:
    from spikestore import StoreExistsError

    path = tmp_path / "s"
    with spikestore.StoreWriter(path) as w:  # a new path: just works
        w.append("output", "sn", torch.ones(3))
    for kwargs in ({}, {"mode": None}, {"mode": "w-"}):
        with pytest.raises(StoreExistsError) as info:
            spikestore.StoreWriter(path, **kwargs)
        msg = str(info.value)
        assert "\n" not in msg and str(path) in msg
        assert "mode='a'" in msg and "mode='w'" in msg and "overwrite=True" in msg
    assert isinstance(info.value, FileExistsError)
    assert len(spikestore.open(path)["output"]["sn"]) == 1  # untouched, and not locked
    with spikestore.StoreWriter(path, mode="a") as w:
        assert w.append("output", "sn", torch.ones(3)) == 1
    with spikestore.StoreWriter(path, overwrite=True) as w:
        w.append("v", "sn", torch.ones(2))
    assert sorted(spikestore.open(path)) == ["v"]
    with pytest.raises(ValueError, match=r"overwrite=True.*mode='a'"):
        spikestore.StoreWriter(path, "a", overwrite=True)
    with spikestore.StoreWriter(path, "w", overwrite=True):  # the same thing twice is fine
        pass


def test_default_mode_takes_an_empty_folder_or_one_with_a_stale_lock_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with spikestore.StoreWriter(empty) as w:
        w.append("output", "sn", torch.ones(3))
    lock_only = tmp_path / "lock_only"
    lock_only.mkdir()
    (lock_only / ".spikestore.lock").write_text("pid 1 on gone\n")
    with spikestore.StoreWriter(lock_only) as w:
        w.append("output", "sn", torch.ones(3))
    assert len(spikestore.open(lock_only)["output"]["sn"]) == 1
    # A folder of other files is refused in every mode, with the not-a-store message.
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a spikestore store; refusing to write"):
        spikestore.StoreWriter(other)
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]


def test_default_mode_refuses_a_store_in_a_zarr_store_passed_in() -> None:
    from zarr.storage import MemoryStore

    from spikestore import StoreExistsError

    ms = MemoryStore()
    with spikestore.StoreWriter(store=ms) as w:
        w.append("output", "sn", torch.ones(3))
    with pytest.raises(StoreExistsError, match=r"mode='a'.*mode='w'"):
        spikestore.StoreWriter(store=ms)
    with spikestore.StoreWriter(store=ms, mode="a") as w:
        assert w.append("output", "sn", torch.ones(3)) == 1
