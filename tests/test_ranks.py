"""Ranked stores: the ranks of a torch.distributed job (gloo on CPU) writing one store.

The jobs run ``tests/ranks_job.py`` in real processes: started by hand with gloo's
``file://`` rendezvous, or under ``torchrun``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import zarr

import spikestore
from spikestore import FormatError, RankedLayerReader, RankedStoreReader
from spikestore.format import rank_key
from spikestore.testing import S3Server, bits_equal

JOB = Path(__file__).with_name("ranks_job.py")
sys.path.insert(0, str(JOB.parent))
from ranks_job import spikes, values  # noqa: E402  (the job's record generators)

TIMEOUT = 120


def run_job(tmp: Path, root: Path, world: int = 2, *args: str, check: bool = True) -> list[int]:
    """Run the job's ranks as separate processes; return their exit codes."""
    out = tmp / "out"
    out.mkdir(exist_ok=True)
    init = tmp / f"init-{time.monotonic_ns()}"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(JOB),
                str(root),
                "--out",
                str(out),
                "--rank",
                str(r),
                "--world",
                str(world),
                "--init",
                str(init),
                *args,
            ],
        )
        for r in range(world)
    ]
    codes = [p.wait(TIMEOUT) for p in procs]
    if check:
        assert codes == [0] * world
    return codes


def appended(tmp: Path, rank: int) -> int:
    f = tmp / "out" / f"appended{rank}"
    return int(f.read_text()) if f.exists() else 0


def check_rank(layer: tuple[Any, Any], rank: int, n: int) -> None:
    """Rank ``rank``'s first ``n`` records of both layers are exactly the job's."""
    sn, fc = layer
    for i in range(n):
        assert bits_equal(sn[i], spikes(rank, i)), (rank, i)
        assert bits_equal(fc[i], values(rank, i)), (rank, i)


def test_ranks_write_one_store(tmp_path: Path) -> None:
    root = tmp_path / "run.spikes"
    run_job(tmp_path, root, 2, "--steps", "6")
    s = spikestore.open(root)
    assert isinstance(s, RankedStoreReader)
    assert s.ranks == [0, 1] and s.world_size == 2
    assert s.version == ".".join(map(str, spikestore.FORMAT_VERSION))
    assert sorted(x for x in os.listdir(root) if x[0] != ".") == [
        "rank00000",
        "rank00001",
        "zarr.json",
    ]
    sn = s["output"]["sn"]
    assert isinstance(sn, RankedLayerReader)
    assert sn.lengths == {0: 6, 1: 6} and len(sn) == 6
    assert sn.time_axis == 0 and sn.batch_axis == 1
    # Side by side: a leading rank axis.
    assert bits_equal(sn[2], torch.stack([spikes(0, 2), spikes(1, 2)]))
    assert bits_equal(
        sn[1:4], torch.stack([torch.stack([spikes(r, i) for i in range(1, 4)]) for r in (0, 1)])
    )
    assert bits_equal(sn[-1], torch.stack([spikes(0, 5), spikes(1, 5)]))
    # One global batch: [T, B0 + B1, N].
    assert bits_equal(sn.concat(3), torch.cat([spikes(0, 3), spikes(1, 3)], dim=1))
    assert bits_equal(
        sn.concat(slice(0, 2)),
        torch.cat([torch.stack([spikes(r, i) for i in range(2)]) for r in (0, 1)], dim=2),
    )
    fc = s["output"]["fc"]
    assert bits_equal(fc.concat(0), torch.cat([values(0, 0), values(1, 0)], dim=0))
    assert bits_equal(
        fc.neuron((1, 2)),
        torch.stack([torch.stack([values(r, i)[1, 2] for i in range(6)]) for r in (0, 1)]),
    )
    # Each rank: an ordinary store, readable with plain zarr too.
    for r in (0, 1):
        rd = s.rank(r)
        assert isinstance(rd, spikestore.StoreReader)
        check_rank((rd["output"]["sn"], rd["output"]["fc"]), r, 6)
        assert bits_equal(sn.layer(r)[4], spikes(r, 4))
    meta = json.loads((root / "zarr.json").read_text())["attributes"]["spikestore"]
    assert meta["ranks"] == {"world_size": 2, "recorded": [0, 1]}
    g = zarr.open_group(str(root / rank_key(1)), mode="r")
    assert g["output/sn"].attrs["spikestore"]["name"] == "sn"
    with pytest.raises(KeyError, match="no store of rank 2"):
        s.rank(2)
    with pytest.raises(FormatError, match="ranked store"):
        spikestore.StoreReader(root)
    # Append: each rank continues its own steps.
    run_job(tmp_path, root, 2, "--steps", "2", "--mode", "a")
    s.refresh()
    assert s["output"]["sn"].lengths == {0: 8, 1: 8}
    assert bits_equal(s["output"]["sn"][6], torch.stack([spikes(0, 0), spikes(1, 0)]))


def test_ranks_option_and_monitor(tmp_path: Path) -> None:
    root = tmp_path / "r0"
    run_job(tmp_path, root, 2, "--steps", "3", "--ranks", "0", "--monitor")
    s = spikestore.open(root)
    assert s.ranks == [0] and s.recorded == [0]
    assert not (root / rank_key(1)).exists()
    assert (tmp_path / "out" / "records0").read_text() == "6"  # 3 steps x 2 layers
    assert (tmp_path / "out" / "records1").read_text() == "0"  # rank 1 recorded nothing
    assert len(s["output"]["sn"]) == 3
    assert bits_equal(s["output"]["fc"][2], values(0, 2)[None])  # one rank: axis of 1


def test_world_size_mismatch_and_plain_store(tmp_path: Path) -> None:
    root = tmp_path / "w"
    with spikestore.StoreWriter(root) as w:  # no process group: a store of one process
        w.append("output", "x", torch.ones(2))
    # Appending ranks to it is refused, and nothing is lost.
    codes = run_job(tmp_path, root, 2, "--steps", "1", "--mode", "a", check=False)
    assert codes != [0, 0]
    assert len(spikestore.open(root)["output"]["x"]) == 1
    # mode="w" replaces it with a ranked store.
    run_job(tmp_path, root, 2, "--steps", "1")
    s = spikestore.open(root)
    assert s.ranks == [0, 1] and "x" not in s["output"]
    assert not (root / "output").exists()
    # A different world size cannot append.
    codes = run_job(tmp_path, root, 3, "--steps", "1", "--mode", "a", check=False)
    assert all(c != 0 for c in codes)
    assert spikestore.open(root)["output"]["sn"].lengths == {0: 1, 1: 1}
    # A folder of other files is never a ranked store's root.
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    codes = run_job(tmp_path, other, 2, "--steps", "1", check=False)
    assert all(c != 0 for c in codes)
    assert sorted(os.listdir(other)) == ["notes.txt"]


def test_killed_rank_leaves_others_exact(tmp_path: Path) -> None:
    root = tmp_path / "k"
    codes = run_job(
        tmp_path,
        root,
        2,
        "--steps",
        "8",
        "--die-rank",
        "1",
        "--die-at",
        "5",
        "--flush-each",
        check=False,
    )
    assert codes[0] == 0 and codes[1] == -signal.SIGKILL
    s = spikestore.open(root)
    sn = s["output"]["sn"]
    assert sn.lengths[0] == 8
    n1 = sn.lengths[1]
    assert n1 == appended(tmp_path, 1) == 5  # each step was flushed before it was counted
    assert len(sn) == n1
    check_rank((s.rank(0)["output"]["sn"], s.rank(0)["output"]["fc"]), 0, 8)
    n = min(n1, len(s.rank(1)["output"]["fc"]))
    check_rank((s.rank(1)["output"]["sn"], s.rank(1)["output"]["fc"]), 1, n)


def test_ranks_on_object_storage(tmp_path: Path, s3: S3Server) -> None:
    """Multi-rank on S3 (moto): each rank's prefix has its own lease; a killed rank's
    committed steps are exact and the other rank's are all there."""
    url = s3.url("ranked-run")
    opts = json.dumps(s3.storage_options)
    codes = run_job(
        tmp_path, url, 2, "--steps", "6", "--options", opts, "--die-rank", "1",
        "--die-at", "4", "--flush-each", check=False,
    )  # fmt: skip
    assert codes[0] == 0 and codes[1] == -signal.SIGKILL
    s = spikestore.open(url, storage_options=s3.storage_options)
    assert isinstance(s, RankedStoreReader) and s.ranks == [0, 1]
    assert s["output"]["sn"].lengths == {0: 6, 1: 4}
    for r, n in ((0, 6), (1, 4)):
        check_rank((s.rank(r)["output"]["sn"], s.rank(r)["output"]["fc"]), r, n)
    assert bits_equal(s["output"]["fc"][3], torch.stack([values(0, 3), values(1, 3)]))
    # The dead rank's lease blocks a new writer of that rank until it times out.
    from spikestore.storage import url_store

    store = url_store(url, storage_options=s3.storage_options)
    keys = set(_list(store))
    assert any(k.startswith("rank00001/.spikestore-lease/") for k in keys)
    # The root's lease (held by rank 0 while it wrote the root) was released.
    roots = [k for k in keys if k.startswith(".spikestore-lease/")]
    assert roots and all(json.loads(_get(store, k))["released"] for k in roots)


def _get(store: Any, key: str) -> bytes:
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    return bytes(sync(store.get(key, default_buffer_prototype())).to_bytes())


def _list(store: Any) -> list[str]:
    from zarr.core.sync import sync

    async def go() -> list[str]:
        return [k async for k in store.list()]

    return sync(go())


def test_process_group_failure_commits_survivors(tmp_path: Path) -> None:
    """A rank dies; the survivor's next collective fails and the process exits with
    that error: what it appended is committed (flush timer far away)."""
    root = tmp_path / "pg"
    codes = run_job(
        tmp_path,
        root,
        2,
        "--steps",
        "50",
        "--collective",
        "--die-rank",
        "1",
        "--die-at",
        "4",
        "--flush-interval",
        "1000",
        check=False,
    )
    assert codes[0] not in (0, -signal.SIGKILL) and codes[1] == -signal.SIGKILL
    s = spikestore.open(root)
    n0 = appended(tmp_path, 0)
    assert 4 <= n0 < 50
    assert s.rank(0)["output"]["sn"].__len__() == n0
    check_rank((s.rank(0)["output"]["sn"], s.rank(0)["output"]["fc"]), 0, n0)


def test_ranks_argument_checked() -> None:
    with pytest.raises(ValueError, match="ranks"):
        spikestore.StoreWriter(store=zarr.storage.MemoryStore(), ranks="some")
    with pytest.raises(TypeError, match="ranks"):
        spikestore.StoreWriter(store=zarr.storage.MemoryStore(), ranks=[0.5])
    # Without torch.distributed, "all" and explicit ranks write a store of one process.
    w = spikestore.StoreWriter(store=zarr.storage.MemoryStore(), ranks=[0])
    assert w.rank is None and w.world_size is None and w.recording
    w.close()


def test_root_written_by_another_rank_meanwhile_is_accepted() -> None:
    """Rank 1 reads no root metadata, then lists the root after rank 0 wrote it: the
    root's zarr.json is not 'a file of someone else's'."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync
    from zarr.storage import MemoryStore, WrapperStore

    from spikestore.format import ranked_root_attrs
    from spikestore.ranks import RankPlan, check_root

    def root_meta(store: Any) -> None:
        attrs = {"node_type": "group", "zarr_format": 3}
        attrs["attributes"] = ranked_root_attrs("test", 2, [0, 1])
        buf = default_buffer_prototype().buffer.from_bytes(json.dumps(attrs).encode())
        sync(store.set("zarr.json", buf))

    class LateRoot(WrapperStore):  # type: ignore[type-arg]
        first = True

        async def get(self, key: str, prototype: Any, byte_range: Any = None) -> Any:
            if key == "zarr.json" and LateRoot.first:
                LateRoot.first = False
                return None  # read before rank 0's write landed
            return await self._store.get(key, prototype, byte_range)

    base = MemoryStore()
    check_root(base, RankPlan(0, 2, (0, 1)), "w", "mem")
    root_meta(base)  # rank 0 writes the root's zarr.json, through a temporary file:
    partial = default_buffer_prototype().buffer.from_bytes(b"{")
    sync(base.set("zarr.a1b2c3.partial", partial))
    check_root(LateRoot(base), RankPlan(1, 2, (0, 1)), "w", "mem")


# ------------------------------------------------- replacing a ranked store's root
def _ranked_root(root: Path, world: int, ranks: list[int]) -> None:
    """A ranked store written rank by rank (as the ranks of a job would)."""
    from spikestore.format import ranked_root_attrs

    for r in ranks:
        with spikestore.StoreWriter(root / rank_key(r), ranks=None) as w:
            w.append("output", "sn", spikes(r, 0))
    meta = {"attributes": ranked_root_attrs("test", world, ranks), "zarr_format": 3}
    (root / "zarr.json").write_text(json.dumps({**meta, "node_type": "group"}))


def _finish(root: Path, plan: Any, mode: str = "w") -> None:
    from zarr.storage import LocalStore

    from spikestore.ranks import check_root, finish_root
    from spikestore.storage import storage_for

    def storage_at(key: str | None) -> Any:
        return storage_for(root / key if key else root, None, durable=False)

    check_root(LocalStore(root), plan, mode, str(root))
    finish_root(LocalStore(root), plan, mode, "test", str(root), storage_at)


def test_replacing_refuses_a_live_plain_writer_at_the_root(tmp_path: Path) -> None:
    """A ranked job must not turn the root of a live store of one process into a
    ranked store (its writer would go on writing records no reader finds)."""
    from spikestore.ranks import RankPlan

    root = tmp_path / "p"
    plain = spikestore.StoreWriter(root, ranks=None)
    plain.append("output", "x", torch.ones(3))
    plain.flush()
    before = (root / "zarr.json").read_text()
    with pytest.raises(spikestore.StoreLockedError):
        _finish(root, RankPlan(0, 2, (0, 1)))
    assert (root / "zarr.json").read_text() == before
    plain.append("output", "x", torch.zeros(3))
    plain.close()
    assert len(spikestore.open(root)["output"]["x"]) == 2


def test_replacing_refuses_a_live_writer_in_a_stale_rank_folder(tmp_path: Path) -> None:
    """Another job still writes rank 2 of a 3-rank store: a 2-rank job replacing the
    store fails before it deletes or rewrites anything."""
    from spikestore.ranks import RankPlan

    root = tmp_path / "r"
    _ranked_root(root, 3, [0, 1, 2])
    live = spikestore.StoreWriter(root / rank_key(2), mode="a", ranks=None)
    before = (root / "zarr.json").read_text()
    with pytest.raises(spikestore.StoreLockedError):
        _finish(root, RankPlan(0, 2, (0, 1)))
    assert (root / "zarr.json").read_text() == before
    live.append("output", "sn", spikes(2, 1))
    live.close()
    assert len(spikestore.open(root).rank(2)["output"]["sn"]) == 2


def test_replacing_never_deletes_a_users_folder_named_like_a_rank(tmp_path: Path) -> None:
    from spikestore.ranks import RankPlan

    root = tmp_path / "u"
    (root / "rank00001").mkdir(parents=True)
    (root / "rank00001" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="rank00001 is named like a rank"):
        _finish(root, RankPlan(0, 2, (0,)))
    assert (root / "rank00001" / "notes.txt").read_text() == "mine"
    assert not (root / "zarr.json").exists()
    # A stale rank's store goes, the user's files in its folder stay.
    root = tmp_path / "s"
    _ranked_root(root, 3, [0, 1, 2])
    (root / "rank00002" / "notes.txt").write_text("mine too")
    _finish(root, RankPlan(0, 2, (0, 1)))
    assert sorted(os.listdir(root / "rank00002")) == ["notes.txt"]
    s = spikestore.open(root)
    assert s.world_size == 2 and s.ranks == [0, 1]


def test_other_ranks_wait_for_the_lowest_to_replace_a_plain_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rank 1 must not record into a store of one process that rank 0 failed to
    replace (its writer was live): it waits for the ranked root, then gives up."""
    import threading

    from spikestore import ranks
    from spikestore.ranks import RankPlan

    root = tmp_path / "p"
    with spikestore.StoreWriter(root, ranks=None) as w:
        w.append("output", "x", torch.ones(2))
    monkeypatch.setattr(ranks, "ROOT_WAIT", 0.3)
    with pytest.raises(FormatError, match="still a store of one process"):
        _finish(root, RankPlan(1, 2, (0, 1)))
    # Rank 0 replaces it meanwhile: rank 1 goes on.
    monkeypatch.setattr(ranks, "ROOT_WAIT", 30)
    t = threading.Timer(0.3, _finish, (root, RankPlan(0, 2, (0, 1))))
    t.start()
    _finish(root, RankPlan(1, 2, (0, 1)))
    t.join()
    assert spikestore.open(root).world_size == 2
