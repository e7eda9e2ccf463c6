"""The writer thread's queue (``spikestore._worker._Queue``: a record queued while the
writer thread naps does not wake it) and the lazily formatted place of a record in
error messages (``LayerEntry.where``). No test here depends on timing: a wake-up that
never came would hang a getter until its ``join`` gives up."""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

import spikestore
from spikestore._records import Schema
from spikestore._worker import Item, LayerEntry, _Queue
from spikestore.errors import RecordError
from spikestore.monitor import OutputMonitor


def _item(step: int) -> Item:
    return Item("m", "l", "tensor", None, step, [], 0, 0.0)


def _getter(q: _Queue, out: list[Any], **kw: Any) -> threading.Thread:
    def run() -> None:
        try:
            out.append(q.get(**kw))
        except queue.Empty:
            out.append("empty")

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_items_come_out_in_order_and_an_empty_queue_says_so() -> None:
    q = _Queue(nap=0.0)
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(timeout=0)
    call = object()
    for it in (_item(0), call, _item(1)):
        q.put(it)
    assert q.qsize() == 3
    assert [q.get().step, q.get(), q.get_nowait().step] == [0, call, 1]
    assert q.qsize() == 0


def test_a_record_for_a_sleeping_writer_wakes_it() -> None:
    q = _Queue(nap=0.0)  # no nap: the getter sleeps at once
    out: list[Any] = []
    t = _getter(q, out)
    q.put(_item(7))
    t.join(60)
    assert not t.is_alive() and out[0].step == 7


def test_a_call_wakes_a_napping_writer_and_records_queued_meanwhile_follow() -> None:
    q = _Queue(nap=3600.0)  # a nap longer than the test: only a wake-up ends it
    out: list[Any] = []
    t = _getter(q, out)
    while q._state != 1:  # napping
        threading.Event().wait(0.001)
    q.put(_item(0))  # a record: the nap goes on
    call = object()
    q.put(call)  # anything else wakes the writer thread
    t.join(60)
    assert not t.is_alive()
    assert out[0].step == 0 and q.get_nowait() is call


def test_a_timed_get_ends_empty() -> None:
    q = _Queue(nap=0.0)
    out: list[Any] = []
    t = _getter(q, out, timeout=0.01)
    t.join(60)
    assert out == ["empty"]


def test_where_formats_the_layers_next_step_when_asked() -> None:
    e = LayerEntry("m", "l", Schema(), None, 3)
    assert str(e.where) == f"{e.where}" == "monitor 'm', layer 'l', step 3"
    e.next_step = 4
    assert f"at {e.where:>5}" == "at monitor 'm', layer 'l', step 4"


def test_errors_still_name_monitor_layer_and_step(tmp_path: Path) -> None:
    with spikestore.StoreWriter(tmp_path / "s") as w:
        w.append("m", "a", torch.ones(3))
        w.append("m", "a", torch.ones(3))
        with pytest.raises(RecordError, match=r"monitor 'm', layer 'a', step 2.*rank"):
            w.append("m", "a", torch.ones(3, 1))
        for bad in ("x", 99, True):
            with pytest.raises(RecordError, match=r"monitor 'm', layer 'a', step 2: .*time_axis"):
                w.append("m", "a", torch.ones(3), time_axis=bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"monitor 'm', layer 'b', step 0"):
            w.append("m", "b", "text")
        assert w.append("m", "a", torch.ones(3)) == 2


def test_a_monitors_error_names_monitor_layer_and_step(tmp_path: Path) -> None:
    net = torch.nn.Sequential(torch.nn.Identity())
    with OutputMonitor(net, torch.nn.Identity, store=tmp_path / "s") as mon:
        net(torch.ones(2, 4))
        with pytest.raises(RecordError, match=r"monitor 'output', layer '0', step 1"):
            net(torch.ones(2, 4, 1))
        net(torch.zeros(2, 4))
        assert len(mon.records) == 2 and torch.equal(mon.records[1], torch.zeros(2, 4))
