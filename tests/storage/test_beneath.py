"""Files below a store's root opened by one ``openat2`` (spikestore/storage/_beneath.py),
and the walk that :func:`~spikestore.storage._localfs.open_file` falls back to: both
refuse every link on the way, and give the same answers."""

from __future__ import annotations

import ctypes
import errno
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch

import spikestore
from spikestore import UnsafeStoreError
from spikestore.storage import _beneath, _localfs

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX links and FIFOs")


def _have_openat2() -> bool:
    with tempfile.TemporaryDirectory() as d:
        Path(d, "f").write_bytes(b"")
        rfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fd = _beneath.open_beneath(rfd, "f", os.O_RDONLY)
        finally:
            os.close(rfd)
    if fd is not None:
        os.close(fd)
    return fd is not None


HAVE_OPENAT2 = sys.platform.startswith("linux") and _have_openat2()


def _tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "f").write_bytes(b"inside")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "f").write_bytes(b"outside")
    return root


def _open(root: Path, path: str) -> bytes | None:
    rfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = _beneath.open_beneath(rfd, path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    finally:
        os.close(rfd)
    if fd is None:
        return None
    try:
        return os.read(fd, 100)
    finally:
        os.close(fd)


@pytest.mark.skipif(not HAVE_OPENAT2, reason="openat2 is missing here (Linux 5.6+)")
def test_open_beneath_opens_files_below_and_no_link_anywhere(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    assert _open(root, "a/b/f") == b"inside"
    (root / "lf").symlink_to(tmp_path / "outside" / "f")  # the file a link
    (root / "ld").symlink_to(tmp_path / "outside")  # a folder a link
    (root / "a" / "in").symlink_to(root / "a" / "b")  # a link that stays inside
    (root / "a" / "rel").symlink_to("b")  # the same, relative
    (root / "a" / "b" / "relf").symlink_to("f")
    paths = ("lf", "ld/f", "a/in/f", "a/rel/f", "a/b/relf", "../outside/f", "a/../../outside/f")
    for path in (*paths, "missing"):
        assert _open(root, path) is None, path
    assert _open(root, str(tmp_path / "outside" / "f")) is None  # absolute


@pytest.fixture(params=["openat2", "walk"])
def path_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "openat2":
        if not HAVE_OPENAT2:
            pytest.skip("openat2 is missing here (Linux 5.6+)")
    else:
        monkeypatch.setattr(_beneath, "_SYSCALL", [None])
    return str(request.param)


def _store(tmp_path: Path) -> Path:
    path = tmp_path / "s"
    with spikestore.StoreWriter(path) as w:
        for i in range(8):
            w.append("output", "x", torch.full((4, 16), float(i)))
    return path


def _a_chunk_file(path: Path) -> str:
    for dirpath, _dirs, files in os.walk(path / "output" / "x"):
        for name in files:
            if "/c" in dirpath.replace(os.sep, "/"):
                return os.path.relpath(os.path.join(dirpath, name), path).replace(os.sep, "/")
    raise AssertionError("no chunk file")


def _spy_on_openat2(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths ``_localfs`` asks ``open_beneath`` for, from now on."""
    calls: list[str] = []
    real = _beneath.open_beneath

    def spy(dirfd: int, rel: str, flags: int) -> int | None:
        calls.append(rel)
        return real(dirfd, rel, flags)

    monkeypatch.setattr(_localfs, "open_beneath", spy)
    return calls


def test_open_file_reads_through_either_path_and_refuses_links(
    tmp_path: Path, path_kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _store(tmp_path)
    key = _a_chunk_file(path)
    calls = _spy_on_openat2(monkeypatch)
    want = (path / key).read_bytes()
    assert _localfs.read_file(path, key) == want
    # one openat2 for the file; without it, one more for its folder, then the walk
    assert calls == ([key] if path_kind == "openat2" else [key, key.rsplit("/", 1)[0]])
    assert _localfs.read_file(path, key + "-missing") is None
    assert torch.equal(spikestore.open(path)["output"]["x"][5], torch.full((4, 16), 5.0))
    if path_kind == "openat2":
        assert _beneath._SYSCALL[0] is not None  # used, not given up

    # A link planted where a folder or the file was: refused, never followed, even
    # when it points inside the store.
    folder = (path / key).parent
    for target in (tmp_path / "outside", folder.parent / "moved"):
        os.rename(folder, target)
        folder.symlink_to(target if target.parent == tmp_path else target.name)
        with pytest.raises(UnsafeStoreError, match="symbolic link"):
            _localfs.read_file(path, key)
        folder.unlink()
        os.rename(target, folder)
    (path / key).rename(tmp_path / "f")
    (path / key).symlink_to(tmp_path / "f")
    with pytest.raises(UnsafeStoreError, match="symbolic link"):
        _localfs.read_file(path, key)
    (path / key).unlink()
    os.mkfifo(path / key)
    with pytest.raises(UnsafeStoreError, match="FIFO"):
        _localfs.read_file(path, key)


def test_a_system_that_refuses_openat2_walks_from_then_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSYS (an old kernel) or EPERM (a sandbox's filter) turns the call off; a
    missing file or a link does not (then the file's folder is tried, then walked)."""
    path = _store(tmp_path)
    key = _a_chunk_file(path)
    for code, off in ((errno.ENOENT, False), (errno.ELOOP, False), (errno.ENOSYS, True)):
        calls: list[Any] = []

        def refuse(*args: Any, code: int = code, calls: list[Any] = calls) -> int:
            calls.append(args)
            ctypes.set_errno(code)
            return -1

        monkeypatch.setattr(_beneath, "_SYSCALL", [refuse])
        assert _localfs.read_file(path, key) == (path / key).read_bytes()  # walked
        assert _localfs.read_file(path, key) == (path / key).read_bytes()
        assert len(calls) == (1 if off else 4)
        assert (_beneath._SYSCALL[0] is None) == off


def test_folders_are_opened_by_openat2_made_by_the_walk_and_never_through_a_link(
    tmp_path: Path, path_kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``_dir`` (what writes and listings use off the writer thread): a folder that is
    there comes from one ``openat2``; a missing one is made by the walk; a link on the
    way is refused either way."""
    root = tmp_path / "root"
    root.mkdir()
    calls = _spy_on_openat2(monkeypatch)
    _localfs.write_file(root, "a/b/c/f", [b"one"])  # folders made by the walk
    assert (root / "a" / "b" / "c" / "f").read_bytes() == b"one"
    _localfs.write_file(root, "a/b/c/f", [b"two"])  # folder there: openat2
    assert (root / "a" / "b" / "c" / "f").read_bytes() == b"two"
    assert calls.count("a/b/c") == 2
    assert _localfs.list_dir(root, "a/b/c") == ["f"]
    (tmp_path / "outside").mkdir()
    os.rename(root / "a" / "b", root / "a" / "moved")
    (root / "a" / "b").symlink_to("moved")
    for call in (
        lambda: _localfs.write_file(root, "a/b/c/g", [b"x"]),
        lambda: _localfs.list_dir(root, "a/b/c"),
        lambda: _localfs.read_file(root, "a/b/c/f"),
    ):
        with pytest.raises(UnsafeStoreError, match="symbolic link"):
            call()
    assert sorted(os.listdir(root / "a" / "moved" / "c")) == ["f"]


def test_a_key_with_a_nul_character_is_refused(tmp_path: Path, path_kind: str) -> None:
    """A C string ends at NUL: ``"a\\x00junk"`` must not read ``a`` (the walk's
    ``os.open`` refused it; ``openat2`` through ctypes would have cut the key)."""
    root = _tree(tmp_path)
    (root / "a" / "x").write_bytes(b"x")
    for key in ("a/x\x00junk", "a/x\x00.partial", "a\x00zz/x", "a/b\x00/f"):
        with pytest.raises(ValueError, match="NUL"):
            _localfs.read_file(root, key)
        with pytest.raises(ValueError, match="NUL"):
            _localfs.list_dir(root, key)
    rfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert _beneath.open_beneath(rfd, "a/x\x00junk", os.O_RDONLY) is None
    finally:
        os.close(rfd)


def test_a_missing_root_reads_as_a_missing_file(tmp_path: Path, path_kind: str) -> None:
    """As before ``openat2``: no store folder (yet) means no file, not an error."""
    root = tmp_path / "nothing"
    assert _localfs.read_file(root, "a/b/zarr.json") is None
    with _localfs.open_file(root, "zarr.json") as f:
        assert f is None
    assert _localfs.list_dir(root, "a") == []
