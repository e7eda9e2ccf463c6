"""What becomes of the writers still open when the process ends.

Two ways a process ends with writers open, one mechanism each:

**Normal exit** (the program returns, ``sys.exit``, an uncaught exception): an
:func:`atexit` hook closes, and so commits, every writer still open. ``atexit`` runs
after Python has waited for the program's non-daemon threads, and before Zarr's own
``atexit`` hook stops its event loop (hooks run last in, first out; the hook is
registered when the first writer opens, after Zarr's). At that point Python's thread
pools refuse new work: the pools that commits use (Zarr's event loop's, which the
first writer sets, and each writer's encoder pool) are each an :class:`ExitSafePool`,
which then run each job in the thread that submits it.

**SIGTERM** (``torchrun`` sends it to the ranks that survive a failed one; Slurm and
Kubernetes before they kill): Python's default would end the process at once and
lose every record not yet committed. The handler installed here does two things:

1. it writes one byte to a pipe, which wakes this module's thread
   (``spikestore-exit``): that thread asks every writer of this process to commit what
   was appended so far, all at once, and waits for them, at most
   :data:`COMMIT_TIMEOUT` seconds in all;
2. if a handler of the program's own was installed before spikestore's, it calls it
   at once, as Python would have (it may raise ``SystemExit``, set a flag, ...). If
   there was none (Python's default), the thread ends the process once the commit
   is done, by SIGTERM's default action (restored through the C library's
   ``signal``, as Python's works in the main thread only). If the program ends first
   (the SIGTERM came during its last ``close()``), the ``atexit`` hook ends it so.

The handler never blocks and never raises: whatever the main thread was doing (a
monitor's hook, ``close()``, the interpreter's exit, waiting for a thread that never
ends) goes on until the process ends, and no lock of spikestore's is left held.

Guarantees and limits:

- Records appended before the SIGTERM are committed before the process ends, unless
  the commit takes longer than :data:`COMMIT_TIMEOUT` (then the process ends anyway:
  a SIGTERM never hangs it; a store that hangs does not hold up the others), or a
  handler of the program's own ends the process at once (``os._exit``, or restoring
  the default and re-sending the signal: then it ends before the commit). Records
  appended after the SIGTERM may or may not be committed.
- With the default action, the program's ``finally`` blocks and ``with`` exits do not
  run (as without spikestore). A handler of the program's own decides that itself.
- A SIGTERM is seen only when Python's main thread runs Python code: one blocked in a
  C call (a collective waiting for a dead peer) delays the commit until the call
  returns. The process's end then waits at most :data:`END_TIMEOUT` more seconds for
  the main thread to end it before ``os._exit``.
- The handler is installed once per process, by the first writer opened in the main
  thread, and only over Python's default or a Python function (never over
  ``SIG_IGN``, nor over a C handler Python knows of). A C handler Python does not
  report (``faulthandler.register(signal.SIGTERM)``) is replaced. A handler the
  program installs later replaces spikestore's (spikestore then commits at exit only);
  one that chains to it gets spikestore's behaviour.
- A forked child never commits or unlocks its parent's writers: a SIGTERM there acts
  as the handler before spikestore's, or the default.

State: the registry of open writers is shared under a lock (any thread opens a
writer); the pipe and the ``spikestore-exit`` thread belong to the process that made
them (a forked child makes its own when it opens a writer); the handler runs in the
main thread.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from ._zarr import set_io_executor

__all__ = ["COMMIT_TIMEOUT", "END_TIMEOUT", "ExitSafePool", "LazyPool", "run_inline", "track"]

#: How long the ``spikestore-exit`` thread waits for the commits after a SIGTERM
#: (``torchrun`` sends SIGKILL 30 seconds after its SIGTERM).
COMMIT_TIMEOUT = 20.0
#: How long it then waits for the main thread to end the process by the default
#: action before it ends the process itself (``os._exit``).
END_TIMEOUT = 5.0


def run_inline(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
    """``fn(*args, **kwargs)`` run now, in the calling thread, as a finished future."""
    future: Future[Any] = Future()
    try:
        future.set_result(fn(*args, **kwargs))
    except BaseException as exc:
        future.set_exception(exc)
    return future


class ExitSafePool(ThreadPoolExecutor):
    """A thread pool that, once Python refuses new work at interpreter exit (after
    the program's threads have ended), runs each job in the thread that submits it,
    so that the ``atexit`` hook can still commit."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        try:
            return super().submit(fn, *args, **kwargs)
        except RuntimeError:  # "cannot schedule new futures after (interpreter) shutdown"
            return run_inline(fn, *args, **kwargs)


class LazyPool:
    """An :class:`ExitSafePool` of ``threads`` threads named ``name``, made at the first
    :meth:`get`, and again at the first in a forked child (which has none of its
    parent's threads). Any thread may call :meth:`get` and :meth:`close`."""

    def __init__(self, threads: int, name: str) -> None:
        self.threads = threads
        self.name = name
        self._pool: ExitSafePool | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def get(self) -> ExitSafePool:
        with self._lock:
            if self._pool is None or self._pid != os.getpid():
                self._pool = ExitSafePool(self.threads, thread_name_prefix=self.name)
                self._pid = os.getpid()
            return self._pool

    def close(self) -> None:
        """Stop the threads after their jobs (a later :meth:`get` starts new ones)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None and self._pid == os.getpid():
            pool.shutdown(wait=True)


class _Worker(Protocol):
    def start_commit(self) -> Callable[[float], None]: ...


class _Closable(Protocol):
    def close(self) -> None: ...


class _Process:
    """This process's exit machinery: created by the first writer it opens."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        #: writer -> (its worker, whether this process owns its store)
        self.writers: weakref.WeakKeyDictionary[Any, tuple[_Worker, Callable[[], bool]]] = (
            weakref.WeakKeyDictionary()
        )
        self.lock = threading.Lock()
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.write_fd, False)
        #: Set by the ``spikestore-exit`` thread once the commit after a SIGTERM is done.
        self.committed = False
        #: Whether the process is to end by SIGTERM's default action after the commit
        #: (set by the handler: a SIGTERM came, and no handler of the program's was before).
        self.then_default = False
        threading.Thread(target=self._serve, name="spikestore-exit", daemon=True).start()
        set_io_executor(ExitSafePool(thread_name_prefix="spikestore-io"))
        atexit.register(_close_at_exit)

    def owned(self) -> list[tuple[_Worker, Callable[[], bool]]]:
        with self.lock:
            return list(self.writers.values())

    def _serve(self) -> None:
        """The ``spikestore-exit`` thread: one commit per SIGTERM, then the end."""
        while True:
            try:
                os.read(self.read_fd, 512)
            except InterruptedError:
                continue
            deadline = time.monotonic() + COMMIT_TIMEOUT
            waits = []
            for worker, owns in self.owned():  # every writer commits at once: one that
                try:  # hangs does not hold up the others
                    if owns():
                        waits.append(worker.start_commit())
                except Exception:
                    pass  # the writer's error is the writer's to raise
            for wait in waits:
                wait(max(0.0, deadline - time.monotonic()))
            if self.then_default:
                self.committed = True
                _flush_streams()
                _kill_by_default()
                # Without a C-level way to restore the default (no libc), the handler
                # does it when the main thread next runs Python code.
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(END_TIMEOUT)  # the main thread is blocked in a C call
                _flush_streams()
                os._exit(128 + signal.SIGTERM)


_process: _Process | None = None
_process_lock = threading.Lock()
#: The SIGTERM handler that was in place before spikestore's (SIG_DFL or a function).
_previous: Any = signal.SIG_DFL
#: The process that installed the handler (once: a handler the program installs
#: later is not replaced by the next writer).
_installed_pid: int | None = None


def track(writer: _Closable, worker: _Worker, owns: Callable[[], bool]) -> None:
    """Commit ``writer`` at exit and on SIGTERM.

    ``worker.start_commit()`` asks for a commit of what was appended so far (from any
    thread) and returns a function that waits for it at most the given seconds;
    ``owns()`` says whether this process owns the store (False in a forked child);
    ``writer.close()`` is called at exit if the writer is still open. Holds no strong
    reference to ``writer``: one that is collected is closed by its own finalizer.
    """
    global _process
    with _process_lock:
        if _process is None or _process.pid != os.getpid():
            _process = _Process()
        process = _process
    with process.lock:
        process.writers[writer] = (worker, owns)
    _install_handler()


def _install_handler() -> None:
    """Handle SIGTERM with :func:`_on_sigterm` (from the main thread only), over
    Python's default or a Python function installed before."""
    global _previous, _installed_pid
    if threading.current_thread() is not threading.main_thread():
        return
    if _installed_pid == os.getpid():
        return
    _installed_pid = os.getpid()
    try:
        current = signal.getsignal(signal.SIGTERM)
        if current is _on_sigterm or not (current is signal.SIG_DFL or callable(current)):
            return
        signal.signal(signal.SIGTERM, _on_sigterm)
        _previous = current
    except (ValueError, OSError):  # no signals here (an embedded interpreter)
        pass


def _on_sigterm(signum: int, frame: Any) -> None:
    """Wake the ``spikestore-exit`` thread; then act as the handler before (see the
    module docstring). Never blocks."""
    process = _process
    # No lock here: the main thread may hold one of this module's when interrupted.
    if process is not None and process.pid == os.getpid() and len(process.writers):
        if process.committed:  # the second SIGTERM, sent once the commit is done
            _end_by_default()
            return
        process.then_default = _previous is signal.SIG_DFL
        try:
            os.write(process.write_fd, b"\0")
        except BlockingIOError:  # the thread has many wake-ups already
            pass
        if process.then_default:
            return  # the thread ends the process once the commit is done
    if callable(_previous):
        _previous(signum, frame)
    else:
        _end_by_default()


def _end_by_default() -> None:
    """SIGTERM's default action, from the main thread."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _kill_by_default() -> None:
    """SIGTERM's default action, from any thread: the C library's ``signal`` restores
    the default (Python's ``signal.signal`` works in the main thread only), then the
    signal ends the process at once. Returns only if that could not be done."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.signal.restype = ctypes.c_void_p
        libc.signal.argtypes = [ctypes.c_int, ctypes.c_void_p]
        if libc.signal(signal.SIGTERM, 0) == ctypes.c_void_p(-1).value:  # SIG_DFL is 0
            return
    except (OSError, AttributeError):
        return
    os.kill(os.getpid(), signal.SIGTERM)


def _flush_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


def _close_at_exit() -> None:
    """The ``atexit`` hook: close every writer still open (in a forked child, close()
    only lets go of the child's copy of the lock)."""
    process = _process
    if process is None:
        return
    with process.lock:
        writers = list(process.writers.keys())
    for w in writers:
        try:
            w.close()
        except Exception:
            pass  # the error was the writer's to raise; exit goes on
    if process.pid == os.getpid() and process.then_default:
        # A SIGTERM came and the program ended before the spikestore-exit thread could
        # end it (the writers are committed now): end as SIGTERM's default would.
        _flush_streams()
        _end_by_default()
