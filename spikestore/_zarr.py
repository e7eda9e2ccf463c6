"""The one place spikestore reaches into Zarr's non-public names.

Zarr 3 keeps its event loop, its ``sync`` bridge and its buffer prototype under
``zarr.core``, which may change between minor releases; a change there should need
an edit here only.

State: none of its own (Zarr's loop belongs to Zarr's I/O thread).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

__all__ = ["set_io_executor"]


def set_io_executor(executor: ThreadPoolExecutor) -> None:
    """Run the blocking work of Zarr's event loop (``asyncio.to_thread``: a local
    store's file operations, Zarr's own codecs) on ``executor``."""
    from zarr.core.sync import _get_loop

    _get_loop().set_default_executor(executor)
