"""A writer's lease on a store prefix in object storage, where there is no ``flock``.

Layout
------
Lease objects live beside the store's nodes, in a prefix no Zarr node can have (node
keys never start with ``.``, see ``spikestore.format.node_key``)::

    <store>/.spikestore-lease/<generation>     one object per generation, 10 digits
    <store>/.spikestore-lease/clearing.json    only while a writer replaces a store

Each generation's body is JSON::

    {"holder": "pid 123 on host", "token": "<uuid hex>", "generation": 7,
     "heartbeat": <holder's wall time, seconds>, "timeout": 30.0, "released": false}

Protocol
--------
*Acquire*: list the generations and read the highest. If it is released, or its
heartbeat is older than its ``timeout``, create generation + 1 with a
create-if-absent write (S3 ``If-None-Match: *``): of several contenders exactly one
creates it, and the others get :class:`~spikestore.errors.StoreLockedError`. A live
holder's lease gets that error at once, naming the holder and when it may be taken
over. Generations older than the one taken over are then deleted.

*Renew*: every ``timeout / 3`` a daemon thread lists the generations and, if its own
is still the highest, rewrites it with a new heartbeat; if a higher one exists the
lease is *lost* for good.

*Fence* (:meth:`Lease.check`, before a field's first write of each commit, and
before group creation): the lease is refused if it
was lost, renewed synchronously if its last renewal is older than ``timeout / 2``
(the daemon thread may be starved), and otherwise one ``exists`` of generation + 1
tells whether another writer took over. A writer whose lease is lost writes nothing
more.

*Release* (close): the daemon thread stops and the generation is rewritten with
``released: true``, so the next writer need not wait for the timeout.

Assumptions, stated so they can be checked: the hosts' clocks agree to well under
the timeout (heartbeats are wall times), and the store's ``set_if_not_exists`` is
atomic (S3 through obstore or s3fs, local files, memory). A holder frozen for more
than ``timeout / 2`` between its fence check and the end of that field's writes (a
stopped process, a VM migration) can still write them after a takeover, overwriting
chunks the new holder wrote: S3 has no fenced ordinary PUTs, and only conditional
writes of every chunk (``If-Match``) would close that gap.

Thread ownership: a :class:`Lease` is used by the thread that opens the writer
(acquire, release), the writer thread (:meth:`check`) and its own renewal thread;
one lock orders them. It belongs to the process that acquired it: a forked child
neither renews nor releases it.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import uuid
from typing import Any

from .errors import StoreLockedError
from .format import CLEARING_KEY, LEASE_DIR

__all__ = [
    "LEASE_DIR",
    "CLEARING_KEY",
    "DEFAULT_LEASE_TIMEOUT",
    "MAX_LEASE_TIMEOUT",
    "Lease",
    "create_exclusive",
    "read_bytes",
    "read_json",
    "write",
]

#: Seconds without a heartbeat after which a lease may be taken over.
DEFAULT_LEASE_TIMEOUT = 30.0
#: The longest timeout a lease object may claim (one day).
MAX_LEASE_TIMEOUT = 86400.0

_GEN = re.compile(r"\d{10,}")  # zero-padded to 10 digits; more past 9999999999


def _sync(coro: Any) -> Any:
    from zarr.core.sync import sync

    return sync(coro)


def _buffer(data: bytes) -> Any:
    from zarr.core.buffer import default_buffer_prototype

    return default_buffer_prototype().buffer.from_bytes(data)


def read_bytes(store: Any, key: str) -> bytes | None:
    from zarr.core.buffer import default_buffer_prototype

    buf = _sync(store.get(key, default_buffer_prototype()))
    return None if buf is None else buf.to_bytes()


def read_json(store: Any, key: str) -> Any:
    """``key`` parsed as JSON; None if absent or not JSON."""
    data = read_bytes(store, key)
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


def write(store: Any, key: str, data: bytes) -> None:
    _sync(store.set(key, _buffer(data)))


def create_exclusive(store: Any, key: str, data: bytes) -> bool:
    """Write ``key`` only if it does not exist; True if this call created it.

    Zarr's ``set_if_not_exists`` does not say whether it wrote, so the object is read
    back (the body holds a random token). ``FsspecStore``'s version checks and then
    writes (two requests, racy); fsspec's own create-only write (``If-None-Match``
    on S3) is used instead.
    """
    from zarr.storage import FsspecStore

    if isinstance(store, FsspecStore):
        path = f"{store.path.rstrip('/')}/{key}"
        try:
            _sync(store.fs._pipe_file(path, data, mode="create"))
        except FileExistsError:
            return False
        return True
    _sync(store.set_if_not_exists(key, _buffer(data)))
    return read_bytes(store, key) == data


def _gen_key(generation: int) -> str:
    return f"{LEASE_DIR}/{generation:010d}"


class Lease:
    """One writer's lease on ``store`` (see the module docstring).

    Examples
    --------
    >>> from zarr.storage import MemoryStore
    >>> lease = Lease(MemoryStore(), "memory", timeout=5.0)
    >>> lease.acquire(); lease.check(); lease.release()
    """

    def __init__(self, store: Any, where: str, timeout: float = DEFAULT_LEASE_TIMEOUT) -> None:
        if not 0 < float(timeout) <= MAX_LEASE_TIMEOUT:
            raise ValueError(
                f"lease_timeout must be > 0 and at most {MAX_LEASE_TIMEOUT:.0f} seconds, "
                f"got {timeout!r}"
            )
        self.store = store
        self.where = where
        self.timeout = float(timeout)
        self.generation: int | None = None
        #: The generation taken over (0: the store had no lease).
        self.previous = 0
        self.token = uuid.uuid4().hex
        self.holder = f"pid {os.getpid()} on {socket.gethostname()}"
        self.pid: int | None = None
        self._lost: str | None = None
        self._renewed = 0.0  # time.monotonic() when the last good renewal started
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------- helpers
    def _generations(self) -> list[int]:
        async def names() -> list[str]:
            return [k async for k in self.store.list_dir(LEASE_DIR)]

        try:
            keys = _sync(names())
        except FileNotFoundError:
            return []
        return sorted(int(k) for k in keys if _GEN.fullmatch(k))

    def _body(self, released: bool = False, heartbeat: float | None = None) -> bytes:
        return json.dumps(
            {
                "holder": self.holder,
                "token": self.token,
                "generation": self.generation,
                "heartbeat": time.time() if heartbeat is None else heartbeat,
                "timeout": self.timeout,
                "released": released,
            }
        ).encode()

    @property
    def owned(self) -> bool:
        """Whether this process holds the lease (False in a forked child)."""
        return self.pid == os.getpid() and self.generation is not None

    @property
    def lost(self) -> str | None:
        """Why the lease was lost, or None."""
        return self._lost

    # ------------------------------------------------------------- protocol
    def acquire(self) -> None:
        """Take the lease, or raise :class:`StoreLockedError` naming its holder."""
        gens = self._generations()
        top = gens[-1] if gens else 0
        if gens:
            body = read_json(self.store, _gen_key(top))
            if not isinstance(body, dict):
                body = {}  # unreadable (damaged): nobody can renew it, so it is stale
            if not body.get("released", False):
                try:
                    beat = float(body["heartbeat"])
                    # A hostile or damaged timeout cannot lock the store for ages.
                    timeout = min(float(body.get("timeout", self.timeout)), MAX_LEASE_TIMEOUT)
                except (KeyError, TypeError, ValueError):
                    beat, timeout = float("-inf"), 0.0
                age = time.time() - beat
                if age < timeout:
                    skew = (
                        f"; its heartbeat is {-age:.1f} s in the future: the hosts' clocks "
                        "disagree (leases assume they agree)"
                        if age < 0
                        else ""
                    )
                    raise StoreLockedError(
                        f"{self.where} is open for writing by another writer "
                        f"({body.get('holder', 'unknown')}, lease generation {top}, last "
                        f"heartbeat {max(age, 0.0):.1f} s ago{skew}); close it first, or "
                        f"wait {timeout - age:.1f} s for its lease to expire if it died"
                    )
        self.previous = top
        self.generation = top + 1
        self.pid = os.getpid()
        started = time.monotonic()
        if not create_exclusive(self.store, _gen_key(self.generation), self._body()):
            self.generation = self.pid = None
            raise StoreLockedError(
                f"{self.where}: another writer took the lease (generation {top + 1}) first"
            )
        self._renewed = started
        for g in gens[:-1]:  # older than the one taken over (that one fences its holder)
            try:
                _sync(self.store.delete(_gen_key(g)))
            except Exception:
                pass  # garbage only; the next writer tries again
        self._thread = threading.Thread(
            target=self._run, name=f"spikestore-lease {self.where}", daemon=True
        )
        self._thread.start()

    def _lose(self, why: str) -> StoreLockedError:
        self._lost = why
        return StoreLockedError(f"{self.where}: lease lost: {why}; this writer writes nothing more")

    def _renew(self) -> None:
        """List, and rewrite the heartbeat if still the highest generation (call locked)."""
        if self._lost:
            raise self._lose(self._lost)
        started = time.monotonic()
        beat = time.time()
        gens = self._generations()
        assert self.generation is not None
        newer = [g for g in gens if g > self.generation]
        if newer:
            raise self._lose(f"another writer took over (lease generation {newer[-1]})")
        if self.generation not in gens:
            raise self._lose("its lease object was deleted")
        write(self.store, _gen_key(self.generation), self._body(heartbeat=beat))
        self._renewed = started

    def _run(self) -> None:
        while not self._stop.wait(self.timeout / 3):
            if self.pid != os.getpid():
                return
            with self._lock:
                if self._stop.is_set():
                    return
                try:
                    self._renew()
                except StoreLockedError:
                    return
                except Exception:
                    pass  # a failed request; the next renewal, or the fence, tries again

    def check(self) -> None:
        """The fence before a field's writes: raise :class:`StoreLockedError` if the
        lease is lost (another writer may have taken over)."""
        with self._lock:
            if self._lost:
                raise self._lose(self._lost)
            if self.generation is None:
                raise StoreLockedError(f"{self.where}: the lease is not held")
            if time.monotonic() - self._renewed > self.timeout / 2:
                self._renew()
                return
            nxt = self.generation + 1
            if _sync(self.store.exists(_gen_key(nxt))):
                raise self._lose(f"another writer took over (lease generation {nxt})")

    def release(self) -> None:
        """Mark the lease released (idempotent; a no-op in a forked child)."""
        if self.pid != os.getpid() or self.generation is None:
            return
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        with self._lock:
            try:
                if not self._lost and self.generation == (self._generations() or [0])[-1]:
                    write(self.store, _gen_key(self.generation), self._body(released=True))
            except Exception:
                pass  # unreachable store: the lease expires after its timeout instead
            self.generation = self.pid = None
