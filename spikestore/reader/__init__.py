"""Lazy, read-only access to a spikestore store.

Opening reads only group metadata. Indexing a layer reads the index chunk and
the data chunks that hold the requested steps, and decodes them to tensors of
the original dtype and shape.

The package has one module per job; the public names are imported from here:

- ``_source``: where a store is (:class:`Source`, :func:`open`), its groups opened;
- ``_nodes``: :class:`StoreReader`, :class:`MonitorReader`, :class:`LayerReader`;
- ``_field``: :class:`FieldReader`, a field's rows decoded to tensors;
- ``_checks``: whether what a field reads is what it opened (damage, a replaced store);
- ``_shards``: shard checks and direct reads of spike shards;
- ``_runs``: :class:`Run`, each opening of a writer, and a layer's steps by run;
- ``_trees``: step and neuron indices, nested records rebuilt, steps stacked;
- ``_pool``: the read pool (:data:`READ_THREADS`);
- ``_ranked``: the readers of ranked stores.

Thread ownership: the caller (and a 2-thread read pool per process).
"""

from __future__ import annotations

from ..errors import ReadError, StoreReplacedError
from ._field import MAX_STEPS as MAX_STEPS
from ._field import FieldReader
from ._field import _decode_segment_rows as _decode_segment_rows
from ._field import read_retrying as read_retrying
from ._nodes import LayerReader, MonitorReader, StoreReader
from ._pool import read_threads as read_threads
from ._ranked import RankedLayerReader, RankedMonitorReader, RankedStoreReader
from ._runs import Run
from ._shards import Place as Place
from ._source import Source, open
from ._trees import step_indices

# The ``X as X`` imports above are importable here as before the package split, though
# not in __all__: names that users and ``benchmarks/`` reach.

#: Threads that decode a large read: 1 or 2; None for the environment variable
#: ``SPIKESTORE_READ_THREADS``, else 2. The second thread only takes work when a core
#: is free for it (see :func:`spikestore.reader._pool._share`). Read at each large read.
READ_THREADS: int | None = None

__all__ = [
    "open",
    "StoreReader",
    "MonitorReader",
    "LayerReader",
    "FieldReader",
    "ReadError",
    "StoreReplacedError",
    "RankedStoreReader",
    "RankedMonitorReader",
    "RankedLayerReader",
    "Source",
    "Run",
    "step_indices",
]
