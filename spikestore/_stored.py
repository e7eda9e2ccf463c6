"""What a writer finds in the store it opens: the root group, checked or created, and
the layers already there (their fields' committed steps, segments and index heads).

Thread ownership: stateless functions, called by the thread that opens the writer
(before the writer thread starts) and by the writer thread for layers it has not seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    INDEX_HEADS_KEY,
    SPIKE_ENCODING,
    FormatError,
    check_field_attrs,
    check_layer_attrs,
    check_root_attrs,
    field_key,
    node_key,
    root_attrs,
    with_store_id,
)
from .storage import member_keys

__all__ = [
    "StoredField",
    "StoredLayer",
    "fresh_root",
    "layer_path",
    "list_layers",
    "load_layer",
    "open_root",
]


def layer_path(monitor: str, layer: str) -> str:
    return f"{node_key(monitor)}/{node_key(layer)}"


def open_root(store: Any, zarr_mode: Literal["w", "w-", "a"], created_by: str, where: str) -> Any:
    """Open (or create) the root group and check or write its metadata.

    A new root is written with its attributes in one go, so that a reader never
    finds a root without the spikestore metadata. ``zarr_mode="w"`` (a store
    passed in) is cleared by Zarr. An older store's version is raised to this
    one's: arrays added from now on may use its features.
    """
    import zarr

    attrs = with_store_id(root_attrs(created_by))
    root = zarr.open_group(store=store, mode=zarr_mode, zarr_format=3, attributes=attrs)
    current = dict(root.attrs)
    if FORMAT_NAME in current:
        meta = check_root_attrs(current, where)
        if tuple(map(int, meta["version"].split("."))) < FORMAT_VERSION:
            root.attrs.update({FORMAT_NAME: {**meta, "version": attrs[FORMAT_NAME]["version"]}})
    elif len(list(root.keys())):
        raise FormatError(f"{where} is a Zarr group but not a spikestore store")
    else:
        root.attrs.update(attrs)
    return root


def fresh_root(root: Any, created_by: str) -> None:
    """Replace the root's attributes with a new store's (after the old store was cleared)."""
    root.attrs.put(with_store_id(root_attrs(created_by)))


@dataclass
class StoredField:
    committed: int
    segments: list[dict[str, Any]]
    group: Any  # None if the field group does not exist
    index_heads: list[Any] | None = None


@dataclass
class StoredLayer:
    """What a store already holds of a layer (append mode)."""

    structure: str
    time_axis: int | None
    complete: bool  # every field group exists (format 1.3 layers)
    fields: list[StoredField]
    #: The layer's metadata as stored (``dims``, ``units``, ``order``, ``tree``: 1.5).
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        """Steps every field has committed: where the layer goes on."""
        return min((f.committed for f in self.fields), default=0)


def load_layer(root: Any, monitor: str, layer: str, where: str) -> StoredLayer | None:
    """The stored state of a layer, or None if the store has no such layer."""
    path = layer_path(monitor, layer)
    lwhere = f"{where} monitor {monitor!r} layer {layer!r}"
    grp = _node(root, path, lwhere)
    if grp is None:
        return None
    meta = check_layer_attrs(dict(grp.attrs), lwhere)
    fields = []
    time_axis = meta.get("time_axis")
    for i in range(meta["fields"]):
        fwhere = f"{lwhere} field {i}"
        fgrp = _node(root, f"{path}/{field_key(i)}", fwhere)
        if fgrp is None:
            if "time_axis" in meta:
                # A 1.3 layer has every field group (see the module docstring).
                raise FormatError(f"{fwhere}: the field group is missing (damaged store)")
            # Killed before this field's group was made: it holds no steps.
            fields.append(StoredField(0, [], None))
            continue
        fmeta = check_field_attrs(dict(fgrp.attrs), fwhere)
        if fmeta["committed_steps"] and "index" not in fgrp:
            raise FormatError(f"{fwhere}: the step index is missing (damaged store)")
        segs = [dict(s) for s in fmeta["segments"]]
        fields.append(
            StoredField(fmeta["committed_steps"], segs, fgrp, fmeta.get(INDEX_HEADS_KEY))
        )
        if time_axis is None and "time_axis" not in meta:
            # Before format 1.3 the time axis shows only in how spikes were packed.
            for s in segs:
                if s["encoding"] == SPIKE_ENCODING and s.get("permute") is not None:
                    time_axis = int(s["permute"][-1])
    return StoredLayer(meta["structure"], time_axis, "time_axis" in meta, fields, meta)


def list_layers(root: Any, where: str) -> list[tuple[str, str]]:
    """Every (monitor, layer) of the store, by name (for marks in append mode)."""
    out = []
    for mkey in member_keys(root):
        mgrp = _node(root, mkey, f"{where} {mkey}")
        mmeta = dict(mgrp.attrs).get(FORMAT_NAME) if mgrp is not None else None
        if not isinstance(mmeta, dict) or mmeta.get("node") != "monitor":
            continue
        for lkey in member_keys(mgrp):
            lgrp = _node(mgrp, lkey, f"{where} {mkey}/{lkey}")
            if lgrp is not None:
                lmeta = check_layer_attrs(dict(lgrp.attrs), f"{where} {mkey}/{lkey}")
                out.append((str(mmeta["name"]), lmeta["name"]))
    return out


def _node(root: Any, path: str, where: str) -> Any:
    """``root[path]``, None if absent; FormatError if its metadata cannot be read."""
    try:
        return root[path]
    except KeyError:
        return None
    except FormatError:
        raise
    except (ValueError, TypeError) as exc:
        raise FormatError(f"{where}: unreadable metadata: {exc}") from exc
