"""The torch thread count training runs with, for the CLI and the Python API alike, and a scoped setter.

Why one thread: moerl's networks are small (128-wide MLPs, minibatches of 128), so torch's default of one
thread per core spends more on synchronising its threads than on arithmetic, and far more on a busy machine:
10k steps of ``MoEDQN(...).learn()`` took 420.8 s with torch's default threads against 27.4 s for ``moerl
train`` with one (issue 22). ``moerl train`` pins :data:`TRAINING_THREADS` for the whole process; the
Python API's ``learn()`` uses it only while it runs (:func:`torch_threads`), so a caller's own setting is
left as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from moerl.core.errors import ConfigError

#: torch threads of a training process (``moerl train``) and of the Python API's ``learn()`` by default.
TRAINING_THREADS = 1


def check_threads(threads: int | None) -> int | None:
    """``threads`` if it is None (keep the caller's count) or a positive integer; one-line error otherwise."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads must be a positive integer or None (keep torch's current setting), got {threads!r}")
    return threads


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the body with ``torch.set_num_threads(threads)``, then restore the caller's count, also when the
    body raises. ``None``: change nothing (the caller's setting is used)."""
    import torch

    check_threads(threads)
    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
