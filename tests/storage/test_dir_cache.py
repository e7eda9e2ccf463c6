"""The writer thread's held folder descriptors (``storage._localfs.DirCache``): what
is written through them lands where a walk from the root would put it, a link that
replaces a held folder is never written through, and a walk never closes a
descriptor that a caller is using."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

from spikestore.storage import _dirs
from spikestore.storage import _localfs as L


@pytest.fixture
def held(tmp_path: Path):
    cache = _dirs.hold_dirs(tmp_path)
    yield cache
    cache.close()


def test_files_written_through_held_folders(tmp_path: Path, held: _dirs.DirCache) -> None:
    for j in range(3):
        L.write_file(tmp_path, f"a/s0/c/{j}/0/0", [b"x" * j, np.arange(3, dtype="<u4")])
    assert held.fds  # the folders are held
    for j in range(3):
        assert (tmp_path / f"a/s0/c/{j}/0/0").read_bytes() == b"x" * j + np.arange(
            3, dtype="<u4"
        ).tobytes()
    assert L.read_file(tmp_path, "a/s0/c/2/0/0") is not None


def test_removed_folder_is_made_again(tmp_path: Path, held: _dirs.DirCache) -> None:
    L.write_file(tmp_path, "a/t/c/0", [b"1"])
    L.remove(tmp_path, "a/t")  # through the module: every cache forgets
    L.write_file(tmp_path, "a/t/c/0", [b"2"])
    assert (tmp_path / "a/t/c/0").read_bytes() == b"2"


def test_removed_by_another_thread_behind_its_back(tmp_path: Path, held: _dirs.DirCache) -> None:
    # Removed without telling any cache (as by another process): the held folder is
    # gone, and the file is made in a folder walked afresh, not lost.
    L.write_file(tmp_path, "a/t/c/0", [b"1"])
    import shutil

    shutil.rmtree(tmp_path / "a/t")
    L.write_file(tmp_path, "a/t/c/0", [b"2"])
    assert (tmp_path / "a/t/c/0").read_bytes() == b"2"


def test_removal_in_another_thread_is_seen(tmp_path: Path, held: _dirs.DirCache) -> None:
    L.write_file(tmp_path, "a/t/c/0", [b"1"])
    t = threading.Thread(target=L.remove, args=(tmp_path, "a/t"))
    t.start()
    t.join()
    L.write_file(tmp_path, "a/t/c/1", [b"2"])
    assert sorted(os.listdir(tmp_path / "a/t/c")) == ["1"]


def test_folder_replaced_by_link_is_not_written_through(
    tmp_path: Path, held: _dirs.DirCache
) -> None:
    store, outside = tmp_path / "store", tmp_path / "outside"
    store.mkdir()
    outside.mkdir()
    held.close()
    cache = _dirs.hold_dirs(store)
    try:
        L.write_file(store, "a/c/0", [b"1"])
        os.rename(store / "a", tmp_path / "moved")
        os.symlink(outside, store / "a")
        # The held folder is the inode verified when it was opened (now moved away):
        # the write goes there, never through the link.
        L.write_file(store, "a/c/1", [b"2"])
        assert os.listdir(outside) == []
        cache.flush()
        # Walked afresh, the link is refused as ever.
        with pytest.raises(L.UnsafeStoreError):
            L.write_file(store, "a/c/2", [b"3"])
        assert os.listdir(outside) == []
    finally:
        cache.close()


def test_nested_walks_never_close_a_folder_in_use(tmp_path: Path, held: _dirs.DirCache) -> None:
    for j in range(_dirs.DirCache.SIZE + 10):
        L.write_file(tmp_path, f"t/c/{j}/0", [b"%d" % j])

    def parts():
        # Reads made while the file is being written (as a shard's tail chunks are):
        # more folders than the cache holds.
        for j in range(_dirs.DirCache.SIZE + 10):
            yield L.read_file(tmp_path, f"t/c/{j}/0")

    L.write_file(tmp_path, "s/c/0/0/0", parts())
    want = b"".join(b"%d" % j for j in range(_dirs.DirCache.SIZE + 10))
    assert (tmp_path / "s/c/0/0/0").read_bytes() == want
    assert len(held.fds) <= _dirs.DirCache.SIZE
    assert not held._pins and not held._orphans


def test_other_threads_do_not_use_the_cache(tmp_path: Path, held: _dirs.DirCache) -> None:
    L.write_file(tmp_path, "a/b/0", [b"1"])
    n = len(held.fds)
    t = threading.Thread(target=L.write_file, args=(tmp_path, "a/c/0", [b"2"]))
    t.start()
    t.join()
    assert len(held.fds) == n


def test_close_releases_every_descriptor(tmp_path: Path) -> None:
    before = len(os.listdir("/proc/self/fd"))
    cache = _dirs.hold_dirs(tmp_path)
    for j in range(5):
        L.write_file(tmp_path, f"a/{j}/b/c", [b"1"])
    cache.close()
    assert len(os.listdir("/proc/self/fd")) == before
    L.write_file(tmp_path, "a/9/b/c", [b"1"])  # no cache now: walked from the root
    assert len(os.listdir("/proc/self/fd")) == before


@pytest.mark.parametrize("sizes", [[0, 5, 0], [3] * 700, [(1 << 20) + 1, 7, 1 << 20]])
def test_parts_gathered_into_writev(tmp_path: Path, sizes: list[int]) -> None:
    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 256, n, dtype=np.uint8) for n in sizes]
    assert L.write_file(tmp_path, "f", parts) == sum(sizes)
    assert (tmp_path / "f").read_bytes() == b"".join(p.tobytes() for p in parts)


def test_short_writev_goes_on(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = os.writev

    def short(fd, views):  # at most 3 bytes a call
        return real(fd, [bytes(memoryview(views[0])[:3])])

    monkeypatch.setattr(L.os, "writev", short)
    parts = [b"abcdefg", b"h", b"ijklmnop"]
    L.write_file(tmp_path, "f", parts)
    assert (tmp_path / "f").read_bytes() == b"abcdefghijklmnop"
