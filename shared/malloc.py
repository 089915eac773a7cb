"""The C allocator's settings for a long-lived service process (glibc only).

glibc serves a block of 128 KB or more with its own mapping, returned to the system when
freed, but each such free raises that threshold to the freed block's size (up to 32 MB).
After a service's first large buffers (a Kafka fetch response, a bulk statement's
parameters) are freed, buffers of that size come from the main heap instead, and the heap
keeps what they leave between its live blocks: the KPI's RSS grew 10-15 MB over a rebuild
while the heap Python used stayed level (docs/benchmarks.md, round 15). Setting the
threshold pins it, so large blocks keep their own mappings. The environment's
`MALLOC_MMAP_THRESHOLD_`, when set, is left to rule.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

# glibc's malloc.h
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's own starting value


def pin_mmap_threshold(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold at `threshold` bytes; False where there is no glibc or
    the environment already sets it."""
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") or not _glibc():
        return False
    libc = ctypes.CDLL(None)  # the process's own symbols, libc's among them
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    if libc.mallopt(_M_MMAP_THRESHOLD, threshold) != 1:
        log.warning("mallopt(M_MMAP_THRESHOLD, %d) refused", threshold)
        return False
    return True


def _glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError, AttributeError):  # not a name this system knows
        return False
