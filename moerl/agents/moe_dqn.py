"""MoE DQN: Stable-Baselines3's DQN with an MoE Q-network, its auxiliary loss and its metrics.

A subclass, not a fork: SB3 keeps the replay buffer, exploration schedule, target updates,
logging and save/load. We change what the MoE study needs:

* the TD loss (``mse`` as dopamine's classic-control DQN, or SB3's ``huber``) plus the router's
  auxiliary balancing loss times ``aux_loss_coef``;
* action masks: in a suite where a task lacks an action, greedy choices, TD targets and random
  exploration only ever use the task's valid actions;
* MoE metrics (dormant neurons, per-expert usage, router entropy, aux loss) computed on the
  training batch every ``metrics_interval`` env steps and sent to SB3's logger, hence TensorBoard.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from stable_baselines3 import DQN
from stable_baselines3.common.policies import BasePolicy

from moerl.agents.moe_policy import MoEDQNPolicy
from moerl.nn import ForwardRecord, forward_metrics

LOSSES = ("mse", "huber")


class MoEDQN(DQN):
    """DQN whose Q-network is a mixture of experts (see :class:`MoEDQNPolicy`)."""

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MoEPolicy": MoEDQNPolicy,
        "MlpPolicy": MoEDQNPolicy,
    }
    policy: MoEDQNPolicy

    def __init__(
        self,
        policy: str | type[MoEDQNPolicy],
        env: Any,
        *,
        loss: str = "mse",
        aux_loss_coef: float = 0.0,
        metrics_interval: int = 1000,
        **kwargs: Any,
    ):
        from moerl.errors import check_choice

        self.loss = check_choice("loss", loss, LOSSES)
        self.aux_loss_coef = aux_loss_coef
        self.metrics_interval = metrics_interval
        self._last_metrics_step = -metrics_interval
        super().__init__(policy, env, **kwargs)

    # --- exploration -------------------------------------------------------------------------
    def _random_actions(self, observation: np.ndarray) -> np.ndarray:
        """Uniform random actions among those valid for each observation's task."""
        obs = torch.as_tensor(np.asarray(observation).reshape(-1, *self.observation_space.shape),
                              device=self.device)
        with torch.no_grad():
            mask = self.policy.q_net.action_mask(obs).cpu().numpy()
        return np.array([np.random.choice(np.flatnonzero(row)) for row in mask])

    def predict(self, observation, state=None, episode_start=None, deterministic: bool = False):
        if not deterministic and np.random.rand() < self.exploration_rate:
            vectorised = self.policy.is_vectorized_observation(observation)
            actions = self._random_actions(observation)
            return (actions if vectorised else actions[0]), state
        return self.policy.predict(observation, state, episode_start, deterministic)

    def _sample_action(self, learning_starts: int, action_noise=None, n_envs: int = 1):
        if self.num_timesteps < learning_starts and not (self.use_sde and self.use_sde_at_warmup):
            action = self._random_actions(self._last_obs)
            return action, action
        return super()._sample_action(learning_starts, action_noise, n_envs)

    # --- learning ----------------------------------------------------------------------------
    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        q_net, q_target = self.policy.q_net, self.policy.q_net_target
        losses, aux_losses = [], []
        want_metrics = self.num_timesteps - self._last_metrics_step >= self.metrics_interval
        for step in range(gradient_steps):
            data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)
            discounts = data.discounts if data.discounts is not None else self.gamma
            with torch.no_grad():
                next_q = q_target.masked(q_target(data.next_observations), data.next_observations)
                next_q = next_q.max(dim=1).values.reshape(-1, 1)
                target = data.rewards + (1 - data.dones) * discounts * next_q
            record = ForwardRecord() if (self.aux_loss_coef > 0 or (want_metrics and step == 0)) else None
            q_all = q_net(data.observations, record)
            q = torch.gather(q_all, dim=1, index=data.actions.long())
            td = F.mse_loss(q, target) if self.loss == "mse" else F.smooth_l1_loss(q, target)
            loss = td
            aux = record.aux_loss() if record is not None else None
            if aux is not None and self.aux_loss_coef > 0:
                loss = loss + self.aux_loss_coef * aux
                aux_losses.append(aux.item())
            losses.append(td.item())
            self.policy.optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()
            if want_metrics and step == 0:
                self._log_metrics(record)
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/loss", float(np.mean(losses)))
        if aux_losses:
            self.logger.record("train/aux_loss", float(np.mean(aux_losses)))

    def _log_metrics(self, record: ForwardRecord) -> None:
        self._last_metrics_step = self.num_timesteps
        for key, value in forward_metrics(record).items():
            self.logger.record(f"moe/{key}", value)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_last_metrics_step"]

    def moe_metrics(self, observations: np.ndarray) -> dict[str, float]:
        """MoE metrics of the online network on any batch of observations (no gradient)."""
        obs = torch.as_tensor(np.asarray(observations), device=self.device).reshape(-1, *self.observation_space.shape)
        record = ForwardRecord()
        self.policy.set_training_mode(False)
        with torch.no_grad():
            self.policy.q_net(obs, record)
        return forward_metrics(record)

    def q_values(self, observations: np.ndarray) -> np.ndarray:
        """Q-values of the online network (used for save/load checks and analysis)."""
        obs = torch.as_tensor(np.asarray(observations), device=self.device).reshape(-1, *self.observation_space.shape)
        self.policy.set_training_mode(False)
        with torch.no_grad():
            return self.policy.q_net(obs).cpu().numpy()
