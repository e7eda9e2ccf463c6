"""Object storage against a real S3-compatible server (moto, on 127.0.0.1): URLs, the
lease that replaces flock, crash safety, and the requests a commit costs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import torch
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import FsspecStore, MemoryStore, ObjectStore

import spikestore
from spikestore import FormatError, StoreLockedError, WriteError
from spikestore.format import CLEARING_KEY, LEASE_DIR
from spikestore.storage import ObjectStorage, is_url, prefixed, storage_for, url_store
from spikestore.testing import (
    RECORDER_LAYERS,
    RequestCountingStore,
    S3Server,
    fixture_records,
    recorder_check,
    recorder_lines,
    recorder_value,
    same_record,
    spawn_recorder,
    wait_for,
)

HERE = Path(__file__).parent
REPO = Path(__file__).parents[2]
BACKENDS = ["obstore", "fsspec"]


@pytest.fixture
def url(s3: S3Server) -> str:
    """A fresh prefix in the server's bucket."""
    return s3.url(f"run-{uuid.uuid4().hex[:12]}")


def _options(s3: S3Server, backend: str = "obstore") -> dict[str, Any]:
    if backend == "obstore":
        return dict(s3.storage_options)
    # An option obstore has no name for sends the URL to s3fs (FsspecStore).
    return {**s3.storage_options, "use_listings_cache": False}


def _keys(s3: S3Server, url: str) -> list[str]:
    store = url_store(url, storage_options=s3.storage_options)

    async def keys() -> list[str]:
        return [k async for k in store.list()]

    return sorted(sync(keys()))


def _read(s3: S3Server, url: str) -> spikestore.StoreReader:
    return spikestore.open(store=url_store(url, storage_options=s3.storage_options, read_only=True))


def _wait_until_the_lease_expires(s3: S3Server, url: str) -> None:
    """Wait until the newest lease's heartbeat is older than its timeout."""
    store = url_store(url, storage_options=s3.storage_options)
    newest = max(k for k in _keys(s3, url) if k.startswith(LEASE_DIR + "/"))
    body = json.loads(sync(store.get(newest, default_buffer_prototype())).to_bytes())
    time.sleep(max(0.0, body["heartbeat"] + body["timeout"] - time.time()) + 0.1)


def _put(store: Any, key: str, data: bytes) -> None:
    sync(store.set(key, default_buffer_prototype().buffer.from_bytes(data)))


# ------------------------------------------------------------------ URLs, stores
def test_url_store_backends(s3: S3Server) -> None:
    assert is_url("s3://b/p") and is_url("file:///tmp/x") and not is_url("/tmp/x")
    assert not is_url(Path("s3:/x"))
    assert isinstance(url_store(s3.url("x"), storage_options=_options(s3)), ObjectStore)
    fs = url_store(s3.url("x"), storage_options=_options(s3, "fsspec"))
    assert isinstance(fs, FsspecStore)
    st = storage_for(s3.url("x"), None, durable=False, storage_options=_options(s3))
    assert isinstance(st, ObjectStorage) and st.default_flush_interval > 1
    with pytest.raises(ValueError, match="durable"):
        storage_for(s3.url("x"), None, durable=True, storage_options=_options(s3))
    # The secret never shows in messages.
    st = storage_for("s3://k:secret@b/p", None, durable=False, storage_options={"anon": True})
    assert "secret" not in st.where


@pytest.mark.parametrize("backend", BACKENDS)
def test_round_trip_every_record_kind(s3: S3Server, url: str, backend: str) -> None:
    records = fixture_records()
    opts = _options(s3, backend)
    with spikestore.StoreWriter(url, storage_options=opts, shard_steps=16) as w:
        assert w.flush_interval == 10.0  # object storage's default
        for (mon, lay), recs in records.items():
            axis = 0 if lay in ("ms.sn", "conv.sn") else None
            for r in recs:
                w.append(mon, lay, r, time_axis=axis)
    reader = spikestore.open(store=url_store(url, storage_options=opts, read_only=True))
    for (mon, lay), recs in records.items():
        got = list(reader[mon][lay])
        assert len(got) == len(recs)
        assert all(same_record(a, b) for a, b in zip(got, recs, strict=True)), (mon, lay)
    # A closed store holds no tails and exactly committed rows, as locally.
    keys = _keys(s3, url)
    assert not [k for k in keys if "/s0t" in k]
    assert any(k.startswith(f"{LEASE_DIR}/") for k in keys)


def test_modes(s3: S3Server, url: str) -> None:
    opts = _options(s3)
    with spikestore.StoreWriter(url, storage_options=opts) as w:
        w.append("old", "a", torch.ones(3))
    with pytest.raises(FileExistsError, match="already exists"):
        spikestore.StoreWriter(url, mode="w-", storage_options=opts)
    with spikestore.StoreWriter(url, mode="a", storage_options=opts) as w:
        assert w.append("old", "a", torch.zeros(3)) == 1
    assert len(_read(s3, url)["old"]["a"]) == 2
    with spikestore.StoreWriter(url, mode="w", storage_options=opts) as w:
        w.append("new", "b", torch.ones(2))
    assert _read(s3, url).monitors == ["new"]
    keys = _keys(s3, url)
    assert not [k for k in keys if k.startswith("old/")]
    assert [k for k in keys if k.startswith(f"{LEASE_DIR}/")]  # "w" keeps the lease


def test_a_prefix_of_other_objects_is_never_cleared(s3: S3Server, url: str) -> None:
    store = url_store(url, storage_options=s3.storage_options)
    _put(store, "notes.txt", b"mine")
    for mode in ("w", "a"):
        with pytest.raises(FileExistsError, match="not a spikestore store"):
            spikestore.StoreWriter(url, mode=mode, storage_options=s3.storage_options)
    assert "notes.txt" in _keys(s3, url)


def test_interrupted_replacement_is_finished_by_the_next_writer(s3: S3Server, url: str) -> None:
    """A writer killed while deleting an old store's monitors (mode="w") leaves a store
    that opens, and a journal that the next writer (any mode) carries out first."""
    opts = _options(s3)
    with spikestore.StoreWriter(url, storage_options=opts) as w:
        w.append("old", "a", torch.ones(3))
        w.append("keep", "a", torch.ones(3))
    store = url_store(url, storage_options=opts)
    # Killed after the journal and the monitor's zarr.json, before its other objects.
    _put(store, CLEARING_KEY, json.dumps({"keys": ["old"]}).encode())
    sync(store.delete("old/zarr.json"))
    assert _read(s3, url).monitors == ["keep"]
    with spikestore.StoreWriter(url, mode="a", storage_options=opts) as w:
        assert w.append("keep", "a", torch.zeros(3)) == 1
    keys = _keys(s3, url)
    assert CLEARING_KEY not in keys and not [k for k in keys if k.startswith("old/")]
    assert len(_read(s3, url)["keep"]["a"]) == 2


def test_prefixed_stores_per_rank(s3: S3Server, url: str) -> None:
    """A sub-store of an S3 store is the S3 store of the longer prefix."""
    base = url_store(url, storage_options=s3.storage_options)
    sub = prefixed(base, "rank00003")
    assert isinstance(sub, ObjectStore)
    with spikestore.StoreWriter(store=sub) as w:
        w.append("m", "l", torch.arange(4))
    assert same_record(_read(s3, f"{url}/rank00003")["m"]["l"][0], torch.arange(4))
    fs = prefixed(url_store(url, storage_options=_options(s3, "fsspec")), "rank00001")
    assert isinstance(fs, FsspecStore) and fs.path.endswith("/rank00001")


# ----------------------------------------------------------------------- lease
def test_second_live_writer_is_refused(s3: S3Server, url: str) -> None:
    opts = _options(s3)
    with spikestore.StoreWriter(url, storage_options=opts) as w:
        w.append("m", "l", torch.ones(2))
        with pytest.raises(StoreLockedError, match=rf"pid {os.getpid()}.*wait \d"):
            spikestore.StoreWriter(url, mode="a", storage_options=opts)
        # Through a store object too (another process would build its own).
        with pytest.raises(StoreLockedError):
            spikestore.StoreWriter(store=url_store(url, storage_options=opts), mode="a")
    # Released on close: the next writer need not wait for the timeout.
    with spikestore.StoreWriter(url, mode="a", storage_options=opts) as w:
        assert w.append("m", "l", torch.ones(2)) == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_expired_lease_goes_to_exactly_one_contender(
    s3: S3Server, url: str, backend: str
) -> None:
    """Contenders that all saw the lease expire race to create the next generation:
    the create-if-absent write (If-None-Match) lets exactly one win."""
    from concurrent.futures import ThreadPoolExecutor

    from spikestore.storage._lease import Lease, create_exclusive

    opts = _options(s3, backend)
    first = Lease(url_store(url, storage_options=opts), "first", timeout=0.5)
    first.acquire()
    first._stop.set()  # it stops renewing: as good as dead
    time.sleep(0.6)  # the lease ages past its 0.5 s timeout
    key = f"{LEASE_DIR}/{2:010d}"

    def contend(i: int) -> bool:
        body = {"holder": f"contender {i}", "heartbeat": time.time(), "timeout": 30}
        data = json.dumps({**body, "released": False}).encode()
        return create_exclusive(url_store(url, storage_options=opts), key, data)

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(contend, range(8))) == 1
    # The holder's fence sees generation 2; a newcomer sees it live (just written).
    with pytest.raises(StoreLockedError, match="lease lost"):
        first.check()
    later = Lease(url_store(url, storage_options=opts), "later", timeout=5)
    with pytest.raises(StoreLockedError):
        later.acquire()


def test_fenced_writer_refuses_to_commit(s3: S3Server, url: str) -> None:
    """A writer whose lease was taken over writes nothing more."""
    opts = _options(s3)
    w = spikestore.StoreWriter(url, storage_options=opts, flush_interval=3600)
    w.append("m", "l", torch.ones(2))
    w.flush()
    gen = w._storage.lease.generation
    store = url_store(url, storage_options=opts)
    body = {"holder": "someone else", "heartbeat": time.time(), "timeout": 30, "released": False}
    _put(store, f"{LEASE_DIR}/{gen + 1:010d}", json.dumps(body).encode())
    before = {k for k in _keys(s3, url) if not k.startswith(LEASE_DIR)}
    w.append("m", "l", torch.zeros(2))
    w.append("m", "other", torch.zeros(2))
    with pytest.raises(WriteError, match="lease lost"):
        w.flush()
    with pytest.raises(WriteError):
        w.close()
    assert {k for k in _keys(s3, url) if not k.startswith(LEASE_DIR)} == before
    assert len(_read(s3, url)["m"]["l"]) == 1
    # The writer did not mark the new holder's lease released.
    newer = sync(store.get(f"{LEASE_DIR}/{gen + 1:010d}", default_buffer_prototype()))
    assert not json.loads(newer.to_bytes())["released"]


def test_forked_child_leaves_the_lease_alone(s3: S3Server, url: str) -> None:
    opts = _options(s3)
    with spikestore.StoreWriter(url, storage_options=opts) as w:
        w.append("m", "l", torch.ones(2))
        pid = os.fork()
        if pid == 0:  # the child: closing its copy must not release the parent's lease
            try:
                w.close()
            finally:
                os._exit(0)
        assert os.waitpid(pid, 0)[1] == 0
        with pytest.raises(StoreLockedError):
            spikestore.StoreWriter(url, mode="a", storage_options=opts)
        w.append("m", "l", torch.ones(2))
    assert len(_read(s3, url)["m"]["l"]) == 2


# ------------------------------------------------------- planted lease objects
def _lease_key(gen: int | str) -> str:
    return f"{LEASE_DIR}/{gen:010d}" if isinstance(gen, int) else f"{LEASE_DIR}/{gen}"


def _body(**fields: Any) -> bytes:
    return json.dumps({"holder": "planted", "released": False, **fields}).encode()


def _writer_when_free(s3: S3Server, url: str, within: float) -> list[str]:
    """Open a writer on ``url`` as soon as its lease lets one in, at most ``within``
    seconds from now, and record a step; the refusals' messages (each checked to be
    one line of bounded length)."""
    refusals: list[str] = []

    def opened() -> bool:
        try:
            w = spikestore.StoreWriter(url, mode="a", storage_options=s3.storage_options)
        except StoreLockedError as exc:
            refusals.append(str(exc))
            return False
        with w:
            w.append("m", "l", torch.ones(2))
        return True

    wait_for(opened, timeout=within, what="the planted lease to expire")
    for text in refusals:
        assert "\n" not in text and len(text) < len(url) + 420, text
    return refusals


#: Planted lease bodies (of the time now) that locked a store for a day or for ever
#: (1e300), or made opening it fail.
_PLANTED = {
    "heartbeat-1e300": lambda now: _body(heartbeat=1e300, timeout=1),
    "heartbeat-a-day-ahead": lambda now: _body(heartbeat=now + 86400, timeout=1),
    "heartbeat-a-minute-ahead": lambda now: _body(heartbeat=now + 60, timeout=1),
    "heartbeat-Infinity": lambda now: (
        b'{"holder": "x", "heartbeat": Infinity, "timeout": 1, "released": false}'
    ),
    "heartbeat-text": lambda now: _body(heartbeat="1e300", timeout=1),
    "timeout-Infinity": lambda now: _body(heartbeat=now, timeout=float("inf")),
    "timeout-text": lambda now: _body(heartbeat=now, timeout="1e300"),
    "huge": lambda now: _body(heartbeat=now, timeout=30, holder="x" * (20 << 10)),
    "deeply-nested": lambda now: b"[" * 100_000,  # past the JSON parser's recursion limit
}


@pytest.mark.parametrize("case", list(_PLANTED))
def test_a_planted_lease_locks_the_store_at_most_its_capped_timeout(
    s3: S3Server, url: str, case: str
) -> None:
    """A lease body is untrusted: a heartbeat ahead of this host's clock beyond the
    clock-skew allowance counts from when the object was written (S3's Last-Modified),
    and a body spikestore would never write is stale at once. Each case locked the
    store for a day or for ever (1e300), or made opening it fail."""
    body = _PLANTED[case](time.time())
    _put(url_store(url, storage_options=s3.storage_options), _lease_key(1), body)
    # Timeout 1 s; Last-Modified has whole seconds, so written up to 1 s before now.
    _writer_when_free(s3, url, within=5.0)
    assert len(_read(s3, url)["m"]["l"]) == 1


def test_a_lease_refusal_is_one_bounded_line(s3: S3Server, url: str) -> None:
    """The holder string is escaped to one line of at most 100 characters; a heartbeat
    of 1e300 is named in a few characters and the wait is at most the skew allowance
    plus the timeout (the message had 917 characters and a wait of 1e300 s)."""
    import re

    store = url_store(url, storage_options=s3.storage_options)
    holder = "pid 1 on evil\nspikestore: error: forged\r\x1b[31m\u202e" + "A" * 5000
    _put(store, _lease_key(1), _body(heartbeat=time.time(), timeout=30, holder=holder))
    with pytest.raises(StoreLockedError) as info:
        spikestore.StoreWriter(url, mode="a", storage_options=s3.storage_options)
    text = str(info.value)
    assert "\n" not in text and "\r" not in text and "\x1b" not in text, text
    assert "\u202e" not in text and "evil\\nspikestore" in text and "\\x1b" in text, text
    assert len(text) < len(url) + 300 and "A" * 101 not in text, text
    _put(store, _lease_key(2), _body(heartbeat=1e300, timeout=30))
    with pytest.raises(StoreLockedError, match="in the future: the hosts' clocks") as info:
        spikestore.StoreWriter(url, mode="a", storage_options=s3.storage_options)
    text = str(info.value)
    assert len(text) < len(url) + 300 and "1e+300 s in the future" in text, text
    from spikestore.storage._lease import CLOCK_SKEW

    wait = float(re.search(r"wait ([0-9.]+) s", text).group(1))  # type: ignore[union-attr]
    assert wait <= 30 + CLOCK_SKEW, text


def test_planted_generation_keys(s3: S3Server, url: str) -> None:
    """Generation keys are ASCII digits, 10 to 30: a 1,000-digit key (the next one
    would be longer than S3 allows, so no writer could open the store) and a key of
    other scripts' digits (int() reads them) are ignored."""
    from spikestore.storage._lease import Lease

    store = url_store(url, storage_options=s3.storage_options)
    live = _body(heartbeat=time.time() + 3600, timeout=3600)
    _put(store, _lease_key("9" * 1000), live)
    _put(store, _lease_key("\u0661" * 10), live)  # ARABIC-INDIC DIGIT ONE
    lease = Lease(url_store(url, storage_options=s3.storage_options), "s", timeout=5)
    lease.acquire()
    try:
        assert lease.generation == 1
        lease.check()
    finally:
        lease.release()


def test_a_planted_lease_expires_in_a_store_without_modification_times() -> None:
    """A store that keeps no modification time (memory): a heartbeat from the future
    counts from when this process first read that body."""
    from spikestore.storage._lease import Lease

    store = MemoryStore()
    _put(store, _lease_key(1), _body(heartbeat=1e300, timeout=0.5))
    with pytest.raises(StoreLockedError, match="in the future"):
        Lease(store, "memory", timeout=5).acquire()

    def taken() -> bool:
        lease = Lease(store, "memory", timeout=5)
        try:
            lease.acquire()
        except StoreLockedError:
            return False
        lease.release()
        return True

    wait_for(taken, timeout=0.5 + 0.5 + 5, what="the planted lease to expire")


def test_a_lease_object_that_is_a_fifo_is_stale(tmp_path: Path) -> None:
    """A lease object in a local store (``store=LocalStore``) that is not a regular
    file is stale, never read: reading a FIFO blocked opening the store for ever."""
    script = f"""
import os, torch, spikestore
from zarr.storage import LocalStore
os.makedirs({str(tmp_path / "s" / LEASE_DIR)!r})
os.mkfifo({str(tmp_path / "s" / LEASE_DIR / "0000000001")!r})
with spikestore.StoreWriter(store=LocalStore({str(tmp_path / "s")!r})) as w:
    w.append("m", "l", torch.ones(2))
print("ok")
"""
    import sys

    res = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr
    assert len(spikestore.open(tmp_path / "s")["m"]["l"]) == 1


# ---------------------------------------------------------------- crash safety
def _spawn(url: str, s3: S3Server, log: Path, *args: str) -> subprocess.Popen:
    options = json.dumps(s3.storage_options)
    return spawn_recorder(url, log, "--storage-options", options, *args, cwd=REPO)


_lines = recorder_lines


def test_sigkill_keeps_committed_steps_and_append_resumes_after_takeover(
    s3: S3Server, url: str, tmp_path: Path
) -> None:
    """A writer SIGKILLed mid-run leaves every committed step exact; its lease blocks a
    new writer until it expires, then mode="a" goes on from what survived."""
    timeout = 3.0
    floor = {f"{m}/{n}": 0 for m, n in RECORDER_LAYERS}
    for k in range(3):
        log = tmp_path / f"log{k}.txt"
        proc = _spawn(
            url, s3, log, "--flush-every", "7", "--flush-interval", "0.2",
            "--lease-timeout", str(timeout), "--mode", "w" if k == 0 else "a",
        )  # fmt: skip

        def flushes(log: Path = log) -> int:
            return len([x for x in _lines(log) if "flushed" in x])

        wait_for(lambda want=2 + k: flushes() >= want, timeout=60, what="recorder flushes")
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL, log.read_text()
        # The dead writer's lease is still fresh: a new writer is refused (at once: the
        # read-back below can take longer than the lease on a loaded machine) ...
        with pytest.raises(StoreLockedError, match="wait"):
            spikestore.StoreWriter(url, mode="a", storage_options=s3.storage_options)
        flushed = [x["flushed"] for x in _lines(log) if "flushed" in x][-1]
        counts = recorder_check(_read(s3, url))
        for key, n in counts.items():
            assert n >= flushed[key] >= floor[key], (key, n, flushed[key])
        floor = counts
        _wait_until_the_lease_expires(s3, url)  # ... then waits it out
    log = tmp_path / "final.txt"
    proc = _spawn(url, s3, log, "--steps", "10", "--flush-every", "5")
    assert proc.wait(120) == 0, log.read_text()
    done = next(x["done"] for x in _lines(log) if "done" in x)
    assert done == {key: n + 10 for key, n in floor.items()}
    assert recorder_check(_read(s3, url)) == done


def test_frozen_writer_is_fenced_after_takeover(s3: S3Server, url: str, tmp_path: Path) -> None:
    """A holder frozen (SIGSTOP) past its lease loses it; resumed, it writes nothing.

    It is stopped while idle (it commits only at its flushes, 2.5 s apart): a holder
    frozen in the middle of a commit's writes can still land them (the documented gap,
    see ``spikestore.storage._lease``), which made this test fail now and then."""
    log = tmp_path / "a.txt"
    proc = _spawn(
        url, s3, log, "--mode", "w", "--flush-every", "5", "--lease-timeout", "1.5",
        "--flush-interval", "1000", "--sleep", "0.5",
    )  # fmt: skip
    try:
        wait_for(lambda: any("flushed" in x for x in _lines(log)), timeout=60, what="flush")
        proc.send_signal(signal.SIGSTOP)
        time.sleep(1.6)  # frozen past its 1.5 s lease timeout
        with spikestore.StoreWriter(url, mode="a", storage_options=s3.storage_options) as w:
            n = w.steps("output", "sn1")
            for step in range(n, n + 3):
                w.append("output", "sn1", recorder_value("output", "sn1", step))
        after = recorder_check(_read(s3, url))
        proc.send_signal(signal.SIGCONT)
        assert proc.wait(60) != 0
        assert "lease lost" in log.read_text()
        assert recorder_check(_read(s3, url)) == after
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_live_reader_sees_new_commits(s3: S3Server, url: str) -> None:
    with spikestore.StoreWriter(url, storage_options=s3.storage_options, flush_interval=3600) as w:
        w.append("m", "l", torch.ones(3))
        w.flush()
        reader = _read(s3, url)
        assert len(reader["m"]["l"]) == 1
        for i in range(5):
            w.append("m", "l", torch.full((3,), float(i)))
        w.flush()
        layer = reader.refresh()["m"]["l"]
        assert len(layer) == 6 and same_record(layer[5], torch.full((3,), 4.0))


# -------------------------------------------------------------------- requests
#: Requests of one field's commit: its tail chunk, index chunk, two summary shards and
#: its zarr.json (the commit point); no reads. (Before: 8 writes and 4 reads.)
COMMIT_WRITES = 5


def _commit_requests(store: RequestCountingStore) -> dict[str, int]:
    w = spikestore.StoreWriter(store=store, flush_interval=3600, shard_steps=64)
    try:
        for _ in range(3):
            w.append("output", "sn", (torch.rand(4, 10) < 0.3).float())
            w.flush()
        store.reset()
        w.append("output", "sn", (torch.rand(4, 10) < 0.3).float())
        w.flush()
        return dict(store.counts)
    finally:
        w.close()


def test_requests_per_field_commit_in_memory() -> None:
    counts = _commit_requests(RequestCountingStore(MemoryStore()))
    assert counts.get("set", 0) <= COMMIT_WRITES and counts.get("get", 0) == 0, counts


def test_requests_per_field_commit_on_s3(s3: S3Server, url: str) -> None:
    """On object storage the fence adds two exists (HEAD) to the commit: before the
    field's first write and before its commit point."""
    counts = _commit_requests(RequestCountingStore(url_store(url, storage_options=_options(s3))))
    assert counts.get("set", 0) <= COMMIT_WRITES and counts.get("get", 0) == 0, counts
    assert counts.get("exists", 0) <= 2 and not counts.get("list"), counts


def test_unreachable_endpoint_says_what_to_check() -> None:
    """obstore's own error (after its retries) comes back as an OSError naming the URL
    and what to check, from the writer and from the reader."""
    opts = {"endpoint_url": "http://127.0.0.1:9", "key": "a", "secret": "b"}
    with pytest.raises(OSError, match=r"s3://nobucket/x: .*check storage_options"):
        spikestore.StoreWriter("s3://nobucket/x", storage_options=opts)
    with pytest.raises(OSError, match=r"s3://nobucket/x: .*check storage_options"):
        spikestore.open("s3://nobucket/x", storage_options=opts)


def test_the_test_server_starts_again_when_its_port_was_taken(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The port chosen for moto can be taken by another process before moto binds it:
    moto exits, and s3_server starts it again on another port."""
    import socket
    import urllib.request

    from spikestore import testing

    taken = socket.socket()
    taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    ports = iter([taken.getsockname()[1]])
    real = testing._free_port
    monkeypatch.setattr(testing, "_free_port", lambda: next(ports, None) or real())
    try:
        with testing.s3_server() as s3:
            assert not s3.endpoint_url.endswith(f":{taken.getsockname()[1]}")
            urllib.request.urlopen(f"{s3.endpoint_url}/{s3.bucket}", timeout=10).close()
    finally:
        taken.close()


def test_a_planted_clearing_journal_deletes_nothing_readers_see(s3: S3Server, url: str) -> None:
    """A journal of an interrupted replacement is untrusted: copied or planted, it must not
    make an appending (or a new) writer delete monitors, or the root metadata, that readers
    still see; only mode="w", which replaces the store anyway, carries it out whole."""
    opts = _options(s3)
    with spikestore.StoreWriter(url, storage_options=opts) as w:
        w.append("precious", "a", torch.ones(3))
    store = url_store(url, storage_options=opts)
    _put(store, CLEARING_KEY, json.dumps({"keys": ["precious", "zarr.json"]}).encode())
    for mode in ("a", None):
        with pytest.raises(FormatError, match=r"replacement of this store .* was interrupted"):
            spikestore.StoreWriter(url, mode=mode, storage_options=opts)
        assert same_record(_read(s3, url)["precious"]["a"][0], torch.ones(3))
    with spikestore.StoreWriter(url, mode="w", storage_options=opts) as w:
        w.append("new", "a", torch.zeros(3))
    assert _read(s3, url).monitors == ["new"]
    assert CLEARING_KEY not in _keys(s3, url)


# ------------------------------------------------ planted last generation keys
def test_a_planted_last_generation_key_leaves_the_store_writable(s3: S3Server, url: str) -> None:
    """A planted generation key of 30 nines (the highest a key can hold) with a released
    body: the next writer took generation 10**30, whose 31-digit key is not a lease key,
    lost its own lease at its first renewal (WriteError, steps lost), and every later
    writer was refused for ever ("another writer took the lease ... first"). Now the
    stale last generation is reset, and writers append and close as usual."""
    opts = s3.storage_options
    with spikestore.StoreWriter(url, storage_options=opts) as w:
        w.append("m", "l", torch.ones(2))
    _put(url_store(url, storage_options=opts), _lease_key("9" * 30), b'{"released": true}')
    for _ in range(2):
        with spikestore.StoreWriter(
            url, mode="a", storage_options=opts, lease_timeout=1, flush_interval=3600
        ) as w:
            for _ in range(3):
                w.append("m", "l", torch.ones(2))
                time.sleep(0.6)  # past timeout / 2: the fence renews, listing the keys
                w.flush()
            gen = w._storage.lease.generation
            assert gen is not None and len(f"{gen:010d}") <= 30
    assert len(_read(s3, url)["m"]["l"]) == 7
    assert _lease_key("9" * 30) not in _keys(s3, url)
    # Listed only as a prefix of another key, it is reset as well.
    _put(url_store(url, storage_options=opts), _lease_key("9" * 30) + "/x", b"{}")
    with spikestore.StoreWriter(url, mode="a", storage_options=opts) as w:
        w.append("m", "l", torch.ones(2))
    assert len(_read(s3, url)["m"]["l"]) == 8
    assert not [k for k in _keys(s3, url) if k.startswith(_lease_key("9" * 30))]


def test_a_planted_run_of_last_generations_is_reset() -> None:
    """A writer takes at most the generation below the last (its successor's key still
    lists, so the fence holds); once a generation at or past it is stale, the run of
    consecutive generations ending there is deleted and the highest below is taken
    over: a live last generation locks the store only for its (capped) timeout, and a
    key spelt otherwise than ``<generation:010d>`` is not a lease."""
    from spikestore.storage._lease import Lease

    store = MemoryStore()
    top = 10**30 - 1  # spikestore.storage._lease.MAX_GENERATION
    _put(store, _lease_key(top - 1), b'{"released": true}')
    zeroth = Lease(store, "memory", timeout=5)
    zeroth.acquire()
    assert zeroth.generation == 1  # top - 1 is reset: a writer never takes the last one
    zeroth.release()
    sync(store.delete(_lease_key(1)))
    _put(store, _lease_key(top - 2), b'{"released": true}')
    first = Lease(store, "memory", timeout=5)
    first.acquire()
    try:
        assert first.generation == top - 1
        first._renew()  # it lists its own key
        first.check()
        _put(store, _lease_key(top), _body(heartbeat=time.time(), timeout=5))
        with pytest.raises(StoreLockedError, match="took over"):
            first.check()  # the fence sees its successor, even at the last generation
    finally:
        first.release()  # lost: it leaves its object as it was
    sync(store.delete(_lease_key(top)))
    _put(store, _lease_key(top - 1), b'{"released": true}')
    _put(store, _lease_key(7), b'{"released": true}')
    _put(store, _lease_key(5), b'{"released": true}')
    _put(store, _lease_key("0" * 20 + "9"), _body(heartbeat=time.time(), timeout=3600))
    second = Lease(store, "memory", timeout=5)
    second.acquire()  # 5, 7 and top - 1 listed: top - 1 is reset, 7 taken over
    try:
        assert (second.previous, second.generation) == (7, 8)
        second._renew()
    finally:
        second.release()
    left = sync(_list(store))
    assert _lease_key(top) not in left and _lease_key(top - 1) not in left, left
    # A live body at the last generation locks the store until its timeout only.
    _put(store, _lease_key(top), _body(heartbeat=time.time(), timeout=0.5))
    with pytest.raises(StoreLockedError, match=f"generation {top}"):
        Lease(store, "memory", timeout=5).acquire()
    time.sleep(0.6)  # the last generation's 0.5 s lease ages out
    third = Lease(store, "memory", timeout=5)
    third.acquire()
    assert third.generation == 9
    third.release()


async def _list(store: Any) -> list[str]:
    return [k async for k in store.list()]
