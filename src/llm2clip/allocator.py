"""Keep glibc's malloc from holding on to freed training memory (CPU runs).

With glibc's defaults the threshold above which `malloc` maps fresh pages (and unmaps them
on `free`) grows to the size of every large block freed, up to 32 MiB. CPU training frees
large activation tensors every step, so after the first step those tensors come from the
heap instead, and what is freed there stays resident: peak RSS then measures the
allocator's retention as much as the live tensors (BENCHMARKS.md, section 8).

`limit_heap_retention()` fixes the threshold (which also stops it growing), as the
`MALLOC_MMAP_THRESHOLD_` environment variable would, but from inside the process, so
`llm2clip ...`, `torchrun -m llm2clip.cli ...` and `make demo` all get it without a
wrapper. It is called where the process starts (`cli.main`), before any tensor exists.
A variable the user set (`MALLOC_MMAP_THRESHOLD_`) wins; `LLM2CLIP_MALLOC=default` keeps
glibc's behaviour. Other C libraries (musl, macOS) are left alone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter numbers (malloc.h)
# Held fixed at 4 MiB: training's activation tensors (MiBs each) are mapped and returned on
# free, while the many small blocks stay on the heap. glibc's own starting value, 128 KiB,
# returned a little more (the demo's --fast run peaked at 1.30 instead of 1.99 GB) but
# mapped and zeroed every block above it afresh: 92 s of system time against 11 s, and the
# run took 2.07 instead of 1.18 minutes (glibc's default: 1.13 min, 2.16 GB).
MMAP_THRESHOLD_BYTES = 4 << 20


def limit_heap_retention() -> bool:
    """Fix glibc's mmap threshold; True when it was set here."""
    if os.environ.get("LLM2CLIP_MALLOC") == "default" or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    libc = _glibc()
    if libc is None:
        return False
    done = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    if not done:
        log.debug("mallopt(M_MMAP_THRESHOLD) was refused; glibc's defaults stay")
    return done


def _glibc():
    """The running process's C library if it is glibc, else None."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # only glibc has it
    except (OSError, AttributeError):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc
