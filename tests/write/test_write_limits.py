"""What the writer refuses at the call, so that nothing it accepts is lost or unreadable.

* A writer thread that ends for any reason makes the next ``append``, ``flush()`` and
  ``close()`` raise, naming the cause and each layer's steps not committed; steps
  committed before stay readable. ``flush_interval`` is bounded (a huge one made the
  thread's timed wait fail, silently).
* Every limit the reader checks (``spikestore.format``) is checked at ``append`` with
  a :class:`~spikestore.RecordError` naming the monitor, layer and step; the store
  written so far (other layers, earlier steps) still opens, reads and passes
  ``spikestore info``.
* Run attributes nest at most ``MAX_ATTRS_DEPTH`` deep (a ``RecursionError`` before);
  mark values are JSON scalars any reader takes.

Real files and real writers throughout; ``spikestore info`` runs as a process.
"""

from __future__ import annotations

import json
import math
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import spikestore
import spikestore.format as fmt
from spikestore import RecordError, StoreWriter, WriteError
from spikestore.monitor import OutputMonitor
from spikestore.testing import wait_for


def _info(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spikestore", "info", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _x(step: int, shape: tuple[int, ...] = (3, 4)) -> torch.Tensor:
    return torch.arange(math.prod(shape), dtype=torch.float32).reshape(shape) + step


# ------------------------------------------------------- 3. a dying writer thread
@pytest.mark.parametrize(
    "value",
    [math.inf, -math.inf, math.nan, -1.0, 86400.5, threading.TIMEOUT_MAX * 2, 1e300, True, "1"],
)
def test_a_flush_interval_out_of_range_is_refused_at_the_call(tmp_path: Path, value: Any) -> None:
    """Regression: any flush_interval past threading.TIMEOUT_MAX (inf included) was
    taken; the writer thread died on its first record with OverflowError in its
    queue's wait, and append, flush and close returned normally with 0 steps stored."""
    path = tmp_path / "s"
    with pytest.raises(ValueError, match=r"flush_interval must be .* from 0 to 86400"):
        StoreWriter(path, flush_interval=value)
    assert not path.exists()  # refused before anything was made
    with StoreWriter(path, flush_interval=0) as w:  # 0 commits every record
        w.append("m", "a", _x(0))
    with StoreWriter(path, mode="a", flush_interval=86400) as w:
        w.append("m", "a", _x(1))
    layer = spikestore.open(path)["m"]["a"]
    assert len(layer) == 2 and torch.equal(layer[1], _x(1))


class _TimedWaitsFail:
    """A writer's queue whose timed waits fail as one past ``threading.TIMEOUT_MAX``
    did (``OverflowError``), outside the code that handles a record."""

    def __init__(self, q: queue.SimpleQueue[Any]) -> None:
        self._q = q

    def put(self, item: Any) -> None:
        self._q.put(item)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if timeout is not None:
            raise OverflowError("timeout value is too large")
        return self._q.get(block)

    def get_nowait(self) -> Any:
        return self._q.get_nowait()

    def qsize(self) -> int:
        return self._q.qsize()


def _kill_writer_thread(w: StoreWriter) -> threading.Event:
    """Make ``w``'s writer thread die at its next timed wait, once the returned gate is
    set: it waits at the gate, then takes one record and dies waiting for the next
    (records queued meanwhile stay queued)."""
    gate = threading.Event()
    w._worker._queue = _TimedWaitsFail(w._worker._queue)

    def hold() -> None:
        gate.wait(60)

    w._worker.post(hold)
    return gate


def _committed_store(path: Path) -> StoreWriter:
    w = StoreWriter(path, flush_interval=3600)
    for i in range(5):
        w.append("m", "a", _x(i))
        w.append("m", "b", float(i))
    w.flush()
    return w


def test_a_writer_thread_that_dies_makes_append_flush_and_close_raise(tmp_path: Path) -> None:
    """Regression: an exception that ended the writer thread outside the code that
    records its errors (its queue's wait) left append, flush and close returning
    normally while nothing more was stored."""
    path = tmp_path / "s"
    w = _committed_store(path)
    gate = _kill_writer_thread(w)
    for i in range(5, 10):
        w.append("m", "a", _x(i))
    for i in range(5, 8):
        w.append("m", "b", float(i))
    gate.set()
    wait_for(lambda: not w._worker.alive, 30, "the writer thread's end")
    with pytest.raises(WriteError) as err:
        w.append("m", "a", _x(10))
    msg = str(err.value)
    assert "OverflowError: timeout value is too large" in msg, msg
    assert str(path) in msg, msg
    # The record it took (step 5 of a) was whole: written and committed as it died.
    assert "monitor 'm', layer 'a', steps 6..9" in msg, msg
    assert "monitor 'm', layer 'b', steps 5..7" in msg, msg
    with pytest.raises(WriteError, match="OverflowError"):
        w.flush()
    with pytest.raises(WriteError, match="OverflowError"):
        w.set_attrs(lr=0.1)
    with pytest.raises(WriteError, match="OverflowError"):
        w.close()
    w.close()  # idempotent once it has raised
    store = spikestore.open(path)
    a, b = store["m"]["a"], store["m"]["b"]
    assert len(a) == 6 and len(b) == 5
    assert all(torch.equal(a[i], _x(i)) for i in range(6))
    assert [b[i] for i in range(5)] == [float(i) for i in range(5)]
    res = _info(path)
    assert res.returncode == 0, res.stderr
    # The lock is released: the store takes a new writer, which goes on after step 5.
    with StoreWriter(path, mode="a") as w2:
        assert w2.append("m", "a", _x(6)) == 6


def test_a_flush_waiting_when_the_writer_thread_dies_raises(tmp_path: Path) -> None:
    """A flush() already waiting for the writer thread when it dies raises (it returned
    as if everything were committed)."""
    path = tmp_path / "s"
    w = _committed_store(path)
    gate = _kill_writer_thread(w)
    w.append("m", "a", _x(5))
    w.append("m", "a", _x(6))
    threading.Timer(0.3, gate.set).start()
    with pytest.raises(WriteError, match=r"OverflowError.*not committed: .*layer 'a', step 6$"):
        w.flush()
    with pytest.raises(WriteError):
        w.close()
    assert len(spikestore.open(path)["m"]["a"]) == 6


def test_a_failure_names_every_layer_it_leaves_uncommitted(tmp_path: Path) -> None:
    """The error names the steps of every layer that are not committed, not only those
    of the write that failed; and where it failed (not the last record taken)."""
    path = tmp_path / "s"
    w = _committed_store(path)
    done = threading.Event()

    def fail() -> None:
        done.set()
        raise MemoryError("no room for the run's attributes")

    for i in range(5, 7):
        w.append("m", "a", _x(i))
        w.append("m", "b", float(i))
    w._worker.post(fail)
    wait_for(done.is_set, 30, "the failing call")
    with pytest.raises(WriteError) as err:
        w.flush()
    msg = str(err.value)
    assert "failed at the writer thread: MemoryError: no room" in msg, msg
    assert msg.endswith(
        "; not committed: monitor 'm', layer 'a', steps 5..6; monitor 'm', layer 'b', steps 5..6"
    ), msg
    with pytest.raises(WriteError):
        w.append("m", "b", 7.0)
    with pytest.raises(WriteError):
        w.close()
    store = spikestore.open(path)
    assert len(store["m"]["a"]) == 5 and len(store["m"]["b"]) == 5


# ------------------------------------------------ 4. the reader's limits at append
_DIMS33 = [f"d{i}" for i in range(33)]

#: Records the writer took and its reader then refused (the whole monitor and
#: ``spikestore info`` failed with FormatError): (record, append's keywords, message).
_REFUSED: dict[str, tuple[Any, dict[str, Any], str]] = {
    "33 axes": (torch.zeros([1] * 33), {}, r"field 0: bad record shape .*at most 32 axes"),
    "1,025 fields": (
        tuple(torch.zeros(2) for _ in range(1025)),
        {},
        "more than 1024 fields",
    ),
    "time_axis 32": (_x(0), {"time_axis": 32}, r"bad time_axis 32 \(None or an int from -32"),
    "time_axis 2**62": (_x(0), {"time_axis": 2**62}, "bad time_axis 4611686018427387904"),
    "time_axis -33": (_x(0), {"time_axis": -33}, "bad time_axis -33"),
    "time_axis 5 of a 2-D record": (_x(0), {"time_axis": 5}, r"time_axis=5 is not an axis"),
    "time_axis -3 of a 2-D record": (_x(0), {"time_axis": -3}, "time_axis=-3 is not an axis"),
    "time_axis '0'": (_x(0), {"time_axis": "0"}, r"time_axis must be an int .* \(str\)"),
    "time_axis 0.5": (_x(0), {"time_axis": 0.5}, r"time_axis must be an int .* \(float\)"),
    "time_axis True": (_x(0), {"time_axis": True}, r"time_axis must be an int .* \(bool\)"),
    "33 dims of a None": (None, {"dims": _DIMS33}, r"bad dims .*at most 32"),
    "33 field dims": (
        (None, torch.zeros(2)),
        {"dims": [_DIMS33, ["neuron"]]},
        r"bad dims .*at most 32",
    ),
    "a tree node of 1,025 items": (
        tuple([()] * 1025 + [torch.zeros(2)]),
        {},
        r"bad record tree items \(a list of at most 1024",
    ),
}


@pytest.mark.parametrize("case", list(_REFUSED))
def test_a_record_the_reader_would_refuse_is_refused_at_append(tmp_path: Path, case: str) -> None:
    """Regression: each record was accepted, and then every layer of its monitor and
    ``spikestore info`` failed with FormatError."""
    value, kwargs, message = _REFUSED[case]
    path = tmp_path / "s"
    with StoreWriter(path) as w:
        for i in range(3):
            w.append("m", "ok", _x(i))
            w.append("other", "v", float(i))
        with pytest.raises(RecordError, match=message) as err:
            w.append("m", "bad", value, **kwargs)
        assert "monitor 'm', layer 'bad', step 0" in str(err.value)
        # The writer goes on: the layer takes a good record as its step 0.
        assert w.append("m", "bad", _x(7), time_axis=0) == 0
        w.append("m", "ok", _x(3))
    store = spikestore.open(path)
    assert [torch.equal(store["m"]["ok"][i], _x(i)) for i in range(4)] == [True] * 4
    assert [store["other"]["v"][i] for i in range(3)] == [0.0, 1.0, 2.0]
    bad = store["m"]["bad"]
    assert len(bad) == 1 and bad.time_axis == 0 and torch.equal(bad[0], _x(7))
    res = _info(path)
    assert res.returncode == 0, res.stderr
    assert "bad" in res.stdout and "ok" in res.stdout


def test_a_record_of_max_fields_fields_reads_back(tmp_path: Path) -> None:
    """1,024 fields is the limit on both sides (the writer took 1,025, the reader 1,024)."""
    path = tmp_path / "s"
    rec = tuple(torch.full((2,), float(i)) for i in range(fmt.MAX_FIELDS))
    with StoreWriter(path) as w:
        w.append("m", "wide", rec)
    got = spikestore.open(path)["m"]["wide"][0]
    assert len(got) == fmt.MAX_FIELDS
    assert all(torch.equal(a, b) for a, b in zip(got, rec, strict=True))


def test_a_bad_record_at_a_later_step_names_that_step(tmp_path: Path) -> None:
    """The step is named where it is known; the layer's earlier steps stay readable."""
    path = tmp_path / "s"
    with StoreWriter(path) as w:
        for i in range(4):
            w.append("m", "a", (_x(i), None))
        with pytest.raises(RecordError, match=r"layer 'a', step 4: time_axis must be an int"):
            w.append("m", "a", (_x(4), None), time_axis="1")
        with pytest.raises(RecordError, match=r"layer 'a', step 4: field 1: bad record shape"):
            w.append("m", "a", (_x(4), torch.zeros([1] * 33)))
        w.append("m", "a", (_x(4), None))
    layer = spikestore.open(path)["m"]["a"]
    assert len(layer) == 5 and torch.equal(layer[4][0], _x(4))
    assert _info(path).returncode == 0


def test_time_axis_is_checked_against_the_first_tensor_of_the_layer(tmp_path: Path) -> None:
    """Negative axes count from the end, as the reader takes them; a record without
    axes (a neuron's v is 0.0 before its first multi-step call) says nothing about
    the axis, and the first tensor is checked."""
    path = tmp_path / "s"
    with StoreWriter(path) as w:
        w.append("m", "neg", _x(0), time_axis=-1)
        w.append("m", "neg", _x(1), time_axis=np.int64(0))  # later records' axis is ignored
        w.append("m", "v", 0.0, time_axis=0)
        w.append("m", "v", _x(1), time_axis=0)
        w.append("m", "v5", 0.0, time_axis=5)
        with pytest.raises(RecordError, match=r"layer 'v5', step 1: time_axis=5 is not an axis"):
            w.append("m", "v5", _x(1))
    store = spikestore.open(path)
    assert store["m"]["neg"].time_axis == -1 and torch.equal(store["m"]["neg"][1], _x(1))
    assert store["m"]["v"].time_axis == 0 and torch.equal(store["m"]["v"][1], _x(1))
    assert len(store["m"]["v5"]) == 1
    assert _info(path).returncode == 0


def test_a_refused_first_record_leaves_the_layer_free_to_take_another_time_axis(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s"
    with StoreWriter(path) as w:
        with pytest.raises(RecordError):
            w.append("m", "a", _x(0), time_axis=5)
        w.append("m", "a", _x(0), time_axis=1)
        w.append("m", "b", _x(0), time_axis=None)
    store = spikestore.open(path)
    assert store["m"]["a"].time_axis == 1 and store["m"]["b"].time_axis is None


def test_a_field_past_max_segments_is_refused_at_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A field has a segment per distinct shape of its records, and the reader refuses
    a field of more than MAX_SEGMENTS: the record that would make one more is refused
    (the limit is lowered here, for writer and reader alike: one definition), also
    after a reopen with mode="a"."""
    monkeypatch.setattr(fmt, "MAX_SEGMENTS", 3)
    path = tmp_path / "s"

    def row(n: int) -> torch.Tensor:
        return torch.arange(n, dtype=torch.float32) + 0.5

    with StoreWriter(path) as w:
        for n in (1, 2, 3, 1):
            w.append("m", "var", row(n))
        with pytest.raises(RecordError, match=r"layer 'var', step 4 \(field 0\).*may hold 3"):
            w.append("m", "var", row(4))
        w.append("m", "other", row(4))
    with StoreWriter(path, mode="a") as w:
        w.append("m", "var", row(3))
        with pytest.raises(RecordError, match=r"layer 'var', step 5 \(field 0\).*may hold 3"):
            w.append("m", "var", row(5))
    store = spikestore.open(path)
    layer = store["m"]["var"]
    assert [len(layer[i]) for i in range(len(layer))] == [1, 2, 3, 1, 3]
    assert len(store["m"]["other"]) == 1


def test_a_monitor_refuses_a_time_axis_the_format_cannot_hold(tmp_path: Path) -> None:
    net = nn.Sequential(nn.Linear(2, 2))
    for bad in (32, -33, 2**62):
        with pytest.raises(ValueError, match=rf"bad time_axis {bad} \(None or an int from -32"):
            OutputMonitor(net, nn.Linear, store=tmp_path / f"s{bad}", time_axis=bad)
        assert not (tmp_path / f"s{bad}").exists()


# ------------------------------------------------------ 11. attrs and mark values
def _nested(depth: int) -> dict[str, Any]:
    """An attrs dict ``depth`` levels of objects and arrays deep (itself counting 1)."""
    value: Any = 1
    for i in range(depth - 1):
        value = {"k": value} if i % 2 else [value]
    return {"deep": value}


def test_attrs_nested_too_deep_are_refused_at_the_call(tmp_path: Path) -> None:
    """Regression: attrs nested 3,000 deep raised RecursionError (from json.dumps)."""
    path = tmp_path / "s"
    with pytest.raises(ValueError, match=r"attrs: nested deeper than 64 levels"):
        StoreWriter(path, attrs=_nested(3000))
    with StoreWriter(path, attrs=_nested(fmt.MAX_ATTRS_DEPTH)) as w:
        w.append("m", "a", _x(0))
        for depth in (fmt.MAX_ATTRS_DEPTH + 1, 3000):
            with pytest.raises(ValueError, match=r"attrs: nested deeper than 64 levels"):
                w.set_attrs(**_nested(depth))
        loop: list[Any] = []
        loop.append(loop)
        with pytest.raises(ValueError, match=r"nested deeper than 64 .*holds itself"):
            w.set_attrs(loop=loop)
        w.set_attrs(lr=0.5)
        w.append("m", "a", _x(1))
    store = spikestore.open(path)
    assert store.attrs["deep"] == _nested(fmt.MAX_ATTRS_DEPTH)["deep"]
    assert store.attrs["lr"] == 0.5 and len(store["m"]["a"]) == 2


def test_the_reader_takes_attrs_as_deep_as_the_writer_writes_and_no_deeper(
    tmp_path: Path,
) -> None:
    """One bound for both: a root whose attrs nest one level more than a writer writes
    is a damaged run description (warned about and ignored); its records still read."""
    path = tmp_path / "s"
    with StoreWriter(path, attrs={"a": 1}) as w:
        w.append("m", "a", _x(0))
    meta_path = path / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"][fmt.RUN_KEY]["attrs"] = _nested(fmt.MAX_ATTRS_DEPTH + 1)
    meta_path.write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="nested deeper than 64"):
        store = spikestore.open(path)
        assert store.attrs == {}
    assert torch.equal(store["m"]["a"][0], _x(0))


def test_mark_values_any_reader_takes(tmp_path: Path) -> None:
    """Regression: mark(x=10**5000) was queued and killed the writer thread at the
    next commit (Python writes no int of more than 4,300 digits); ints are bounded to
    int64, as records' are."""
    path = tmp_path / "s"
    with StoreWriter(path) as w:
        w.append("m", "a", _x(0))
        for v in (10**5000, 2**63, -(2**63) - 1):
            with pytest.raises(ValueError, match="a mark's int must fit in int64"):
                w.mark(epoch=v)
        w.mark(epoch=2**63 - 1, phase="train", lr=np.float32(0.5), on=torch.tensor(True))
        w.append("m", "a", _x(1))
        w.flush()
    marks = spikestore.open(path)["m"]["a"].marks()
    assert marks["epoch"][1] == 2**63 - 1 and marks["phase"][1] == "train"


def test_attrs_and_marks_the_root_metadata_cannot_hold_are_refused_at_the_call(
    tmp_path, monkeypatch
):
    """The run description lives in the root's zarr.json, which readers refuse past
    MAX_METADATA_BYTES: a writer refuses attrs or marks that would take it there at the
    call (it failed in the writer thread, losing the steps after), and what was
    recorded stays readable."""
    from spikestore import _run

    monkeypatch.setattr(_run, "MAX_METADATA_BYTES", 64 << 10)
    path = tmp_path / "s"
    with pytest.raises(ValueError, match="would not fit in the store's root metadata"):
        spikestore.StoreWriter(path, attrs={"blob": "x" * (20 << 10)})
    with spikestore.StoreWriter(path, mode="a") as w:
        w.append("m", "l", torch.ones(2))
        with pytest.raises(ValueError, match="set_attrs: the run description"):
            w.set_attrs(blob="x" * (20 << 10))
        n = 0
        with pytest.raises(ValueError, match="mark: the run description"):
            while n < 10_000:
                w.mark(step=n, phase="train")
                w.append("m", "l", torch.ones(2))
                n += 1
        assert 100 < n < 10_000
        w.append("m", "l", torch.zeros(2))
    store = spikestore.open(path)
    assert len(store["m"]["l"]) == n + 2
    assert store["m"]["l"].marks()["step"][n] == n - 1
