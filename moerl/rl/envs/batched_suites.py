"""The batched suite of a suite spec's kind: one constructor for the batched engine and its calibration.

Why its own module: :mod:`moerl.rl.envs.batched_minatar` builds on :mod:`moerl.rl.envs.batched` (the shared
step record and CRL schedule tables), so the function that picks between the two cannot live in either
without an import cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from moerl.rl.envs.batched import BatchedTaskSuite
from moerl.rl.envs.batched_minatar import BatchedMinAtarSuite
from moerl.rl.spec import SuiteSpec


def make_batched_suite(suite: SuiteSpec | Sequence[SuiteSpec], seeds: Sequence[int],
                       device: str | torch.device = "cpu", fixed_tasks: Sequence[int] | None = None) -> Any:
    """The batched suite of ``suite``'s kind: :class:`~moerl.rl.envs.batched_minatar.BatchedMinAtarSuite` for
    MinAtar suites (specs with a ``grid_shape``), else :class:`~moerl.rl.envs.batched.BatchedTaskSuite`; same arguments, same
    interface (what the batched engine reads)."""
    first = suite[0] if isinstance(suite, Sequence) else suite
    if getattr(first, "grid_shape", None) is not None:
        return BatchedMinAtarSuite(suite, seeds, device, fixed_tasks)
    return BatchedTaskSuite(suite, seeds, device, fixed_tasks)
