"""SB3 DQN policy whose Q-network is a :class:`moerl.nn.MoEQNetwork`.

SB3's extension point for a custom Q-network is the policy's ``make_q_net``; everything else
(target network, optimiser, save/load of ``policy_kwargs``) is SB3's own. The Q-network reads the
observation layout (:class:`ObsLayout`): it rescales the game part to [-1, 1], takes the task id
from the one-hot (for the ``hardcoded`` router and for action masks) and, by default, also feeds
the one-hot to the network as features.
"""

from __future__ import annotations

from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.dqn.policies import DQNPolicy, QNetwork

from moerl.core.config import to_dict
from moerl.nn import ForwardRecord
from moerl.rl.nets.encoder import (
    MoENetworkConfig,
    action_mask,
    encoder_scale,
    mask_q,
    network_config,
    split_observation,
    valid_action_table,
)
from moerl.rl.nets.obs_layout import ObsLayout
from moerl.rl.nets.qnetwork import MoEQNetwork


class MoEQNet(QNetwork):
    """SB3 ``QNetwork`` replacement: observation -> Q-values through an MoE network.

    A subclass of SB3's ``QNetwork`` (the type ``DQNPolicy.make_q_net`` promises) whose ``__init__`` skips
    ``QNetwork``'s own MLP: the MoE network below replaces it.
    """

    obs_center: torch.Tensor
    obs_half_range: torch.Tensor
    valid_actions: torch.Tensor
    q_net: MoEQNetwork  # type: ignore[assignment]  # the MoE network replaces QNetwork's nn.Sequential

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Discrete,
        features_extractor: BaseFeaturesExtractor,
        features_dim: int,
        network: MoENetworkConfig | dict[str, Any],
        obs_layout: dict[str, Any],
        normalize_images: bool = True,
        **_unused: Any,
    ):
        BasePolicy.__init__(self, observation_space, action_space, features_extractor=features_extractor,
                            normalize_images=normalize_images)
        self.features_dim = features_dim
        self.network_config = network_config(network)
        self.layout = ObsLayout.from_dict(obs_layout)
        self.task_id_in_features = self.network_config.task_id_in_features
        # The encoder's constants live here as buffers (their state-dict keys are those saved models hold);
        # the rules are moerl.rl.nets.encoder's, shared with the batched engine.
        center, half = encoder_scale(self.layout, self.network_config.rescale_inputs)
        self.per_task_scale = center.dim() == 2
        self.register_buffer("obs_center", center)
        self.register_buffer("obs_half_range", half)
        n_actions = int(action_space.n)
        self.register_buffer("valid_actions", valid_action_table(self.layout, n_actions))
        in_dim = self.layout.base_dim + (self.layout.num_tasks if self.task_id_in_features else 0)
        # The grid's shape (conv torso) comes from the layout, as on the batched engine.
        self.q_net = MoEQNetwork(in_dim, n_actions, self.network_config, self.layout.grid_shape)

    def split(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(network input features, task ids or None) from a batch of observations."""
        return split_observation(obs, self.layout, self.obs_center, self.obs_half_range, self.per_task_scale,
                                 self.task_id_in_features)

    def forward(self, obs: torch.Tensor | dict[str, torch.Tensor], record: ForwardRecord | None = None) -> torch.Tensor:
        features = self.extract_features(obs, self.features_extractor)
        assert isinstance(features, torch.Tensor)
        x, task_id = self.split(features)
        return self.q_net(x, task_id, record)

    def action_mask(self, obs: torch.Tensor) -> torch.Tensor:
        """(B, n_actions) bool: the actions the observation's task allows."""
        flat = obs.reshape(obs.shape[0], -1)
        return action_mask(self.split(flat)[1], self.valid_actions, flat.shape[:-1])

    def masked(self, q: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """Q-values with invalid actions pushed to :data:`~moerl.rl.nets.encoder.INVALID_Q` (for argmax / max)."""
        return q if self.layout.valid_actions is None else mask_q(q, self.action_mask(obs))

    def _predict(self, observation: torch.Tensor | dict[str, torch.Tensor], deterministic: bool = True) -> torch.Tensor:
        assert isinstance(observation, torch.Tensor), "MoE DQN takes flat Box observations"
        return self.masked(self(observation), observation).argmax(dim=1).reshape(-1)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(network=to_dict(self.network_config), obs_layout=self.layout.to_dict(),
                    features_extractor=self.features_extractor)
        return data


class MoEDQNPolicy(DQNPolicy):
    """DQN policy (online + target net) built from an MoE network config and an observation layout.

    :param network: the network (:class:`MoENetworkConfig` or a dict of its fields, e.g.
        ``{"arch": "big", "router": "softmoe", "experts": 4}``); defaults: a dense 128-128 network.
    :param obs_layout: where the task one-hot sits in the observation and the input bounds
        (:class:`moerl.rl.nets.obs_layout.ObsLayout` as a dict). :class:`moerl.rl.sb3.MoEDQN` reads it from the
        env when not given; without it the observation is taken as plain features.
    """

    q_net: MoEQNet
    q_net_target: MoEQNet

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Discrete,
        lr_schedule,
        network: MoENetworkConfig | dict[str, Any] | None = None,
        obs_layout: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        self.moe_kwargs = {
            "network": to_dict(network_config(network)),
            "obs_layout": obs_layout or ObsLayout(int(spaces.flatdim(observation_space))).to_dict(),
        }
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def make_q_net(self) -> MoEQNet:
        net_args = self._update_features_extractor(self.net_args, features_extractor=None)
        net_args = {k: v for k, v in net_args.items() if k not in ("net_arch", "activation_fn")}
        return MoEQNet(**net_args, **self.moe_kwargs).to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(self.moe_kwargs)
        return data
