"""The routing MDP of Rosenbaum et al. (ICLR 2018) as a Gymnasium environment, plus its reward rules.

Why an environment: it makes the router an ordinary RL agent, so any agent (ours in
:mod:`moerl.routing.policies`, or a user's) can be plugged in. One episode is one sample's route:

* state ``(v, t, depth)``: ``v`` the current representation (zero-padded to the largest width), ``t``
  the task id, ``depth`` the routing step;
* actions: the blocks allowed at that depth (+ PASS on middle depths when the network allows it).
  The action space is ``Discrete(max actions)``; an action that is not valid at this depth is mapped to
  ``action % n_valid`` (``info["action_mask"]`` tells agents which ones are valid);
* reward of each step: the collaboration reward ``rho * usage(block at depth)`` (:class:`UsageStats`:
  the average historical probability of choosing that block, or its historical frequency, over all
  tasks, *before* this choice); the last step adds the final reward +1 if the prediction is right, -1
  otherwise. ``rho`` is applied once, here and nowhere else.

The environment is non-stationary on purpose: finished episodes are buffered and every
``block_batch_size`` of them the network (trunk + the blocks on the chosen routes only) takes one SGD
step on the task loss, as in the paper's Algorithm 2. The observation ``v`` is computed with the trunk
in eval mode (batch norm with running statistics), because one sample is not a batch.

The fast path for training is :class:`moerl.routing.trainer.RoutingLearner`, which routes whole
mini-batches; both use :func:`route_rewards` and :class:`UsageStats` from this module, so a route gets
the same rewards in both (tested in ``tests/test_routing_env.py``).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from moerl.core.seeding import seeded
from moerl.routing.nets import RoutedConvNet


class UsageStats:
    """History of the router's choices per (depth, block): the basis of the collaboration reward.

    The paper (section 3.1.1) tried two immediate rewards, "the average number of times that block was
    chosen by the router historically and the average historical probability of the router choosing
    that block. We found no significant difference between the two approaches and use the average
    probability in our experiments." ``mode`` picks one:

    * ``"probability"`` (the paper's): ``counts[d, a]`` sums, over every past decision at depth ``d``,
      the probability the deciding agent gave block ``a``; divided by the number of decisions it is
      the average historical probability.
    * ``"count"``: ``counts[d, a]`` counts the past decisions that chose ``a``; divided by the number
      of decisions it is the historical frequency.

    Pooled or per agent: the paper speaks of "the router", which in the multi-agent form is the set of
    per-task agents, and motivates the reward by re-use across instances ("condition its decision for
    one instance on what was historically decided for other instances, to encourage re-use of existing
    functions for improved compression"; "reducing the number of function blocks ever chosen by the
    router"). Per-agent statistics would reward a task for re-using its *own* blocks only, which does
    not compress anything, so the history is pooled over all tasks (agents) at each depth.
    """

    def __init__(self, n_depths: int, max_actions: int, mode: str = "count"):
        if mode not in ("probability", "count"):
            raise ValueError(f"unknown collaboration reward '{mode}'; valid choices: probability, count")
        self.mode = mode
        self.counts = np.zeros((n_depths, max_actions), dtype=np.float64)

    def frequency(self) -> np.ndarray:
        """(n_depths, max_actions): average probability (or frequency) of each block over past decisions."""
        tot = self.counts.sum(1, keepdims=True)  # = number of decisions per depth (probabilities sum to 1)
        return np.divide(self.counts, tot, out=np.zeros_like(self.counts), where=tot > 0)

    def update(self, actions: np.ndarray, probs: np.ndarray | None = None) -> None:
        """Add the decisions ``actions`` (int (B, n_depths)) with their probabilities ``probs``
        ((B, n_depths, n_actions); needed in ``"probability"`` mode, ignored in ``"count"`` mode)."""
        n_depths = self.counts.shape[0]
        if self.mode == "probability":
            if probs is None:
                raise ValueError("UsageStats(mode='probability') needs the probabilities of the decisions")
            probs = np.asarray(probs, dtype=np.float64).reshape(-1, n_depths, probs.shape[-1])
            self.counts[:, : probs.shape[2]] += probs.sum(0)
            return
        actions = np.asarray(actions).reshape(-1, n_depths)
        for d in range(n_depths):
            np.add.at(self.counts[d], actions[:, d], 1.0)


def collaboration_rewards(actions: np.ndarray, usage: UsageStats, rho: float) -> np.ndarray:
    """``rho * frequency[d, a_d]`` for every step of every route (B, n_depths), counts taken before."""
    actions = np.asarray(actions).reshape(-1, usage.counts.shape[0])
    freq = usage.frequency()
    return rho * freq[np.arange(actions.shape[1])[None, :], actions]


def final_rewards(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """+1 where the prediction is right, -1 otherwise."""
    return np.where((logits.argmax(1) == labels).cpu().numpy(), 1.0, -1.0)


def compute_returns(rewards: np.ndarray, r_final: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    """``R_i = r_final + sum_{j>=i} gamma^(j-i) r_j`` for every step (not cumulatively summed again)."""
    rewards = np.asarray(rewards, dtype=np.float64)
    out = np.zeros_like(rewards)
    acc = np.zeros(rewards.shape[0])
    for i in range(rewards.shape[1] - 1, -1, -1):
        acc = rewards[:, i] + gamma * acc
        out[:, i] = acc
    return out + np.asarray(r_final, dtype=np.float64)[:, None]


def route_rewards(
    logits: torch.Tensor, labels: torch.Tensor, routes: np.ndarray, usage: UsageStats, rho: float
) -> tuple[np.ndarray, np.ndarray]:
    """Immediate rewards (B, n) and final rewards (B,) of routes; the shared rule of env and trainer."""
    return collaboration_rewards(routes, usage, rho), final_rewards(logits, labels)


class RoutingMDPEnv(gym.Env):
    """One routing decision per step; see the module docstring.

    ``dataset`` is a dataset name (``digits-mtl`` by default, so ``gym.make(ENV_ID)`` works offline)
    or an :class:`~moerl.routing.data.MTLDataset`; ``net`` defaults to a fresh :class:`RoutedConvNet` built
    from ``seed``. ``collab_reward``: ``"count"`` (default: any agent can act) or ``"probability"`` (the
    paper's; the agent must call :meth:`set_action_probs` before every step, as our routers do).
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        dataset: Any = "digits-mtl",
        net: RoutedConvNet | None = None,
        *,
        rho: float = 0.0,
        block_lr: float = 0.01,
        block_batch_size: int = 32,
        train_blocks: bool = True,
        hidden: int = 48,
        channels: int = 32,
        mode: str = "layered",
        allow_pass: bool = False,
        data_dir: str | None = None,
        data_seed: int = 0,
        collab_reward: str = "count",
        seed: int = 0,
    ):
        super().__init__()
        if isinstance(dataset, str):
            from moerl.routing.data import build

            dataset = build(dataset, data_dir=data_dir, seed=data_seed)
        self.dataset = dataset
        if net is None:

            with seeded(seed):  # the net depends on ``seed`` only; the global torch stream is left alone
                net = RoutedConvNet(dataset.image_shape, dataset.n_tasks, dataset.n_classes, hidden=hidden,
                                    channels=channels, mode=mode, allow_pass=allow_pass)  # type: ignore[arg-type]
        self.net = net
        head = net.head
        self.n_depths = head.n_depths
        self.depth_actions = [head.n_actions(d) for d in range(self.n_depths)]
        self.state_dims = [head.dim_in(d) for d in range(self.n_depths)]
        self.max_dim = max(self.state_dims)
        self.rho, self.block_batch_size, self.train_blocks = rho, block_batch_size, train_blocks
        # "count" by default: an arbitrary agent's probabilities are not observable by the env; with
        # "probability" the agent must call set_action_probs before every step (our routers do).
        self.usage = UsageStats(self.n_depths, max(self.depth_actions), collab_reward)
        self._probs: np.ndarray | None = None
        self.optimizer = torch.optim.SGD(net.parameters(), lr=block_lr)
        self.observation_space = spaces.Dict({
            "v": spaces.Box(-np.inf, np.inf, (self.max_dim,), np.float32),
            "task": spaces.Discrete(dataset.n_tasks),
            "depth": spaces.Discrete(self.n_depths),
        })
        self.action_space: spaces.Discrete = spaces.Discrete(max(self.depth_actions))
        self._buffer: list[tuple[int, list[int]]] = []
        self._row = 0
        self._depth = 0
        self._v: torch.Tensor | None = None
        self._route: list[int] = []

    # -- helpers ---------------------------------------------------------------------------------
    def _obs(self) -> dict[str, Any]:
        v = np.zeros(self.max_dim, dtype=np.float32)
        assert self._v is not None
        v[: self._v.shape[1]] = self._v[0].numpy()
        return {"v": v, "task": int(self.dataset.train.task[self._row]), "depth": int(self._depth)}

    def action_mask(self, depth: int | None = None) -> np.ndarray:
        d = self._depth if depth is None else depth
        mask = np.zeros(self.action_space.n, dtype=np.int8)
        mask[: self.depth_actions[d]] = 1
        return mask

    def set_action_probs(self, probs: np.ndarray) -> None:
        """The acting agent's probabilities over this depth's actions, for the next :meth:`step`."""
        self._probs = np.asarray(probs, dtype=np.float64).reshape(-1)

    def _train_blocks(self) -> float:
        rows = np.array([r for r, _ in self._buffer])
        routes = torch.tensor([route for _, route in self._buffer], dtype=torch.long)
        self._buffer.clear()
        x, t, y = self.dataset.tensors(self.dataset.train, rows)
        self.net.train()
        loss = torch.nn.functional.cross_entropy(self.net(x, routes), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    # -- Gymnasium API ---------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start a route for a random training sample (``options={"index": i}`` picks sample ``i``)."""
        super().reset(seed=seed)
        if options and "index" in options:
            self._row = int(options["index"])
        else:
            self._row = int(self.np_random.integers(len(self.dataset.train)))
        x, _, _ = self.dataset.tensors(self.dataset.train, np.array([self._row]))
        self.net.eval()
        with torch.no_grad():
            self._v = self.net.trunk(x)
        self._depth = 0
        self._route = []
        return self._obs(), {"action_mask": self.action_mask()}

    def step(self, action):
        if self._v is None:
            raise RuntimeError("call reset() before step()")
        if not self.action_space.contains(action):  # Gymnasium's contract: refuse, never wrap
            raise ValueError(f"action {action!r} is not in {self.action_space}")
        d = self._depth
        a = int(action) % self.depth_actions[d]
        r_collab = float(self.rho * self.usage.frequency()[d, a])
        if self.usage.mode == "probability":
            if self._probs is None:
                raise RuntimeError("collab_reward='probability': call set_action_probs(p) before every step")
            self.usage.counts[d, : len(self._probs)] += self._probs
            self._probs = None
        else:
            self.usage.counts[d, a] += 1.0
        self.net.eval()
        with torch.no_grad():
            self._v = self.net.head.step(self._v, d, torch.tensor([a]))
        self._route.append(a)
        info: dict[str, Any] = {"block": a, "r_collab": r_collab}
        terminated = d == self.n_depths - 1
        reward = r_collab
        if terminated:
            label = torch.tensor([int(self.dataset.train.label[self._row])])
            r_final = float(final_rewards(self._v, label)[0])
            reward += r_final
            info.update(r_final=r_final, prediction=int(self._v.argmax(1)[0]), route=list(self._route))
            if self.train_blocks:
                self._buffer.append((self._row, list(self._route)))
                if len(self._buffer) >= self.block_batch_size:
                    info["block_loss"] = self._train_blocks()
            self._depth = d  # the observation after the end repeats the last depth
            obs = self._obs()
            info["action_mask"] = self.action_mask()
        else:
            self._depth = d + 1
            obs = self._obs()
            info["action_mask"] = self.action_mask()
        return obs, reward, terminated, False, info

