"""Give the heap memory a service has freed back to the operating system.

glibc keeps freed memory in its arenas for reuse; a long-running worker that
allocates in bursts (a batch of events, a fetch buffer) and frees it again
grows its RSS in steps it never returns. ``malloc_trim(0)`` hands the free
pages of every arena back (``madvise``), without moving live data.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None on a C library without it (musl, macOS)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_free_memory() -> bool:
    """Return freed heap pages to the OS; True if any were released. Takes a few
    milliseconds on a large heap: call it off the event loop."""
    trim = _malloc_trim()
    return bool(trim and trim(0))
