"""S replay buffers, one per seed, held as tensors on the device and filled and sampled in one operation.

Why not SB3's ``ReplayBuffer`` per seed: it lives in numpy on the host, so S buffers cost S Python calls
and a host-to-device copy per sample; the batched engine keeps every seed's transitions on the device.
The rules are SB3's, so that the engines train the same algorithm:

* a circular buffer of ``capacity`` transitions per seed (all seeds advance together, one transition each
  per env step, so they share the write position and the fill level);
* ``handle_timeout_termination``: a transition whose episode was *truncated* is stored as not done, so its
  target bootstraps from the next state (SB3 keeps ``dones`` and ``timeouts`` and samples
  ``dones * (1 - timeouts)``; here the product is stored);
* the next observation of a transition that ended an episode is the episode's last observation, not the
  first of the next (SB3 reads it from ``infos["terminal_observation"]``);
* sampling: ``batch_size`` indices per seed, uniform with replacement over the filled part
  (``np.random.randint(0, upper_bound, batch_size)`` in SB3), drawn from each seed's own stream
  (:class:`~moerl.core.seed_streams.SeedStreams`), so a seed samples the same alone or in a batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from moerl.core.seed_streams import SeedStreams

#: Stream purpose of minibatch sampling (see :class:`SeedStreams`).
_SAMPLE_STREAM = 2


@dataclass
class BatchedSamples:
    """``(S, batch, ...)`` minibatches: observations, actions, rewards, dones (terminations), next obs, and
    the task each transition was in (the env's, stored beside the observation)."""

    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    dones: torch.Tensor
    next_observations: torch.Tensor
    tasks: torch.Tensor


class BatchedReplayBuffer:
    """One circular replay buffer per seed (see the module docstring)."""

    def __init__(self, seeds: Sequence[int], capacity: int, obs_dim: int, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        s = len(seeds)
        self.capacity = int(capacity)
        self.observations = torch.zeros(s, capacity, obs_dim, device=self.device)
        self.next_observations = torch.zeros(s, capacity, obs_dim, device=self.device)
        self.actions = torch.zeros(s, capacity, dtype=torch.int64, device=self.device)
        self.rewards = torch.zeros(s, capacity, device=self.device)
        self.dones = torch.zeros(s, capacity, device=self.device)
        self.tasks = torch.zeros(s, capacity, dtype=torch.int64, device=self.device)
        self.pos = 0
        self.full = False
        self._streams = SeedStreams(seeds, _SAMPLE_STREAM, self.device)

    def __len__(self) -> int:
        return self.capacity if self.full else self.pos

    def add(self, obs: torch.Tensor, next_obs: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor,
            terminated: torch.Tensor, tasks: torch.Tensor | None = None) -> None:
        """Store one transition per seed; ``terminated`` only (a truncation is not an end: see above);
        ``tasks``: each transition's task id (0 when the suite has none)."""
        p = self.pos
        if tasks is not None:
            self.tasks[:, p] = tasks
        self.observations[:, p] = obs
        self.next_observations[:, p] = next_obs
        self.actions[:, p] = actions
        self.rewards[:, p] = rewards
        self.dones[:, p] = terminated.float()
        self.pos = (p + 1) % self.capacity
        self.full = self.full or self.pos == 0

    def sample(self, batch_size: int) -> BatchedSamples:
        """``batch_size`` transitions per seed, uniformly from what each seed has stored."""
        idx = self._streams.integers(len(self), batch_size)  # (S, batch)
        rows = torch.arange(idx.shape[0], device=self.device)[:, None]
        return BatchedSamples(self.observations[rows, idx], self.actions[rows, idx], self.rewards[rows, idx],
                              self.dones[rows, idx], self.next_observations[rows, idx], self.tasks[rows, idx])

    def state_dict(self) -> dict[str, Any]:
        """The stored transitions, write position and sampling stream (for checkpoints)."""
        return {"observations": self.observations, "next_observations": self.next_observations,
                "actions": self.actions, "rewards": self.rewards, "dones": self.dones, "tasks": self.tasks,
                "pos": self.pos,
                "full": self.full, "streams": self._streams.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`; a checkpoint written before task ids were stored has none, and
        its owner fills :attr:`tasks` in (the ids are in the stored observations' one-hots)."""
        for key in ("observations", "next_observations", "actions", "rewards", "dones", "tasks"):
            if key in state:
                getattr(self, key).copy_(state[key])
        self.pos, self.full = int(state["pos"]), bool(state["full"])
        self._streams.load_state_dict(state["streams"])
