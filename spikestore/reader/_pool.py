"""The read pool: a large read decoded by the calling thread and one helper thread,
into outputs whose memory numpy allocates.

Thread ownership: the caller. The pool (two threads per process, made on first use,
never at import, and made again in a forked child) runs only jobs that a caller hands
it through :func:`_share`, while that caller works beside it and waits for it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

__all__ = [
    "read_threads",
]


_UINT_OF_SIZE = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def _empty_cpu(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """``torch.empty(shape, dtype=dtype)`` in memory allocated by numpy.

    Large outputs are written once, so the cost of a read is mostly the first touch
    of each page: numpy asks for transparent huge pages on large arrays and torch's
    CPU allocator does not, which makes filling a fresh 64 MB tensor several times
    slower (measured in ``benchmarks/bench_read.py``).
    """
    itemsize = torch.empty((), dtype=dtype).element_size()
    arr = np.empty(shape, _UINT_OF_SIZE[itemsize])
    out = torch.from_numpy(arr)
    return out if dtype == out.dtype else out.view(dtype)


def _share(fn: Callable[[Any], None], jobs: Iterable[Any], bits: int | None = None) -> None:
    """``fn(job)`` for every job, by the calling thread and one of the reader's
    threads taking jobs from one queue; the first error stops both and is raised.

    ``bits``: how many output bits the jobs make together; below
    :data:`_PARALLEL_BITS` the calling thread runs them alone (None: shared at any
    size). The calling thread works too and waits only for a job the helper has
    started: on a machine whose other core is busy the helper gets few jobs or none,
    and the read never waits for it to be scheduled.
    """
    todo = list(jobs)
    small = bits is not None and bits < _PARALLEL_BITS
    if small or len(todo) < 2 or read_threads() < 2:
        for job in todo:
            fn(job)
        return
    it = iter(todo)
    cond = threading.Condition()
    busy = [False]  # the helper is running a job
    failed: list[BaseException] = []

    def take(helper: bool) -> Any:
        with cond:
            if helper:
                busy[0] = False
                cond.notify_all()
            job = _DONE if failed else next(it, _DONE)
            if helper and job is not _DONE:
                busy[0] = True
            return job

    def work(helper: bool) -> None:
        while (job := take(helper)) is not _DONE:
            try:
                fn(job)
            except BaseException as exc:
                with cond:
                    failed.append(exc)
                    busy[0] = False
                    cond.notify_all()
                if helper:
                    return
                raise

    _unpack_pool().submit(work, True)
    try:
        work(False)
    finally:
        with cond:
            while busy[0]:
                cond.wait()
    if failed:
        raise failed[0]


_DONE = object()


#: Outputs of at least this many elements are decoded and unpacked by two threads
#: (see :data:`READ_THREADS`).
_PARALLEL_BITS = 1 << 23


def read_threads() -> int:
    """The number of threads a large read uses (:data:`spikestore.reader.READ_THREADS`)."""
    from . import READ_THREADS  # the package's: set there by users

    n = READ_THREADS
    if n is None:
        try:
            n = int(os.environ.get("SPIKESTORE_READ_THREADS", "2"))
        except ValueError:
            n = 2
    return max(1, min(2, n))


_POOL: dict[int, Any] = {}


def _unpack_pool() -> Any:
    """The reader's thread pool, made on first use (never at import) and once per
    process: a forked child (a DataLoader worker) has none of its parent's threads, and
    the parent's pool would wait for them forever."""
    pid = os.getpid()
    pool = _POOL.get(pid)
    if pool is None:
        from concurrent.futures import ThreadPoolExecutor

        _POOL.clear()
        pool = _POOL[pid] = ThreadPoolExecutor(2, thread_name_prefix="spikestore-read")
    return pool
