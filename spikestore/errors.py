"""Every public exception of spikestore, under one base: :class:`SpikestoreError`.

Each is also a subclass of the builtin it has always been (``ValueError``,
``RuntimeError``, ``FileExistsError``), so ``except ValueError`` in user code keeps
working. All are importable from :mod:`spikestore`. This module imports nothing of
the package: it is the ground floor, below :mod:`spikestore.format`.

=========================  ===================  =========================================
exception                  builtin              raised when
=========================  ===================  =========================================
:class:`FormatError`       ``ValueError``       a store's metadata is missing, malformed
                                                or from an unsupported version
:class:`UnsafeStoreError`  (``FormatError``)    a store holds a link, a special file or
                                                an oversized metadata file
:class:`RecordError`       ``ValueError``       ``append`` refuses a record (nothing queued)
:class:`WriteError`        ``RuntimeError``     the background writer failed
:class:`StoreLockedError`  ``RuntimeError``     another writer holds the store
:class:`StoreExistsError`  ``FileExistsError``  a store is already there (no ``mode``)
:class:`ReadError`         ``RuntimeError``     stored data could not be read back
:class:`StoreReplacedError` (``ReadError``)     the store was replaced under a reader
=========================  ===================  =========================================
"""

from __future__ import annotations

__all__ = [
    "SpikestoreError",
    "FormatError",
    "UnsafeStoreError",
    "RecordError",
    "WriteError",
    "StoreLockedError",
    "StoreExistsError",
    "ReadError",
    "StoreReplacedError",
]


class SpikestoreError(Exception):
    """The base of spikestore's own exceptions: a store, a record or a writer in a state
    spikestore cannot go on with. Bad arguments raise Python's ``TypeError`` or
    ``ValueError``, a missing path ``FileNotFoundError``, and a call on a closed writer
    ``RuntimeError``, as Python's own APIs do."""


class FormatError(SpikestoreError, ValueError):
    """A store's metadata is missing, malformed or from an unsupported version."""


class UnsafeStoreError(FormatError):
    """A store holds a symbolic link or a special file where spikestore reads or writes,
    or a metadata file larger than any writer writes; nothing was followed or read."""


class RecordError(SpikestoreError, ValueError):
    """A record cannot be stored; the message names the monitor, layer and step.

    Raised by ``append`` in the caller's thread, before anything is queued: the
    record is not stored and everything recorded before is unaffected.
    """


class WriteError(SpikestoreError, RuntimeError):
    """The background writer failed; the message names the store, the layer and steps."""


class StoreLockedError(SpikestoreError, RuntimeError):
    """Another writer holds the store open for writing."""


class StoreExistsError(SpikestoreError, FileExistsError):
    """A writer without ``mode="a"`` or ``mode="w"`` found a store already there.

    Its message is one line naming both ways out; :attr:`where` is the store.
    """

    def __init__(self, where: str) -> None:
        self.where = where
        super().__init__(
            f"{where} already exists as a spikestore store; pass mode='a' to append to it, "
            "or mode='w' (overwrite=True) to replace it"
        )


class ReadError(SpikestoreError, RuntimeError):
    """Stored data could not be read back; the message names monitor, layer and steps."""


class StoreReplacedError(ReadError):
    """The store was replaced (``mode="w"``, or deleted) after the reader read its
    metadata: what the reader knows of it no longer describes what is stored. Call
    ``refresh()`` on the store reader (or open the store again) to read the new one."""
