"""The writer's errors (the reader's are :class:`~spikestore.ReadError` and
:class:`~spikestore.FormatError`)."""

from __future__ import annotations

__all__ = ["RecordError", "WriteError", "StoreLockedError"]


class RecordError(ValueError):
    """A record cannot be stored; the message names the monitor, layer and step.

    Raised by ``append`` in the caller's thread, before anything is queued: the
    record is not stored and everything recorded before is unaffected.
    """


class WriteError(RuntimeError):
    """The background writer failed; the message names the store, the layer and steps."""


class StoreLockedError(RuntimeError):
    """Another writer holds the store open for writing."""
