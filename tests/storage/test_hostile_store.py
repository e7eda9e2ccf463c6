"""A store folder is untrusted input: links and special files planted in it.

Every kind of node of a real store (the lock file, the root metadata, monitor, layer
and field folders, index, segment, shard, tail and summary arrays, their chunk
folders and chunk files) is replaced in turn by a symbolic link to a copy outside the
store; then every operation (open and read everything, ``spikestore info``, append
with ``mode="a"``, replace with ``mode="w"``, a new writer without a mode) runs, and
the link's target is checked byte for byte after each: nothing outside the store is
ever written, truncated or deleted, whatever the operation says.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import spikestore
from spikestore import FormatError, ReadError, UnsafeStoreError, cli
from spikestore.format import LOCK_FILE, MAX_NODE_METADATA_BYTES
from spikestore.storage._localfs import remove

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX links and FIFOs")


def _snapshot(top: Path) -> dict[str, str]:
    """Every entry under ``top`` (links as links): relative path -> content hash or kind."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = str(p.relative_to(top))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _make_store(path: Path) -> None:
    """A store with shards (a closed first run) and tails and a lock file (a second
    run whose process ends without closing), two monitors, spikes and floats."""
    with spikestore.StoreWriter(path) as w:
        for _ in range(40):
            w.append("output", "sn1", (torch.rand(2, 8) < 0.3).float())
            w.append("output", "sn2", torch.randn(3))
            w.append("v", "sn1", torch.randn(2, 8))
    script = textwrap.dedent(
        f"""
        import os, torch, spikestore
        w = spikestore.StoreWriter({str(path)!r}, mode="a")
        for t in range(5):
            w.append("output", "sn1", (torch.rand(2, 8) < 0.3).float())
            w.append("v", "sn1", torch.randn(2, 8))
        w.flush()
        os._exit(0)
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)


def _kinds(store: Path) -> dict[str, Path]:
    """One node of each kind: its relative path with numbers and names generalised."""
    kinds: dict[str, Path] = {}
    for p in sorted(store.rglob("*")):
        rel = str(p.relative_to(store))
        kind = re.sub(r"\d+", "#", rel)
        kind = re.sub(r"^(output|v)(/sn#)?", "M/L", kind)
        kinds.setdefault(kind, p)
    return kinds


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pristine") / "s.spikes"
    _make_store(path)
    return path


def _operations(path: Path) -> list[tuple[str, object]]:
    def read_all() -> None:
        s = spikestore.open(path)
        for m in s:
            for name in s[m]:
                layer = s[m][name]
                layer[:]
                layer.nbytes_stored()

    def info() -> None:
        cli.main(["info", str(path)])

    def append() -> None:
        with spikestore.StoreWriter(path, mode="a") as w:
            for _ in range(3):
                w.append("output", "sn1", (torch.rand(2, 8) < 0.3).float())
                w.append("v", "sn1", torch.randn(2, 8))
                w.append("new", "x", torch.randn(4))

    def new_writer() -> None:
        with spikestore.StoreWriter(path) as w:
            w.append("output", "sn1", torch.ones(2, 8))

    def replace() -> None:
        with spikestore.StoreWriter(path, mode="w") as w:
            w.append("output", "sn1", torch.ones(2, 8))
            w.append("v", "sn1", torch.randn(2, 8))

    return [
        ("read", read_all),
        ("info", info),
        ("append", append),
        ("new writer", new_writer),
        ("replace", replace),
    ]


def test_links_at_every_kind_of_node_never_touch_their_targets(pristine, tmp_path):
    kinds = _kinds(pristine)
    assert {
        "zarr.json",
        LOCK_FILE,
        "M/L",
        "M/L/f#",
        "M/L/f#/index",
        "M/L/f#/s#",
        "M/L/f#/s#t#",
        "M/L/f#/s#/c/#/#",
    } <= set(kinds), sorted(kinds)
    for n, (kind, node) in enumerate(sorted(kinds.items())):
        case = tmp_path / f"case{n}"
        store = case / "s.spikes"
        shutil.copytree(pristine, store, symlinks=True)
        outside = case / "outside"
        outside.mkdir()
        rel = node.relative_to(pristine)
        target = outside / "target"
        planted = store / rel
        if planted.is_dir():
            shutil.copytree(planted, target)
            shutil.rmtree(planted)
        else:
            shutil.copy2(planted, target)
            planted.unlink()
        planted.symlink_to(target)
        before = _snapshot(outside)
        for what, op in _operations(store):
            try:
                op()
            except (OSError, ValueError, RuntimeError):
                pass  # refusing is fine; what counts is the target, checked next
            assert _snapshot(outside) == before, f"{what} with {kind} a link changed its target"


@pytest.mark.parametrize("mode", [None, "a", "w"])
def test_lock_file_linked_to_a_users_file_is_refused_and_left_alone(pristine, tmp_path, mode):
    store = tmp_path / "s.spikes"
    if mode is None:  # a folder holding only the planted lock file: a new store's place
        store.mkdir()
    else:
        shutil.copytree(pristine, store, symlinks=True)
        (store / LOCK_FILE).unlink()
    precious = tmp_path / "thesis.tex"
    precious.write_bytes(b"\\chapter{Results}\n" * 100)
    (store / LOCK_FILE).symlink_to(precious)
    with pytest.raises(UnsafeStoreError, match="symbolic link"):
        spikestore.StoreWriter(store, mode=mode)
    assert precious.read_bytes() == b"\\chapter{Results}\n" * 100


def test_lock_file_hard_linked_to_a_users_file_is_refused(pristine, tmp_path):
    store = tmp_path / "s.spikes"
    shutil.copytree(pristine, store, symlinks=True)
    precious = tmp_path / "notes.txt"
    precious.write_bytes(b"keep me")
    (store / LOCK_FILE).unlink()
    os.link(precious, store / LOCK_FILE)
    with pytest.raises(UnsafeStoreError, match="hard link"):
        spikestore.StoreWriter(store, mode="a")
    assert precious.read_bytes() == b"keep me"


def test_append_through_linked_monitor_folder_is_refused(pristine, tmp_path):
    store = tmp_path / "s.spikes"
    shutil.copytree(pristine, store, symlinks=True)
    elsewhere = tmp_path / "elsewhere"
    shutil.move(store / "output", elsewhere)
    (store / "output").symlink_to(elsewhere)
    before = _snapshot(elsewhere)
    with pytest.raises(UnsafeStoreError, match="symbolic link"):
        spikestore.StoreWriter(store, mode="a")
    with pytest.raises((FormatError, ReadError), match="symbolic link"):
        spikestore.open(store)["output"]["sn1"][0]
    assert _snapshot(elsewhere) == before


def _run(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spikestore", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    "where",
    [
        "zarr.json",
        "output/zarr.json",
        "output/sn1/f0/zarr.json",
        "output/sn1/f0/s0t0/c/0/0",
        "output/sn1/f0/index/c/0/0",
    ],
)
def test_fifo_in_a_store_is_refused_without_hanging(pristine, tmp_path, where):
    store = tmp_path / "s.spikes"
    shutil.copytree(pristine, store, symlinks=True)
    (store / where).unlink()
    os.mkfifo(store / where)
    r = _run(["info", str(store)])  # hung forever before
    if "/c/" in where:  # info reads no chunk; export reads them all
        r = _run(["export", str(store), str(tmp_path / "x.nwb")])
    # The root's metadata or a chunk fails the command; a monitor's or a field's leaves
    # that node out with one warning, and the rest is listed.
    assert r.returncode == (0 if where.count("/") in (1, 3) else 1), r
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    # Metadata names the FIFO; a chunk that is not a regular file reads as missing.
    expected = "FIFO" if where.endswith("zarr.json") else "FIFO|missing"
    assert re.search(expected, r.stderr), r.stderr
    with pytest.raises((FormatError, ReadError), match=expected):
        s = spikestore.open(store)
        s["output"]["sn1"][:]


def test_metadata_linked_to_dev_zero_or_huge_is_refused_unread(pristine, tmp_path):
    store = tmp_path / "s.spikes"
    shutil.copytree(pristine, store, symlinks=True)
    meta = store / "output" / "sn1" / "zarr.json"
    meta.unlink()
    meta.symlink_to("/dev/zero")
    with pytest.raises((FormatError, ReadError), match="symbolic link"):
        spikestore.open(store)["output"]["sn1"]
    meta.unlink()
    with open(meta, "wb") as f:  # sparse: a 1 GiB file that takes no disk
        f.truncate(1 << 30)
    with pytest.raises((FormatError, ReadError), match="more than a spikestore writer"):
        spikestore.open(store)["output"]["sn1"]


def test_writer_refuses_metadata_a_reader_would_refuse(tmp_path, monkeypatch):
    from spikestore.storage import _localfs

    monkeypatch.setattr(_localfs, "MAX_METADATA_BYTES", 4096)
    path = tmp_path / "s.spikes"
    with pytest.raises(Exception, match="more than a store may hold"):
        spikestore.StoreWriter(path, attrs={"note": "x" * 8000}).close()


RANK_FOLDER_LINKED = textwrap.dedent(
    """
    import os, sys, torch, torch.distributed as dist
    import spikestore
    store, mode = sys.argv[1], sys.argv[2]
    dist.init_process_group("gloo", init_method=f"file://{sys.argv[3]}", rank=0, world_size=1)
    try:
        with spikestore.StoreWriter(store, mode=None if mode == "none" else mode) as w:
            w.append("output", "sn", torch.zeros(2, 3))
        print("wrote")
    except spikestore.UnsafeStoreError as exc:
        print("refused:", exc)
    dist.destroy_process_group()
    """
)


@pytest.mark.parametrize("mode", ["none", "a", "w"])
@pytest.mark.parametrize("victim_kind", ["store", "empty"])
def test_a_ranked_stores_rank_folder_linked_elsewhere_is_never_followed(
    tmp_path, mode, victim_kind
):
    """A rank's folder is a node of the ranked store: a link in its place (to a user's
    store, or an empty folder) was followed, so mode="w" replaced the store it pointed
    to and mode="a" appended to it."""
    victim = tmp_path / "victim"
    if victim_kind == "store":
        with spikestore.StoreWriter(victim) as w:
            for _ in range(5):
                w.append("output", "sn", torch.ones(4, 8))
    else:
        victim.mkdir()
    before = _snapshot(victim)
    store = tmp_path / "downloaded.spikes"
    store.mkdir()
    (store / "rank00000").symlink_to(victim)
    r = subprocess.run(
        [sys.executable, "-c", RANK_FOLDER_LINKED, str(store), mode, str(tmp_path / "pg")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert "refused:" in r.stdout and "symbolic link" in r.stdout, r.stdout
    assert _snapshot(victim) == before


@pytest.mark.parametrize("arg", ["units", "dims"])
def test_layer_metadata_a_reader_would_refuse_is_refused_at_append(tmp_path, arg):
    """Huge units= or dims= were accepted by append; the writer thread then failed on
    the layer's zarr.json and the other layers' uncommitted steps were lost."""
    path = tmp_path / "s"
    w = spikestore.StoreWriter(path, flush_interval=3600)
    for _ in range(100):
        w.append("output", "good", torch.ones(3))
    huge = {"units": "mV" * (1 << 20)} if arg == "units" else {"dims": ("n" * (2 << 20),)}
    with pytest.raises(spikestore.RecordError, match=r"'v'.*'bad'.*step 0.*metadata"):
        w.append("v", "bad", torch.ones(3), **huge)
    w.close()
    assert len(spikestore.open(path)["output"]["good"]) == 100


SPARSE_READ = textwrap.dedent(
    """
    import sys, spikestore
    try:
        spikestore.open(sys.argv[1])["output"]["sn1"][0]
        print("read")
    except Exception as exc:
        print(type(exc).__name__, str(exc)[:300])
    # VmHWM: this process's own peak (ru_maxrss also counts the parent it forked from).
    peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
    print("maxrss_mb", int(peak.split()[1]) // 1024)
    """
)


def test_a_sparse_chunk_file_is_refused_before_it_is_read(pristine, tmp_path):
    """A step-index chunk truncated to 2 GiB (sparse: 4 KB on disk) was read whole:
    4.3 GiB of memory before its checksum failed. A chunk file longer than any chunk a
    writer writes is refused unread."""
    store = tmp_path / "s.spikes"
    shutil.copytree(pristine, store, symlinks=True)
    with open(store / "output" / "sn1" / "f0" / "index" / "c" / "0" / "0", "r+b") as f:
        f.truncate((1 << 31) - 1)
    r = subprocess.run(
        [sys.executable, "-c", SPARSE_READ, str(store)], capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert "more than a spikestore writer ever writes" in r.stdout, r.stdout + r.stderr
    assert int(r.stdout.split("maxrss_mb")[1]) < 1024, r.stdout


def test_metadata_of_a_node_that_does_not_grow_is_bounded_smaller(pristine, tmp_path):
    """A monitor's or a layer's zarr.json never grows with a run: one of 5 MiB (under
    the root's 64 MiB, parsed at some 25 times its size) is refused unread, and the
    other monitors read."""
    store = tmp_path / "s.spikes"
    shutil.copytree(pristine, store, symlinks=True)
    meta = store / "v" / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["junk"] = [[]] * ((5 << 20) // 4)
    meta.write_text(json.dumps(doc))
    assert meta.stat().st_size > MAX_NODE_METADATA_BYTES
    with pytest.warns(UserWarning, match="more than a spikestore writer ever writes"):
        s = spikestore.open(store)
    assert "v" in s.damaged and len(s["output"]["sn1"]) == 45


def test_replacing_a_store_with_folders_nested_deep_removes_them(pristine, tmp_path):
    """Removal walked a folder tree by recursion, a descriptor per level: a store
    nesting 1,500 folders made mode="w" fail. The links inside are removed, not
    followed."""
    store = tmp_path / "s.spikes"
    shutil.copytree(pristine, store, symlinks=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_bytes(b"x")
    deep = store / "output" / "sn1"
    for _ in range(1500):
        deep = deep / "d"
        os.mkdir(deep)
    (deep / "link").symlink_to(outside)
    try:
        with spikestore.StoreWriter(store, mode="w") as w:
            w.append("output", "sn1", torch.ones(2, 8))
        assert len(spikestore.open(store)["output"]["sn1"]) == 1
        assert not (store / "output" / "sn1" / "d").exists()
        assert (outside / "keep").read_bytes() == b"x"
    finally:  # pytest's own clean-up of old temporary folders recurses per level
        remove(tmp_path, "s.spikes")
