"""MoE actor-critic: PPO's policy and value function, each an :class:`MoEQNetwork` with its own head width.

Why reuse the Q-network: a placement (``dense`` ... ``big``), a router and a torso (``mlp``, ``conv``) are
defined once there, with forward records, seed-stacked weights and the batched engine's machinery; an actor
is that network with ``n_actions`` outputs read as logits, a critic the same with one output. Every placement
and router therefore applies to both heads with nothing re-implemented.

**Separate or shared** (``shared``):

* ``False`` (the default): two networks, the actor's and the critic's, each with its own torso and MoE: the
  paper's PureJaxRL base (``ActorCritic`` in ``purejaxrl/ppo.py`` builds two MLPs), and the choice that keeps
  the value loss's gradients out of the policy's routers;
* ``True``: one network with ``n_actions + 1`` outputs, the logits and the value. Its output layer is one
  linear map, which is exactly two linear heads on one torso (the rows of a weight matrix are independent);
  on ``final``/``all``/``big`` the output layer is the MoE, so each expert emits both. One torso, one set of
  routers, trained by the policy, value and entropy terms together. Which of the two suits MoE PPO better is
  the issue's measurement to make; both are built here.

**Action masks.** In a mixed suite (a task lacking an action) the actions the observation's task lacks get
logit ``-inf``: probability exactly 0, never sampled, no gradient, no share of the entropy.

**Task ids.** Taken from the observation's one-hot by the shared :class:`ObservationEncoder` (rescaling, the
one-hot fed as features) and passed to both networks: the ``hardcoded`` router reads them.

**Differences from PureJaxRL's network**, kept so that DQN and PPO study the same networks: ReLU (not tanh),
hidden width 128 (not 64), torch's default initialisation (not orthogonal with a 0.01-gain policy head).

Pure torch: neither Stable-Baselines3 nor Gymnasium. Inputs may carry any leading shape (``(B, obs)``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from moerl.nn.metrics import forward_metrics
from moerl.nn.record import ForwardRecord
from moerl.rl.nets.encoder import MoENetworkConfig, ObservationEncoder
from moerl.rl.nets.obs_layout import ObsLayout
from moerl.rl.nets.qnetwork import MoEQNetwork


@dataclass
class ActorCriticRecord:
    """The MoE records of one actor-critic pass: the actor's and the critic's (None when ``shared``, where
    the one network's record is ``actor``)."""

    actor: ForwardRecord
    critic: ForwardRecord | None = None

    def parts(self) -> dict[str, ForwardRecord]:
        """``{"actor": ..., "critic": ...}``, or ``{"shared": ...}`` for one shared network."""
        if self.critic is None:
            return {"shared": self.actor}
        return {"actor": self.actor, "critic": self.critic}

    def aux_loss(self) -> torch.Tensor | None:
        """The balancing losses of every MoE layer of both networks, summed; None without MoE layers."""
        losses = [loss for rec in self.parts().values() if (loss := rec.aux_loss()) is not None]
        return torch.stack(losses).sum() if losses else None

    def metrics(self) -> dict[str, float]:
        """:func:`~moerl.nn.metrics.forward_metrics` of each part, keys prefixed ``actor/``, ``critic/`` (or
        ``shared/``): dormant neurons per layer, router usage, entropy and balancing loss for both heads."""
        return {f"{part}/{key}": value for part, rec in self.parts().items()
                for key, value in forward_metrics(rec).items()}


class MoEActorCritic(nn.Module):
    """Observations ``(..., obs_dim)`` -> (masked logits ``(..., n_actions)``, values ``(...)``).

    :param layout: the observation's layout (task one-hot, bounds, valid actions per task).
    :param n_actions: the action space's size (the largest task's, in a mixed suite).
    :param network: the network config shared by both heads (placement, router, experts, torso...).
    :param shared: one network for both heads (see the module docs); default two.
    """

    def __init__(self, layout: ObsLayout, n_actions: int, network: MoENetworkConfig, shared: bool = False):
        super().__init__()
        network.validate()
        self.n_actions, self.shared = n_actions, shared
        self.encoder = ObservationEncoder(layout, n_actions, network)
        in_features, grid = self.encoder.in_features, layout.grid_shape
        self.actor = MoEQNetwork(in_features, n_actions + (1 if shared else 0), copy.deepcopy(network), grid)
        self.critic: MoEQNetwork | None = (
            None if shared else MoEQNetwork(in_features, 1, copy.deepcopy(network), grid))

    def forward(self, obs: torch.Tensor,
                record: ActorCriticRecord | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits with the actions each task lacks at ``-inf``, state values); fills ``record`` when given."""
        x, task_id = self.encoder.split(obs)
        actor_record = None if record is None else record.actor
        out = self.actor(x, task_id, actor_record)
        if self.critic is None:
            logits, values = out[..., :self.n_actions], out[..., self.n_actions]
        else:
            logits = out
            values = self.critic(x, task_id, None if record is None else record.critic)[..., 0]
        if self.encoder.layout.valid_actions is not None:
            mask = self.encoder.task_mask(task_id, logits.shape[:-1])
            logits = logits.masked_fill(~mask, float("-inf"))
        return logits, values

    def forward_record(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, ActorCriticRecord]:
        """Logits, values and the MoE records of both heads (balancing losses, routing, activations)."""
        record = self.new_record()
        logits, values = self(obs, record)
        return logits, values, record

    def new_record(self) -> ActorCriticRecord:
        """An empty record of this network's parts."""
        return ActorCriticRecord(ForwardRecord(), None if self.shared else ForwardRecord())

    def values(self, obs: torch.Tensor) -> torch.Tensor:
        """State values ``(...)`` alone (the critic's forward only, when separate)."""
        if self.critic is None:
            return self(obs)[1]
        x, task_id = self.encoder.split(obs)
        return self.critic(x, task_id)[..., 0]
