"""The ``spikestore-jit`` thread that compiles the CPU spike test (``codecs.rows``):
started once, off the caller's thread, never where numba is turned off or no thread
can start, and never leaving a forked child a lock it cannot take."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import spikestore
from spikestore.codecs import rows
from spikestore.codecs.rows import spike_pack

HAVE_NUMBA = importlib.util.find_spec("numba") is not None


def spikes(shape: tuple[int, ...], p: float = 0.3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) < p).float()


def check(t: torch.Tensor, permute: tuple[int, ...] | None) -> None:
    ones = t.numpy() == 1
    want = np.packbits((ones.transpose(permute) if permute else ones).reshape(-1))
    np.testing.assert_array_equal(spike_pack(t, permute), want)


def test_the_compiled_test_is_built_off_the_callers_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first large record starts one ``spikestore-jit`` thread and takes the numpy
    path while it compiles; records after it is built take the compiled test, and
    only large C-contiguous records do."""
    import threading

    release = threading.Event()
    calls: list[int] = []

    def kernel(u: np.ndarray, one: object, ones: np.ndarray) -> bool:
        calls.append(u.size)
        np.equal(u, one, out=ones.view(np.bool_))
        return bool(np.isin(u, [0, one]).all())

    def build() -> object:
        assert threading.current_thread().name == "spikestore-jit"
        release.wait(10)
        return kernel

    monkeypatch.setattr(rows, "_JIT_MIN", 1 << 16)
    monkeypatch.setattr(rows, "_ONES", [])
    monkeypatch.setattr(rows, "_ONES_LOCK", threading.Lock())
    monkeypatch.setattr(rows, "_compiled_ones", build)
    monkeypatch.setattr(rows, "numba_wanted", lambda: True)  # with numba or without
    monkeypatch.setattr(rows, "_numba_loaded", lambda: True)
    big = spikes((4, rows._JIT_MIN // 4))
    for _ in range(3):  # the numpy path, one thread started
        check(big, (1, 0))
    jit = [t for t in threading.enumerate() if t.name == "spikestore-jit"]
    assert len(jit) == 1 and not calls
    release.set()
    jit[0].join(10)
    check(big, (1, 0))
    assert calls == [big.numel()]
    check(spikes((4, 100)), None)  # small
    check(big.t(), None)  # not contiguous
    assert calls == [big.numel()]


def test_no_thread_for_the_compiled_test_as_the_interpreter_exits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A record staged when no thread can start (an ``atexit`` hook appending) takes the
    numpy path, then and after, instead of failing."""
    import threading

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't create new thread at interpreter shutdown")

    monkeypatch.setattr(rows, "_JIT_MIN", 1 << 16)
    monkeypatch.setattr(rows, "_ONES", [])
    monkeypatch.setattr(rows, "_ONES_LOCK", threading.Lock())
    monkeypatch.setattr(threading.Thread, "start", refuse)
    monkeypatch.setattr(rows, "numba_wanted", lambda: True)
    monkeypatch.setattr(rows, "_numba_loaded", lambda: True)
    big = spikes((4, rows._JIT_MIN // 4))
    check(big, (1, 0))
    assert rows._ONES == [None]
    check(big, None)


def test_no_jit_thread_when_numba_is_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from spikestore.codecs import motion

    started: list[str] = []
    real = threading.Thread.start

    def spy(self: threading.Thread) -> None:
        started.append(self.name)
        real(self)

    monkeypatch.setattr(rows, "_JIT_MIN", 1 << 16)
    monkeypatch.setattr(rows, "_ONES", [])
    monkeypatch.setattr(rows, "_ONES_LOCK", threading.Lock())
    monkeypatch.setattr(motion, "USE_NUMBA", None)
    monkeypatch.setenv("SPIKESTORE_NUMBA", "0")
    monkeypatch.setattr(rows, "_numba_loaded", lambda: True)
    monkeypatch.setattr(threading.Thread, "start", spy)
    check(spikes((4, rows._JIT_MIN // 4)), (1, 0))
    assert started == [] and rows._ONES == [None]


@pytest.mark.skipif(not HAVE_NUMBA or not hasattr(os, "fork"), reason="numba, os.fork")
def test_a_child_forked_while_the_test_compiles_does_not_hang(tmp_path) -> None:
    """Fork right after the first large spike record started ``spikestore-jit``: the
    child must be able to import numba and record (a thread of the parent that held
    numba's import lock at the fork would never release it in the child)."""
    script = textwrap.dedent(
        f"""
        import faulthandler, os, sys, torch, spikestore
        import numba  # loaded: the first large record starts the compile
        w = spikestore.StoreWriter({str(tmp_path / "s")!r})
        w.append("m", "l", (torch.rand(64, 2048) < 0.2).float())
        pid = os.fork()
        if pid == 0:
            faulthandler.dump_traceback_later(60, exit=True)
            import numba
            with spikestore.StoreWriter({str(tmp_path / "c")!r}) as c:
                c.append("m", "l", (torch.rand(64, 2048) < 0.2).float())
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        w.close()
        sys.exit(os.waitstatus_to_exitcode(status))
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_CACHE_DIR": str(tmp_path / "nb")}
    res = subprocess.run([sys.executable, "-c", script], env=env, timeout=180, capture_output=True)
    assert res.returncode == 0, res.stderr.decode()[-3000:]
    assert spikestore.open(tmp_path / "c")["m"]["l"][0].shape == (64, 2048)


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba")
def test_large_spike_records_do_not_load_numba_by_themselves(tmp_path) -> None:
    """Regression: the compiled spike test imported numba and compiled at the first
    large record, about 120 MiB of memory, and ``bench_scale.py`` (100,000 steps of
    ``[64, 4096]`` spikes and ``[64, 256]`` floats) grew by 200 MiB against its
    bound of 100 (65 MiB before that commit, c2476dc). Records that the MOTION codec
    does not load numba for now take the numpy test."""
    script = textwrap.dedent(
        f"""
        import sys, torch, spikestore
        with spikestore.StoreWriter({str(tmp_path / "s")!r}) as w:
            for _ in range(40):
                w.append("m", "l", (torch.rand(64, 4096) < 0.05).float())
        assert "numba" not in sys.modules, "numba was imported"
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_CACHE_DIR": str(tmp_path / "nb")}
    env.pop("SPIKESTORE_NUMBA", None)
    res = subprocess.run([sys.executable, "-c", script], env=env, timeout=180, capture_output=True)
    assert res.returncode == 0, res.stderr.decode()[-3000:]
