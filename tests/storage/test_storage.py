"""The storage layer (spikestore.storage): locks, preparing a directory, durable writes."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import spikestore
from spikestore.format import LOCK_FILE, TRASH_PREFIX
from spikestore.storage import LocalStorage, ZarrStorage, storage_for
from spikestore.testing import bits_equal


def _store(path: Path, layers: tuple[str, ...] = ("a", "b")) -> None:
    with spikestore.StoreWriter(path) as w:
        for name in layers:
            for i in range(3):
                w.append("output", name, torch.full((4,), float(i)))


def test_filesystem_without_locks_gets_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    """ENOLCK/ENOSYS from flock (some network file systems) says what to do."""

    def refuse(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", refuse)
    with pytest.raises(OSError, match="refuses file locks") as ei:
        spikestore.StoreWriter(tmp_path / "s")
    assert ei.value.errno == errno.ENOLCK


def test_trash_left_by_a_killed_clear_is_ignored_and_removed(tmp_path: Path) -> None:
    """A trash folder (a writer killed while replacing a store) neither breaks readers
    nor survives the next writer."""
    path = tmp_path / "s"
    _store(path)
    trash = path / f"{TRASH_PREFIX}0123"
    (trash / "old" / "layer").mkdir(parents=True)
    (trash / "old" / "zarr.json").write_text("{}")
    store = spikestore.open(path)
    assert store.monitors == ["output"] and len(store["output"]["a"]) == 3
    with spikestore.StoreWriter(path, mode="a") as w:
        w.append("output", "a", torch.zeros(4))
    assert not trash.exists()
    assert len(spikestore.open(path)["output"]["a"]) == 4


def test_store_whose_root_metadata_an_older_writer_lost_is_replaceable(tmp_path: Path) -> None:
    """spikestore 0.2 deleted the root zarr.json first when replacing a store; a run killed
    then left monitor groups and the lock file only. mode="w" replaces that."""
    path = tmp_path / "s"
    _store(path)
    (path / "zarr.json").unlink()
    with pytest.raises(spikestore.FormatError):
        spikestore.open(path)
    with spikestore.StoreWriter(path, mode="w") as w:
        w.append("output", "new", torch.ones(2))
    assert spikestore.open(path)["output"].layers == ["new"]


def test_folder_with_other_files_is_never_cleared(tmp_path: Path) -> None:
    """A folder holding anything that is not a spikestore node is refused in every mode."""
    path = tmp_path / "s"
    _store(path)
    (path / "zarr.json").unlink()
    (path / "notes.txt").write_text("mine")
    for mode in ("w", "a"):
        with pytest.raises(FileExistsError, match="not a spikestore store"):
            spikestore.StoreWriter(path, mode=mode)
    assert (path / "notes.txt").read_text() == "mine"
    assert (path / "output").is_dir()


def test_appending_to_a_newer_major_version_is_refused_before_anything(tmp_path: Path) -> None:
    path = tmp_path / "s"
    _store(path)
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["spikestore"]["version"] = "2.0"
    (path / "zarr.json").write_text(json.dumps(meta))
    before = sorted(p.relative_to(path) for p in path.rglob("*"))
    with pytest.raises(spikestore.FormatError, match=r"format 2\.0"):
        spikestore.StoreWriter(path, mode="a")
    assert sorted(p.relative_to(path) for p in path.rglob("*")) == before


def test_lock_is_released_by_its_owner_only(tmp_path: Path) -> None:
    """release() in a process other than the owner leaves the lock held."""
    st = LocalStorage(tmp_path / "s")
    st.open("w")
    assert st.owned
    pid = os.fork()
    if pid == 0:  # the child: releasing must not unlock the parent
        st.release()
        os._exit(0)
    os.waitpid(pid, 0)
    with pytest.raises(spikestore.StoreLockedError):
        LocalStorage(tmp_path / "s").open("a")
    st.release()
    other = LocalStorage(tmp_path / "s")
    other.open("a")
    other.release()
    assert (tmp_path / "s" / LOCK_FILE).exists()


def test_one_writer_per_zarr_store_object(tmp_path: Path) -> None:
    from zarr.storage import MemoryStore

    store = MemoryStore()
    with spikestore.StoreWriter(store=store) as w:
        w.append("m", "l", torch.ones(3))
        with pytest.raises(spikestore.StoreLockedError):
            spikestore.StoreWriter(store=store, mode="a")
    with spikestore.StoreWriter(store=store, mode="a") as w:
        assert w.append("m", "l", torch.ones(3)) == 1
    assert bits_equal(spikestore.open(store=store)["m"]["l"][1], torch.ones(3))


def test_storage_for_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        storage_for(None, None, durable=False)
    with pytest.raises(ValueError, match="durable"):
        storage_for(None, object(), durable=True)
    assert isinstance(storage_for(tmp_path, None, durable=True), LocalStorage)
    assert isinstance(storage_for(None, object(), durable=False), ZarrStorage)


def test_durable_store_fsyncs_data_before_the_commit(tmp_path: Path, monkeypatch) -> None:
    """With durable=True every file is fsync-ed (then its directory) before the commit
    (the field's zarr.json) is written."""
    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    path = tmp_path / "s"
    with spikestore.StoreWriter(path, durable=True, flush_interval=3600) as w:
        w.append("output", "a", torch.ones(8))
        w.flush()
        start = len(synced)
        for i in range(5):
            w.append("output", "a", torch.full((8,), float(i)))
        w.flush()
    flush = synced[start:]
    field_meta = str(path / "output" / "a" / "f0" / "zarr.json")
    commits = [i for i, p in enumerate(flush) if p.startswith(field_meta)]
    data = [i for i, p in enumerate(flush) if "/c/" in p or "/c." in p]
    assert commits and data, flush
    assert max(data) < commits[-1]
    assert any(os.path.isdir(p) for p in flush)
    assert bits_equal(spikestore.open(path)["output"]["a"][5], torch.full((8,), 4.0))


def test_replacing_a_store_keeps_the_users_other_files(tmp_path: Path) -> None:
    """mode="w" replaces the store's monitors only; files of the user's in its root stay."""
    path = tmp_path / "s"
    _store(path)
    (path / "NOTES.txt").write_text("mine")
    (path / "plots").mkdir()
    (path / "plots" / "fig.png").write_bytes(b"png")
    with spikestore.StoreWriter(path, mode="w") as w:
        w.append("output", "new", torch.ones(2))
    assert (path / "NOTES.txt").read_text() == "mine"
    assert (path / "plots" / "fig.png").read_bytes() == b"png"
    assert spikestore.open(path)["output"].layers == ["new"]


def test_a_folder_of_trash_lookalikes_is_not_adopted(tmp_path: Path) -> None:
    """A folder holding only a user's folder named like spikestore's trash is no store."""
    path = tmp_path / "s"
    (path / f"{TRASH_PREFIX}mine").mkdir(parents=True)
    (path / f"{TRASH_PREFIX}mine" / "data.txt").write_text("mine")
    for mode in ("a", "w"):
        with pytest.raises(FileExistsError):
            spikestore.StoreWriter(path, mode=mode)
    assert (path / f"{TRASH_PREFIX}mine" / "data.txt").read_text() == "mine"
    assert sorted(x.name for x in path.iterdir()) == [f"{TRASH_PREFIX}mine"]


def test_store_with_damaged_root_metadata_is_replaceable_not_appendable(tmp_path: Path) -> None:
    """A damaged root zarr.json: mode="a" says what is wrong, mode="w" replaces the store."""
    path = tmp_path / "s"
    _store(path)
    (path / "zarr.json").write_text("{not json")
    with pytest.raises(spikestore.FormatError, match="root metadata"):
        spikestore.StoreWriter(path, mode="a")
    with spikestore.StoreWriter(path, mode="w") as w:
        w.append("output", "new", torch.ones(2))
    assert spikestore.open(path)["output"].layers == ["new"]


def test_a_writer_that_fails_to_open_leaves_no_lock_file(tmp_path: Path, monkeypatch) -> None:
    """A constructor that fails after taking the lock (here: the root cannot be opened)
    releases it and removes the lock file it made; a retry is not refused."""
    import spikestore.writer as writer_module

    def fail(*args, **kwargs):
        raise RuntimeError("cannot open the root")

    monkeypatch.setattr(writer_module, "open_root", fail)
    path = tmp_path / "s"
    with pytest.raises(RuntimeError, match="cannot open the root"):
        spikestore.StoreWriter(path)
    assert not (path / LOCK_FILE).exists()
    monkeypatch.undo()
    with spikestore.StoreWriter(path) as w:
        w.append("m", "l", torch.ones(1))


# ------------------------------------------------------ stores passed in, prefixes, leases
def test_prefixed_store_keeps_keys_under_its_prefix() -> None:
    """prefixed() on a store without a root of its own wraps it: every operation
    stays under the prefix, and a writer and reader work through it."""
    from zarr.core.sync import sync
    from zarr.storage import MemoryStore

    from spikestore.storage import PrefixStore, prefixed

    base = MemoryStore()
    sub = prefixed(base, "rank00003")
    assert isinstance(sub, PrefixStore) and prefixed(sub, "x").prefix == "rank00003/x"
    with spikestore.StoreWriter(store=sub) as w:
        w.append("m", "l", torch.ones(3))

    async def keys(store, prefix=None):
        it = store.list() if prefix is None else store.list_dir(prefix)
        return sorted([k async for k in it])

    assert all(k.startswith("rank00003/") for k in sync(keys(base)))
    assert sync(keys(sub, "")) == ["m", "zarr.json"]
    assert bits_equal(spikestore.open(store=sub)["m"]["l"][0], torch.ones(3))
    sync(sub.delete_dir("m"))
    assert sync(keys(sub)) == ["zarr.json"]


def test_prefixed_rebuilds_local_and_wrapped_stores(tmp_path: Path) -> None:
    from zarr.storage import LocalStore

    from spikestore.storage import prefixed
    from spikestore.testing import FullDiskStore

    sub = prefixed(LocalStore(tmp_path), "a/b")
    assert isinstance(sub, LocalStore) and Path(sub.root) == tmp_path / "a" / "b"
    wrapped = prefixed(FullDiskStore(LocalStore(tmp_path)), "r1")
    assert isinstance(wrapped, FullDiskStore) and Path(wrapped._store.root) == tmp_path / "r1"
    with pytest.raises(ValueError):
        prefixed(LocalStore(tmp_path), "../up")


def test_stores_passed_in_get_a_lease_unless_in_memory(tmp_path: Path) -> None:
    from zarr.storage import LocalStore, MemoryStore

    from spikestore.storage import ObjectStorage
    from spikestore.testing import FullDiskStore

    assert isinstance(storage_for(None, MemoryStore(), durable=False), ZarrStorage)
    assert isinstance(storage_for(None, FullDiskStore(MemoryStore()), durable=False), ZarrStorage)
    assert isinstance(storage_for(None, LocalStore(tmp_path), durable=False), ObjectStorage)
    assert isinstance(storage_for(f"file://{tmp_path}/x", None, durable=True), LocalStorage)
    with pytest.raises(ValueError, match="storage_options"):
        storage_for(tmp_path, None, durable=False, storage_options={"anon": True})


def test_lease_on_a_store_passed_in(tmp_path: Path) -> None:
    """Two processes could open the same LocalStore object: a lease, not flock, guards
    it. A live lease refuses; a released one is taken at once; an expired one after
    its timeout; the holder that lost it is fenced."""
    from zarr.storage import LocalStore

    from spikestore.storage._lease import Lease

    store = LocalStore(tmp_path / "s")
    w = spikestore.StoreWriter(store=store, lease_timeout=2.0)
    w.append("m", "l", torch.ones(2))
    w.flush()
    with pytest.raises(spikestore.StoreLockedError, match="open for writing"):
        spikestore.StoreWriter(store=LocalStore(tmp_path / "s"), mode="a")
    lease = w._storage.lease
    lease._stop.set()  # the holder stops renewing (as if frozen)
    lease._thread.join()
    time.sleep(2.1)  # the lease ages past its 2 s timeout
    other = Lease(LocalStore(tmp_path / "s"), "other", timeout=5)
    other.acquire()
    w.append("m", "l", torch.zeros(2))
    with pytest.raises(spikestore.WriteError, match="lease lost"):
        w.flush()
    with pytest.raises(spikestore.WriteError):
        w.close()
    assert len(spikestore.open(tmp_path / "s")["m"]["l"]) == 1
    other.release()
    with spikestore.StoreWriter(store=LocalStore(tmp_path / "s"), mode="a") as w2:
        assert w2.append("m", "l", torch.zeros(2)) == 1


def test_caching_store_answers_reads_of_what_it_wrote() -> None:
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync
    from zarr.storage import MemoryStore

    from spikestore.storage import CachingStore
    from spikestore.testing import RequestCountingStore

    inner = RequestCountingStore(MemoryStore())
    cache = CachingStore(inner, max_bytes=64)
    proto = default_buffer_prototype()
    sync(cache.set("a", proto.buffer.from_bytes(b"x" * 8)))
    sync(cache.set("big", proto.buffer.from_bytes(b"y" * 9)))  # over max_bytes / 8: not kept
    inner.reset()
    assert sync(cache.get("a", proto)).to_bytes() == b"x" * 8
    assert sync(cache.get("big", proto)).to_bytes() == b"y" * 9
    assert inner.counts == {"get": 1}
    sync(cache.delete_dir(""))
    assert sync(cache.get("a", proto)) is None


def test_writer_that_lost_its_lease_leaves_the_new_holders_chunks_alone(tmp_path: Path) -> None:
    """A holder frozen past its lease (its renewal thread stopped too) resumes after
    another writer took over and committed into the same open shard: its first write
    is fenced, so the new holder's committed steps stay exact (the fence used to run
    only before the commit point, after the stale writer had rewritten the tail,
    index and summary chunks)."""
    from zarr.storage import LocalStore

    a = spikestore.StoreWriter(store=LocalStore(tmp_path / "s"), lease_timeout=0.5)
    for i in range(3):
        a.append("m", "l", torch.full((4,), float(i)))
    a.flush()
    lease = a._storage.lease
    lease._stop.set()  # frozen: no renewals
    lease._thread.join()
    time.sleep(0.6)  # the lease ages past its 0.5 s timeout
    with spikestore.StoreWriter(store=LocalStore(tmp_path / "s"), mode="a", lease_timeout=5) as b:
        for i in range(3, 6):
            b.append("m", "l", torch.full((4,), float(i)))
    a.append("m", "l", torch.full((4,), -1.0))  # resumed: tries to write step 3 again
    with pytest.raises(spikestore.WriteError, match="lease lost"):
        a.flush()
    with pytest.raises(spikestore.WriteError):
        a.close()
    layer = spikestore.open(tmp_path / "s")["m"]["l"]
    assert len(layer) == 6
    for i in range(6):
        assert torch.equal(layer[i], torch.full((4,), float(i)))


def test_hostile_lease_objects(tmp_path: Path) -> None:
    """Lease objects planted in the store: a stale one at the last 10-digit generation
    is taken over (generation 10**10 is still a generation), a heartbeat from the
    future says the clocks disagree, and a huge timeout cannot lock a store for ages."""
    import json as _json
    import re

    from zarr.storage import LocalStore

    root = tmp_path / "s"
    lease_dir = root / ".spikestore-lease"
    lease_dir.mkdir(parents=True)
    stale = {"holder": "x", "heartbeat": time.time() - 100, "timeout": 1, "released": False}
    (lease_dir / "9999999999").write_text(_json.dumps(stale))
    with spikestore.StoreWriter(store=LocalStore(root), lease_timeout=0.3) as w:
        for i in range(3):
            w.append("m", "l", torch.full((2,), float(i)))
            w.flush()
            time.sleep(0.2)  # renewals see their own generation
    assert len(spikestore.open(root)["m"]["l"]) == 3
    future = {"holder": "y", "heartbeat": time.time() + 3600, "timeout": 30, "released": False}
    (lease_dir / "10000000001").write_text(_json.dumps(future))
    with pytest.raises(spikestore.StoreLockedError, match="in the future: the hosts' clocks"):
        spikestore.StoreWriter(store=LocalStore(root), mode="a")
    huge = {"holder": "z", "heartbeat": time.time(), "timeout": 1e300, "released": False}
    (lease_dir / "10000000002").write_text(_json.dumps(huge))
    with pytest.raises(spikestore.StoreLockedError) as ei:
        spikestore.StoreWriter(store=LocalStore(root), mode="a")
    wait = float(re.search(r"wait ([0-9.]+) s", str(ei.value)).group(1))  # type: ignore[union-attr]
    assert wait <= 86400


def test_two_threads_opening_writers_on_one_store_object_get_one_writer(tmp_path: Path) -> None:
    """Regression: ZarrStorage.open checked for a writer of the same store object, read
    the store (mode "w-"), then registered itself, with no lock: two threads opening at
    once both got a writer of one store."""
    import threading

    from zarr.storage import LocalStore, WrapperStore

    class SlowReads(WrapperStore):  # type: ignore[type-arg]
        async def get(self, key, prototype, byte_range=None):  # type: ignore[no-untyped-def]
            if key == "zarr.json":
                time.sleep(0.3)  # both threads are between the check and the register
            return await self._store.get(key, prototype, byte_range)

    store = SlowReads(LocalStore(tmp_path / "s"))
    results: list[Any] = []
    barrier = threading.Barrier(2)

    def open_one() -> None:
        barrier.wait()
        try:
            results.append(spikestore.StoreWriter(store=store))
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    writers = [r for r in results if isinstance(r, spikestore.StoreWriter)]
    errors = [r for r in results if not isinstance(r, spikestore.StoreWriter)]
    for w in writers:
        w.close()
    assert len(writers) == 1, results
    assert isinstance(errors[0], spikestore.StoreLockedError), errors
