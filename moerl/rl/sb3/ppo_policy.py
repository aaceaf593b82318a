"""SB3 actor-critic policy whose actor and critic are a :class:`~moerl.rl.nets.actor_critic.MoEActorCritic`.

A subclass of SB3's ``ActorCriticPolicy`` (the type ``PPO`` expects): SB3 keeps the observation
preprocessing, the categorical distribution, ``predict``, the optimiser and save/load of the constructor's
arguments; ``_build`` builds the MoE actor-critic in place of SB3's MLP extractor and heads, and the four
methods PPO calls (``forward``, ``evaluate_actions``, ``get_distribution``, ``predict_values``) read it.
The network, its encoder (rescaling, task ids, action masks) and its records are pure torch, shared with the
batched engine.
"""

from __future__ import annotations

from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.distributions import CategoricalDistribution, Distribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule

from moerl.core.config import to_dict
from moerl.core.errors import ConfigError
from moerl.rl.nets.actor_critic import ActorCriticRecord, MoEActorCritic
from moerl.rl.nets.encoder import MoENetworkConfig, network_config
from moerl.rl.nets.obs_layout import ObsLayout

#: SB3's MLP keywords that have no meaning here (the MoE network replaces SB3's MLP and its initialisation).
_IGNORED = ("net_arch", "activation_fn", "ortho_init")


class MoEActorCriticPolicy(ActorCriticPolicy):
    """PPO policy built from an MoE network config and an observation layout.

    :param network: the network of both heads (:class:`MoENetworkConfig` or a dict of its fields, e.g.
        ``{"arch": "big", "router": "softmoe"}``); default a dense 128-128 network.
    :param obs_layout: the observation's layout (:class:`ObsLayout` as a dict); :class:`MoEPPO
        <moerl.rl.sb3.moe_ppo.MoEPPO>` reads it from the env when not given.
    :param shared: one network for actor and critic (``n_actions + 1`` outputs) instead of two (the default);
        see :mod:`moerl.rl.nets.actor_critic`.
    """

    ac: MoEActorCritic

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, lr_schedule: Schedule,
                 network: MoENetworkConfig | dict[str, Any] | None = None,
                 obs_layout: dict[str, Any] | None = None, shared: bool = False, **kwargs: Any):
        if not isinstance(action_space, spaces.Discrete):
            raise ConfigError(f"MoE PPO needs a discrete action space, got {action_space}")
        if kwargs.get("use_sde"):
            raise ConfigError("MoE PPO has discrete actions: use_sde does not apply")
        if kwargs.pop("share_features_extractor", True) is not True:
            raise ConfigError("share_features_extractor does not apply to MoE PPO (use shared=True/False)")
        for key in _IGNORED:
            kwargs.pop(key, None)
        self.moe_kwargs = {
            "network": to_dict(network_config(network)),
            "obs_layout": obs_layout or ObsLayout(int(spaces.flatdim(observation_space))).to_dict(),
            "shared": bool(shared),
        }
        super().__init__(observation_space, action_space, lr_schedule, ortho_init=False, **kwargs)

    def _build(self, lr_schedule: Schedule) -> None:
        assert isinstance(self.action_space, spaces.Discrete)
        kw = self.moe_kwargs
        self.ac = MoEActorCritic(ObsLayout.from_dict(kw["obs_layout"]), int(self.action_space.n),
                                 network_config(kw["network"]), shared=kw["shared"])
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]

    # --- what PPO calls ---------------------------------------------------------------------------
    def _obs(self, obs: PyTorchObs) -> torch.Tensor:
        features = self.extract_features(obs)
        assert isinstance(features, torch.Tensor), "MoE PPO takes flat Box observations"
        return features

    def distribution(self, logits: torch.Tensor) -> Distribution:
        """SB3's categorical distribution over masked logits (invalid actions have probability 0)."""
        assert isinstance(self.action_dist, CategoricalDistribution)
        return self.action_dist.proba_distribution(action_logits=logits)

    def forward(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, values = self.ac(self._obs(obs))
        dist = self.distribution(logits)
        actions = dist.get_actions(deterministic=deterministic)
        return actions.reshape(-1), values[:, None], dist.log_prob(actions)

    def evaluate_actions(self, obs: PyTorchObs, actions: torch.Tensor,
                         record: ActorCriticRecord | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """SB3's ``(values (B, 1), log_prob (B,), entropy (B,))``; fills ``record`` (MoE records) when given."""
        logits, values = self.ac(self._obs(obs), record)
        dist = self.distribution(logits)
        entropy = dist.entropy()
        assert entropy is not None
        return values[:, None], dist.log_prob(actions), entropy

    def get_distribution(self, obs: PyTorchObs) -> Distribution:
        return self.distribution(self.ac(self._obs(obs))[0])

    def predict_values(self, obs: PyTorchObs) -> torch.Tensor:
        return self.ac.values(self._obs(obs))[:, None]

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        for key in _IGNORED:
            data.pop(key, None)
        data.update(self.moe_kwargs)
        return data
