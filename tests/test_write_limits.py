"""What the writer refuses at the call, so that nothing it accepts is lost or unreadable.

* A writer thread that ends for any reason makes the next ``append``, ``flush()`` and
  ``close()`` raise, naming the cause and each layer's steps not committed; steps
  committed before stay readable. ``flush_interval`` is bounded (a huge one made the
  thread's timed wait fail, silently).
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

import spikestore
import spikestore.format as fmt
from spikestore import StoreWriter, WriteError
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
