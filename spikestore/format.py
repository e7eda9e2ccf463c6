"""The on-disk layout of a spikestore store (format version 1.2).

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
            s0, s1, ...           the segments holding the data
            summary, summary_axis0  optional per-step statistics (format 1.1)

A *record* is what a monitor hook produced for one layer at one step: a tensor,
a number, ``None``, or a tuple/list of those. Each element of a record is a
*field*. A field's records are stored in *segments*, one per distinct
``(encoding, dtype, shape)``; step ``i`` of a field lives at row
``index[i, 1]`` of segment ``index[i, 0]`` (``-1`` means the record was
``None``). Only the first ``committed_steps`` rows of ``index`` are valid: the
writer updates that attribute last, in one atomic write, so a reader never
sees a half-written record.
"""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "FormatError",
    "SPIKE_ENCODING",
    "RAW_ENCODING",
    "ENCODINGS",
    "DTYPES",
    "STRUCTURES",
    "node_key",
    "root_attrs",
    "check_root_attrs",
    "monitor_attrs",
    "layer_attrs",
    "field_attrs",
    "check_layer_attrs",
    "check_field_attrs",
    "check_segment",
]

FORMAT_NAME = "spikestore"
#: (major, minor). A reader refuses a store whose major version is newer than its own.
FORMAT_VERSION = (1, 2)

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

# Limits that keep hostile metadata from causing huge allocations.
MAX_RANK = 32
MAX_FIELDS = 1024
MAX_SEGMENTS = 100_000
MAX_NUMEL = 2**40

_SAFE = re.compile(r"[A-Za-z0-9_.\-]")
_MAX_KEY = 120


class FormatError(ValueError):
    """A store's metadata is missing, malformed or from an unsupported version."""


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


def layer_attrs(name: str, structure: str, fields: int) -> dict[str, Any]:
    return {FORMAT_NAME: {"node": "layer", "name": name, "structure": structure, "fields": fields}}


def field_attrs(committed_steps: int, segments: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        FORMAT_NAME: {"node": "field", "committed_steps": committed_steps, "segments": segments}
    }


def _entry(attrs: Any, node: str, where: str) -> dict[str, Any]:
    meta = attrs.get(FORMAT_NAME) if isinstance(attrs, dict) else None
    if not isinstance(meta, dict) or meta.get("node") != node:
        raise FormatError(f"{where}: missing or malformed spikestore {node} metadata")
    return meta


def check_layer_attrs(attrs: Any, where: str) -> dict[str, Any]:
    meta = _entry(attrs, "layer", where)
    if not isinstance(meta.get("name"), str):
        raise FormatError(f"{where}: layer name must be a string")
    if meta.get("structure") not in STRUCTURES:
        raise FormatError(f"{where}: unknown record structure {meta.get('structure')!r}")
    fields = meta.get("fields")
    if not isinstance(fields, int) or not 0 <= fields <= MAX_FIELDS:
        raise FormatError(f"{where}: bad field count {fields!r}")
    if meta["structure"] in ("tensor", "number") and fields != 1:
        raise FormatError(f"{where}: a {meta['structure']} record has exactly one field")
    return meta


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
        raise FormatError(f"{where}: bad record shape {shape!r}")
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
    return meta
