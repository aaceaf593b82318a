"""Keep freed CPU memory in the process (glibc's ``mallopt``), so large tensors are not page-faulted in anew.

Why: glibc's ``malloc`` serves a block above ``M_MMAP_THRESHOLD`` (dynamically, up to 32 MiB) with a fresh
``mmap`` and returns it to the operating system when it is freed; heap memory above ``M_TRIM_THRESHOLD`` is
trimmed the same way. The batched engine allocates and frees activations of several MiB per layer and
update (S seeds x experts x batch x width floats), so every update page-faults them in again and the kernel
zeroes each page: measured on one thread, a 10-seed big/softmoe update (target forward, forward, backward)
took 17.8 ms with glibc's defaults and 15.9 ms with the settings below (64 seeds: 144 against 110 ms).
A single SB3-path network's update (1 seed) was unaffected (2.05 against 1.96 ms: noise). Beyond 32 MiB
(glibc's largest mmap threshold; a layer's activations of 256 seeds of a 4-expert layer are 67 MB) only
disabling ``mmap`` for allocations (``M_MMAP_MAX = 0``) keeps them: a 256-seed middle/softmoe update took
828 ms with the threshold alone and 444 ms with mmap disabled (64 seeds: 112 against 108 ms).

``MALLOC_MMAP_MAX_=0`` / ``MALLOC_TRIM_THRESHOLD_`` in the environment do the same before start;
``mallopt`` does it from inside, for processes started by anyone. Elsewhere than glibc (macOS, musl,
Windows) this is a no-op that says so. The cost: the process keeps up to ``trim_threshold`` bytes of freed
memory instead of returning it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

#: mallopt parameter numbers (glibc's malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -2, -3, -4
#: glibc's upper bound for M_MMAP_THRESHOLD on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX).
MMAP_THRESHOLD_MAX = 32 << 20

_applied = False


def keep_freed_memory(trim_threshold: int = 1 << 30, top_pad: int = 64 << 20) -> bool:
    """Serve every block from the heap (no ``mmap``) and keep up to ``trim_threshold`` bytes of it when freed.

    Returns whether the settings are in effect (True once applied; False where the C library is not glibc).
    Idempotent: later calls return the first call's outcome.
    """
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = all(mallopt(param, value) == 1 for param, value in (
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, trim_threshold),
        (_M_TOP_PAD, top_pad)))
    _applied = ok
    return ok
