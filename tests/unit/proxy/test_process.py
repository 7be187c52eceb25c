"""Tests for vantage.proxy.process: the allocator settings of a data-plane process."""
from __future__ import annotations

import ctypes
import os
import platform
import subprocess
import sys

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


def _allocator_of(choice: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """A Python process that applies `choice` as vantage-se does, then says what serves malloc
    (after a restart with LD_PRELOAD, the same command runs again)."""
    code = ("import sys; from vantage.proxy import process\n"
            "try:\n"
            f"    process.use_allocator({choice!r})\n"
            "except process.AllocatorError as exc:\n"
            "    print('error:', exc); sys.exit(3)\n"
            "print(process.allocator_in_use(), sys.argv[1:])\n")
    environ = {k: v for k, v in os.environ.items()
               if k not in ("LD_PRELOAD", process.ALLOCATOR_ENV)}
    environ.update(env or {})
    return subprocess.run([sys.executable, "-c", code, "an-argument"], capture_output=True,
                          text=True, timeout=60, env=environ)


needs_jemalloc = pytest.mark.skipif(process.jemalloc_library() is None,
                                    reason="libjemalloc2 is not installed")


@needs_jemalloc
@pytest.mark.parametrize("choice", ["auto", "jemalloc"])
def test_jemalloc_serves_malloc_after_a_restart_with_the_same_arguments(choice):
    done = _allocator_of(choice)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "jemalloc ['an-argument']"


def test_the_system_allocator_is_kept_when_asked_for():
    done = _allocator_of("system")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("system ")


def test_a_process_started_again_never_starts_again():
    """The marker of a restart (also what workers inherit) stops another one, even when the
    library did not load."""
    done = _allocator_of("jemalloc", {process.ALLOCATOR_ENV: "jemalloc"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("system ")


def test_jemalloc_required_but_missing_is_an_error(monkeypatch):
    monkeypatch.setattr(process, "jemalloc_library", lambda: None)
    monkeypatch.delenv(process.ALLOCATOR_ENV, raising=False)
    with pytest.raises(process.AllocatorError, match="libjemalloc2"):
        process.use_allocator("jemalloc")
    process.use_allocator("auto")  # falls back to the C library's malloc, no restart
