"""Kernel locks that say who holds them: one ``moerl sweep`` per logdir, one trainer per run directory.

Why ``flock`` on a file: the kernel releases the lock when its process ends, however it ends (SIGKILL, out of
memory, a machine that reboots), so a dead holder never leaves a stale lock that someone must delete by
hand, and a second process asking for it learns at once that it is taken. The holder writes ``pid N`` into
the file, so the refusal can name it. The file itself stays (an empty or stale file means nothing; only the
kernel lock does).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from moerl.core.errors import ConfigError


@contextmanager
def exclusive_lock(path: Path, refusal: Callable[[str], str]) -> Iterator[None]:
    """Hold the kernel lock of ``path`` (created if missing) for the ``with`` block, or raise
    ``ConfigError(refusal(holder))`` at once when another process holds it (``holder``: "pid N")."""
    handle = open(path, "a+")  # noqa: SIM115 (held open for the block)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(refusal(_holder(handle))) from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}")
            handle.flush()
        except OSError:  # a full disk: the lock holds all the same, only its holder goes unnamed
            pass
        yield
    finally:
        handle.close()


def _holder(handle: IO[str]) -> str:
    handle.seek(0)
    return handle.read().strip()[:40] or "another process"
