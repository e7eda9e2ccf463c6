"""CRC-32C of large buffers with the GIL released.

``google_crc32c.extend`` holds the GIL while it runs unless it is given a ``bytes``
object of 1 MiB or more, and the writer gives it arrays: about 0.12 ms for a 1.6 MB
record on this project's machine, during which the training thread's Python stalls.
The same C function of the same library, ``crc32c_extend`` from the ``libcrc32c`` its
extension module links, called through ``ctypes`` releases the GIL like any
``ctypes.CDLL`` call. It costs about 1.5 us a call more, so buffers under
:data:`GIL_FREE_BYTES` keep the extension's call. Where the library is Google's
pure-Python fallback (no C extension), every call is that fallback's.

Thread ownership: stateless (the function is looked up once, at import).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

import google_crc32c
import numpy as np

__all__ = ["GIL_FREE_BYTES", "crc32c", "gil_free"]

#: Buffers of at least this many bytes get the call that releases the GIL.
GIL_FREE_BYTES = 1 << 15


def _load() -> Callable[[int, int, int], int] | None:
    try:
        from google_crc32c import _crc32c  # type: ignore[attr-defined]

        # dlsym on the extension's handle searches the libraries it links: libcrc32c.
        fn = ctypes.CDLL(_crc32c.__file__).crc32c_extend
    except (ImportError, OSError, AttributeError):
        return None
    fn.restype = ctypes.c_uint32
    fn.argtypes = [ctypes.c_uint32, ctypes.c_void_p, ctypes.c_size_t]
    return fn  # type: ignore[no-any-return]


_EXTEND = _load()


def gil_free() -> bool:
    """Whether large buffers' CRCs release the GIL here."""
    return _EXTEND is not None


def crc32c(parts: Any, crc: int = 0) -> int:
    """The CRC-32C of the concatenated bytes of ``parts`` (arrays or bytes-like objects,
    each C-contiguous), continuing ``crc``."""
    for part in parts:
        a = np.frombuffer(part, np.uint8) if not isinstance(part, np.ndarray) else part
        if _EXTEND is not None and a.nbytes >= GIL_FREE_BYTES:
            if not a.flags.c_contiguous:
                raise ValueError("a CRC-32C of a buffer that is not C-contiguous")
            crc = _EXTEND(crc, a.ctypes.data, a.nbytes)
        else:
            crc = google_crc32c.extend(crc, a.reshape(-1).view(np.uint8))
    return crc
