"""spikestore: a persistent, compressed on-disk record store for spiking neural networks.

Monitors with SpikingJelly's API stream every hook's output into a chunked Zarr
v3 store; spikes are bit-packed and compressed; a lazy reader decodes only what
is indexed back to tensors of the original dtype and shape.

``import spikestore`` is cheap: the reader and the writer (which need torch) are
imported on first use of one of their names (:pep:`562`). Zarr resolves the
``spikestore.spikes`` codec through this package, so a process that only reads a
store with plain ``zarr`` never imports torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    FormatError,
    ReadError,
    RecordError,
    SpikestoreError,
    StoreExistsError,
    StoreLockedError,
    StoreReplacedError,
    UnsafeStoreError,
    WriteError,
)
from .format import FORMAT_VERSION

if TYPE_CHECKING:
    from .reader import (
        LayerReader,
        MonitorReader,
        RankedLayerReader,
        RankedMonitorReader,
        RankedStoreReader,
        StoreReader,
        open,
    )
    from .writer import StoreWriter

__all__ = [
    "__version__",
    "FORMAT_VERSION",
    "FormatError",
    "LayerReader",
    "MonitorReader",
    "RankedLayerReader",
    "RankedMonitorReader",
    "RankedStoreReader",
    "ReadError",
    "RecordError",
    "SpikestoreError",
    "StoreExistsError",
    "StoreLockedError",
    "StoreReader",
    "StoreReplacedError",
    "StoreWriter",
    "UnsafeStoreError",
    "WriteError",
    "open",
]

#: Public names imported on first use, by the module that defines them.
_LAZY = {
    "LayerReader": "reader",
    "MonitorReader": "reader",
    "RankedLayerReader": "reader",
    "RankedMonitorReader": "reader",
    "RankedStoreReader": "reader",
    "StoreReader": "reader",
    "open": "reader",
    "StoreWriter": "writer",
}
#: Submodules that ``spikestore.<name>`` imports on first use (as an eager import of
#: the reader and writer used to make them attributes of the package).
_SUBMODULES = frozenset(
    {
        "analysis",
        "cli",
        "codecs",
        "demo",
        "export",
        "format",
        "monitor",
        "plot",
        "ranks",
        "reader",
        "storage",
        "summary",
        "testing",
        "writer",
    }
)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(importlib.import_module(f".{module}", __name__), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
