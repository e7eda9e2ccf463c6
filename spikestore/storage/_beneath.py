"""A file below a folder opened by one ``openat2(2)`` call that never follows a link.

:mod:`._localfs` reaches a store's files one path component at a time (``openat``
with ``O_NOFOLLOW``, then ``close``, per folder): 24 system calls for a shard file
eleven folders down, about 40 us of a 0.4 ms read of one step. Linux 5.6 and later
make the same walk in the kernel: ``openat2`` with ``RESOLVE_BENEATH`` (no ``..``
or absolute path out of the folder), ``RESOLVE_NO_SYMLINKS`` (no link in any
component, the last included) and ``RESOLVE_NO_MAGICLINKS`` fails where the walk
would refuse. :func:`open_beneath` makes that call through ``ctypes`` (Python's
``os`` has no ``openat2``) and gives None on any failure, so that its caller walks
and names what is wrong; where the call is missing (another system, an older
kernel, a sandbox that refuses it: ``ENOSYS``, ``EPERM``) it gives None from then
on. The flags of the open itself are the caller's (``O_NOFOLLOW``,
``O_NONBLOCK``): a special file is still the caller's to refuse after ``fstat``.

Thread ownership: stateless but :data:`_SYSCALL`, filled once (by any thread; a
race fills it twice with the same value) and emptied where the call is refused.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from typing import Any

__all__ = ["open_beneath"]

#: ``__NR_openat2``: one number on every Linux architecture (asm-generic).
_NR_OPENAT2 = 437
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08
_RESOLVE = _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS
#: What says the call itself is unusable here, not the path.
_UNUSABLE = (errno.ENOSYS, errno.EPERM, errno.EINVAL, errno.E2BIG)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_SYSCALL: list[Any] = []  # [libc's syscall(), or None]


def _syscall() -> Any:
    if not _SYSCALL:
        fn = None
        if sys.platform.startswith("linux"):
            try:
                fn = ctypes.CDLL(None, use_errno=True).syscall
            except (OSError, AttributeError):
                fn = None
            else:
                fn.restype = ctypes.c_long
                fn.argtypes = [
                    ctypes.c_long,
                    ctypes.c_int,
                    ctypes.c_char_p,
                    ctypes.c_void_p,
                    ctypes.c_size_t,
                ]
        _SYSCALL.append(fn)
    return _SYSCALL[0]


def open_beneath(dirfd: int, path: str, flags: int) -> int | None:
    """A descriptor of ``path`` (relative, ``/``-separated) below folder ``dirfd``,
    opened with ``flags`` by ``openat2`` without following any link; None when that
    fails, whatever the reason (a missing file, a link on the way, no ``openat2``)."""
    fn = _syscall()
    if fn is None or "\x00" in path:  # a C string would end at the NUL
        return None
    how = _OpenHow(flags, 0, _RESOLVE)
    fd = int(fn(_NR_OPENAT2, dirfd, os.fsencode(path), ctypes.byref(how), ctypes.sizeof(how)))
    if fd >= 0:
        return fd
    if ctypes.get_errno() in _UNUSABLE:
        _SYSCALL[:] = [None]
    return None
