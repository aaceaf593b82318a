"""PPO, written once: its settings, GAE and its loss over ``(S, ...)`` tensors, for every engine.

The reference engine (:class:`moerl.rl.sb3.moe_ppo.MoEPPO`) calls :func:`ppo_loss` with S = 1 inside SB3's
``train`` (SB3's rollout buffer computes the advantages there); the batched engine will call :func:`gae` and
:func:`ppo_loss` on S seeds at once. Each engine keeps its own optimiser step and gradient clipping, as for DQN
(:mod:`moerl.rl.algos.dqn`), so both compute the same update.

Conventions (SB3's, since SB3 is the reference engine; where PureJaxRL, the paper's code base, differs, it
is said where it matters):

* the value loss is ``mean((returns - V)^2)``. PureJaxRL's is half that (``0.5 * mean(...)``), so at the same
  ``vf_coef`` (0.5 in both) the value term here weighs twice PureJaxRL's; ``vf_coef: 0.25`` reproduces its
  weighting exactly;
* advantages are normalised per minibatch with the unbiased standard deviation (torch's ``std``, SB3); PureJaxRL
  uses the biased one (``jnp.std``), a factor ``sqrt(B / (B - 1))`` (0.4% at its minibatch of 128);
* value clipping is off by default (SB3's default). PureJaxRL clips with ``CLIP_EPS`` in the pessimistic form
  ``max((V - R)^2, (V_clip - R)^2)`` (PPO2's); SB3's ``clip_range_vf`` regresses the clipped prediction only.
  Both are offered (:attr:`PPOHyperParams.value_clip`).

Pure torch: neither Stable-Baselines3 nor Gymnasium (an import contract).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from moerl.core.errors import ConfigError, check_positive
from moerl.core.registry import Registry

VALUE_CLIPS = Registry("value clipping", {
    "sb3": "regress the clipped prediction V_old + clip(V - V_old): SB3's clip_range_vf",
    "max": "the larger of the clipped and unclipped squared errors: PPO2's, CleanRL's and PureJaxRL's",
})


@dataclass
class PPOHyperParams:
    """MoE PPO's algorithm settings: :class:`MoEPPO`'s defaults (and a config's ``ppo:`` section, later).

    The defaults are PureJaxRL's classic-control PPO (``purejaxrl/ppo.py``, its ``__main__`` config for
    ``CartPole-v1``: ``LR 2.5e-4, NUM_ENVS 4, NUM_STEPS 128, UPDATE_EPOCHS 4, NUM_MINIBATCHES 4, GAMMA 0.99,
    GAE_LAMBDA 0.95, CLIP_EPS 0.2, ENT_COEF 0.01, VF_COEF 0.5, MAX_GRAD_NORM 0.5, ANNEAL_LR True``, Adam
    ``eps=1e-5``), the base the paper (arXiv 2406.18420) trained its MoE agents with. What differs from
    PureJaxRL is listed in the module docs (loss conventions) and :class:`MoEActorCritic
    <moerl.rl.nets.actor_critic.MoEActorCritic>` (network: ReLU, width 128, torch's default init).
    """

    learning_rate: float = 2.5e-4
    #: Anneal the learning rate linearly to 0 over the run (PureJaxRL's ``ANNEAL_LR``; SB3's progress schedule).
    anneal_lr: bool = True
    #: Adam's epsilon (PureJaxRL's optax ``adam(eps=1e-5)``; SB3's PPO also uses 1e-5).
    adam_eps: float = 1e-5
    #: Environments per seed (PureJaxRL's ``NUM_ENVS``).
    n_envs: int = 4
    #: Steps per environment per rollout (``NUM_STEPS``); a rollout is ``n_envs * n_steps`` transitions.
    n_steps: int = 128
    #: Passes over each rollout (``UPDATE_EPOCHS``).
    n_epochs: int = 4
    #: Minibatches per pass (``NUM_MINIBATCHES``): minibatch size ``n_envs * n_steps / n_minibatches`` (128).
    n_minibatches: int = 4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    #: The surrogate's clipping (``CLIP_EPS``).
    clip_range: float = 0.2
    #: Anneal ``clip_range`` linearly to 0 over the run, on the learning rate's schedule (rl-zoo's
    #: ``clip_range: lin_0.2``; PureJaxRL keeps it constant).
    anneal_clip: bool = False
    #: Value clipping range; None: no value clipping (SB3's default; PureJaxRL clips with ``CLIP_EPS``).
    clip_range_vf: float | None = None
    #: How the value is clipped when ``clip_range_vf`` is set (:data:`VALUE_CLIPS`).
    value_clip: str = "sb3"
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    normalize_advantage: bool = True
    #: Stop an update's epochs early when the approximate KL exceeds 1.5 x this (SB3's); None: never.
    target_kl: float | None = None
    #: Weight of the routers' balancing loss (routers with ``balance_loss`` other than none), as for DQN.
    aux_loss_coef: float = 0.01
    #: One network for actor and critic (``n_actions + 1`` outputs) instead of two of the same config
    #: (PureJaxRL's separate actor and critic, the default): :class:`MoEActorCritic
    #: <moerl.rl.nets.actor_critic.MoEActorCritic>`'s ``shared``.
    shared_network: bool = False

    @property
    def batch_size(self) -> int:
        """Minibatch size: one rollout split into ``n_minibatches``."""
        return self.n_envs * self.n_steps // self.n_minibatches

    def validate(self) -> PPOHyperParams:
        """Every value possible, or a :class:`ConfigError` naming it as ``ppo.<key>``; returns ``self``."""
        VALUE_CLIPS.check(self.value_clip)
        for name in ("learning_rate", "adam_eps", "n_envs", "n_steps", "n_epochs", "n_minibatches", "clip_range",
                     "max_grad_norm"):
            check_positive(f"ppo.{name}", getattr(self, name))
        for name in ("ent_coef", "vf_coef", "aux_loss_coef"):
            check_positive(f"ppo.{name}", getattr(self, name), allow_zero=True)
        for name in ("gamma", "gae_lambda"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ConfigError(f"ppo.{name} must be in [0, 1], got {value}")
        for name in ("clip_range_vf", "target_kl"):
            if getattr(self, name) is not None:
                check_positive(f"ppo.{name}", getattr(self, name))
        if (self.n_envs * self.n_steps) % self.n_minibatches:
            raise ConfigError(f"ppo.n_minibatches ({self.n_minibatches}) must divide a rollout of n_envs x n_steps "
                              f"= {self.n_envs * self.n_steps} transitions")
        return self


def gae(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, last_values: torch.Tensor,
        gamma: float, gae_lambda: float,
        truncated_values: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation: ``(advantages, returns)``, each ``(T, S, N)`` (steps, seeds, envs).

    ``rewards``, ``values`` (``V(s_t)`` at collection), ``dones``: ``(T, S, N)``; ``dones[t]`` is 1 when the
    episode ended *after* step ``t`` (terminated or truncated: the next observation belongs to a new episode);
    ``last_values``: ``(S, N)``, ``V`` of the observation after the last step. ``returns = advantages +
    values`` (the value target, TD(lambda)).

    **Truncation.** An episode cut by a time limit did not end: its last reward should be followed by
    ``gamma * V(final observation)``. SB3 does this in ``collect_rollouts`` by adding ``gamma * V(terminal
    obs)`` to the reward of a truncated step and then treating the step as done; this function does the same
    when given ``truncated_values`` ``(T, S, N)``: ``V(final observation)`` where the step was truncated (and
    not terminated), 0 elsewhere. The reference engine passes None (SB3's buffer already holds the bootstrapped
    rewards); the batched engine passes its values. So a truncated step's ``delta`` is
    ``r + gamma * V(final obs) - V(s_t)`` and the advantage does not run into the next episode, exactly as on
    SB3's path. (PureJaxRL, over gymnax, does not tell truncation from termination.)

    Written as SB3's ``RolloutBuffer.compute_returns_and_advantage`` defines it (equal within float32
    rounding, tested); ``dones[t]`` here is SB3's ``episode_starts[t + 1]``, and its ``dones`` argument is
    ``dones[T - 1]``.
    """
    if truncated_values is not None:
        rewards = rewards + gamma * truncated_values
    not_done = 1.0 - dones.to(values.dtype)
    next_values = torch.cat([values[1:], last_values.unsqueeze(0)], dim=0)
    deltas = rewards + gamma * next_values * not_done - values
    advantages = torch.empty_like(values)
    running = torch.zeros_like(last_values)
    for t in range(values.shape[0] - 1, -1, -1):
        running = deltas[t] + gamma * gae_lambda * not_done[t] * running
        advantages[t] = running
    return advantages, advantages + values


def normalized(advantages: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Advantages ``(S, B)`` normalised per seed over the minibatch (unbiased std, SB3's; left as they are
    when ``B == 1``, where a standard deviation is undefined: SB3's rule, its issue #325)."""
    if advantages.shape[-1] < 2:
        return advantages
    return (advantages - advantages.mean(-1, keepdim=True)) / (advantages.std(-1, keepdim=True) + eps)


def ppo_loss(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor,
             values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, entropy: torch.Tensor, *,
             clip_range: float, ent_coef: float, vf_coef: float, normalize_advantage: bool = True,
             clip_range_vf: float | None = None, value_clip: str = "sb3",
             aux_loss: torch.Tensor | None = None,
             aux_loss_coef: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Each seed's PPO loss on its minibatch, ``(S,)``, and per-seed diagnostics (each ``(S,)``, detached).

    Every input is ``(S, B)``: the current policy's ``log_prob`` of the taken actions and ``entropy``, the
    current ``values``; from the rollout ``old_log_prob``, ``old_values``, ``advantages`` and ``returns``.
    ``aux_loss``: ``(S,)`` routers' balancing losses (None: no router or none asked for).

    ``loss = policy_loss + ent_coef * entropy_loss + vf_coef * value_loss + aux_loss_coef * aux_loss`` with
    the clipped surrogate ``policy_loss = -mean(min(A r, A clip(r, 1 - eps, 1 + eps)))``, ``r = exp(log_prob -
    old_log_prob)``, ``entropy_loss = -mean(entropy)`` and ``value_loss = mean((returns - V)^2)`` (clipped as
    :data:`VALUE_CLIPS` says when ``clip_range_vf`` is set). Diagnostics: ``policy_loss``, ``value_loss``,
    ``entropy_loss``, ``entropy``, ``approx_kl`` (SB3's estimator ``mean((r - 1) - log r)``, Schulman's k3),
    ``clip_fraction`` (share of ``|r - 1| > eps``), ``aux_loss`` (when given). Seeds share nothing: to
    differentiate, sum the (S,) loss.
    """
    if normalize_advantage:
        advantages = normalized(advantages)
    log_ratio = log_prob - old_log_prob
    ratio = torch.exp(log_ratio)
    surrogate = torch.min(advantages * ratio, advantages * torch.clamp(ratio, 1 - clip_range, 1 + clip_range))
    policy_loss = -surrogate.mean(-1)
    if clip_range_vf is None:
        value_loss = (returns - values).pow(2).mean(-1)
    else:
        clipped = old_values + torch.clamp(values - old_values, -clip_range_vf, clip_range_vf)
        if VALUE_CLIPS.check(value_clip) == "sb3":
            value_loss = (returns - clipped).pow(2).mean(-1)
        else:
            value_loss = torch.max((returns - values).pow(2), (returns - clipped).pow(2)).mean(-1)
    entropy_loss = -entropy.mean(-1)
    loss = policy_loss + ent_coef * entropy_loss + vf_coef * value_loss
    if aux_loss is not None:
        loss = loss + aux_loss_coef * aux_loss
    with torch.no_grad():
        diagnostics = {
            "policy_loss": policy_loss.detach(),
            "value_loss": value_loss.detach(),
            "entropy_loss": entropy_loss.detach(),
            "entropy": -entropy_loss.detach(),
            "approx_kl": ((ratio - 1) - log_ratio).mean(-1),
            "clip_fraction": ((ratio - 1).abs() > clip_range).float().mean(-1),
        }
        if aux_loss is not None:
            diagnostics["aux_loss"] = aux_loss.detach()
    return loss, diagnostics
