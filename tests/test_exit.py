"""What becomes of the records when a process ends: at exit, and on SIGTERM.

Every test runs real processes (``torchrun`` included) and checks the store they
leave. What ``spikestore._exit`` promises is in its docstring: records appended before
a SIGTERM are committed wherever the main thread is, the process then ends as it
would have without spikestore (a handler of the program's own is chained), a SIGTERM
never hangs it, a forked child never commits its parent's store, and writers still
open at a normal exit are committed.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import spikestore
from spikestore.testing import bits_equal, wait_for

JOB = Path(__file__).with_name("ranks_job.py")
sys.path.insert(0, str(JOB.parent))
from ranks_job import spikes, values  # noqa: E402  (the job's record generators)

TIMEOUT = 120


def check_rank(layer: tuple[Any, Any], rank: int, n: int) -> None:
    """Rank ``rank``'s first ``n`` records of both layers are exactly the job's."""
    sn, fc = layer
    for i in range(n):
        assert bits_equal(sn[i], spikes(rank, i)), (rank, i)
        assert bits_equal(fc[i], values(rank, i)), (rank, i)


def appended(tmp: Path, rank: int) -> int:
    f = tmp / "out" / f"appended{rank}"
    return int(f.read_text()) if f.exists() else 0


# ------------------------------------------------------------ normal exit
_EXIT_SCRIPT = r"""
import sys, threading, time, torch, spikestore
from torch import nn
how, path = sys.argv[1], sys.argv[2]
if how == "monitor":
    from spikestore.monitor import OutputMonitor
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    mon = OutputMonitor(net, nn.ReLU, store=path)
    for i in range(50):
        net(torch.full((2, 4), float(i)))
elif how == "nondaemon":
    w = spikestore.StoreWriter(path)

    def run():
        for i in range(50):
            w.append("m", "l", torch.full((3,), float(i)))
            time.sleep(0.01)  # a training step's pace: still running as the main thread ends

    threading.Thread(target=run).start()  # still appending when the main thread ends
elif how == "pool":
    from concurrent.futures import ThreadPoolExecutor

    w = spikestore.StoreWriter(path)
    pool = ThreadPoolExecutor(2)  # never shut down: its workers end after this process's hooks
    for f in [pool.submit(w.append, "m", "l", torch.full((3,), float(i))) for i in range(50)]:
        f.result()
    box = [pool]
elif how == "thread":
    box = []
    t = threading.Thread(target=lambda: box.append(spikestore.StoreWriter(path)))
    t.start(); t.join()
    for i in range(50):
        box[0].append("m", "l", torch.full((3,), float(i)))
    sys.exit(3)
else:
    w = spikestore.StoreWriter(path)
    for i in range(50):
        w.append("m", "l", torch.full((3,), float(i)))
    if how == "raise":
        raise SystemExit(0)
"""


@pytest.mark.parametrize("how", ["plain", "raise", "thread", "nondaemon", "pool", "monitor"])
def test_writers_left_open_are_committed_at_exit(tmp_path: Path, how: str) -> None:
    """A process that ends without close() (normally, by sys.exit, with a monitor it never
    closed) exits promptly with every record committed."""
    path = tmp_path / "s"
    proc = subprocess.run(
        [sys.executable, "-c", _EXIT_SCRIPT, how, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode in (0, 3), proc.stderr[-2000:]
    store = spikestore.open(path)
    if how == "monitor":
        assert len(store["output"]["1"]) == 50
    else:
        layer = store["m"]["l"]
        values = sorted(float(x[0]) for x in layer[:])
        assert values == [float(i) for i in range(50)]



# ---------------------------------------------------------------- SIGTERM
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
    # The rank goes on appending while its records are committed (the count file is
    # written after each step's two appends): what is committed is a prefix of what it
    # appended, every record exact, "fc" at most one step behind "sn".
    assert 0 < n0 <= appended(tmp_path, 0) + 1, proc.stderr[-2000:]
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
        time.sleep(0.01)  # a training step's pace
    """
)


def _count(path: Path) -> int:
    return int(path.read_text() or 0) if path.exists() else 0


def test_sigterm_commits_a_single_process(tmp_path: Path) -> None:
    """Every append that returned before the SIGTERM is committed; the process then
    ends as SIGTERM's default action ends it (killed by the signal)."""
    root, count = tmp_path / "st", tmp_path / "count"
    p = subprocess.Popen([sys.executable, "-c", SIGTERM_CHILD, str(root), str(count)])
    deadline = time.monotonic() + 60
    while _count(count) < 10:
        assert time.monotonic() < deadline and p.poll() is None
        time.sleep(0.05)  # polling a file the child writes
    before = _count(count)
    p.send_signal(signal.SIGTERM)
    assert p.wait(60) == -signal.SIGTERM
    x = spikestore.open(root)["output"]["x"]
    assert before <= len(x) <= _count(count) + 1
    assert bits_equal(
        x[:], torch.arange(len(x), dtype=torch.float32)[:, None].expand(-1, 3).contiguous()
    )


def test_own_sigterm_handler_is_kept(tmp_path: Path) -> None:
    """A handler the program installed before is called (here it exits with 7), and the
    records are committed."""
    code = textwrap.dedent(
        """
        import signal, sys, torch, spikestore
        def mine(*a): print("mine", flush=True); sys.exit(7)
        signal.signal(signal.SIGTERM, mine)
        w = spikestore.StoreWriter(sys.argv[1], flush_interval=600)
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


OWN_HANDLER_THAT_RETURNS = textwrap.dedent(
    """
    import os, signal, sys, time, torch, spikestore
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    w = spikestore.StoreWriter(sys.argv[1], flush_interval=600)
    for i in range(30):
        w.append("output", "x", torch.full((4,), float(i)))
    os.kill(os.getpid(), signal.SIGTERM)
    while not stop:  # the program's own handler runs in this thread
        time.sleep(0.01)

    def committed():  # the layer is listed from its first commit on
        out = spikestore.open(sys.argv[1])
        return len(out["output"]["x"]) if "output" in out and "x" in out["output"] else 0

    deadline = time.monotonic() + 60
    while committed() < 30:  # committed meanwhile
        assert time.monotonic() < deadline, "not committed"
        time.sleep(0.05)
    w.append("output", "x", torch.full((4,), 30.0))  # the writer is still open
    w.close()
    print("done", flush=True)
    """
)


def test_own_handler_that_returns_keeps_the_program_running(tmp_path: Path) -> None:
    """A handler of the program's own that only sets a flag (to stop training at the end
    of an epoch, say): the process goes on, what was appended is committed at once, and
    the writer stays open."""
    p = subprocess.run(
        [sys.executable, "-c", OWN_HANDLER_THAT_RETURNS, str(tmp_path / "s")],
        capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert p.returncode == 0 and "done" in p.stdout, p.stderr[-2000:]
    x = spikestore.open(tmp_path / "s")["output"]["x"]
    assert len(x) == 31 and x[30].tolist() == [30.0] * 4



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
    failed, its exit hook runs): the commit finishes, nothing is lost. The process
    ends by the signal, or by itself if its close() or exit finished first."""
    p = _run_script(SIGTERM_WHILE_COMMITTING, str(tmp_path / "s"), how)
    # Regression: the program could end (status 0 or 1) before the spikestore-exit
    # thread ended it: a SIGTERMed job looked like one that succeeded.
    assert p.returncode == -signal.SIGTERM, p.stderr[-2000:]
    _check_fifty_steps(tmp_path / "s")


SIGTERM_AS_EXIT_BEGINS = textwrap.dedent(
    """
    import atexit, os, signal, sys, torch, spikestore
    w = spikestore.StoreWriter(sys.argv[1], flush_interval=600)
    for i in range(50):
        w.append("output", "x", torch.full((64, 256), float(i)))
    # Registered after spikestore's exit hook, so it runs before it: SIGTERM lands as
    # the interpreter exits, before the hook has started committing.
    atexit.register(lambda: os.kill(os.getpid(), signal.SIGTERM))
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
    # The process ends by the signal once the records are committed.
    assert p.returncode == -signal.SIGTERM, p.stderr[-2000:]
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
        wait_for(lambda: sum(p.poll() is None for p in procs.values()) < 4, 120, "a free slot")
    sent = 0
    for n, p in procs.items():
        out, err = p.communicate(timeout=120)
        if "sent" in out:  # the line ran (some are branches close() does not take)
            sent += 1
            assert p.returncode == -signal.SIGTERM, (n, err[-2000:])
        else:
            assert p.returncode == 0 and "after close" in out, (n, err[-2000:])
        x = spikestore.open(tmp_path / str(n))["output"]["x"]
        assert len(x) == 50, (n, err[-2000:])
        assert bits_equal(x[49], torch.full((8, 16), 49.0))
    assert sent >= 4


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

    if api == "hook":
        from torch import nn
        from spikestore.monitor import OutputMonitor
        net = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
        mon = OutputMonitor(net, nn.ReLU, store=w)
    sys.settrace(trace)
    if api == "hook":  # the main thread is inside the monitor's hook
        net(torch.ones(1, 3))
    elif api == "append":
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
    [
        ("append", "__exit__"),
        ("append", "__enter__"),
        ("mark", "__exit__"),
        ("flush", "wait"),
        ("hook", "__enter__"),
    ],
)
def test_sigterm_inside_spikestore_commits_and_ends(
    tmp_path: Path, api: str, name: str
) -> None:
    """A SIGTERM while the main thread is inside spikestore's code (a monitor's hook,
    holding a lock as a ``with`` on a Condition is entered or left): the records
    appended before it are committed and the process ends. (An earlier design raised
    SystemExit there, which left the lock held and hung the exit.)"""
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
    assert p.returncode == -signal.SIGTERM, err[-2000:]
    assert "not reached" not in out
    x = spikestore.open(root)["output"]["x"]
    # The 20 appends before the signal are committed; the interrupted call's record
    # (or the append after mark()) may be too.
    assert len(x) in ((20,) if api == "hook" else (20, 21))
    assert bits_equal(x[:20], torch.arange(20.0)[:, None].expand(-1, 3).contiguous())


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
            time.sleep(0.05)  # a slow store
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
    for a loop waiting on a slow store. Now the loop ends once the commit is done."""
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
        _, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        pytest.fail("SIGTERM did not end the loop")
    assert p.returncode == -signal.SIGTERM, err[-2000:]
    assert len(spikestore.open(root)["output"]["x"]) >= n


SIGTERM_WITH_A_STORE_THAT_HANGS = textwrap.dedent(
    """
    import os, signal, sys, threading, time, torch, spikestore, spikestore._exit
    from zarr.storage import LocalStore, WrapperStore

    spikestore._exit.COMMIT_TIMEOUT = 2.0  # (20 s by default)
    hang = threading.Event()

    class Hangs(WrapperStore):  # a mount that stopped answering
        async def set(self, key, value):
            if hang.is_set():
                threading.Event().wait()  # forever
            await self._store.set(key, value)

    w = spikestore.StoreWriter(store=Hangs(LocalStore(sys.argv[1])), flush_interval=600)
    for i in range(20):
        w.append("output", "x", torch.full((4,), float(i)))
    w.flush()
    hang.set()
    w.append("output", "x", torch.full((4,), 20.0))
    print("sent", flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
    while True:  # the SIGTERM must end the process
        time.sleep(0.05)
    """
)


def test_sigterm_never_hangs_the_process(tmp_path: Path) -> None:
    """A commit that cannot finish (the store hangs) is waited for at most
    ``COMMIT_TIMEOUT`` seconds; then the process ends anyway, with what was committed
    before intact."""
    start = time.monotonic()
    p = _run_script(SIGTERM_WITH_A_STORE_THAT_HANGS, str(tmp_path / "s"))
    assert "sent" in p.stdout, p.stderr[-2000:]
    assert p.returncode == -signal.SIGTERM, p.stderr[-2000:]
    assert time.monotonic() - start < 60
    x = spikestore.open(tmp_path / "s")["output"]["x"]
    assert len(x) == 20 and x[19].tolist() == [19.0] * 4


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
            print(n, flush=True)
            time.sleep(0.01)  # a training step's pace

    threading.Thread(target=work).start()
    if sys.argv[2] == "main waits":
        while True:  # until the SIGTERM ends the process
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
    assert p.stdout is not None
    n = 0
    while n < 20:  # the thread has appended 20 records
        line = p.stdout.readline()
        assert line, p.communicate()[1][-2000:]
        n = int(line) if line.strip().isdigit() else n
    p.send_signal(signal.SIGTERM)
    try:
        p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        pytest.fail("SIGTERM did not end the process")
    assert p.returncode == -signal.SIGTERM
    assert len(spikestore.open(root)["output"]["x"]) >= 20


SIGTERM_IN_A_FORKED_CHILD = textwrap.dedent(
    """
    import os, signal, sys, time, torch, spikestore
    w = spikestore.StoreWriter(sys.argv[1])
    w.append("output", "x", torch.ones(2))
    try:
        pid = os.fork()
        if pid == 0:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)  # the SIGTERM ends the child here
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



SIGTERM_WITH_ONE_STORE_HANGING = textwrap.dedent(
    """
    import asyncio, os, signal, sys, threading, time, torch, spikestore, spikestore._exit
    from zarr.storage import LocalStore, WrapperStore

    spikestore._exit.COMMIT_TIMEOUT = 3.0  # (20 s by default)
    hang = threading.Event()

    class Hangs(WrapperStore):  # an object store that stopped answering
        async def set(self, key, value):
            if hang.is_set():
                await asyncio.sleep(3600)
            await self._store.set(key, value)

    # The hanging store is opened first: its commit must not use up the others' time.
    a = spikestore.StoreWriter(store=Hangs(LocalStore(sys.argv[1])), flush_interval=600)
    b = spikestore.StoreWriter(sys.argv[2], flush_interval=600)
    a.append("output", "x", torch.zeros(4))
    a.flush()
    hang.set()
    a.append("output", "x", torch.ones(4))
    for i in range(20):
        b.append("output", "x", torch.full((4,), float(i)))
    os.kill(os.getpid(), signal.SIGTERM)
    while True:
        time.sleep(0.05)
    """
)


def test_a_store_that_hangs_does_not_hold_up_another(tmp_path: Path) -> None:
    """Regression: after a SIGTERM the writers committed one after another against one
    deadline, so a hanging store opened first used it all up and a healthy store
    opened after it lost every record. They now commit at once."""
    p = _run_script(SIGTERM_WITH_ONE_STORE_HANGING, str(tmp_path / "a"), str(tmp_path / "b"))
    assert p.returncode == -signal.SIGTERM, p.stderr[-2000:]
    x = spikestore.open(tmp_path / "b")["output"]["x"]
    assert len(x) == 20 and x[19].tolist() == [19.0] * 4
    assert len(spikestore.open(tmp_path / "a")["output"]["x"]) == 1


LATER_HANDLER = textwrap.dedent(
    """
    import os, signal, sys, torch, spikestore
    a = spikestore.StoreWriter(sys.argv[1] + "a", flush_interval=600)
    def mine(*args):
        print("mine", flush=True)
        sys.exit(5)
    signal.signal(signal.SIGTERM, mine)
    b = spikestore.StoreWriter(sys.argv[1] + "b", flush_interval=600)  # a second writer
    assert signal.getsignal(signal.SIGTERM) is mine
    a.append("output", "x", torch.ones(2))
    b.append("output", "x", torch.ones(2))
    os.kill(os.getpid(), signal.SIGTERM)
    """
)


def test_a_handler_installed_later_is_not_replaced_by_the_next_writer(tmp_path: Path) -> None:
    """Regression: every writer opened in the main thread installed spikestore's handler
    again, over one the program had installed after the first writer. It is installed
    once; the program's later handler runs (here it exits with 5) and the writers are
    committed at exit."""
    p = _run_script(LATER_HANDLER, str(tmp_path / "s"))
    assert p.returncode == 5 and "mine" in p.stdout, p.stderr[-2000:]
    for name in ("sa", "sb"):
        assert len(spikestore.open(tmp_path / name)["output"]["x"]) == 1
