"""spikestore: a persistent, compressed on-disk record store for spiking neural networks.

Monitors with SpikingJelly's API stream every hook's output into a chunked Zarr
v3 store; spikes are bit-packed and compressed; a lazy reader decodes only what
is indexed back to tensors of the original dtype and shape.
"""

from ._version import __version__
from .format import FORMAT_VERSION, FormatError
from .reader import LayerReader, MonitorReader, ReadError, StoreReader, open
from .writer import RecordError, StoreLockedError, StoreWriter, WriteError

__all__ = [
    "__version__",
    "FORMAT_VERSION",
    "FormatError",
    "LayerReader",
    "MonitorReader",
    "ReadError",
    "RecordError",
    "StoreLockedError",
    "StoreReader",
    "StoreWriter",
    "WriteError",
    "open",
]
