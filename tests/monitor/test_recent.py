"""A monitor's latest records, kept as the writer staged them (no copy in the hook), read
back exactly as the store reads them, and never shared with the caller or the writer."""

from __future__ import annotations

import torch
from torch import nn

import spikestore
from spikestore.monitor import OutputMonitor
from spikestore.testing import same_record


class _Feed(nn.Module):
    """Returns whatever it is given (tuples too): the record under test."""

    def forward(self, x):  # type: ignore[override]
        return x


def _records(seed: int) -> list:
    g = torch.Generator().manual_seed(seed)
    spikes = (torch.rand(4, 2, 3, 5, 5, generator=g) < 0.3).float()
    return [
        spikes,  # multi-step spikes: packed time-last
        spikes.bool(),
        spikes.half(),
        torch.randn(4, 2, 7, generator=g),  # values
        torch.randint(-5, 5, (4, 3), generator=g),
        torch.zeros(4, 0),
        torch.tensor(1.0),
        (spikes[:, 0], None, 3, 2.5, True, torch.randn(4, 6, generator=g)),
        [spikes[:, 1], torch.arange(4.0)],
    ]


def test_recent_records_read_back_as_the_store_reads_them(tmp_path):
    recs = _records(0)
    feeds = nn.Sequential(*[_Feed() for _ in recs])  # a layer for each: dtypes differ
    mon = OutputMonitor(feeds, _Feed, store=tmp_path / "s", time_axis=0)
    for feed, r in zip(feeds, recs, strict=True):
        feed(r)
    assert len(mon._recent) == len(recs)  # all small: every one kept
    kept = list(mon.records)
    again = list(mon.records)  # the same objects on a second read
    assert all(a is b for a, b in zip(kept, again, strict=True))
    mon._recent.clear()
    mon._recent_nbytes = 0
    stored = list(mon.records)  # now from the store
    for want, a, b in zip(recs, kept, stored, strict=True):
        assert same_record(a, want) and same_record(b, want), want
        assert type(a) is type(b)
    mon.close()


def test_a_record_read_back_and_changed_leaves_the_store_alone(tmp_path):
    """The kept values are the writer's own copy: what the reader is handed is a copy of
    it, so changing it in place changes neither the store nor a later read."""
    ident = nn.Identity()
    x = torch.randn(3, 5)
    spikes = (x > 0).float()
    mon = OutputMonitor(ident, nn.Identity, store=tmp_path / "s")
    ident(x)
    ident(spikes)
    for got in (mon.records[0], mon.records[1]):
        got.mul_(7).add_(1)
    mon.close()
    layer = spikestore.open(tmp_path / "s")["output"][""]
    assert torch.equal(layer[0], x) and torch.equal(layer[1], spikes)


def test_an_output_changed_after_the_hook_is_recorded_as_it_was(tmp_path):
    ident = nn.Identity()
    mon = OutputMonitor(ident, nn.Identity, store=tmp_path / "s")
    x = torch.randn(3, 5)
    s = (x > 0).float()
    want_x, want_s = x.clone(), s.clone()
    ident(x)
    ident(s)
    x.zero_()  # the caller reuses its buffers
    s.fill_(1.0)
    assert torch.equal(mon.records[0], want_x) and torch.equal(mon.records[1], want_s)
    mon.close()
    layer = spikestore.open(tmp_path / "s")["output"][""]
    assert torch.equal(layer[0], want_x) and torch.equal(layer[1], want_s)


def test_kept_records_count_their_decoded_bytes(tmp_path):
    """The budget counts a record as the tensor it reads back as (as the copies did), so
    the same records are kept: 40 of [1, 8] float32 spikes in 40 * 32 bytes."""
    ident = nn.Identity()
    mon = OutputMonitor(ident, nn.Identity, store=tmp_path / "s")
    mon.recent_bytes = 40 * 32
    for i in range(100):
        ident(torch.zeros(1, 8) if i % 2 else torch.ones(1, 8))
    assert len(mon._recent) == 40 and mon._recent_nbytes == 40 * 32
    assert sorted(mon._recent)[0] == (0, 60)
    assert torch.equal(torch.cat(mon.records[-40:]), torch.cat(
        [torch.zeros(1, 8) if i % 2 else torch.ones(1, 8) for i in range(60, 100)]))
    mon.close()


def test_a_record_appended_while_records_are_read_is_read_back_later(tmp_path):
    """``records`` read from the store commits and refreshes first; a record the
    recording thread appends meanwhile (after the commit, before the refresh ends)
    must not count as seen: reading it later commits again (it raised IndexError,
    "steps [n] are out of range", from a second thread reading during a run)."""
    net = torch.nn.Sequential(torch.nn.Identity())
    recs = [torch.full((3,), float(i)) for i in range(4)]
    with OutputMonitor(net, torch.nn.Identity, store=tmp_path / "m.spikes") as mon:
        mon.recent_bytes = 0  # every read from the store
        net(recs[0])
        net(recs[1])
        w = mon._writer
        flush = w.flush
        appended = []

        def flush_then_record() -> None:
            flush()
            if not appended:  # the other thread's next record lands now
                appended.append(True)
                net(recs[2])

        w.flush = flush_then_record  # type: ignore[method-assign]
        assert torch.equal(mon.records[1], recs[1])
        del w.flush
        assert appended and len(mon.records) == 3
        assert torch.equal(mon.records[2], recs[2])
        net(recs[3])
        assert [r.tolist() for r in mon.records] == [r.tolist() for r in recs]
