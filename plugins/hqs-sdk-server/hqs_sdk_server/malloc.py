"""glibc heap settings for a process that streams large files in 1 MiB pieces.

By default glibc serves every allocation above 128 KiB with a fresh ``mmap`` and gives heap
memory above 128 KiB back to the system as soon as it is freed. A service that receives or
sends a file in 256 KiB to 1 MiB pieces then maps, faults in and unmaps every piece: about
260,000 page faults per GiB, which on a virtual machine cost more than the copy itself (a
1 GiB download took 1.6 s instead of 0.7 s, see docs/performance.md). Serving pieces up to
4 MiB from the heap and keeping up to 32 MiB of freed heap lets the next piece reuse the
memory of the last one. The process's peak memory stays what it was: at most a few pieces
are alive at once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

__all__ = ["keep_transfer_buffers"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 4 * 1024 * 1024
_TRIM_THRESHOLD = 32 * 1024 * 1024

log = logging.getLogger("hqs_sdk_server")


def keep_transfer_buffers() -> bool:
    """Apply the settings above; False (and nothing changed) where the C library is not
    glibc, for example musl or macOS."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        log.debug("no mallopt in this C library: heap settings left as they are")
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
                and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
