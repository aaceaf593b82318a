"""moerl.core.cpu_allocator: after keep_freed_memory(), a multi-MB block (even one above 32 MiB) comes from the heap and stays there when
freed (glibc would otherwise mmap it and hand it back to the OS on free). Checked with glibc's own counters
(mallinfo2) in a fresh process, so nothing earlier in the test session has moved glibc's dynamic threshold."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = r"""
import ctypes, sys
from moerl.core.cpu_allocator import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def mmapped_while_alive(size):
    before = libc.mallinfo2().hblkhd
    p = libc.malloc(size)
    during = libc.mallinfo2().hblkhd
    libc.free(p)
    return during - before >= size, libc.mallinfo2().fordblks >= size

default = mmapped_while_alive(8 << 20)
applied = keep_freed_memory()
again = keep_freed_memory()
tuned = mmapped_while_alive(8 << 20)
huge = mmapped_while_alive(96 << 20)  # above glibc's largest mmap threshold (32 MiB)
print(default[0], applied, again, tuned[0], tuned[1], huge[0], huge[1])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only (a no-op elsewhere)")
def test_freed_blocks_stay_in_the_heap_after_keep_freed_memory():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout.split()
    default_mmapped, applied, again, tuned_mmapped, kept_free, huge_mmapped, huge_kept = (word == "True" for word in out)
    assert default_mmapped, "glibc's default: an 8 MiB block is mmapped"
    assert applied and again
    assert not tuned_mmapped, "after keep_freed_memory the block comes from the heap"
    assert kept_free, "and its memory stays in the heap, free for the next allocation, after free()"
    assert not huge_mmapped and huge_kept, "so does a block above glibc's largest mmap threshold"
