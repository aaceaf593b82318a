"""Greedy evaluation per task for a batched engine: every seed's policy plays whole episodes at once.

Why a mixin: :class:`~moerl.rl.engine.batched_dqn.BatchedDQN` (masked argmax of Q-values) and
:class:`~moerl.rl.engine.batched_ppo.BatchedPPO` (masked argmax of the actor's logits, PPO's greedy policy)
evaluate the same way, on the same streams, per task in one batch; only the scores differ. An engine
provides ``seeds``, ``num_seeds``, ``device``, ``encoder`` (:class:`~moerl.rl.nets.encoder.ObservationEncoder`)
and :meth:`GreedyEvaluation._policy_scores`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from moerl.core.errors import check_positive
from moerl.core.seed_streams import splitmix64
from moerl.rl.envs.batched_suites import make_batched_suite
from moerl.rl.nets.batched import BatchedRecord
from moerl.rl.nets.encoder import ObservationEncoder
from moerl.rl.spec import SuiteSpec


class GreedyEvaluation:
    """:meth:`greedy_actions` and :meth:`evaluate` over an engine's :meth:`_policy_scores`."""

    seeds: list[int]
    num_seeds: int
    device: torch.device
    encoder: ObservationEncoder

    def _policy_scores(self, feats: torch.Tensor, task: torch.Tensor | None,
                       record: bool = False) -> tuple[torch.Tensor, BatchedRecord | None]:
        """``(S, B, n_actions)`` scores whose masked argmax is the greedy action (in evaluation mode), and
        the pass's record when ``record``."""
        raise NotImplementedError

    @torch.no_grad()
    def greedy_actions(self, obs: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        """Masked argmax of the policy's scores (Q-values, logits), ``obs`` (S, B, obs_dim) -> (S, B)."""
        feats, task = self.encoder.split(obs, task)
        return self.encoder.masked(self._policy_scores(feats, task)[0], task).argmax(-1)

    @torch.no_grad()
    def evaluate(self, suite: SuiteSpec | Sequence[SuiteSpec], episodes: int, seed: int,
                 usage: dict[str, np.ndarray] | None = None, usage_observations: int = 512,
                 tasks: Sequence[int] | None = None) -> np.ndarray:
        """Greedy returns ``(S, episodes)``: each seed's network plays ``episodes`` episodes of ``suite``
        (e.g. one task, ``fixed_task``) in ``S * episodes`` environments at once.

        ``tasks``: task indices of ``suite`` to evaluate together in one batch of ``S * len(tasks) *
        episodes`` environments (each keeps its task); the returns are then ``(S, len(tasks), episodes)``
        and equal, task by task, those of evaluating ``suite`` with ``fixed_task`` set to that task (tested):
        the environments draw the same numbers, and a network's forward pass of one observation does not
        depend on the others in the batch. One batch instead of one per task: the per-step cost here is
        dispatch overhead, so evaluating 4 tasks together costs about what one does.

        Evaluation environments draw from streams keyed by ``seed`` and the episode's index, never from the
        training streams, so evaluating does not change training.

        ``usage``: when given, filled with each MoE layer's mean router usage per seed, ``{layer: (S, E)}``
        (``(S, len(tasks), E)`` with ``tasks``), over the first ``usage_observations`` (about; whole steps)
        observations each seed's episodes of a task visit, as the SB3 path measures ``eval_usage``
        (:func:`moerl.rl.evaluation.run_task_episodes` keeps 512), read from the forward pass that chooses the
        actions: actions, returns and random streams are the same with or without it (tested).
        """
        check_positive("episodes", episodes)
        s, t = self.num_seeds, 1 if tasks is None else len(tasks)
        # One key per (run seed, evaluation seed, episode), the same for every task: a seed evaluates the
        # same alone or in a batch, and a task the same alone or with others.
        keys = [splitmix64(splitmix64(run_seed, seed), e) for run_seed in self.seeds for _ in range(t)
                for e in range(episodes)]
        fixed = None if tasks is None else [k for _ in self.seeds for k in tasks for _ in range(episodes)]
        if isinstance(suite, Sequence):  # one suite per member (members with their own episode limits)
            if len(suite) != s:
                raise ValueError(f"one evaluation suite per member: {len(suite)} suites for {s} members")
            env = make_batched_suite([spec for spec in suite for _ in range(t * episodes)], keys, self.device,
                                     fixed_tasks=fixed)
        else:
            env = make_batched_suite(suite, keys, self.device, fixed_tasks=fixed)
        obs = env.reset()
        returns = torch.zeros(s * t * episodes, dtype=torch.float64, device=self.device)
        finished = torch.zeros(s * t * episodes, dtype=torch.bool, device=self.device)
        usage_sum: dict[str, torch.Tensor] = {}
        seen = torch.zeros(s, t, dtype=torch.float64, device=self.device)
        while not bool(finished.all()):
            # Usage only while some (seed, task) pair under the limit still has an episode running.
            if usage is not None and bool(((seen < usage_observations)
                                           & ~finished.reshape(s, t, episodes).all(2)).any()):
                actions = self._greedy_with_usage(obs.reshape(s, t, episodes, -1), ~finished.reshape(s, t, episodes),
                                                  usage_sum, seen, usage_observations).reshape(-1)
            else:
                actions = self._live_greedy_actions(obs.reshape(s, t * episodes, -1),
                                                    ~finished.reshape(s, t * episodes)).reshape(-1)
            out = env.step(actions)
            returns = torch.where(out.done & ~finished, out.episode_return, returns)
            finished |= out.done
            obs = out.obs
        if usage is not None:
            mean = {name: total / seen.clamp_min(1.0)[..., None] for name, total in usage_sum.items()}
            usage.update({name: (m[:, 0] if tasks is None else m).cpu().numpy() for name, m in mean.items()})
        shape = (s, episodes) if tasks is None else (s, t, episodes)
        return returns.reshape(shape).cpu().numpy()

    def _live_greedy_actions(self, obs: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
        """:meth:`greedy_actions` (S, B) for the ``live`` (S, B) observations only; 0 for the others.

        Why: an evaluation runs until its longest episode ends, and most episodes end long before it (a
        CartPole evaluation often has a few 500-step episodes among 10-step ones), so the forward pass is
        run on each seed's live rows, gathered to the front (as many per seed as the seed with the most);
        a row's scores do not depend on the other rows."""
        n = obs.shape[1]
        k = int(live.sum(1).max())
        if k == n:
            return self.greedy_actions(obs)
        order = torch.argsort((~live).to(torch.int8), dim=1, stable=True)[:, :k]  # live rows first
        sub = obs.gather(1, order[..., None].expand(-1, -1, obs.shape[2]))
        return torch.zeros_like(live, dtype=torch.long).scatter_(1, order, self.greedy_actions(sub))

    def _greedy_with_usage(self, obs: torch.Tensor, live: torch.Tensor, usage_sum: dict[str, torch.Tensor],
                           seen: torch.Tensor, limit: int) -> torch.Tensor:
        """:meth:`greedy_actions` of ``obs`` (S, T, B, obs_dim), (S, T * B), from a forward pass that also adds
        the router usage of the live observations of the (seed, task) pairs still under ``limit`` observations
        (``seen``: (S, T)) to ``usage_sum`` (per layer, (S, T, E)). One pass for both: the recorded forward
        gives the same scores as the plain one (tested), and costs about as much."""
        s, t, b, _ = obs.shape
        flat = obs.reshape(s, t * b, -1)
        feats, task = self.encoder.split(flat)
        q, record = self._policy_scores(feats, task, record=True)
        assert record is not None
        keep = (live & (seen < limit)[..., None]).to(torch.float64)  # (S, T, B)
        for name, rout in record.routing.items():
            add = (rout.usage.to(torch.float64).reshape(s, t, b, -1) * keep[..., None]).sum(2)  # (S, T, E)
            usage_sum[name] = usage_sum[name] + add if name in usage_sum else add
        seen += keep.sum(2)
        return self.encoder.masked(q, task).argmax(-1)
