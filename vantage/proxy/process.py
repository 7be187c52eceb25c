"""Process-wide settings of a data-plane process that pay for every request: its allocator,
and how glibc's malloc keeps freed memory.

The allocator: OpenSSL allocates and frees a few hundred small blocks per TLS handshake, and
glibc's malloc serves many of them on its slow path once Python's own allocations share the
heap; jemalloc serves them from per-size slabs. Measured with benchmarks/dataplane.py, a full
handshake costs about 7% less CPU with jemalloc. A library replaces malloc only if it is loaded
before the C library's, so `use_allocator` starts the process again with LD_PRELOAD.

glibc's malloc gives the top of its heap back to the kernel as soon as 128 KiB are free there,
and serves allocations from 128 KiB on (the request log's batches, large reads) with their own
mmap. A proxy allocates and frees about the same amount again and again, so both turn into
page faults and system calls on the hot path: measured under L7 keep-alive load, about 0.6
minor faults per request, none with the settings below. The memory is kept for the next peak.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

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


#: set in the environment of a process started again with an allocator: never start it again
ALLOCATOR_ENV = "VANTAGE_SE_ALLOCATOR"


class AllocatorError(RuntimeError):
    pass


def jemalloc_library() -> str | None:
    """The jemalloc the dynamic linker would load (Debian: libjemalloc2), or None."""
    return ctypes.util.find_library("jemalloc")


def allocator_in_use() -> str:
    """"jemalloc" when jemalloc serves malloc in this process, else "system"."""
    try:
        with open("/proc/self/maps", encoding="ascii", errors="replace") as maps:
            if "libjemalloc" in maps.read():
                return "jemalloc"
    except OSError:
        pass
    return "system"


def use_allocator(choice: str) -> None:
    """Make `choice` ("auto", "jemalloc" or "system", see vantage.conf.se) serve malloc. For
    jemalloc this execs the same command again with LD_PRELOAD, and so returns only when nothing
    needs to change or the process already is the one started again (it then keeps whatever
    the linker gave it). AllocatorError when jemalloc is required and not installed."""
    if choice == "system" or os.environ.get(ALLOCATOR_ENV):
        return
    library = jemalloc_library()
    if library is None:
        if choice == "jemalloc":
            raise AllocatorError("allocator jemalloc: libjemalloc is not installed "
                                 "(Debian: apt-get install libjemalloc2)")
        return
    if allocator_in_use() == "jemalloc":
        return
    env = dict(os.environ)
    env[ALLOCATOR_ENV] = choice
    env["LD_PRELOAD"] = " ".join(filter(None, (library, env.get("LD_PRELOAD"))))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


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
