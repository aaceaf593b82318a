"""Observation -> network input: the rules both engines read observations by, in pure torch.

A suite's observation is ``[game part | one-hot task id]`` (:class:`~moerl.rl.nets.obs_layout.ObsLayout`).
The encoder rescales the game part to [-1, 1] with the suite's declared bounds (per task where tasks
differ), takes the task id from the one-hot (for the ``hardcoded`` router and for action masks), feeds the
one-hot to the network too unless ``task_id_in_features`` is off, and masks the actions a task lacks.

One implementation for the reference engine's SB3 Q-network (:class:`moerl.rl.sb3.policy.MoEQNet`) and the
batched engine, so the two read observations identically; no Stable-Baselines3, no Gymnasium.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from moerl.core.config import from_dict
from moerl.core.errors import ConfigError
from moerl.nn.choices import ROUTED_ARCHS
from moerl.rl.nets.obs_layout import ObsLayout
from moerl.rl.nets.qnetwork import QNetworkConfig

#: Value given to invalid actions before a max/argmax (finite, so no NaN can appear in losses).
INVALID_Q = -1e8


@dataclass
class MoENetworkConfig(QNetworkConfig):
    """The ``network`` of an MoE DQN: the Q-network (:class:`moerl.rl.nets.qnetwork.QNetworkConfig`) plus how
    observations become its input features.

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


#: Network keys that only some routers read: giving one for another router would be silently ignored.
#: (``network.expert_compute`` is not one: ``dense`` is how every network computes, so asking for it anywhere
#: takes effect, and ``routed`` where it cannot apply is refused by the network's own validation.)
ROUTER_ONLY_KEYS: Mapping[str, tuple[str, ...]] = {
    "network.topk": ("topk",),
    "network.noise_std": ("topk",),
    "network.balance_loss": ("topk",),
    "network.slots_per_expert": ("softmoe",),
    "network.normalize": ("softmoe",),
}


def _quoted(key: str) -> str:
    return f"'{key}'"


def refuse_ignored_keys(net: MoENetworkConfig, given: Iterable[str],
                        name: Callable[[str], str] = _quoted) -> None:
    """A network key the user gave (``given``: dotted ``network.<key>``) that this network would not read is
    a :class:`ConfigError`, not a silent no-op: a router on an arch without one, ``topk`` on softmoe...

    ``name`` writes a key in the message (``moerl train`` adds its flag, e.g. ``'network.router' (--router)``).
    The one check of ``moerl train`` and of the Python API (:func:`checked_network`).
    """
    arch, router = net.arch, net.router
    given = set(given)
    if arch not in ROUTED_ARCHS:
        ignored = {"network.router", "network.tokens", *ROUTER_ONLY_KEYS}
        if arch == "dense":
            ignored.add("network.experts")
        for key in sorted(ignored & given):
            raise ConfigError(
                f"{name(key)} does not apply to arch '{arch}' (it has no router); "
                f"archs with a router: {', '.join(ROUTED_ARCHS)}"
            )
    for key, routers in ROUTER_ONLY_KEYS.items():
        if key in given and router not in routers:
            raise ConfigError(
                f"{name(key)} does not apply to router '{router}'; it is read by router {', '.join(routers)}"
            )


def changed_keys(net: MoENetworkConfig) -> frozenset[str]:
    """``network.<key>`` of every value that differs from the default: what a caller asked for.

    Why not the keys of the dict: a model's saved ``policy_kwargs`` and ``moerl train`` hold every key (the
    router of a dense network too, at its default); a value at its default asks for nothing.
    """
    default = type(net)()
    return frozenset(f"network.{f.name}" for f in fields(net) if getattr(net, f.name) != getattr(default, f.name))


def checked_network(network: MoENetworkConfig | dict[str, Any] | None) -> MoENetworkConfig:
    """:func:`network_config` plus :func:`refuse_ignored_keys` on the values the caller changed: what the
    Python API's constructors accept, checked as ``moerl train`` checks its ``network:`` section."""
    net = network_config(network)
    refuse_ignored_keys(net, changed_keys(net))
    return net


class ObservationEncoder(nn.Module):
    """The encoder's constants as buffers (they follow ``.to(device)``) and its two operations.

    ``obs_center``, ``obs_half_range``: ``(base_dim,)`` or, per task, ``(num_tasks, base_dim)``;
    ``valid_actions``: ``(max(num_tasks, 1), n_actions)`` bool. Observations may carry any leading shape
    (``(B, obs_dim)`` on the SB3 path, ``(S, B, obs_dim)`` batched).
    """

    obs_center: torch.Tensor
    obs_half_range: torch.Tensor
    valid_actions: torch.Tensor

    def __init__(self, layout: ObsLayout, n_actions: int, network: MoENetworkConfig):
        super().__init__()
        self.layout = layout
        self.task_id_in_features = network.task_id_in_features
        center, half = encoder_scale(layout, network.rescale_inputs)
        self.per_task_scale = center.dim() == 2
        self.register_buffer("obs_center", center)
        self.register_buffer("obs_half_range", half)
        self.register_buffer("valid_actions", valid_action_table(layout, n_actions))

    @property
    def in_features(self) -> int:
        """Width of the network input the encoder produces."""
        return self.layout.base_dim + (self.layout.num_tasks if self.task_id_in_features else 0)

    def split(self, obs: torch.Tensor, task_id: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(network input features, task ids or None) of observations ``(..., obs_dim)``.

        ``task_id``: the observations' task ids when the caller has them (the env, the replay buffer), so
        the one-hot is not decoded again; the same ids as decoding gives.
        """
        return split_observation(obs, self.layout, self.obs_center, self.obs_half_range, self.per_task_scale,
                                 self.task_id_in_features, task_id)

    def task_mask(self, task_id: torch.Tensor | None, lead_shape: torch.Size) -> torch.Tensor:
        """``(*lead_shape, n_actions)`` bool: the actions each task allows (task ids from :meth:`split`)."""
        return action_mask(task_id, self.valid_actions, lead_shape)

    def masked(self, q: torch.Tensor, task_id: torch.Tensor | None) -> torch.Tensor:
        """Q-values ``(..., n_actions)`` with the actions their task lacks pushed to :data:`INVALID_Q` (for max
        and argmax); ``task_id`` as :meth:`split` returns it."""
        return q if self.layout.valid_actions is None else mask_q(q, self.task_mask(task_id, q.shape[:-1]))


def encoder_scale(layout: ObsLayout, rescale_inputs: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(center, half range)`` that map the game part to [-1, 1]: shared ``(base_dim,)``, or per task
    ``(num_tasks, base_dim)`` when the layout has per-task bounds; ``(0, 1)`` when not rescaling."""
    center, half = torch.zeros(layout.base_dim), torch.ones(layout.base_dim)
    if rescale_inputs and layout.low is not None and layout.high is not None:
        low = torch.tensor(layout.low, dtype=torch.float32)
        high = torch.tensor(layout.high, dtype=torch.float32)
        center, half = (high + low) / 2, (high - low) / 2
    if rescale_inputs and layout.task_low is not None and layout.task_high is not None:
        low = torch.tensor(layout.task_low, dtype=torch.float32)
        high = torch.tensor(layout.task_high, dtype=torch.float32)
        center, half = (high + low) / 2, (high - low) / 2
    return center, half


def valid_action_table(layout: ObsLayout, n_actions: int) -> torch.Tensor:
    """``(max(num_tasks, 1), n_actions)`` bool: which actions each task allows (all, without a table)."""
    if layout.valid_actions is not None:
        return torch.tensor(layout.valid_actions, dtype=torch.bool)
    return torch.ones(max(layout.num_tasks, 1), n_actions, dtype=torch.bool)


def split_observation(obs: torch.Tensor, layout: ObsLayout, center: torch.Tensor, half: torch.Tensor,
                      per_task_scale: bool, task_id_in_features: bool,
                      task_id: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(network input features, task ids or None) of observations ``(..., obs_dim)``; ``task_id``, when
    given, are the ids the one-hot holds (not decoded again)."""
    obs = obs.float()
    base_dim, num_tasks = layout.base_dim, layout.num_tasks
    if num_tasks == 0:
        return (obs[..., :base_dim] - center) / half, None
    onehot = obs[..., base_dim : base_dim + num_tasks]
    if task_id is None:
        task_id = onehot.argmax(dim=-1)
    if per_task_scale:
        base = (obs[..., :base_dim] - center[task_id]) / half[task_id]
    else:
        base = (obs[..., :base_dim] - center) / half
    feats = torch.cat([base, onehot], dim=-1) if task_id_in_features else base
    return feats, task_id


def action_mask(task_id: torch.Tensor | None, valid_actions: torch.Tensor, lead_shape: torch.Size) -> torch.Tensor:
    """``(*lead_shape, n_actions)`` bool: the row of ``valid_actions`` of each task (row 0 without task ids)."""
    if task_id is None:
        return valid_actions[0].expand(*lead_shape, -1)
    return valid_actions[task_id]


def mask_q(q: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``q`` where ``mask`` allows the action, :data:`INVALID_Q` elsewhere."""
    return torch.where(mask, q, torch.full_like(q, INVALID_Q))
