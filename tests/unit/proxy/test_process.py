"""Tests for vantage.proxy.process: the allocator settings of a data-plane process."""
from __future__ import annotations

import ctypes
import platform

import pytest

from vantage.proxy import process


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_freed_memory_stays_in_the_heap():
    assert process.tune_malloc() is True
    assert process.tune_malloc() is True  # again (a reload, a test): same settings

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
            "fordblks", "keepcost")]

    mallinfo2 = ctypes.CDLL(None).mallinfo2
    mallinfo2.restype = MallInfo2
    big = [bytes(200_000) for _ in range(20)]  # once malloc's own mappings (over 128 KiB)
    assert mallinfo2().hblks < 20  # now served from the heap
    heap = mallinfo2().arena
    del big
    assert mallinfo2().arena >= heap  # and not given back when freed
