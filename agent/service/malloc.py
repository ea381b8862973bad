"""glibc malloc settings for a long-running agent (the only module that calls into libc).

glibc serves a large block from its heap once a block that size was freed (the mmap
threshold rises with every free of an mmapped block, up to 32 MiB). Each cycle builds and
drops message bodies of 100-300 KB at 5,000 points, so the heap grew around them and stayed:
~4 MiB of RSS at 5,000 points (bench/footprint.py). A fixed threshold keeps such blocks in
their own mappings, given back to the kernel when freed, for a few page faults per cycle.

Another libc (musl) has no mallopt: nothing is changed there.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # <malloc.h>
MMAP_THRESHOLD = 128 * 1024  # glibc's initial value, now fixed


def tune() -> bool:
    """Fix the mmap threshold; True when libc took it."""
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    if not ok:
        log.debug("mallopt(M_MMAP_THRESHOLD) refused; the default policy stays")
    return ok
