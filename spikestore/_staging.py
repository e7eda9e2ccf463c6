"""Device staging: a field's tensor, made safe to hand to the writer thread.

In the caller's thread, each tensor is tested for spikes and, if it holds them,
bit-packed on its own device, so that from a GPU only packed bits (one bit an
element) cross to the host, by a pinned, non-blocking copy ordered by a CUDA
event on the tensor's own device (no host synchronisation in the hook). A CPU
record is tested and packed in numpy on a view of its bits
(:func:`~spikestore.codecs.rows.spike_pack`: no torch pass, no copy of the values)
and, if it holds spikes, queued as packed bytes (8-64x fewer bytes; a large record
stored time-last in its own order, which the writer thread reorders: see
``codecs.rows.repack_later``); any other record is copied, so the caller may change
its tensor afterwards. Devices other than CUDA are copied to the host and staged as
CPU tensors.

Thread ownership: :func:`stage` runs in the caller's thread and keeps no state;
a :class:`Staged` is immutable once made, read by the writer thread
(:meth:`Staged.encode`) and by a monitor that keeps it for ``records``
(:meth:`Staged.bits`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .codecs import Encoded, encode_packed, encode_values, pack_bits, spike_bits
from .codecs.rows import dtype_name, repack_later, repack_rows, spike_pack
from .format import RAW_ENCODING

__all__ = ["Staged", "stage"]


@dataclass(frozen=True)
class Staged:
    """One field of one record on its way to the writer thread.

    Either ``packed`` bits of a record known (or, on a GPU, being tested) to hold
    spikes, or its ``values``; on a GPU both, with ``flag`` saying which applies
    once ``event`` has completed.
    """

    dtype: torch.dtype
    shape: tuple[int, ...]
    permute: tuple[int, ...] | None
    scalar: bool
    nbytes: int
    values: torch.Tensor | None = None
    #: ``values``' memory as NumPy's array of the stored dtype (a CPU copy's), so that the
    #: writer thread makes its row without torch calls: each releases and takes back the
    #: GIL, and waited for the caller's thread (0.2 ms a record, in ``detach``).
    array: np.ndarray | None = None
    #: The packed bits: NumPy's array on the CPU (the writer thread then makes, and
    #: drops, its row without a torch call, as for ``array``), a pinned host tensor for
    #: a GPU's record.
    packed: np.ndarray | torch.Tensor | None = None
    flag: torch.Tensor | None = None  # a host bool; None: ``packed`` holds spikes for sure
    event: Any = None
    #: ``packed`` holds the bits in the record's own order, not ``permute``'s: the
    #: caller packed them in one pass (``rows.repack_later``); the writer thread puts
    #: them in order a block of rows at a time, :meth:`bits` one record.
    as_recorded: bool = False

    def encode(self) -> Encoded:
        """The row to store (writer thread)."""
        if self.event is not None:
            self.event.synchronize()
        if self.packed is not None and (self.flag is None or bool(self.flag)):
            # As packed: rows packed as recorded are put in order a block at a time.
            bits = self._host_bits()
            return encode_packed(self.dtype, self.shape, bits, self.permute, self.as_recorded)
        if self.array is not None:  # what encode_values makes, without its torch calls
            name = dtype_name(self.dtype)
            return Encoded(RAW_ENCODING, name, self.shape, self.array, self.scalar)
        assert self.values is not None
        return encode_values(self.values, python_scalar=self.scalar)

    def bits(self) -> np.ndarray:
        """The packed bits, in ``permute``'s order, as NumPy's array (call once
        ``event`` has completed)."""
        p = self._host_bits()
        if self.as_recorded:
            assert self.permute is not None
            return repack_rows(p[None], self.shape, self.permute)[0]
        return p

    def _host_bits(self) -> np.ndarray:
        """``packed`` as NumPy's array, in the order it was packed."""
        p = self.packed
        assert p is not None
        return p if isinstance(p, np.ndarray) else p.numpy()


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def stage(t: torch.Tensor, scalar: bool, permute: tuple[int, ...] | None) -> Staged:
    """Stage a detached strided tensor (see the module docstring)."""
    if t.device.type == "cuda":
        return _stage_cuda(t, permute)
    if t.device.type != "cpu":
        t = t.to("cpu")
    return _stage_cpu(t, scalar, permute)


def _stage_cpu(t: torch.Tensor, scalar: bool, permute: tuple[int, ...] | None) -> Staged:
    shape = tuple(t.shape)
    if not scalar and t.numel():
        later = repack_later(shape, permute)
        bits = spike_pack(t, None if later else permute)
        if bits is not None:
            return Staged(
                t.dtype, shape, permute, False, bits.nbytes, packed=bits, as_recorded=later
            )
    values, array = _host_copy(t)
    return Staged(t.dtype, shape, permute, scalar, _nbytes(values), values=values, array=array)


#: The stored integer dtypes (format.DTYPES) through which NumPy copies torch dtypes it lacks.
_VIEWS = {
    torch.bfloat16: torch.uint16,
    torch.float8_e4m3fn: torch.uint8,
    torch.float8_e5m2: torch.uint8,
}


def host_copy(t: torch.Tensor) -> torch.Tensor:
    """A C-contiguous copy of CPU tensor ``t``, made by NumPy.

    ``Tensor.clone`` copies on torch's intra-op (OpenMP) threads: on a busy machine
    those threads spin and wait for one another, and a 1.6 MB record took 1-8 ms of
    CPU instead of NumPy's 0.06-0.1 ms (one thread, memcpy speed).
    """
    return _host_copy(t)[0]


def _host_copy(t: torch.Tensor) -> tuple[torch.Tensor, np.ndarray | None]:
    """:func:`host_copy`, and the copy as NumPy's array of the stored dtype (None where
    torch made the copy)."""
    view = _VIEWS.get(t.dtype)
    src = t.view(view) if view is not None else t
    try:
        arr = src.resolve_conj().resolve_neg().numpy().copy()
    except (TypeError, RuntimeError):  # a dtype NumPy lacks: torch copies it
        return t.clone(memory_format=torch.contiguous_format), None
    out = torch.from_numpy(arr)
    return (out.view(t.dtype) if view is not None else out), arr


def _stage_cuda(t: torch.Tensor, permute: tuple[int, ...] | None) -> Staged:
    with torch.cuda.device(t.device):
        flag, bits = spike_bits(t, permute)
        packed = pack_bits(bits)
        host = torch.empty(packed.shape, dtype=torch.uint8, pin_memory=True)
        host.copy_(packed, non_blocking=True)
        flag_h = torch.empty((), dtype=torch.bool, pin_memory=True)
        flag_h.copy_(flag, non_blocking=True)
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(t.device))
    values = t.clone()
    return Staged(
        t.dtype,
        tuple(t.shape),
        permute,
        False,
        _nbytes(values),
        values=values,
        packed=host,
        flag=flag_h,
        event=event,
    )
