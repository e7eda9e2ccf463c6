"""Helpers for testing spikestore and code built on it: record comparison, fault-injecting
and counting Zarr stores, Hypothesis strategies, the committed fixtures' records, and a
recorder process for crash tests.

Needs the ``test`` extra (``hypothesis``) for :func:`records_strategy` only.

Command line::

    python -m spikestore.testing recorder STORE [--mode a] [--steps N] [--flush-every K]
        [--flush-interval S] [--sleep S] [--shard-steps N] [--storage-options JSON]
        [--lease-timeout S]
    python -m spikestore.testing fixture DIR [VERSION]

``recorder`` appends, forever or for ``--steps`` steps, records whose values are a pure
function of (layer, step) (:func:`recorder_value`), so a test that kills it can check
every record that survived. Every ``--flush-every`` steps it calls ``flush()`` and prints
one JSON line ``{"flushed": {"monitor/layer": steps, ...}}``: those steps were committed
before the line was printed. STORE may be a URL (``s3://bucket/run``, with
``--storage-options``). ``fixture`` writes the records of a committed fixture store
(``tests/fixtures/store_v<VERSION>`` were written that way, by the spikestore of that
format version, and must keep reading).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import errno
import http.client
import itertools
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from zarr.storage import WrapperStore

__all__ = [
    "bits_equal",
    "assert_chunk_flips_raise_or_decode",
    "wait_for",
    "same_record",
    "CountingStore",
    "RequestCountingStore",
    "FullDiskStore",
    "S3Server",
    "s3_server",
    "WriteBudget",
    "records_strategy",
    "ALL_DTYPES",
    "FIXTURE_TIME_AXIS",
    "FIXTURE_RUN",
    "FIXTURE_RUN2_ATTRS",
    "FIXTURE_DIMS",
    "FIXTURE_UNITS",
    "LIFFeedForwardState",
    "fixture_records",
    "write_fixture",
    "moving_spikes",
    "RECORDER_LAYERS",
    "recorder_value",
    "recorder_existing_steps",
    "recorder_check",
    "spawn_recorder",
    "recorder_lines",
    "recorder_main",
]


# ------------------------------------------------------------------ comparison
def bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal dtype, shape and bit pattern (so NaN == NaN and -0.0 != 0.0)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.numel() == 0:
        return True
    return torch.equal(
        a.detach().cpu().contiguous().view(-1).view(torch.uint8),
        b.detach().cpu().contiguous().view(-1).view(torch.uint8),
    )


def same_record(a: Any, b: Any) -> bool:
    """Whether two records (tensors, numbers, None, tuples and lists of them) are the
    same: same types and structure, tensors :func:`bits_equal`."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and bits_equal(a, b)
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same_record, a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return type(a) is type(b) and a == b


def assert_chunk_flips_raise_or_decode(a: Any, data: bytes, stride: int = 1) -> None:
    """Flipping any byte (every ``stride``-th) of ``data``, a ``spikestore.spikes`` chunk
    encoded from ``a``, either raises ``ValueError`` or decodes to an array of ``a``'s
    shape and dtype: damage never crashes the decoder or changes the shape."""
    import numpy as np

    from .codecs.spikes import decode_chunk

    rng = np.random.default_rng(0)
    for pos in range(0, len(data), stride):
        bad = bytearray(data)
        bad[pos] ^= int(rng.integers(1, 256))
        try:
            out = decode_chunk(bytes(bad), a.shape)
        except ValueError:
            continue
        assert out.shape == a.shape and out.dtype == np.uint8


def wait_for(pred: Any, timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``pred()`` every 10 ms until it is true; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


# ---------------------------------------------------------------------- stores
class CountingStore(WrapperStore):  # type: ignore[type-arg]
    """Counts the reads that reach the wrapped store (``reads``: their keys)."""

    def __init__(self, store: Any) -> None:
        super().__init__(store)
        self.reads: list[str] = []

    async def get(self, key: str, prototype: Any, byte_range: Any = None) -> Any:
        self.reads.append(key)
        return await self._store.get(key, prototype, byte_range)

    async def get_partial_values(self, prototype: Any, key_ranges: Any) -> Any:
        key_ranges = list(key_ranges)
        self.reads.extend(k for k, _ in key_ranges)
        return await self._store.get_partial_values(prototype, key_ranges)


class RequestCountingStore(WrapperStore):  # type: ignore[type-arg]
    """Counts every request that reaches the wrapped store, by kind: ``get`` (one per
    key, ranges too), ``set``, ``exists``, ``delete`` and ``list`` (``counts``), and
    logs ``(kind, key)`` in order (``log``). On object storage each is one request."""

    def __init__(self, store: Any) -> None:
        super().__init__(store)
        self.counts: collections.Counter[str] = collections.Counter()
        self.log: list[tuple[str, str]] = []

    def _with_store(self, store: Any) -> RequestCountingStore:
        other = type(self)(store)
        other.counts, other.log = self.counts, self.log  # one tally for derived stores
        return other

    def reset(self) -> None:
        self.counts.clear()
        self.log.clear()

    def _count(self, kind: str, key: str) -> None:
        self.counts[kind] += 1
        self.log.append((kind, key))

    async def get(self, key: str, prototype: Any, byte_range: Any = None) -> Any:
        self._count("get", key)
        return await self._store.get(key, prototype, byte_range)

    async def get_partial_values(self, prototype: Any, key_ranges: Any) -> Any:
        key_ranges = list(key_ranges)
        for k, _ in key_ranges:
            self._count("get", k)
        return await self._store.get_partial_values(prototype, key_ranges)

    async def _get_many(self, requests: Any) -> Any:
        for key, prototype, byte_range in requests:
            yield key, await self.get(key, prototype, byte_range)

    async def exists(self, key: str) -> bool:
        self._count("exists", key)
        return bool(await self._store.exists(key))

    async def set(self, key: str, value: Any) -> None:
        self._count("set", key)
        await self._store.set(key, value)

    async def set_if_not_exists(self, key: str, value: Any) -> None:
        self._count("set", key)
        await self._store.set_if_not_exists(key, value)

    async def _set_many(self, values: Any) -> None:
        for key, value in values:
            await self.set(key, value)

    async def delete(self, key: str) -> None:
        self._count("delete", key)
        await self._store.delete(key)

    def list(self) -> Any:
        self._count("list", "")
        return self._store.list()

    def list_prefix(self, prefix: str) -> Any:
        self._count("list", prefix)
        return self._store.list_prefix(prefix)

    def list_dir(self, prefix: str) -> Any:
        self._count("list", prefix)
        return self._store.list_dir(prefix)


class WriteBudget:
    """How many more writes a :class:`FullDiskStore` accepts (None: unlimited)."""

    def __init__(self, writes: int | None = None) -> None:
        self.writes = writes


class FullDiskStore(WrapperStore):  # type: ignore[type-arg]
    """Fails every ``set`` with ENOSPC once ``budget.writes`` reaches 0."""

    def __init__(self, store: Any, budget: WriteBudget | None = None) -> None:
        super().__init__(store)
        self.budget = budget or WriteBudget(None)

    def _with_store(self, store: Any) -> FullDiskStore:
        return type(self)(store, self.budget)

    async def set(self, key: str, value: Any) -> None:
        if self.budget.writes is not None:
            if self.budget.writes <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), key)
            self.budget.writes -= 1
        await self._store.set(key, value)


# ------------------------------------------------------------------- S3 server
@dataclass
class S3Server:
    """A running S3-compatible server (see :func:`s3_server`)."""

    endpoint_url: str
    bucket: str
    #: ``storage_options`` for ``StoreWriter``/``url_store`` (s3fs's names).
    storage_options: dict[str, Any] = field(default_factory=dict)
    process: Any = None

    def url(self, name: str) -> str:
        """``s3://<bucket>/<name>``."""
        return f"s3://{self.bucket}/{name}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def s3_server(bucket: str = "spikestore-test", timeout: float = 60.0) -> Iterator[S3Server]:
    """Run moto's S3 server (``python -m moto.server``, the ``moto[server]`` package)
    on 127.0.0.1 at a free port, with ``bucket`` created; stopped on exit.

    Examples
    --------
    >>> with s3_server() as s3:                                   # doctest: +SKIP
    ...     w = spikestore.StoreWriter(s3.url("run"), storage_options=s3.storage_options)
    """
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    deadline = time.monotonic() + timeout
    for attempt in range(3):
        # The port is free when chosen; another process may take it before moto binds
        # it: then moto exits, and it starts again on another port.
        port = _free_port()
        endpoint = f"http://127.0.0.1:{port}"
        log = tempfile.TemporaryFile()
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            if _answers(proc, endpoint, deadline):
                break
            log.seek(0)
            output = log.read().decode(errors="replace")
        except BaseException:
            _stop(proc)
            log.close()
            raise
        log.close()
        if attempt == 2:
            raise RuntimeError(f"moto server exited: {output}")
    try:
        # moto accepts unsigned requests: create the bucket without an S3 client.
        urllib.request.urlopen(
            urllib.request.Request(f"{endpoint}/{bucket}", method="PUT"), timeout=10
        ).close()
        options = {
            "endpoint_url": endpoint,
            "key": "testing",
            "secret": "testing",
            "region": "us-east-1",
        }
        yield S3Server(endpoint, bucket, options, proc)
    finally:
        _stop(proc)
        log.close()


def _answers(proc: Any, endpoint: str, deadline: float) -> bool:
    """Wait until the server at ``endpoint`` answers (True) or its process exits (False)."""
    while True:
        if proc.poll() is not None:
            return False
        try:
            urllib.request.urlopen(endpoint, timeout=2).close()
            return True
        except urllib.error.HTTPError:
            return True  # it answers
        except (OSError, http.client.HTTPException):
            # Refused, not listening yet; or (a client whose own port happened to be the
            # server's, connected to itself) no HTTP answer.
            if time.monotonic() > deadline:
                raise RuntimeError(f"moto server did not answer at {endpoint}") from None
            time.sleep(0.1)


def _stop(proc: Any) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ------------------------------------------------------------------ strategies
FLOAT_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
INT_DTYPES = [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64]
ALL_DTYPES = [torch.bool, *FLOAT_DTYPES, *INT_DTYPES]


def records_strategy() -> Any:
    """A Hypothesis strategy of tensors of every stored dtype and small shapes: spikes at
    several rates, random values, and special floats (NaN, ±inf, -0.0)."""
    from hypothesis import strategies as st

    shapes = st.one_of(st.just(()), st.lists(st.integers(0, 17), min_size=1, max_size=3).map(tuple))

    @st.composite
    def records(draw: Any) -> torch.Tensor:
        dtype = draw(st.sampled_from(ALL_DTYPES))
        shape = draw(shapes)
        kind = draw(st.sampled_from(["spikes", "random", "special"]))
        n = math.prod(shape)
        seed = draw(st.integers(0, 2**31 - 1))
        g = torch.Generator().manual_seed(seed)
        if kind == "spikes" or dtype == torch.bool:
            p = draw(st.sampled_from([0.0, 0.05, 0.5, 1.0]))
            return (torch.rand(shape, generator=g) < p).to(dtype)
        if dtype.is_floating_point:
            x = torch.randn(shape, generator=g, dtype=torch.float64) * 1e3
            if kind == "special" and n:
                specials = torch.tensor(
                    [float("nan"), float("inf"), -float("inf"), -0.0, 0.0, 1.0],
                    dtype=torch.float64,
                )
                pick = torch.randint(0, len(specials), shape, generator=g)
                x = torch.where(torch.rand(shape, generator=g) < 0.5, specials[pick], x)
            return x.to(dtype)
        info = torch.iinfo(dtype)
        return torch.randint(info.min, info.max, shape, generator=g, dtype=torch.int64).to(dtype)

    return records()


# -------------------------------------------------------------------- fixtures
#: Layers recorded with ``time_axis=0`` (multi-step ``[T, B, ...]`` records).
FIXTURE_TIME_AXIS = {("output", "ms.sn"), ("output", "conv.sn")}


def moving_spikes(g: torch.Generator, steps: int, t: int = 8, hw: int = 12) -> list[torch.Tensor]:
    """``[T, 2, 3, hw, hw]`` spikes of edges moving one pixel per time step, plus 0.2 % noise."""
    out = []
    for _ in range(steps):
        base = (torch.rand(2, 3, hw, hw, generator=g) < 0.25).float()
        frames = [torch.roll(base, (0, k), (2, 3)) for k in range(t + 1)]
        ev = torch.stack([(b - a) > 0 for a, b in itertools.pairwise(frames)])
        noise = torch.rand(ev.shape, generator=g) < 0.002
        out.append((ev | noise).float())
    return out


def fixture_records(version: str = "1.3") -> dict[tuple[str, str], list]:
    g = torch.Generator().manual_seed(1234)
    spikes = [(torch.rand(4, 3, 10, generator=g) < 0.2).float() for _ in range(40)]
    spikes.append((torch.rand(2, 3, 10, generator=g) < 0.2).float())  # smaller last batch
    v = [torch.randn(4, 10, generator=g, dtype=torch.float64) for _ in range(5)]
    special = [float("nan"), float("inf"), -float("inf"), -0.0]
    v[0][0, :4] = torch.tensor(special, dtype=torch.float64)
    out: dict[tuple[str, str], list[Any]] = {
        ("output", "features.0.sn"): spikes,
        ("output", ""): [(torch.rand(17, generator=g) < 0.5) for _ in range(3)],
        ("v", "features.0.sn"): v,
        ("v", "bf16"): [torch.randn(6, generator=g).to(torch.bfloat16) for _ in range(3)],
        ("input", "../odd/name"): [torch.randint(-5, 5, (2, 2), generator=g) for _ in range(3)],
        ("grad_input", "sn"): [None, torch.tensor(0.5), torch.tensor(1.5)],
        ("snntorch", "lif1"): [
            ((torch.rand(3, generator=g) < 0.5).float(), torch.randn(3, generator=g))
            for _ in range(3)
        ],
        ("rate", "sn"): [0.125, 0.25, 0.5],
    }
    if version >= "1.1":
        out[("output", "ms.sn")] = [
            (torch.rand(4, 2, 3, 5, generator=g) < 0.1).float() for _ in range(6)
        ]
    if version >= "1.2":
        out[("output", "conv.sn")] = moving_spikes(g, 24)
    if version >= "1.5":
        # Norse's LIF: (spikes, LIFFeedForwardState(v, i)), [T, B, N], recorded field by field.
        out[("norse", "lif")] = [
            (
                (torch.rand(3, 2, 5, generator=g) < 0.3).float(),
                LIFFeedForwardState(
                    torch.randn(3, 2, 5, generator=g), torch.randn(3, 2, 5, generator=g)
                ),
            )
            for _ in range(4)
        ]
    return out


#: Norse's state of a feed-forward LIF layer (``norse.torch.functional.lif``), for fixtures.
LIFFeedForwardState = collections.namedtuple("LIFFeedForwardState", ["v", "i"])

#: What the 1.5 fixture describes of its run and layers (see :func:`write_fixture`).
FIXTURE_RUN = {"attrs": {"model": "fixture", "lr": 0.001}, "dt": 0.001, "time_unit": "s"}
#: The second run's attrs of the 1.7 fixture (its first run's are FIXTURE_RUN's).
FIXTURE_RUN2_ATTRS = {"lr": 0.0005, "resumed": True}
FIXTURE_DIMS = {
    ("output", "features.0.sn"): ("batch", "channel", "neuron"),
    ("norse", "lif"): ("time", "batch", "neuron"),
}
FIXTURE_UNITS = {("v", "features.0.sn"): "mV"}


def write_fixture(path: str, version: str = "1.3") -> None:
    """Write the fixture store of ``version``; from 1.5 with the run's attributes,
    ``dt``, layer dims and units, and two marks: ``epoch=0, phase="train"`` from step
    0 of every layer, ``epoch=1, phase="eval"`` from the middle of every layer
    (``len(records) // 2``); from 1.7 the second half is a second run (``mode="a"``,
    attrs :data:`FIXTURE_RUN2_ATTRS`)."""
    import spikestore

    records = fixture_records(version)
    run = FIXTURE_RUN if version >= "1.5" else {}
    w = spikestore.StoreWriter(path, **run)  # type: ignore[arg-type]
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: w.close())
        if version >= "1.5":
            w.mark(epoch=0, phase="train")
        for half in (0, 1):
            if half and version >= "1.7":
                # From 1.7 the second half is a second run, with attrs of its own.
                w.close()
                w = spikestore.StoreWriter(path, mode="a", attrs=FIXTURE_RUN2_ATTRS)
            if half and version >= "1.5":
                w.mark(epoch=1, phase="eval")
            for (mon, layer), recs in records.items():
                axis = 0 if (mon, layer) in FIXTURE_TIME_AXIS | {("norse", "lif")} else None
                extra: dict[str, Any] = {}
                if version >= "1.5":
                    extra = {
                        "dims": FIXTURE_DIMS.get((mon, layer)),
                        "units": FIXTURE_UNITS.get((mon, layer)),
                    }
                mid = len(recs) // 2 if version >= "1.5" else len(recs)
                for r in recs[:mid] if half == 0 else recs[mid:]:
                    w.append(mon, layer, r, time_axis=axis, **extra)


# -------------------------------------------------------------------- recorder
#: (monitor, layer) of every recorded layer, in append order.
RECORDER_LAYERS = [
    ("output", "sn1"),  # spikes [4, 33] (odd size: leftover bits)
    ("output", "sn2"),  # spikes [8, 16], a smaller last batch every 37 steps
    ("v", "lif"),  # float32 membrane potential [4, 20]
    ("output", "pair"),  # tuple (spikes [2, 8], float, int or None)
]


def _gen(key: str, step: int) -> torch.Generator:
    seed = (step * 1_000_003 + sum(map(ord, key)) * 7919) % (2**62)
    return torch.Generator().manual_seed(seed)


def recorder_value(monitor: str, layer: str, step: int) -> Any:
    """The record of ``monitor``/``layer`` at ``step`` (deterministic)."""
    g = _gen(f"{monitor}/{layer}", step)
    if layer == "sn1":
        return (torch.rand(4, 33, generator=g) < 0.2).float()
    if layer == "sn2":
        batch = 5 if step % 37 == 36 else 8
        return (torch.rand(batch, 16, generator=g) < 0.1).float()
    if layer == "lif":
        return torch.randn(4, 20, generator=g)
    if layer == "pair":
        spikes = (torch.rand(2, 8, generator=g) < 0.3).to(torch.uint8)
        return (spikes, step / 7.0, None if step % 5 == 4 else step)
    raise KeyError(layer)


def recorder_existing_steps(
    path: Path | str, storage_options: dict[str, Any] | None = None
) -> dict[tuple[str, str], int]:
    """Committed steps of each layer already in the store (0 if none); ``path`` may be
    a URL (with ``storage_options``)."""
    import spikestore
    from spikestore.storage import is_url, url_store

    out = {key: 0 for key in RECORDER_LAYERS}
    if is_url(path):
        from ._zarr import sync

        zstore = url_store(str(path), storage_options=storage_options, read_only=True)
        if not sync(zstore.exists("zarr.json")):
            return out
        store = spikestore.open(store=zstore)
    else:
        path = Path(path)
        if not (path / "zarr.json").exists():
            return out
        store = spikestore.open(path)
    for mon, lay in RECORDER_LAYERS:
        if mon in store and lay in store[mon]:
            out[(mon, lay)] = len(store[mon][lay])
    return out


def recorder_check(
    reader: Any,
    start: int = 0,
    expected: Callable[[str, str, int], Any] | None = None,
) -> dict[str, int]:
    """Assert that every record of the recorder's layers in ``reader`` from step ``start``
    on is ``expected(monitor, layer, step)`` (default :func:`recorder_value`); return
    ``{"monitor/layer": committed steps}``."""
    expected = expected or recorder_value
    counts = {}
    for mon, lay in RECORDER_LAYERS:
        if mon not in reader or lay not in reader[mon]:
            counts[f"{mon}/{lay}"] = 0
            continue
        layer = reader[mon][lay]
        n = len(layer)
        for step, rec in enumerate(layer.records(slice(start, n)), start):
            want = expected(mon, lay, step)
            assert same_record(rec, want), f"{mon}/{lay} step {step}: {rec!r} != {want!r}"
        counts[f"{mon}/{lay}"] = n
    return counts


def spawn_recorder(
    store: str, log: Path, *args: str, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``python -m spikestore.testing recorder STORE ARGS`` with its output in
    ``log`` (read it with :func:`recorder_lines`)."""
    return subprocess.Popen(
        [sys.executable, "-m", "spikestore.testing", "recorder", store, *args],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        cwd=cwd,
    )


def recorder_lines(log: Path) -> list[dict[str, Any]]:
    """The JSON lines a recorder printed so far (others, and a line still being
    written, are skipped)."""
    out = []
    for line in log.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def recorder_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m spikestore.testing recorder")
    p.add_argument("path")
    p.add_argument("--mode", default="a")
    p.add_argument("--steps", type=int, default=0, help="0: run until killed")
    p.add_argument("--flush-every", type=int, default=50)
    p.add_argument("--flush-interval", type=float, default=0.2)
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--shard-steps", type=int, default=64)
    p.add_argument("--storage-options", type=json.loads, default=None, help="JSON, for URLs")
    p.add_argument("--lease-timeout", type=float, default=None)
    args = p.parse_args(argv)

    import spikestore

    options: dict[str, Any] = {}
    if args.storage_options is not None:
        options["storage_options"] = args.storage_options
    if args.lease_timeout is not None:
        options["lease_timeout"] = args.lease_timeout
    start = (
        recorder_existing_steps(args.path, args.storage_options)
        if args.mode == "a"
        else {k: 0 for k in RECORDER_LAYERS}
    )
    w = spikestore.StoreWriter(
        args.path,
        mode=args.mode,
        flush_interval=args.flush_interval,
        shard_steps=args.shard_steps,
        chunk_bytes=1 << 12,
        **options,
    )
    print(json.dumps({"ready": {f"{m}/{n}": s for (m, n), s in start.items()}}), flush=True)
    i = 0
    while args.steps == 0 or i < args.steps:
        for mon, lay in RECORDER_LAYERS:
            step = start[(mon, lay)] + i
            got = w.append(mon, lay, recorder_value(mon, lay, step))
            if got != step:
                print(f"step mismatch for {mon}/{lay}: expected {step}, got {got}", file=sys.stderr)
                return 2
        i += 1
        if i % args.flush_every == 0:
            w.flush()
            counts = {f"{m}/{n}": w.steps(m, n) for m, n in RECORDER_LAYERS}
            print(json.dumps({"flushed": counts}), flush=True)
        if args.sleep:
            time.sleep(args.sleep)
    w.close()
    print(json.dumps({"done": {f"{m}/{n}": w.steps(m, n) for m, n in RECORDER_LAYERS}}), flush=True)
    return 0


def _main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["recorder"]:
        return recorder_main(argv[1:])
    if argv[:1] == ["fixture"] and len(argv) in (2, 3):
        write_fixture(argv[1], *argv[2:])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main())
