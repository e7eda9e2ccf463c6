"""A writer's lease on a store prefix in object storage, where there is no ``flock``.

Layout
------
Lease objects live beside the store's nodes, in a prefix no Zarr node can have (node
keys never start with ``.``, see ``spikestore.format.node_key``)::

    <store>/.spikestore-lease/<generation>     one object per generation, 10 digits
                                               (more past 9999999999, 30 at most)
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
over. Generations older than the one taken over are then deleted. The highest
generation a key can hold (:data:`MAX_GENERATION`, 30 digits: reached only by a
planted key) has no successor; once it is stale it is *reset* (see "Untrusted lease
objects") and the lease is acquired again.

*Renew*: every ``timeout / 3`` a daemon thread lists the generations and, if its own
is still the highest, rewrites it with a new heartbeat; if a higher one exists the
lease is *lost* for good.

*Fence* (:meth:`Lease.check`, before a field's first write of each commit, and
before group creation): the lease is refused if it
was lost, renewed synchronously if its last renewal is older than ``timeout / 2``
(the daemon thread may be starved), and otherwise one ``exists`` of generation + 1
(none past :data:`MAX_GENERATION`) tells whether another writer took over. A writer
whose lease is lost writes nothing more.

*Release* (close): the daemon thread stops and the generation is rewritten with
``released: true``, so the next writer need not wait for the timeout.

Untrusted lease objects
-----------------------
Anyone who can write the bucket can plant a lease object, so a body is judged, never
trusted. A lease that is not one spikestore would write is stale, as a dead holder's
is, and taken over at once: an object empty or larger than :data:`MAX_LEASE_BYTES`,
not a regular file (a local store), not JSON or nested past the parser's limit, not a
JSON object, a ``heartbeat`` or ``timeout`` that is not a finite number (``NaN``,
``Infinity``, text, ``true``), a timeout not above 0, ``released`` neither true nor
false. A claimed timeout is capped at :data:`MAX_LEASE_TIMEOUT`. A heartbeat more
than :data:`CLOCK_SKEW` (or the timeout, if less) ahead of this host's clock is not
believed either: the lease counts from when its object was last written by the
store's own clock (S3's ``Last-Modified``, a file's mtime), so a heartbeat of
``1e300`` or a day ahead locks the store for at most that skew plus the timeout after
it was written, whoever looks and however often; a store that keeps no such time
(memory) counts from when this process first read that body, and a modification
time as far in the future is not believed (stale). The remote wall clock of a body
is thus used only as far as the stated clock assumption lets it be. Values quoted
from a body in a message (the holder) are escaped to one line and at most 100
characters.

Generation keys are only those a writer writes and reads back: ASCII digits, 10 to 30
of them, spelt as ``<generation:010d>`` spells them (a key of other digits, of more
leading zeros, or longer, is not a lease and is ignored, as other keys in the folder
are), so the highest is :data:`MAX_GENERATION`. A writer takes only generations below
it, so it always lists its own and its successor's (the fence). A planted key locks the
store no longer than its body does: its body is judged as any other, and a stale
:data:`MAX_GENERATION` (or the one below, the highest a writer takes) is reset instead
of taken over: the acquirer deletes it together with the run of consecutive
generations just below it (deleted from the lowest up, so that a contender still sees
the stale last one and resets alike), then acquires as usual: judges the highest
generation left below the run, and takes over its successor, absent, below the run
and never one it deleted (the run ends at 10**30 - 1, so writers reach its first
generation again only after about 10**30 takeovers). A holder of a deleted generation
thus finds its object gone at its next renewal and writes nothing more, and
contenders that reset alike race for the same next generation, which one of them
creates. A run of N planted keys costs N deletes, once.

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
import math
import numbers
import os
import re
import socket
import threading
import time
import uuid
from typing import Any

from .._zarr import buffer_prototype, from_bytes
from .._zarr import sync as _sync
from ..errors import StoreLockedError
from ..format import CLEARING_KEY, LEASE_DIR

__all__ = [
    "LEASE_DIR",
    "CLEARING_KEY",
    "DEFAULT_LEASE_TIMEOUT",
    "MAX_LEASE_TIMEOUT",
    "CLOCK_SKEW",
    "MAX_LEASE_BYTES",
    "MAX_GENERATION",
    "check_timeout",
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
#: How far (seconds) a heartbeat may lie ahead of this host's clock and still be
#: believed, if the lease's timeout is not less: clocks under NTP agree to milliseconds.
CLOCK_SKEW = 5.0
#: The highest generation: the largest a generation key (30 digits) can hold. Reached
#: only by a planted key; it has no successor, so it is reset, not taken over.
MAX_GENERATION = 10**30 - 1
#: The largest lease object read; spikestore writes about 200 bytes (a holder string
#: carries a host name of at most 255).
MAX_LEASE_BYTES = 16 * 1024

# Zero-padded to 10 ASCII digits, more past 9999999999; 30 at most, so that int() of a
# planted key is cheap and cannot fail (and MAX_GENERATION is the highest).
_GEN = re.compile(r"[0-9]{10,30}")
#: The most older generations one acquire deletes (garbage; planted by the thousand,
#: they must not make opening a store slow).
_MAX_DELETES = 64
#: The most resets (see :meth:`Lease._reset`) one acquire makes: more means something
#: keeps planting the last generation.
_MAX_RESETS = 3
#: Characters of an untrusted value shown in a message.
_SHOWN = 100


def read_bytes(store: Any, key: str) -> bytes | None:
    buf = _sync(store.get(key, buffer_prototype()))
    return None if buf is None else buf.to_bytes()


def read_json(store: Any, key: str) -> Any:
    """``key`` parsed as JSON; None if absent or not JSON (or nested too deep to parse)."""
    data = read_bytes(store, key)
    if data is None:
        return None
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


def write(store: Any, key: str, data: bytes) -> None:
    _sync(store.set(key, from_bytes(data)))


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
    _sync(store.set_if_not_exists(key, from_bytes(data)))
    return read_bytes(store, key) == data


def _gen_key(generation: int) -> str:
    return f"{LEASE_DIR}/{generation:010d}"


def _generation(name: Any) -> int | None:
    """The generation a lease folder entry's ``name`` is the key of, or None if it is
    not one a writer writes (see "Untrusted lease objects" in the module docstring)."""
    if not isinstance(name, str) or not _GEN.fullmatch(name):
        return None
    generation = int(name)
    return generation if f"{generation:010d}" == name else None


def check_timeout(timeout: Any, name: str = "lease_timeout") -> float:
    """``timeout`` as a float: seconds above 0 and at most :data:`MAX_LEASE_TIMEOUT`;
    anything else (NaN, infinity, 0 or less, not a number) is a ValueError naming
    ``name``."""
    value = math.nan
    if not isinstance(timeout, bool) and isinstance(timeout, numbers.Real):
        try:
            value = float(timeout)
        except (OverflowError, ValueError, TypeError):
            pass
    if not 0 < value <= MAX_LEASE_TIMEOUT:  # False for NaN
        raise ValueError(
            f"{name} must be a number of seconds > 0 and at most {MAX_LEASE_TIMEOUT:.0f}, "
            f"got {timeout!r}"
        )
    return value


def _shown(value: Any, limit: int = _SHOWN) -> str:
    """An untrusted value for a message: one line (control, format and separator
    characters escaped as ``\\n``, ``\\x1b``, ``\\u202e``), at most ``limit`` characters."""
    text = value if isinstance(value, str) else json.dumps(value, default=repr)
    text = "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
        for c in text[: limit + 1]
    )
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _seconds(x: float) -> str:
    return f"{x:.1f}" if abs(x) < 1e7 else f"{x:.3g}"


def _real(x: Any) -> float | None:
    """``x`` if it is a finite JSON number (not a bool), else None."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    try:
        f = float(x)
    except OverflowError:  # an integer of hundreds of digits
        return None
    return f if math.isfinite(f) else None


def _stat(store: Any, key: str) -> tuple[int, float | None] | None:
    """Size and last-modified time (by the store's clock: S3's ``Last-Modified``, a
    file's mtime; None where the store keeps none, a wrapper store included) of
    ``key``; None if it is absent, or not a regular file in a local store (a FIFO
    would block the read)."""
    import stat as st

    from zarr.storage import FsspecStore, LocalStore, ObjectStore

    if isinstance(store, LocalStore):
        try:
            info = os.lstat(store.root / key)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return (info.st_size, info.st_mtime) if st.S_ISREG(info.st_mode) else None
    if isinstance(store, FsspecStore):
        try:
            meta = _sync(store.fs._info(f"{store.path.rstrip('/')}/{key}"))
        except FileNotFoundError:
            return None
        if meta.get("type", "file") != "file":
            return None
        when = meta.get("LastModified", meta.get("mtime"))
        return int(meta.get("size") or 0), _timestamp(when)
    if isinstance(store, ObjectStore):
        import obstore
        from obstore.exceptions import NotFoundError

        async def head() -> Any:  # obstore wants the running loop when called
            return await obstore.head_async(store.store, key)

        try:
            meta = _sync(head())
        except (FileNotFoundError, NotFoundError):
            return None
        return int(meta["size"]), _timestamp(meta.get("last_modified"))
    try:
        return int(_sync(store.getsize(key))), None
    except FileNotFoundError:
        return None


def _timestamp(when: Any) -> float | None:
    from datetime import datetime

    if isinstance(when, datetime):
        return when.timestamp()
    return _real(when)


# When this process first read a lease body, for stores that keep no modification
# time (see the module docstring): (key, body) -> time.monotonic().
_first_seen: dict[tuple[str, bytes], float] = {}


def _read_lease(store: Any, key: str) -> tuple[Any, float | None]:
    """A lease object's JSON body (None when it is damaged or absent: stale) and
    when it was last written, by the store's clock or, failing that, by when this
    process first read it."""
    found = _stat(store, key)
    if found is None or not 0 < found[0] <= MAX_LEASE_BYTES:
        return None, None
    data = read_bytes(store, key)
    if data is None or len(data) > MAX_LEASE_BYTES:
        return None, None
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested too deep
        return None, None
    written = found[1]
    if written is None:
        if len(_first_seen) > 1000:
            _first_seen.clear()
        first = _first_seen.setdefault((key, data), time.monotonic())
        written = time.time() - (time.monotonic() - first)
    return body, written


class Lease:
    """One writer's lease on ``store`` (see the module docstring).

    Examples
    --------
    >>> from zarr.storage import MemoryStore
    >>> lease = Lease(MemoryStore(), "memory", timeout=5.0)
    >>> lease.acquire(); lease.check(); lease.release()
    """

    def __init__(self, store: Any, where: str, timeout: float = DEFAULT_LEASE_TIMEOUT) -> None:
        self.timeout = check_timeout(timeout)
        self.store = store
        self.where = where
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
        return sorted(g for g in map(_generation, keys) if g is not None)

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
    def _holds(self, top: int) -> str | None:
        """Why generation ``top``'s lease still holds the store (the message), or None
        if it may be taken over (see "Untrusted lease objects" in the module docstring)."""
        body, written = _read_lease(self.store, _gen_key(top))
        if not isinstance(body, dict) or body.get("released", False) is not False:
            return None  # released, or damaged: nobody can renew it
        beat = _real(body.get("heartbeat"))
        timeout = _real(body.get("timeout", self.timeout))
        if beat is None or timeout is None or timeout <= 0:
            return None
        timeout = min(timeout, MAX_LEASE_TIMEOUT)
        now = time.time()
        skew = min(CLOCK_SKEW, timeout)
        ahead = beat - now
        counted = " (leases assume they agree)"
        if ahead > skew:
            if written is None or written - now > skew:
                return None
            beat = min(beat, written)
            counted = ", so its lease counts from when its object was written"
        age = now - beat
        if age >= timeout:
            return None
        clocks = (
            f"; its heartbeat is {_seconds(ahead)} s in the future: the hosts' clocks "
            f"disagree{counted}"
            if ahead > 0
            else ""
        )
        return (
            f"{self.where} is open for writing by another writer "
            f"({_shown(body.get('holder', 'unknown'))}, lease generation {top}, last "
            f"heartbeat {_seconds(max(age, 0.0))} s ago{clocks}); close it first, or "
            f"wait {_seconds(timeout - age)} s for its lease to expire if it died"
        )

    def acquire(self) -> None:
        """Take the lease, or raise :class:`StoreLockedError` naming its holder."""
        resets = 0
        while True:
            gens = self._generations()
            top = gens[-1] if gens else 0
            if gens:
                why = self._holds(top)
                if why is not None:
                    raise StoreLockedError(why)
            # A writer never takes MAX_GENERATION itself: its successor's key could not
            # be written, and the fence (``gen + 1`` exists) would not hold for it.
            if top < MAX_GENERATION - 1:
                break
            if resets == _MAX_RESETS:
                raise StoreLockedError(
                    f"{self.where}: lease generation {MAX_GENERATION} (never a writer's "
                    f"successor: planted) came back after {resets} resets; something "
                    f"keeps writing it in {LEASE_DIR}/"
                )
            self._reset(gens)
            resets += 1
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
        # Older than the one taken over (that one fences its holder).
        for g in gens[:-1][:_MAX_DELETES]:
            try:
                _sync(self.store.delete(_gen_key(g)))
            except Exception:
                pass  # garbage only; the next writer tries again
        self._thread = threading.Thread(
            target=self._run, name=f"spikestore-lease {self.where}", daemon=True
        )
        self._thread.start()

    def _reset(self, gens: list[int]) -> None:
        """Delete the stale last generation (:data:`MAX_GENERATION` or the one below it,
        the highest of ``gens``) and the run of consecutive ones just below it, from the
        lowest up (see the module docstring): the acquire that follows takes over the
        highest one left.
        A key listed only as a prefix of others (``<generation>/x``, planted) is deleted
        with what it holds: left, it would be listed again."""
        run = len(gens) - 1
        while run > 0 and gens[run - 1] == gens[run] - 1:
            run -= 1
        for g in gens[run:]:
            for delete in (self.store.delete, self.store.delete_dir):
                try:
                    _sync(delete(_gen_key(g)))
                except FileNotFoundError:
                    pass  # a contender resetting alike deleted it first

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
            if nxt <= MAX_GENERATION and _sync(self.store.exists(_gen_key(nxt))):
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
