"""Records to stored rows and back, and the Zarr codecs that compress them.

Bytes in, bytes out: nothing in this package touches a store or a thread.

- :mod:`~spikestore.codecs.rows`: a record's tensor to a row (bit-packed spikes or
  raw values) and rows back to tensors; the compressor codec chains.
- :mod:`~spikestore.codecs.spikes`: the ``spikestore.spikes`` Zarr codec for packed
  spike chunks (its byte layout is in that module's docstring).
- :mod:`~spikestore.codecs.motion`: the MOTION contexts of that codec.
- :mod:`~spikestore.codecs.layout`: chunk and shard shapes, and the time-last order.

``spikes``, ``motion`` and ``layout`` need only numpy, numcodecs and zarr; ``rows``
needs torch and is imported on first use of one of its names (:pep:`562`), so that
Zarr, resolving the codec by its entry point, never imports torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .layout import layout, spike_frame, time_last
from .spikes import CODEC_NAME, MOTION_MAX_T, SpikeCodec

if TYPE_CHECKING:
    from .rows import (
        COMPRESSORS,
        DEFAULT_DENSE,
        DEFAULT_SPIKES,
        LEVELS,
        Encoded,
        bit_positions,
        checksum,
        compressor_codecs,
        decode_rows,
        dtype_name,
        encode,
        encode_packed,
        encode_values,
        pack_bits,
        spike_bits,
        torch_dtype,
        unpack_bits,
    )

__all__ = [
    "CODEC_NAME",
    "COMPRESSORS",
    "DEFAULT_DENSE",
    "LEVELS",
    "DEFAULT_SPIKES",
    "MOTION_MAX_T",
    "Encoded",
    "SpikeCodec",
    "bit_positions",
    "checksum",
    "compressor_codecs",
    "decode_rows",
    "dtype_name",
    "encode",
    "encode_packed",
    "encode_values",
    "layout",
    "pack_bits",
    "spike_bits",
    "spike_frame",
    "time_last",
    "torch_dtype",
    "unpack_bits",
]

#: The names of :mod:`~spikestore.codecs.rows`, imported from it on first use: the
#: public names not imported above.
_ROWS = frozenset(__all__) - set(globals())


def __getattr__(name: str) -> Any:
    if name in _ROWS:
        value = getattr(importlib.import_module(".rows", __name__), name)
        globals()[name] = value
        return value
    if name == "rows":
        return importlib.import_module(".rows", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
