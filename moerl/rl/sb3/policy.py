"""SB3 DQN policy whose Q-network is a :class:`moerl.nn.MoEQNetwork`.

SB3's extension point for a custom Q-network is the policy's ``make_q_net``; everything else
(target network, optimiser, save/load of ``policy_kwargs``) is SB3's own. The Q-network reads the
observation layout (:class:`ObsLayout`): it rescales the game part to [-1, 1], takes the task id
from the one-hot (for the ``hardcoded`` router and for action masks) and, by default, also feeds
the one-hot to the network as features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.dqn.policies import DQNPolicy, QNetwork

from moerl.core.config import from_dict, to_dict
from moerl.nn import ForwardRecord
from moerl.rl.nets.obs_layout import ObsLayout
from moerl.rl.nets.qnetwork import MoEQNetwork, QNetworkConfig

#: Value given to invalid actions before a max/argmax (finite, so no NaN can appear in losses).
INVALID_Q = -1e8


@dataclass
class MoENetworkConfig(QNetworkConfig):
    """The ``network`` of an MoE DQN: the Q-network (:class:`moerl.nn.QNetworkConfig`) plus how the policy
    turns observations into its input features.

    One schema for ``moerl train`` flags, the ``network:`` section of YAML configs and
    ``MoEDQN(policy_kwargs={"network": {...}})``.
    """

    #: Rescale the game part of observations to [-1, 1] (per task) with the suite's declared bounds.
    rescale_inputs: bool = True
    #: Feed the task one-hot to the network too (not only to the hardcoded router and action masks).
    task_id_in_features: bool = True



def network_config(network: MoENetworkConfig | dict[str, Any] | None) -> MoENetworkConfig:
    """Accept the network as a config object or a plain dict (as stored in ``policy_kwargs``); validate it."""
    if isinstance(network, MoENetworkConfig):
        return network.validate()  # type: ignore[return-value]
    return from_dict(MoENetworkConfig, network or {}, "network.").validate()  # type: ignore[return-value]


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
        self.task_id_in_features = task_id_in_features = self.network_config.task_id_in_features
        rescale_inputs = self.network_config.rescale_inputs
        lay = self.layout
        if rescale_inputs and lay.low is not None:
            low = torch.tensor(lay.low, dtype=torch.float32)
            high = torch.tensor(lay.high, dtype=torch.float32)
            center, half = (high + low) / 2, (high - low) / 2
        else:
            center, half = torch.zeros(lay.base_dim), torch.ones(lay.base_dim)
        if rescale_inputs and lay.task_low is not None:  # one scale per task: (num_tasks, base_dim)
            low = torch.tensor(lay.task_low, dtype=torch.float32)
            high = torch.tensor(lay.task_high, dtype=torch.float32)
            center, half = (high + low) / 2, (high - low) / 2
        self.per_task_scale = center.dim() == 2
        self.register_buffer("obs_center", center)
        self.register_buffer("obs_half_range", half)
        n_actions = int(action_space.n)
        valid = torch.ones(max(lay.num_tasks, 1), n_actions, dtype=torch.bool)
        if lay.valid_actions is not None:
            valid = torch.tensor(lay.valid_actions, dtype=torch.bool)
        self.register_buffer("valid_actions", valid)
        in_dim = lay.base_dim + (lay.num_tasks if task_id_in_features else 0)
        self.q_net = MoEQNetwork(in_dim, n_actions, self.network_config)

    def split(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(network input features, task ids or None) from a batch of observations."""
        obs = obs.float()
        lay = self.layout
        if lay.num_tasks == 0:
            return (obs[:, : lay.base_dim] - self.obs_center) / self.obs_half_range, None
        onehot = obs[:, lay.base_dim : lay.base_dim + lay.num_tasks]
        task_id = onehot.argmax(dim=1)
        if self.per_task_scale:
            base = (obs[:, : lay.base_dim] - self.obs_center[task_id]) / self.obs_half_range[task_id]
        else:
            base = (obs[:, : lay.base_dim] - self.obs_center) / self.obs_half_range
        feats = torch.cat([base, onehot], dim=1) if self.task_id_in_features else base
        return feats, task_id

    def forward(self, obs: torch.Tensor | dict[str, torch.Tensor], record: ForwardRecord | None = None) -> torch.Tensor:
        features = self.extract_features(obs, self.features_extractor)
        assert isinstance(features, torch.Tensor)
        x, task_id = self.split(features)
        return self.q_net(x, task_id, record)

    def action_mask(self, obs: torch.Tensor) -> torch.Tensor:
        """(B, n_actions) bool: the actions the observation's task allows."""
        _, task_id = self.split(obs.reshape(obs.shape[0], -1))
        if task_id is None:
            return self.valid_actions[0].expand(obs.shape[0], -1)
        return self.valid_actions[task_id]

    def masked(self, q: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """Q-values with invalid actions pushed to :data:`INVALID_Q` (for argmax / max)."""
        if self.layout.valid_actions is None:
            return q
        return torch.where(self.action_mask(obs), q, torch.full_like(q, INVALID_Q))

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
