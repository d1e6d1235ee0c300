"""llm2clip/allocator.py: with the mmap threshold held fixed, memory a process frees goes back
to the system; with glibc's default (the threshold grows after a large free) it stays resident.

The pattern is training's: a large block freed (an activation), then many smaller ones
allocated and freed while one later block stays alive (so the heap cannot shrink from its top).
"""
import os
import subprocess
import sys

import pytest

PROBE = r"""
import sys
from llm2clip.allocator import limit_heap_retention

def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

took = limit_heap_retention()
big = bytearray(24 << 20); del big                 # glibc's default now serves < 24 MiB from the heap
blocks = [bytearray(8 << 20) for _ in range(25)]   # 200 MiB in 8 MiB blocks (activation-sized), touched
keep = bytearray(1 << 20)                          # alive above them: the heap top cannot be trimmed
before = rss_mib()
del blocks
print(took, before - rss_mib())
"""


def released_mib(env: dict[str, str]) -> tuple[bool, float]:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                          env={**os.environ, **env})
    took, released = done.stdout.split()
    return took == "True", float(released)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_fixed_mmap_threshold_returns_freed_memory_that_glibc_keeps_by_default():
    default_took, kept_by_default = released_mib({"LLM2CLIP_MALLOC": "default"})
    fixed_took, released = released_mib({})
    assert not default_took and fixed_took
    assert kept_by_default < 50, "glibc's default returned the blocks: the probe no longer shows retention"
    assert released > 150  # of the 200 MiB freed


def test_a_users_malloc_variable_wins():
    took, _ = released_mib({"MALLOC_MMAP_THRESHOLD_": "1048576"})
    assert not took
