"""The one place spikestore reaches into Zarr's non-public names.

Zarr 3 keeps its event loop and ``sync`` bridge, its buffer prototype, its metadata
and spec classes under ``zarr.core``, and its codecs' synchronous encoders behind
``_encode_sync``; these may change between minor releases, and a change there should
need an edit here only. Every other module imports them from here (a test checks it).
Zarr's public modules (``zarr``, ``zarr.abc``, ``zarr.codecs``, ``zarr.storage``) are
imported directly where they are used.

The imports are made on first use, so that ``import spikestore`` stays cheap.

State: none of its own (Zarr's loop belongs to Zarr's I/O thread).
"""

from __future__ import annotations

from collections.abc import Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    # Types for annotations only (the spike codec's methods).
    from zarr.core.array_spec import ArraySpec
    from zarr.core.buffer import Buffer, NDBuffer
    from zarr.core.chunk_grids import ChunkGrid
    from zarr.core.common import JSON
    from zarr.core.dtype.wrapper import TBaseDType, TBaseScalar, ZDType

__all__ = [
    "JSON",
    "ArraySpec",
    "Buffer",
    "ChunkGrid",
    "NDBuffer",
    "TBaseDType",
    "TBaseScalar",
    "ZDType",
    "buffer_prototype",
    "can_encode_sync",
    "chunk_spec",
    "encode_chain",
    "from_bytes",
    "group_metadata_files",
    "inner_chunk_spec",
    "parse_named_configuration",
    "set_io_executor",
    "sync",
]

T = TypeVar("T")


def sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on Zarr's event loop and return its result (from any thread but
    that loop's own)."""
    from zarr.core.sync import sync as zarr_sync

    return zarr_sync(coro)


def buffer_prototype() -> Any:
    """Zarr's default buffer prototype (host memory)."""
    from zarr.core.buffer import default_buffer_prototype

    return default_buffer_prototype()


def from_bytes(data: bytes) -> Any:
    """``data`` as a Zarr buffer, to ``set`` into a store."""
    return buffer_prototype().buffer.from_bytes(data)


def parse_named_configuration(data: Any, name: str, **kwargs: Any) -> Any:
    """Zarr's check of a ``{"name": ..., "configuration": {...}}`` codec entry."""
    from zarr.core.common import parse_named_configuration as parse

    return parse(data, name, **kwargs)


def group_metadata_files(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The files (key -> buffer) of a Zarr v3 group's metadata with ``attrs``."""
    from zarr.core.group import GroupMetadata

    return dict(GroupMetadata(attributes=dict(attrs)).to_buffer_dict(buffer_prototype()))


def chunk_spec(arr: Any) -> Any:
    """The spec of an array's chunks, for its codecs' synchronous encoders."""
    from zarr.core.array_spec import ArrayConfig

    config = ArrayConfig.from_dict({"write_empty_chunks": True})
    return arr.metadata.get_chunk_spec((0,) * arr.ndim, config, buffer_prototype())


def inner_chunk_spec(main: Any, chunks: tuple[int, ...]) -> Any:
    """The spec of the inner chunks (of shape ``chunks``) of sharded array ``main``."""
    from zarr.core.array_spec import ArrayConfig, ArraySpec

    return ArraySpec(
        shape=chunks,
        dtype=main.metadata.data_type,
        fill_value=main.metadata.fill_value,
        config=ArrayConfig.from_dict({"write_empty_chunks": True}),
        prototype=buffer_prototype(),
    )


def can_encode_sync(codec: Any) -> bool:
    """Whether Zarr's ``codec`` has a synchronous encoder."""
    return hasattr(codec, "_encode_sync")


def encode_chain(codecs: list[Any], block: Any, spec: Any) -> Any:
    """``block`` (a NumPy array) encoded by a serializer and bytes-to-bytes codecs,
    synchronously, in the calling thread: a NumPy array of the bytes."""
    buf = codecs[0]._encode_sync(spec.prototype.nd_buffer.from_numpy_array(block), spec)
    for codec in codecs[1:]:
        buf = codec._encode_sync(buf, spec)
    return buf.as_numpy_array()


def set_io_executor(executor: ThreadPoolExecutor) -> None:
    """Run the blocking work of Zarr's event loop (``asyncio.to_thread``: a local
    store's file operations, Zarr's own codecs) on ``executor``."""
    from zarr.core.sync import _get_loop

    _get_loop().set_default_executor(executor)


def __getattr__(name: str) -> Any:
    """The types re-exported for annotations, resolved on first use."""
    modules = {
        "JSON": "zarr.core.common",
        "ArraySpec": "zarr.core.array_spec",
        "Buffer": "zarr.core.buffer",
        "NDBuffer": "zarr.core.buffer",
        "ChunkGrid": "zarr.core.chunk_grids",
        "TBaseDType": "zarr.core.dtype.wrapper",
        "TBaseScalar": "zarr.core.dtype.wrapper",
        "ZDType": "zarr.core.dtype.wrapper",
    }
    if name in modules:
        import importlib

        return getattr(importlib.import_module(modules[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
