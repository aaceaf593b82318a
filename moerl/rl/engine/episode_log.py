"""Finished training episodes, moved from the device to the host at a boundary: one function for every engine.

Why: a batched engine records ``(env step, done, task, return, length)`` for every env step on the device
(reading ``done`` on the host each step would wait on the device) and keeps, at the boundary, the steps where
some episode ended, in one transfer per field. :class:`~moerl.rl.engine.batched_dqn.BatchedDQN` (``(S,)``
per step) and :class:`~moerl.rl.engine.batched_ppo.BatchedPPO` (``(S, N)``) share it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

Entry = tuple[int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def ended_episodes(entries: Sequence[Entry], device: torch.device,
                   ) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """The entries ``(step, done, task, return, length)`` of the env steps where some episode ended, as numpy."""
    if not entries:
        return []
    steps, done, task, ret, length = zip(*entries, strict=True)
    done_np = torch.stack(done).cpu().numpy()
    ended = np.flatnonzero(done_np.reshape(len(steps), -1).any(1))
    if not len(ended):
        return []
    rows = torch.as_tensor(ended, device=device)
    task_np, ret_np, len_np = (torch.stack(t).index_select(0, rows).cpu().numpy() for t in (task, ret, length))
    return [(steps[k], done_np[k], task_np[j], ret_np[j], len_np[j]) for j, k in enumerate(ended)]
