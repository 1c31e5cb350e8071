"""Keep freed memory for reuse instead of returning it to the operating system (glibc only).

glibc serves allocations above 128 KB (rising dynamically up to 32 MB) with fresh ``mmap``
pages and gives them back on ``free``, and it trims the heap top the same way; every training
step then faults its activation buffers in again, page by page. On a 2-core machine that
doubled the time of a ProtoNet step and made evaluation up to 2.5x slower, and erratic
(benchmarks/learners_speed.py). Fixing the threshold at its maximum and never trimming keeps
the memory of the largest step for the next one; only blocks above 32 MB still go to ``mmap``.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc refuses more on 64-bit (HEAP_MAX_SIZE / 2)


def reuse_freed_memory() -> bool:
    """Tune glibc's malloc for large, repeated tensor allocations; ``False`` where it does not apply."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # Trim threshold: the largest int, i.e. never hand the heap top back.
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
