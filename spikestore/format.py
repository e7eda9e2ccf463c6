"""The on-disk layout of a spikestore store (format version 1.6).

This module is the contract between the writer and the reader. It imports
nothing from the rest of the package, only the standard library, so the layout
it describes can be read and checked on its own. ``docs/format.md`` is the prose
version of the same contract.

Layout
------
A store is a Zarr v3 group::

    <root>/                       group, attrs["spikestore"] = root metadata
      <monitor key>/              group, one per monitor ("output", "v", ...)
        <layer key>/              group, one per monitored module
          f0/, f1/, ...           group, one per field of a record
            index                 int32 array (steps, 2): [segment, row]
            s0, s1, ...           the segments holding the data (sharded arrays)
            s0t0, s0t1, ...       tails: rows of a segment's open shard (see below)
            summary, summary_axis0  optional per-step statistics (format 1.1)

A *record* is what a monitor hook produced for one layer at one step: a tensor,
a number, ``None``, or a tuple/list of those. Each element of a record is a
*field*. A field's records are stored in *segments*, one per distinct
``(encoding, dtype, shape, python_scalar, permute)``; step ``i`` of a field lives at row
``index[i, 1]`` of segment ``index[i, 0]`` (``-1`` means the record was
``None``). Only the first ``committed_steps`` rows of ``index`` are valid: the
writer updates that attribute last, in one atomic write, so a reader never
sees a half-written record.

Rows of a segment's open (last, incomplete) shard live in one of two unsharded
*tail* arrays ``s<k>t0`` / ``s<k>t1`` (shard ``j`` uses tail ``j % 2``); the
segment descriptor's ``sealed`` rows are in the sharded array. A writer that
closes copies the open shard into the sharded array and deletes the tails.

Format 1.3 adds the layer's ``time_axis`` (the axis of a multi-step record that
is time, or null). A 1.3 writer creates every field group before it writes that
key, so in a layer that has it a missing field group is damage, not a writer
killed before its first commit.

Format 1.4 adds *ranked* stores, written by the ranks of a ``torch.distributed``
job: the root group holds no monitors but one complete store per recorded rank,
``rank00000/``, ``rank00001/``, ... (:func:`rank_key`), and its metadata has a
``ranks`` entry (:func:`ranked_root_attrs`): the job's ``world_size`` and the
``recorded`` ranks. Each rank's store is an ordinary store of this format, written
by that rank alone; ranks never write each other's folders.

Format 1.5 makes runs self-describing. A layer's metadata may add ``dims`` (the
names of the record's axes), ``units``, ``order`` (its position in the monitor's
call order) and, for records that nest named fields (Norse's
``(z, LIFFeedForwardState(v, i))``), a ``tree`` that rebuilds them from their flat
fields (:func:`check_tree`; a 1.4 reader reads such records as flat tuples). The
root may add a ``spikestore_run`` attribute (:data:`RUN_KEY`, :func:`check_run_attrs`):
the user's free JSON attributes, the duration ``dt`` of a time step with its
``time_unit``, and the user's marks (``epoch``, ``phase``, ...), each with the step
of every layer from which it applies.

Format 1.6 binds stored bytes to their place: every segment has an ``id``, each of
its shard files a *shard header* naming the segment, the shard and its chunks'
checksums (``spikestore._shard.shard_header``), and the root a ``store_id`` that
changes when a store is replaced; :data:`MAX_CHUNK_BYTES` bounds what a decoded chunk may be.

Format 1.7 makes runs first-class: the run description's ``runs`` lists each opening
of a writer (``mode="a"`` included) with its own ``attrs``, the index of its first
mark, and the step at which each layer it recorded began (:func:`check_runs`).

Every format fact (names, versions, limits, metadata) is defined here once; the byte
layout of a shard file (the sharding codec, its index and the shard header) is
``spikestore._shard``'s.
"""

from __future__ import annotations

import math
import re
from typing import Any

from .errors import FormatError

__all__ = [
    "FORMAT_NAME",
    "INDEX_CHUNK",
    "LOCK_FILE",
    "MAX_METADATA_BYTES",
    "MAX_NODE_METADATA_BYTES",
    "METADATA_EXPANSION",
    "LEASE_DIR",
    "CLEARING_KEY",
    "TRASH_PREFIX",
    "field_key",
    "rank_key",
    "rank_of_key",
    "ranked_root_attrs",
    "root_ranks",
    "segment_name",
    "tail_name",
    "is_tail_name",
    "FORMAT_VERSION",
    "FormatError",
    "SPIKE_ENCODING",
    "RAW_ENCODING",
    "ENCODINGS",
    "DTYPES",
    "STRUCTURES",
    "RUN_KEY",
    "check_runs",
    "LAYER_EXTRAS",
    "MAX_ATTRS_DEPTH",
    "check_run_attrs",
    "check_attrs_depth",
    "check_time_axis",
    "check_tree",
    "tree_field_names",
    "node_key",
    "root_attrs",
    "check_root_attrs",
    "monitor_attrs",
    "layer_attrs",
    "field_attrs",
    "check_layer_attrs",
    "check_field_attrs",
    "check_index_heads",
    "INDEX_HEADS_KEY",
    "check_segment",
    "segment_descriptor",
]

FORMAT_NAME = "spikestore"
#: (major, minor). A reader refuses a store whose major version is newer than its own.
FORMAT_VERSION = (1, 7)

#: Steps per chunk of a field's ``index`` array.
INDEX_CHUNK = 65536
#: The writer's lock file in a local store's root (not a Zarr node).
LOCK_FILE = ".spikestore.lock"
#: The most bytes the root's or a field group's ``zarr.json`` may have (they grow with
#: the run's marks and segments): a writer refuses to write more (a root with about
#: 400,000 marks), and a reader refuses a longer file unread.
MAX_METADATA_BYTES = 64 << 20
#: The most bytes any other ``zarr.json`` may have (a monitor's, a layer's, an
#: array's): they do not grow with a run. Parsing JSON can take some 25 times its
#: size in memory, so each node's bound is kept to what a writer needs.
MAX_NODE_METADATA_BYTES = 4 << 20
#: Zarr writes a ``zarr.json`` indented: at most this many times the compact JSON of
#: its attributes (measured: about 2.2 times). Writers check the metadata they are
#: about to write against the bounds above with it, in the caller's thread.
METADATA_EXPANSION = 4
#: The prefix of a writer's lease objects in a store on object storage (not Zarr
#: nodes): ``<LEASE_DIR>/<generation:010d>``, and the journal of a ``mode="w"``
#: that replaces a store there (see ``spikestore.storage._lease``).
LEASE_DIR = ".spikestore-lease"
CLEARING_KEY = f"{LEASE_DIR}/clearing.json"
#: Folders a writer moves an old store's nodes into while replacing it (``mode="w"``),
#: then deletes; one left by a killed writer is deleted by the next writer.
TRASH_PREFIX = ".spikestore-trash-"

#: Spikes: each record flattened (C order), bit-packed 8 to a byte, MSB first.
SPIKE_ENCODING = "bitpack"
#: Everything else: the record as it is, in its own dtype (bit-exact).
RAW_ENCODING = "raw"
ENCODINGS = (SPIKE_ENCODING, RAW_ENCODING)

#: Logical dtype -> (numpy dtype used on disk for raw records, bytes per element).
#: dtypes numpy lacks are stored as unsigned integers of the same width and
#: reinterpreted on read.
DTYPES: dict[str, tuple[str, int]] = {
    "bool": ("bool", 1),
    "uint8": ("uint8", 1),
    "int8": ("int8", 1),
    "int16": ("int16", 2),
    "uint16": ("uint16", 2),
    "int32": ("int32", 4),
    "uint32": ("uint32", 4),
    "int64": ("int64", 8),
    "uint64": ("uint64", 8),
    "float16": ("float16", 2),
    "bfloat16": ("uint16", 2),
    "float32": ("float32", 4),
    "float64": ("float64", 8),
    "float8_e4m3fn": ("uint8", 1),
    "float8_e5m2": ("uint8", 1),
}

#: How a record's fields are put back together.
STRUCTURES = ("tensor", "number", "none", "tuple", "list")

# Limits that keep hostile metadata from causing huge allocations. The reader refuses
# metadata past them and the writer refuses, at ``append``, a record that would need it
# (by running the same checks on the metadata it is about to write).
#: Axes of a record (and names in its ``dims``); ``time_axis`` is in ``[-MAX_RANK, MAX_RANK)``.
MAX_RANK = 32
#: Fields of a record, and items of one node of its tree.
MAX_FIELDS = 1024
#: Segments of a field (one per distinct encoding, dtype and shape of its records).
MAX_SEGMENTS = 100_000
#: Elements of one record of one field.
MAX_NUMEL = 2**40
#: Ranks of a ranked store (``rank_key`` has five digits).
MAX_WORLD = 100_000

_SAFE = re.compile(r"[A-Za-z0-9_.\-]")
_MAX_KEY = 120


def node_key(name: str) -> str:
    """Map any monitor or layer name to a safe Zarr node name.

    Characters outside ``[A-Za-z0-9_.-]`` become ``%XX`` (UTF-8 bytes), and so do
    a leading ``.`` or ``_`` (Zarr reserves names starting with ``__``, and ``.``
    or ``..`` would walk out of the group), and the first letter of ``zarr.json``.
    The empty name (the root module)
    becomes ``%``. Long keys are cut and suffixed with a hash, so a key never
    exceeds 128 characters. The original name is kept in the node's attributes.

    >>> node_key("features.0.sn")
    'features.0.sn'
    >>> node_key("../x")
    '%2E.%2Fx'
    """
    if not isinstance(name, str):
        raise TypeError(f"names must be str, got {type(name).__name__}")
    if name == "":
        return "%"
    out = []
    for i, ch in enumerate(name):
        if _SAFE.fullmatch(ch) and not (i == 0 and ch in "._"):
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8"))
    key = "".join(out)
    if key.lower() == "zarr.json":  # Zarr's own metadata file name
        key = "%" + f"{ord(key[0]):02X}" + key[1:]
    if len(key) > _MAX_KEY:
        import hashlib

        digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:16]
        key = f"{key[: _MAX_KEY - 17]}~{digest}"
    return key


def field_key(i: int) -> str:
    """The group of field ``i`` of a layer."""
    return f"f{i}"


def rank_key(rank: int) -> str:
    """The folder of rank ``rank``'s store in a ranked store (format 1.4)."""
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < MAX_WORLD:
        raise ValueError(f"rank must be an int from 0 to {MAX_WORLD - 1}, got {rank!r}")
    return f"rank{rank:05d}"


def rank_of_key(key: str) -> int | None:
    """The rank whose store folder is ``key``, or None if ``key`` is not one."""
    m = re.fullmatch(r"rank(\d{5})", key)
    return int(m.group(1)) if m else None


def segment_name(k: int) -> str:
    """The sharded array of segment ``k`` of a field."""
    return f"s{k}"


def tail_name(array: str, parity: int) -> str:
    """The tail array that holds the open shard ``j`` of segment array ``array``
    when ``j % 2 == parity``."""
    return f"{array}t{parity}"


def is_tail_name(key: str) -> bool:
    """Whether some part of a store key names a tail array."""
    return any(re.fullmatch(r"s\d+t[01]", part) for part in key.split("/"))


def root_attrs(created_by: str) -> dict[str, Any]:
    major, minor = FORMAT_VERSION
    return {
        FORMAT_NAME: {
            "format": FORMAT_NAME,
            "version": f"{major}.{minor}",
            "created_by": created_by,
            "layout": "monitor/layer/field/{index,s<k>}",
        }
    }


def ranked_root_attrs(created_by: str, world_size: int, recorded: list[int]) -> dict[str, Any]:
    """The root metadata of a ranked store (format 1.4): ``ranks`` says which rank
    folders there are."""
    attrs = root_attrs(created_by)
    entry = attrs[FORMAT_NAME]
    entry["layout"] = "rank<rank:05d>/ (each a store)"
    entry["ranks"] = {"world_size": int(world_size), "recorded": sorted(int(r) for r in recorded)}
    return attrs


def root_ranks(meta: dict[str, Any], where: str) -> tuple[int, list[int]] | None:
    """``(world_size, recorded ranks)`` of a ranked store's root metadata (the entry
    :func:`check_root_attrs` returns), or None for a store of one process."""
    ranks = meta.get("ranks")
    if ranks is None:
        return None
    world = ranks.get("world_size") if isinstance(ranks, dict) else None
    recorded = ranks.get("recorded") if isinstance(ranks, dict) else None
    if (
        isinstance(world, bool)
        or not isinstance(world, int)
        or not 1 <= world <= MAX_WORLD
        or not isinstance(recorded, list)
        or not all(isinstance(r, int) and not isinstance(r, bool) for r in recorded)
        or not all(0 <= r < world for r in recorded)
        or len(set(recorded)) != len(recorded)
    ):
        raise FormatError(f"{where}: malformed ranks metadata {ranks!r}")
    return world, sorted(recorded)


def check_root_attrs(attrs: Any, where: str) -> dict[str, Any]:
    """Validate root attributes and return the spikestore entry."""
    meta = attrs.get(FORMAT_NAME) if isinstance(attrs, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise FormatError(f"{where} is a Zarr group but not a spikestore store")
    version = meta.get("version")
    m = re.fullmatch(r"(\d+)\.(\d+)", version) if isinstance(version, str) else None
    if m is None:
        raise FormatError(f"{where}: malformed format version {version!r}")
    if int(m.group(1)) > FORMAT_VERSION[0]:
        raise FormatError(
            f"{where} was written with spikestore format {version}; this spikestore reads "
            f"format {FORMAT_VERSION[0]}.x only. Upgrade spikestore to read it."
        )
    return meta


def monitor_attrs(name: str) -> dict[str, Any]:
    return {FORMAT_NAME: {"node": "monitor", "name": name}}


def layer_attrs(
    name: str,
    structure: str,
    fields: int,
    time_axis: int | None = None,
    *,
    complete: bool = True,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A layer's attributes; ``complete=False`` leaves out ``time_axis`` (written only
    once every field group exists, see the module docstring). ``extra`` adds the
    optional keys of format 1.5 (``dims``, ``units``, ``order``, ``tree``)."""
    meta: dict[str, Any] = {"node": "layer", "name": name, "structure": structure}
    meta["fields"] = fields
    if complete:
        meta["time_axis"] = time_axis
        for k, v in (extra or {}).items():
            if k in LAYER_EXTRAS and v is not None:
                meta[k] = v
    return {FORMAT_NAME: meta}


#: Optional layer keys of format 1.5.
LAYER_EXTRAS = ("dims", "field_dims", "units", "order", "tree")
#: The root attribute holding a run's description (format 1.5).
RUN_KEY = "spikestore_run"
#: Bounds on a record tree's nesting.
MAX_TREE_DEPTH = 16
TREE_TYPES = ("tuple", "list", "namedtuple", "dict")


def _bad_names(v: Any, n: int | None = None) -> bool:
    return (
        not isinstance(v, list)
        or (n is not None and len(v) != n)
        or not all(isinstance(x, str) and x for x in v)
        or len(set(v)) != len(v)
    )


def check_tree(tree: Any, fields: int, where: str) -> dict[str, Any]:
    """Validate a record tree (format 1.5): how a record's flat fields nest.

    A node is a field number (a leaf), or ``{"type": "tuple" | "list", "items":
    [nodes]}``, or ``{"type": "namedtuple" | "dict", "name": str, "keys": [str],
    "items": [nodes]}`` (namedtuples and dataclasses are both ``namedtuple``;
    ``dict`` is a dict with string keys). Every field ``0 .. fields - 1`` is exactly
    one leaf; leaves are numbered in order.
    """
    seen: list[int] = []

    def walk(node: Any, depth: int) -> None:
        if depth > MAX_TREE_DEPTH:
            raise FormatError(f"{where}: record tree nested deeper than {MAX_TREE_DEPTH}")
        if isinstance(node, int) and not isinstance(node, bool):
            seen.append(node)
            return
        if not isinstance(node, dict) or node.get("type") not in TREE_TYPES:
            raise FormatError(f"{where}: bad record tree node {node!r}")
        items = node.get("items")
        if not isinstance(items, list) or len(items) > MAX_FIELDS:
            raise FormatError(
                f"{where}: bad record tree items (a list of at most {MAX_FIELDS} nodes)"
            )
        if node["type"] in ("namedtuple", "dict"):
            if _bad_names(node.get("keys"), len(items)):
                raise FormatError(f"{where}: bad record tree keys {node.get('keys')!r}")
            if not isinstance(node.get("name", ""), str):
                raise FormatError(f"{where}: bad record tree name")
        for it in items:
            walk(it, depth + 1)

    if not isinstance(tree, dict):
        raise FormatError(f"{where}: a record tree must be an object")
    walk(tree, 0)
    if seen != list(range(fields)):
        raise FormatError(f"{where}: record tree leaves {seen} are not fields 0..{fields - 1}")
    return tree


def tree_field_names(tree: dict[str, Any] | None, fields: int) -> list[str]:
    """Each field's path in the record: ``"0"``, ``"1"`` for a tuple; ``"1.v"`` for
    element ``v`` of a namedtuple at position 1."""
    if tree is None:
        return [str(i) for i in range(fields)]
    names = [""] * fields

    def walk(node: Any, path: str) -> None:
        if isinstance(node, int):
            names[node] = path
            return
        keys = node.get("keys") or [str(i) for i in range(len(node["items"]))]
        for k, it in zip(keys, node["items"], strict=True):
            walk(it, f"{path}.{k}" if path else str(k))

    walk(tree, "")
    return names


#: How deep a run's ``attrs`` may nest: objects and arrays, the ``attrs`` object itself
#: counting 1 (a hyperparameter config nests a few levels; Python's JSON gives up
#: near 1,000).
MAX_ATTRS_DEPTH = 64


def check_attrs_depth(value: Any, where: str) -> None:
    """Refuse ``value`` (JSON, or the dicts, lists and tuples a writer is given) if it
    nests objects and arrays deeper than :data:`MAX_ATTRS_DEPTH`. Iterative: it never
    recurses, so no depth (nor a container holding itself) makes it fail otherwise."""
    todo = [(value, 1)]
    while todo:
        node, depth = todo.pop()
        if isinstance(node, dict):
            items: Any = node.values()
        elif isinstance(node, (list, tuple)):
            items = node
        else:
            continue
        if depth > MAX_ATTRS_DEPTH:
            raise FormatError(
                f"{where}: nested deeper than {MAX_ATTRS_DEPTH} levels of objects and arrays"
            )
        todo.extend((v, depth + 1) for v in items if isinstance(v, (dict, list, tuple)))


def check_run_attrs(attrs: Any, where: str) -> dict[str, Any]:
    """The run description (format 1.5) of a root's attributes, validated; empty
    fields when there is none.

    ``{"attrs": {...}, "dt": float | null, "time_unit": str | null, "marks":
    {"layers": [[monitor, layer], ...], "marks": [{"values": {key: value}, "at":
    {"<i>": step, ...}}, ...]}}``: mark ``j`` sets its ``values`` from step
    ``at["<i>"]`` of layer ``layers[i]`` on (until a later mark sets the same key);
    a layer that ``at`` leaves out starts where it started for the previous mark
    (step 0 before any): it recorded nothing in between.
    """
    run = attrs.get(RUN_KEY) if isinstance(attrs, dict) else None
    if run is None:
        run = {}
    if not isinstance(run, dict):
        raise FormatError(f"{where}: malformed {RUN_KEY} attribute")
    user = run.get("attrs", {})
    dt = run.get("dt")
    unit = run.get("time_unit")
    if not isinstance(user, dict):
        raise FormatError(f"{where}: {RUN_KEY}.attrs must be an object")
    check_attrs_depth(user, f"{where}: {RUN_KEY}.attrs")
    if dt is not None and (
        isinstance(dt, bool) or not isinstance(dt, (int, float)) or not dt > 0 or math.isinf(dt)
    ):
        raise FormatError(f"{where}: bad dt {dt!r}")
    if unit is not None and not isinstance(unit, str):
        raise FormatError(f"{where}: bad time_unit {unit!r}")
    marks = run.get("marks", {"layers": [], "marks": []})
    layers = marks.get("layers") if isinstance(marks, dict) else None
    entries = marks.get("marks") if isinstance(marks, dict) else None
    if not isinstance(layers, list) or not isinstance(entries, list):
        raise FormatError(f"{where}: malformed marks")
    for lay in layers:
        if not (isinstance(lay, list) and len(lay) == 2 and all(isinstance(x, str) for x in lay)):
            raise FormatError(f"{where}: bad marked layer {lay!r}")
    n = len(layers)
    for m in entries:
        at = m.get("at") if isinstance(m, dict) else None
        if (
            not isinstance(m, dict)
            or not isinstance(m.get("values"), dict)
            or not all(v is None or isinstance(v, (str, int, float)) for v in m["values"].values())
            or not isinstance(at, dict)
            or not all(isinstance(k, str) and k.isdecimal() and int(k) < n for k in at)
            or not all(
                isinstance(a, int) and not isinstance(a, bool) and a >= 0 for a in at.values()
            )
        ):
            raise FormatError(f"{where}: malformed mark {str(m)[:200]}")
    out: dict[str, Any] = {
        "attrs": user,
        "dt": None if dt is None else float(dt),
        "time_unit": unit,
        "marks": {"layers": layers, "marks": entries},
    }
    if "runs" in run:
        out["runs"] = check_runs(run["runs"], len(entries), where)
    return out


def check_runs(runs: Any, n_marks: int, where: str) -> list[dict[str, Any]]:
    """The run description's ``runs`` (format 1.7) validated: per opening of a writer,
    ``{"attrs", "started", "created_by", "marks_from": index of its first mark,
    "first": {monitor: {layer: the run's first step there}}}`` (docs/format.md, "Runs")."""
    if not isinstance(runs, list):
        raise FormatError(f"{where}: malformed runs")
    previous = 0
    for i, r in enumerate(runs):
        if not isinstance(r, dict) or not isinstance(r.get("attrs"), dict):
            raise FormatError(f"{where}: malformed run {i}")
        check_attrs_depth(r["attrs"], f"{where}: run {i} attrs")
        start = r.get("marks_from")
        first = r.get("first")
        if (
            isinstance(start, bool)
            or not isinstance(start, int)
            or not previous <= start <= n_marks
            or not all(isinstance(r.get(k), (str, type(None))) for k in ("started", "created_by"))
            or not isinstance(first, dict)
            or not all(isinstance(m, str) and isinstance(v, dict) for m, v in first.items())
            or not all(
                isinstance(lay, str) and isinstance(s, int) and not isinstance(s, bool) and s >= 0
                for v in first.values()
                for lay, s in v.items()
            )
        ):
            raise FormatError(f"{where}: malformed run {i} {str(r)[:200]}")
        previous = start
    return runs


#: A field's key (format 1.6) binding its step-index chunks to their place: entry ``c``
#: is the ``[segment, row]`` of step ``c * INDEX_CHUNK`` (null where unknown: steps a
#: writer before 1.6 indexed).
INDEX_HEADS_KEY = "index_heads"


def field_attrs(
    committed_steps: int,
    segments: list[dict[str, Any]],
    index_heads: list[list[int] | None] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "node": "field",
        "committed_steps": committed_steps,
        "segments": segments,
    }
    if index_heads is not None:
        meta[INDEX_HEADS_KEY] = index_heads
    return {FORMAT_NAME: meta}


def check_index_heads(heads: Any, committed: int, where: str) -> list[Any] | None:
    """A field's ``index_heads`` (:data:`INDEX_HEADS_KEY`): None (absent), or one entry
    per index chunk holding committed steps, each null or ``[segment, row]``."""
    if heads is None:
        return None
    ok = isinstance(heads, list) and len(heads) <= max(1, committed)
    for h in heads if ok else []:
        if h is not None and not (
            isinstance(h, list)
            and len(h) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) for x in h)
        ):
            ok = False
            break
    if not ok:
        raise FormatError(f"{where}: bad {INDEX_HEADS_KEY}")
    return heads


def _entry(attrs: Any, node: str, where: str) -> dict[str, Any]:
    meta = attrs.get(FORMAT_NAME) if isinstance(attrs, dict) else None
    if not isinstance(meta, dict) or meta.get("node") != node:
        raise FormatError(f"{where}: missing or malformed spikestore {node} metadata")
    return meta


def check_time_axis(t: Any, where: str) -> int | None:
    """A layer's ``time_axis`` (format 1.3): None, or an int in ``[-MAX_RANK, MAX_RANK)``."""
    if t is not None and (
        not isinstance(t, int) or isinstance(t, bool) or not -MAX_RANK <= t < MAX_RANK
    ):
        raise FormatError(
            f"{where}: bad time_axis {str(t)[:100]} (None or an int from {-MAX_RANK} "
            f"to {MAX_RANK - 1})"
        )
    return t


def check_layer_attrs(attrs: Any, where: str) -> dict[str, Any]:
    meta = _entry(attrs, "layer", where)
    if not isinstance(meta.get("name"), str):
        raise FormatError(f"{where}: layer name must be a string")
    if meta.get("structure") not in STRUCTURES:
        raise FormatError(f"{where}: unknown record structure {meta.get('structure')!r}")
    fields = meta.get("fields")
    if not isinstance(fields, int) or not 0 <= fields <= MAX_FIELDS:
        raise FormatError(f"{where}: bad field count {fields!r} (at most {MAX_FIELDS})")
    if meta["structure"] in ("tensor", "number") and fields != 1:
        raise FormatError(f"{where}: a {meta['structure']} record has exactly one field")
    check_time_axis(meta.get("time_axis"), where)
    dims = meta.get("dims")
    if dims is not None and (_bad_names(dims) or len(dims) > MAX_RANK):
        raise FormatError(
            f"{where}: bad dims {str(dims)[:200]} (distinct non-empty names, at most {MAX_RANK})"
        )
    fdims = meta.get("field_dims")
    if fdims is not None and (
        not isinstance(fdims, list)
        or len(fdims) != fields
        or any(d is not None and (_bad_names(d) or len(d) > MAX_RANK) for d in fdims)
    ):
        raise FormatError(
            f"{where}: bad field_dims {str(fdims)[:200]} (per field: None or distinct "
            f"non-empty names, at most {MAX_RANK})"
        )
    if not isinstance(meta.get("units", ""), str):
        raise FormatError(f"{where}: bad units {meta.get('units')!r}")
    order = meta.get("order", 0)
    if not isinstance(order, int) or isinstance(order, bool) or order < 0:
        raise FormatError(f"{where}: bad order {order!r}")
    if meta.get("tree") is not None:
        if meta["structure"] not in ("tuple", "list"):
            raise FormatError(f"{where}: a record tree needs a tuple or list structure")
        check_tree(meta["tree"], fields, where)
    return meta


def segment_descriptor(
    k: int,
    encoding: str,
    dtype: str,
    shape: Any,
    *,
    python_scalar: bool = False,
    permute: Any = None,
) -> dict[str, Any]:
    """The descriptor of a new segment ``k`` (no rows yet) of records of ``encoding``,
    ``dtype`` and ``shape``: what the writer stores and :func:`check_segment` checks."""
    desc: dict[str, Any] = {
        "array": segment_name(k),
        "encoding": encoding,
        "dtype": dtype,
        "shape": list(shape),
        "rows": 0,
    }
    if python_scalar:
        desc["python_scalar"] = True
    if encoding == SPIKE_ENCODING:
        desc["bit_order"] = "big"
        desc["permute"] = list(permute) if permute is not None else None
    return desc


def check_segment(seg: Any, where: str) -> dict[str, Any]:
    """Validate one segment descriptor (see ``docs/format.md``)."""
    if not isinstance(seg, dict):
        raise FormatError(f"{where}: segment descriptor must be an object")
    if seg.get("encoding") not in ENCODINGS:
        raise FormatError(f"{where}: unknown encoding {seg.get('encoding')!r}")
    if seg.get("dtype") not in DTYPES:
        raise FormatError(f"{where}: unsupported dtype {seg.get('dtype')!r}")
    shape = seg.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_RANK
        or not all(isinstance(d, int) and d >= 0 for d in shape)
        or math.prod(shape) > MAX_NUMEL
    ):
        raise FormatError(
            f"{where}: bad record shape {str(shape)[:200]} (at most {MAX_RANK} axes and "
            f"2**{MAX_NUMEL.bit_length() - 1} elements)"
        )
    rows = seg.get("rows")
    if not isinstance(rows, int) or rows < 0:
        raise FormatError(f"{where}: bad row count {rows!r}")
    sealed = seg.get("sealed", rows)
    if not isinstance(sealed, int) or not 0 <= sealed <= rows:
        raise FormatError(f"{where}: bad sealed row count {sealed!r}")
    if not isinstance(seg.get("array"), str) or not re.fullmatch(r"s\d+", seg["array"]):
        raise FormatError(f"{where}: bad segment array name {seg.get('array')!r}")
    if not isinstance(seg.get("python_scalar", False), bool):
        raise FormatError(f"{where}: python_scalar must be a boolean")
    if seg["encoding"] == SPIKE_ENCODING:
        if seg.get("bit_order", "big") != "big":
            raise FormatError(f"{where}: unsupported bit order {seg.get('bit_order')!r}")
        perm = seg.get("permute")
        if perm is not None and sorted(perm) != list(range(len(shape))):
            raise FormatError(f"{where}: bad permutation {perm!r}")
    return seg


def check_field_attrs(attrs: Any, where: str) -> dict[str, Any]:
    meta = _entry(attrs, "field", where)
    steps = meta.get("committed_steps")
    if not isinstance(steps, int) or steps < 0:
        raise FormatError(f"{where}: bad committed_steps {steps!r}")
    segs = meta.get("segments")
    if not isinstance(segs, list) or len(segs) > MAX_SEGMENTS:
        raise FormatError(f"{where}: bad segment list")
    for k, seg in enumerate(segs):
        check_segment(seg, f"{where} segment {k}")
        if seg["array"] != f"s{k}":
            raise FormatError(f"{where}: segment {k} is named {seg['array']!r}, expected 's{k}'")
    check_index_heads(meta.get(INDEX_HEADS_KEY), steps, where)
    return meta


# --------------------------------------------------------------------- integrity (1.6)
# What binds stored bytes to their place, and the bounds on what a decoded chunk may be.
# Format 1.6 gives every segment an ``id`` (in its descriptor and in its array's own
# attributes) and writes a *shard header* into every shard file of such a segment: a
# few bytes between the chunks and Zarr's shard index, which no index entry points
# at, so Zarr (and any reader of the sharding layout) skips them (their layout is in
# ``spikestore._shard``). A reader checks that
# a shard file names the segment and the shard coordinates it was read for, and that
# each chunk it decodes ends with the CRC-32C the header lists for that chunk: a shard
# file swapped with another of its array (or of another array), or one of a store that
# replaced the one a reader opened, is an error, never another step's records.

#: The most bytes a decoded inner chunk of any array of a store may hold. The writer
#: never makes larger chunks (``spikestore.codecs.layout`` keeps its chunks within
#: it: 16 MiB at most for spikes of convolutional layers, 256 KiB by default; index
#: chunks are 512 KiB, summary chunks at most 8 MiB), and a reader refuses an array
#: that declares larger ones before it reads a byte of their data.
MAX_CHUNK_BYTES = 1 << 26
#: The most inner chunks one shard may hold (its index takes 16 bytes a chunk).
MAX_CHUNKS_PER_SHARD = 1 << 24
#: The key of a segment's id in its descriptor and its array's attributes (1.6).
SEGMENT_ID_KEY = "id"
#: The key of a store's id in its root metadata (1.6): a new one each time a store
#: is created or replaced (``mode="w"``); kept by writers that append.
STORE_ID_KEY = "store_id"


def new_id() -> str:
    """A new random id (32 lower-case hex digits) for a segment or a store."""
    import uuid

    return uuid.uuid4().hex


def check_id(value: Any, where: str) -> str | None:
    """An id as stored (32 lower-case hex digits), or None where there is none."""
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{32}", value):
        raise FormatError(f"{where}: malformed id {str(value)[:80]!r}")
    return value


def with_store_id(attrs: dict[str, Any]) -> dict[str, Any]:
    """Root attributes (:func:`root_attrs`, :func:`ranked_root_attrs`) with a new store
    id: what a writer that creates or replaces a store writes."""
    entry = dict(attrs[FORMAT_NAME])
    entry[STORE_ID_KEY] = new_id()
    return {**attrs, FORMAT_NAME: entry}


def store_id(meta: dict[str, Any], where: str) -> str | None:
    """The store id of root metadata (the entry :func:`check_root_attrs` returns), or
    None for a store written before format 1.6."""
    return check_id(meta.get(STORE_ID_KEY), f"{where} store id")


__all__ += [
    "MAX_CHUNK_BYTES",
    "MAX_CHUNKS_PER_SHARD",
    "SEGMENT_ID_KEY",
    "STORE_ID_KEY",
    "new_id",
    "check_id",
    "with_store_id",
    "store_id",
]
