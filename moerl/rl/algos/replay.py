"""S replay buffers, one per seed, held as tensors on the device and filled and sampled in one operation.

Why not SB3's ``ReplayBuffer`` per seed: it lives in numpy on the host, so S buffers cost S Python calls
and a host-to-device copy per sample; the batched engine keeps every seed's transitions on the device.
The rules are SB3's, so that the engines train the same algorithm:

* a circular buffer of ``capacity`` transitions per seed (all seeds advance together, one transition each
  per env step; members of a batch may have capacities of their own, each then wraps at its own);
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

    def __init__(self, seeds: Sequence[int], capacity: int | Sequence[int], obs_dim: int,
                 device: str | torch.device = "cpu", obs_dtype: torch.dtype = torch.float32):
        self.device = torch.device(device)
        s = len(seeds)
        capacities = [int(capacity)] * s if isinstance(capacity, int) else [int(c) for c in capacity]
        if len(capacities) != s or min(capacities) < 1:
            raise ValueError(f"one positive capacity per seed ({s}), got {capacities}")
        #: Rows held per seed (the largest capacity); each seed uses the first ``capacities[i]``.
        self.capacity = max(capacities)
        self.capacities = torch.as_tensor(capacities, dtype=torch.int64, device=self.device)
        self._uniform = len(set(capacities)) == 1  # one write position for all: a slice, not a scatter
        shape = (s, self.capacity)
        # Observations in the env's dtype: MinAtar's grids of 0/1 bytes would take four times the memory as
        # float32 (a 100k buffer of 1,003-byte observations: 0.2 GB per seed instead of 0.8 GB).
        self.observations = torch.zeros(*shape, obs_dim, dtype=obs_dtype, device=self.device)
        self.next_observations = torch.zeros(*shape, obs_dim, dtype=obs_dtype, device=self.device)
        self.actions = torch.zeros(shape, dtype=torch.int64, device=self.device)
        self.rewards = torch.zeros(shape, device=self.device)
        self.dones = torch.zeros(shape, device=self.device)
        self.tasks = torch.zeros(shape, dtype=torch.int64, device=self.device)
        #: Transitions added per seed so far (every seed adds one per env step).
        self.added = 0
        self._rows = torch.arange(s, device=self.device)
        self._streams = SeedStreams(seeds, _SAMPLE_STREAM, self.device)

    def __len__(self) -> int:
        """Transitions the fullest seed holds."""
        return min(self.added, self.capacity)

    @property
    def lengths(self) -> torch.Tensor:
        """``(S,)`` transitions each seed holds."""
        return self.capacities.clamp(max=self.added)

    def add(self, obs: torch.Tensor, next_obs: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor,
            terminated: torch.Tensor, tasks: torch.Tensor | None = None) -> None:
        """Store one transition per seed; ``terminated`` only (a truncation is not an end: see above);
        ``tasks``: each transition's task id (0 when the suite has none)."""
        if self._uniform:
            where: tuple[Any, Any] = (slice(None), self.added % self.capacity)
        else:
            where = (self._rows, self.added % self.capacities)
        if tasks is not None:
            self.tasks[where] = tasks
        self.observations[where] = obs
        self.next_observations[where] = next_obs
        self.actions[where] = actions
        self.rewards[where] = rewards
        self.dones[where] = terminated.float()
        self.added += 1

    def sample(self, batch_size: int) -> BatchedSamples:
        """``batch_size`` transitions per seed, uniformly from what each seed has stored."""
        high = len(self) if self._uniform else self.lengths[:, None]
        idx = self._streams.integers(high, batch_size)  # (S, batch)
        rows = self._rows[:, None]
        return BatchedSamples(self.observations[rows, idx], self.actions[rows, idx], self.rewards[rows, idx],
                              self.dones[rows, idx], self.next_observations[rows, idx], self.tasks[rows, idx])

    def state_dict(self) -> dict[str, Any]:
        """The stored transitions, write position and sampling stream (for checkpoints)."""
        return {"observations": self.observations, "next_observations": self.next_observations,
                "actions": self.actions, "rewards": self.rewards, "dones": self.dones, "tasks": self.tasks,
                "added": self.added, "streams": self._streams.state_dict()}

    def select_state(self, rows: torch.Tensor, capacity: int) -> dict[str, Any]:
        """:meth:`state_dict` of the seeds ``rows`` only, for a buffer of those seeds whose largest capacity is
        ``capacity`` (each seed's rows beyond its own capacity are never used, so they are cut)."""
        out: dict[str, Any] = {key: getattr(self, key).index_select(0, rows)[:, :capacity].clone()
                               for key in ("observations", "next_observations", "actions", "rewards", "dones",
                                           "tasks")}
        out["added"] = self.added
        out["streams"] = self._streams.state_dict()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`; a checkpoint written before task ids were stored has none, and
        its owner fills :attr:`tasks` in (the ids are in the stored observations' one-hots)."""
        for key in ("observations", "next_observations", "actions", "rewards", "dones", "tasks"):
            if key in state:
                getattr(self, key).copy_(state[key])
        if "added" in state:
            self.added = int(state["added"])
        else:  # a checkpoint from before per-seed capacities: one write position and a fill flag
            self.added = int(state["pos"]) + (self.capacity if state["full"] else 0)
        self._streams.load_state_dict(state["streams"])
