"""Disk-backed monitors with SpikingJelly's API.

Each monitor registers PyTorch hooks on the selected modules of a network, like
``spikingjelly.activation_based.monitor``, but instead of keeping every record
in a Python list it hands the record to a :class:`~spikestore.StoreWriter`,
which copies it on the caller's thread and encodes and writes it on its own
thread. Memory therefore stays bounded however long the run, and the records
are on disk, readable with :func:`spikestore.open`, after the process ends.

Moving code over needs one changed import::

    from spikestore.monitor import OutputMonitor   # was spikingjelly...monitor

``records``, ``monitored_layers``, ``monitor[i]``, ``monitor['layer']``,
``enable``/``disable``/``is_enable``, ``clear_recorded_data``, ``remove_hooks``
and ``close`` behave as in SpikingJelly 2.0; reading a record decodes it from
disk (after flushing the writer, so it sees everything the hooks recorded).

What a monitor keeps in memory is one ``int32`` layer id and one ``int64`` step
per record (their order across layers), never the tensors. As in SpikingJelly,
the hooks hold the monitor, so a monitor created as a bare statement records for
as long as the network lives; it stops at :meth:`~BaseMonitor.close`,
:meth:`~BaseMonitor.remove_hooks`, or when the network (and the monitor) are
collected, and a store it owns is then closed (committed; at interpreter exit
too). See :class:`BaseMonitor` for what happens to a temporary store.

The package is split by job: ``_base`` (:class:`BaseMonitor`: module selection,
hooks, the writer it opens or shares, reading back, enable/disable, closing),
``_axes`` (a record's time axis and axis names from its module's library),
``_readback`` (:class:`Records` and the latest small records, kept) and
``_kinds`` (the five monitors). The public names are all imported here.
"""

from __future__ import annotations

from ._axes import default_dims, module_time_axis
from ._base import BaseMonitor
from ._base import Instance as Instance
from ._kinds import (
    AttributeMonitor,
    GradInputMonitor,
    GradOutputMonitor,
    InputMonitor,
    OutputMonitor,
)
from ._readback import Records as Records

__all__ = [
    "default_dims",
    "module_time_axis",
    "BaseMonitor",
    "OutputMonitor",
    "InputMonitor",
    "AttributeMonitor",
    "GradInputMonitor",
    "GradOutputMonitor",
]
