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
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import zarr

import spikestore
from spikestore.format import FormatError, rank_key
from spikestore.reader import RankedLayerReader, RankedStoreReader
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


def test_torchrun_sigterm_commits_survivors(tmp_path: Path) -> None:
    """Under torchrun a failed rank makes the agent SIGTERM the others: they commit."""
    root = tmp_path / "tr"
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            str(JOB),
            str(root),
            "--out",
            str(out),
            "--forever",
            "--die-rank",
            "1",
            "--die-at",
            "50",
            "--die-how",
            "exit",
            "--flush-interval",
            "1000",
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode != 0, proc.stdout + proc.stderr
    s = spikestore.open(root)
    n0 = len(s.rank(0)["output"]["sn"])
    # SIGTERM may land between an append and the count file's update.
    assert n0 in (appended(tmp_path, 0), appended(tmp_path, 0) + 1), proc.stderr[-2000:]
    assert n0 > 0
    # A SIGTERM inside the "sn" append ends the process as that call returns, before the
    # step's "fc" append: "fc" may then hold one step fewer (CI saw 39 and 38).
    fc = s.rank(0)["output"]["fc"]
    assert len(fc) in (n0, n0 - 1)
    check_rank((s.rank(0)["output"]["sn"], fc), 0, len(fc))
    assert bits_equal(s.rank(0)["output"]["sn"][n0 - 1], spikes(0, n0 - 1))


SIGTERM_CHILD = textwrap.dedent(
    """
    import os, sys, time, torch, spikestore
    w = spikestore.StoreWriter(sys.argv[1], flush_interval=1000)
    n = 0
    while True:
        w.append("output", "x", torch.full((3,), float(n)))
        n += 1
        open(sys.argv[2] + ".tmp", "w").write(str(n))
        os.replace(sys.argv[2] + ".tmp", sys.argv[2])  # never half-written
        time.sleep(0.01)
    """
)


def test_sigterm_commits_a_single_process(tmp_path: Path) -> None:
    root, count = tmp_path / "st", tmp_path / "count"
    p = subprocess.Popen([sys.executable, "-c", SIGTERM_CHILD, str(root), str(count)])
    deadline = time.monotonic() + 60
    while not (count.exists() and count.read_text() and int(count.read_text()) >= 10):
        assert time.monotonic() < deadline and p.poll() is None
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    assert p.wait(60) == 128 + signal.SIGTERM
    x = spikestore.open(root)["output"]["x"]
    n = int(count.read_text())
    assert len(x) in (n, n + 1)
    assert bits_equal(
        x[:], torch.arange(len(x), dtype=torch.float32)[:, None].expand(-1, 3).contiguous()
    )


def test_own_sigterm_handler_is_kept(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import signal, sys, torch, spikestore
        def mine(*a): print("mine", flush=True); sys.exit(7)
        signal.signal(signal.SIGTERM, mine)
        w = spikestore.StoreWriter(sys.argv[1])
        assert signal.getsignal(signal.SIGTERM) is mine
        w.append("output", "x", torch.ones(1))
        import os; os.kill(os.getpid(), signal.SIGTERM)
        """
    )
    p = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "s")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 7 and "mine" in p.stdout
    assert len(spikestore.open(tmp_path / "s")["output"]["x"]) == 1


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


SIGTERM_WHILE_COMMITTING = textwrap.dedent(
    """
    import os, signal, sys, torch, spikestore
    from zarr.storage import LocalStore, WrapperStore

    class TermOnWrite(WrapperStore):
        armed = False
        async def set(self, key, value):
            # SIGTERM lands while the records are being committed: at the first chunk
            # (the writer thread may create the layer's groups before that, at any time)
            if TermOnWrite.armed and "/c/" in key:
                TermOnWrite.armed = False
                os.kill(os.getpid(), signal.SIGTERM)
            await self._store.set(key, value)

    w = spikestore.StoreWriter(store=TermOnWrite(LocalStore(sys.argv[1])), flush_interval=600)
    for i in range(50):
        w.append("output", "x", torch.full((64, 256), float(i)))
    TermOnWrite.armed = True
    if sys.argv[2] == "close":
        w.close()
        print("not reached", flush=True)
    else:
        raise RuntimeError("a collective failed")  # uncaught: the exit hook commits
    """
)


def _run_script(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120
    )


def _check_fifty_steps(root: Path) -> None:
    """The 50 ``[64, 256]`` steps of the scripts below, all committed and exact."""
    x = spikestore.open(root)["output"]["x"]
    assert len(x) == 50
    assert bits_equal(x[49], torch.full((64, 256), 49.0))


@pytest.mark.parametrize("how", ["close", "exit"])
def test_sigterm_while_committing_waits_for_the_commit(tmp_path: Path, how: str) -> None:
    """torchrun's SIGTERM often lands while a survivor is committing (its collective
    failed, its exit hook runs): the commit finishes, nothing is lost."""
    p = _run_script(SIGTERM_WHILE_COMMITTING, str(tmp_path / "s"), how)
    assert p.returncode == (143 if how == "close" else 1), p.stderr[-2000:]
    assert "not reached" not in p.stdout
    _check_fifty_steps(tmp_path / "s")


SIGTERM_AS_EXIT_BEGINS = textwrap.dedent(
    """
    import os, signal, sys, threading, torch, spikestore
    w = spikestore.StoreWriter(sys.argv[1], flush_interval=600)
    for i in range(50):
        w.append("output", "x", torch.full((64, 256), float(i)))
    # Registered after spikestore's exit hook, so it runs before it: SIGTERM lands as
    # the interpreter begins to exit, before the hook has started committing.
    threading._register_atexit(lambda: os.kill(os.getpid(), signal.SIGTERM))
    if sys.argv[2] == "raise":
        raise RuntimeError("a collective failed")
    """
)


@pytest.mark.parametrize("how", ["raise", "end"])
def test_sigterm_as_the_interpreter_begins_to_exit_loses_nothing(
    tmp_path: Path, how: str
) -> None:
    """Regression: a SIGTERM that came in the interpreter's exit functions before
    spikestore's exit hook raised SystemExit there, which ended them: the hook never
    ran and every record was lost (CI saw it once, as 0 of 50 steps)."""
    p = _run_script(SIGTERM_AS_EXIT_BEGINS, str(tmp_path / "s"), how)
    # The exit goes on with the program's own status once the records are committed.
    assert p.returncode == (1 if how == "raise" else 0), p.stderr[-2000:]
    assert "SystemExit" not in p.stderr
    _check_fifty_steps(tmp_path / "s")


SIGTERM_IN_CLOSE = textwrap.dedent(
    """
    import os, signal, sys, torch, spikestore
    w = spikestore.StoreWriter(sys.argv[1], flush_interval=600)
    for i in range(50):
        w.append("output", "x", torch.full((8, 16), float(i)))
    code, line = spikestore.StoreWriter.close.__code__, int(sys.argv[2])

    def trace(frame, event, arg):  # SIGTERM as close() reaches the given line
        def local(frame, event, arg):
            if event == "line" and frame.f_lineno == line:
                sys.settrace(None)
                frame.f_trace = None
                print("sent", flush=True)
                os.kill(os.getpid(), signal.SIGTERM)
            return local
        return local if frame.f_code is code else None

    sys.settrace(trace)
    w.close()
    sys.settrace(None)
    print("after close", flush=True)
    """
)


def test_sigterm_at_any_line_of_close_loses_nothing(tmp_path: Path) -> None:
    """Regression: a SIGTERM between close()'s first lines and its commit raised
    SystemExit after the writer was marked closed, so the exit hook's close() did
    nothing and the records were lost (or the interpreter aborted)."""
    code = spikestore.StoreWriter.close.__code__
    lines = sorted({n for _, _, n in code.co_lines() if n and n > code.co_firstlineno})
    procs = {}
    for n in lines:  # a few at a time: each is a process of its own
        procs[n] = subprocess.Popen(
            [sys.executable, "-c", SIGTERM_IN_CLOSE, str(tmp_path / str(n)), str(n)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        while sum(p.poll() is None for p in procs.values()) >= 4:
            time.sleep(0.05)
    sent = 0
    for n, p in procs.items():
        out, err = p.communicate(timeout=120)
        if "sent" in out:  # the line ran (some are branches close() does not take)
            sent += 1
            assert p.returncode in (128 + signal.SIGTERM, -signal.SIGTERM), (n, err[-2000:])
            assert "after close" not in out, n
        else:
            assert p.returncode == 0 and "after close" in out, (n, err[-2000:])
        x = spikestore.open(tmp_path / str(n))["output"]["x"]
        assert len(x) == 50, (n, err[-2000:])
        assert bits_equal(x[49], torch.full((8, 16), 49.0))
    assert sent >= 10


SIGTERM_IN_A_LOCK = textwrap.dedent(
    """
    import os, signal, sys, threading, time, torch, spikestore
    w = spikestore.StoreWriter(sys.argv[1], flush_interval=600)
    for i in range(20):
        w.append("output", "x", torch.full((3,), float(i)))
    api, name = sys.argv[2], sys.argv[3]
    package = os.path.dirname(spikestore.__file__)

    def noop():
        pass

    def trace(frame, event, arg):  # SIGTERM as spikestore's call enters threading's `name`
        code, caller = frame.f_code, frame.f_back
        if (event == "call" and code.co_filename == threading.__file__ and code.co_name == name
                and caller is not None and caller.f_code.co_filename.startswith(package)):
            sys.settrace(None)
            print("sent", flush=True)
            os.kill(os.getpid(), signal.SIGTERM)
            noop()  # a Python call: the handler runs here, inside threading's frame
        return None

    sys.settrace(trace)
    if api == "append":
        w.append("output", "x", torch.full((3,), 20.0))
    elif api == "mark":
        w.mark(epoch=1)
        w.append("output", "x", torch.full((3,), 20.0))
    else:
        w.append("output", "x", torch.full((3,), 20.0))
        w.flush()
    sys.settrace(None)
    time.sleep(30)  # the SIGTERM ends the program here, in its own code
    print("not reached", flush=True)
    """
)


@pytest.mark.parametrize(
    "api,name",
    [("append", "__exit__"), ("append", "__enter__"), ("mark", "__exit__"), ("flush", "wait")],
)
def test_sigterm_inside_spikestore_waits_for_the_program_s_own_code(
    tmp_path: Path, api: str, name: str
) -> None:
    """Regression: SystemExit raised by the SIGTERM handler inside spikestore's own
    code (as a ``with`` on a Condition entered or left, holding its lock) left the
    lock held: the writer thread blocked on it, the exit hook's close() waited for
    the writer thread forever, and nothing was committed. SIGTERM now waits until the
    spikestore call returns."""
    root = tmp_path / "s"
    p = subprocess.Popen(
        [sys.executable, "-c", SIGTERM_IN_A_LOCK, str(root), api, name],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        out, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        pytest.fail(f"the process hung after SIGTERM: {out!r}")
    assert "sent" in out, err[-2000:]
    assert p.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "not reached" not in out
    x = spikestore.open(root)["output"]["x"]
    if api == "mark":  # raised as mark() returns: the append after it never ran
        assert len(x) == 20
    else:  # raised as the interrupted call returns: its record is kept
        assert len(x) == 21 and x[20].tolist() == [20.0] * 3


_LOOP = """
n = 0
while True:
    w.append("output", "x", torch.full((16,), float(n)))
    n += 1
    print(n, flush=True)
"""

SIGTERM_IN_A_LOOP_INSIDE_SPIKESTORE = textwrap.dedent(
    """
    import os, sys, time, torch, spikestore
    from zarr.storage import LocalStore, WrapperStore

    class Slow(WrapperStore):  # backpressure: append waits for the writer thread
        async def set(self, key, value):
            time.sleep(0.05)
            await self._store.set(key, value)

    w = spikestore.StoreWriter(store=Slow(LocalStore(sys.argv[1])), flush_interval=0.05,
                               max_queue_bytes=1, max_buffer_bytes=1)
    # The loop's code counts as spikestore's own (as `spikestore demo`'s loop does).
    package = os.path.dirname(spikestore.__file__)
    exec(compile(sys.argv[2], os.path.join(package, "_a_loop.py"), "exec"))
    """
)


def test_sigterm_ends_a_loop_that_spends_its_time_in_spikestore(tmp_path: Path) -> None:
    """Regression: a SIGTERM deferred while the main thread ran spikestore's code was
    sent again only when a polling thread caught the main thread outside spikestore:
    never for `spikestore demo` (its loop is spikestore's), and after up to a minute
    for a loop waiting on a slow store. It is now raised as the append returns."""
    root = tmp_path / "s"
    p = subprocess.Popen(
        [sys.executable, "-c", SIGTERM_IN_A_LOOP_INSIDE_SPIKESTORE, str(root), _LOOP],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert p.stdout is not None and p.stderr is not None
    n = 0
    while n < 5:
        line = p.stdout.readline()
        assert line, p.stderr.read()
        n = int(line)
    p.send_signal(signal.SIGTERM)
    try:
        out, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        pytest.fail("SIGTERM did not end the loop")
    assert p.returncode == 128 + signal.SIGTERM, err[-2000:]
    after = len(out.split())
    assert after <= 1, f"{after} appends returned after the SIGTERM"
    assert len(spikestore.open(root)["output"]["x"]) >= n


SIGTERM_WITH_A_THREAD_THAT_NEVER_ENDS = textwrap.dedent(
    """
    import sys, threading, time, torch, spikestore
    w = spikestore.StoreWriter(sys.argv[1], flush_interval=600)

    def work():  # a non-daemon thread that never ends (the interpreter waits for it)
        n = 0
        while True:
            try:
                w.append("output", "x", torch.full((8,), float(n)))
            except RuntimeError:  # the writer was closed
                pass
            n += 1
            time.sleep(0.01)

    threading.Thread(target=work).start()
    if sys.argv[2] == "main waits":
        while True:
            time.sleep(0.05)
    print("main done", flush=True)  # the main thread ends: the interpreter's exit begins
    """
)


@pytest.mark.parametrize("how", ["main waits", "main ended"])
def test_sigterm_ends_a_process_whose_threads_never_end(tmp_path: Path, how: str) -> None:
    """Regression: the exit hook waited for every non-daemon thread before committing,
    and each SIGTERM meanwhile only waited for the commit: a process with a thread
    that never ends could not be ended by SIGTERM at all, and committed nothing. Now
    SIGTERM commits at once and ends the process, as Python's default would."""
    root = tmp_path / "s"
    p = subprocess.Popen(
        [sys.executable, "-c", SIGTERM_WITH_A_THREAD_THAT_NEVER_ENDS, str(root), how],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(3.0)
    p.send_signal(signal.SIGTERM)
    try:
        p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        pytest.fail("SIGTERM did not end the process")
    assert p.returncode in (128 + signal.SIGTERM, -signal.SIGTERM, 0)
    assert len(spikestore.open(root)["output"]["x"]) > 10


SIGTERM_IN_A_FORKED_CHILD = textwrap.dedent(
    """
    import os, signal, sys, time, torch, spikestore
    w = spikestore.StoreWriter(sys.argv[1])
    w.append("output", "x", torch.ones(2))
    try:
        pid = os.fork()
        if pid == 0:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)
            os._exit(5)
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status), flush=True)
    finally:
        print("finally", os.getpid(), flush=True)
    w.close()
    """
)


def test_sigterm_in_a_forked_child_acts_as_the_default(tmp_path: Path) -> None:
    """Regression: a forked child (which has no writer of its own to commit) took
    SIGTERM as SystemExit and unwound its parent's copied stack, running the
    parent's finally blocks, instead of ending as Python's default would."""
    p = subprocess.run(
        [sys.executable, "-c", SIGTERM_IN_A_FORKED_CHILD, str(tmp_path / "s")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    assert f"child {-signal.SIGTERM}" in p.stdout, p.stdout
    assert p.stdout.count("finally") == 1, p.stdout
    assert len(spikestore.open(tmp_path / "s")["output"]["x"]) == 1


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
