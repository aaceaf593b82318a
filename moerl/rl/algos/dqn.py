"""DQN, written once: its settings and its loss over ``(S, B, ...)`` tensors, for every engine.

The batched engine (:mod:`moerl.rl.engine.batched_dqn`) calls these on S seeds at once; the reference
engine (:class:`moerl.rl.sb3.moe_dqn.MoEDQN`) calls them with S = 1 inside SB3's ``train``. Each engine keeps
its own optimiser step (SB3's Adam and ``clip_grad_norm_`` on the reference path, a fused Adam and per-seed
clipping on the batched one), so the two compute the same update and their results stay as they were.

Pure torch: neither Stable-Baselines3 nor Gymnasium (an import contract), so a new engine or a compiled
step can call the same functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from moerl.core.errors import ConfigError, check_positive
from moerl.core.registry import Registry

LOSSES = Registry("loss", {
    "mse": "squared TD error (dopamine's classic-control DQN)",
    "huber": "Huber / smooth L1 TD error (SB3's DQN)",
})
OPTIMIZERS = Registry("optimizer", {
    "adam": "Adam with epsilon dqn.adam_eps (dopamine's classic-control DQN; the default)",
    "rmsprop": "centered RMSprop, squared-gradient momentum 0.95, epsilon 0.01 (MinAtar's DQN)",
})
#: MinAtar's DQN optimiser (the ``minatar`` package's ``examples/dqn.py``: ``RMSprop(lr=STEP_SIZE,
#: alpha=SQUARED_GRAD_MOMENTUM, centered=True, eps=MIN_SQUARED_GRAD)`` with 0.95 and 0.01); its learning rate,
#: 2.5e-4, is ``dqn.learning_rate``'s to set.
RMSPROP_KWARGS: dict[str, Any] = {"alpha": 0.95, "eps": 0.01, "centered": True}


@dataclass
class DQNHyperParams:
    """MoE DQN's algorithm settings: the ``dqn:`` section of a config, and :class:`MoEDQN`'s defaults.

    Defined once: :class:`MoEDQN`'s signature reads its defaults from here, so ``MoEDQN("MoEPolicy", env)``
    and ``moerl train`` train the same algorithm. The defaults are dopamine's classic-control DQN
    (docs/moe-dqn.md), not SB3's generic ones.
    """

    learning_rate: float = 1e-3
    #: Adam's epsilon (dopamine: 3.125e-4; torch's default 1e-8).
    adam_eps: float = 3.125e-4
    #: ``adam`` (the default, with ``adam_eps``) or ``rmsprop`` (MinAtar's DQN's: :data:`RMSPROP_KWARGS`), the same
    #: optimiser on both engines (:func:`optimizer_of`). MinAtar's DQN also takes ``learning_rate: 2.5e-4``,
    #: ``batch_size: 32``, ``train_freq: 1``, ``target_update_interval: 1000``, ``buffer_size: 100000``,
    #: ``learning_starts: 5000`` and epsilon 1 -> 0.1 over its first 100k frames, each a key here; the defaults
    #: stay dopamine's classic-control DQN's (above), which every run so far used.
    optimizer: str = "adam"
    #: Replay capacity. None = dopamine's 50k, or one block (``block_steps``) on a CRL suite whose blocks are
    #: shorter: a buffer larger than the whole schedule keeps every old task's data and turns continual RL
    #: back into multi-task RL (our 40k-step CartPole CRL fits in 50k entirely). Longer blocks keep 50k
    #: (MountainCar's 60k blocks: the previous task's last samples leave the replay 50k steps into a block).
    buffer_size: int | None = None
    batch_size: int = 128
    learning_starts: int = 500
    train_freq: int = 4
    gradient_steps: int = 1
    target_update_interval: int = 100
    gamma: float = 0.99
    exploration_fraction: float = 0.1
    exploration_initial_eps: float = 0.01
    exploration_final_eps: float = 0.01
    loss: str = "mse"
    #: Weight of the router's balancing loss (only for routers with ``balance_loss`` other than none).
    aux_loss_coef: float = 0.01
    #: Dopamine does not clip; SB3 always calls clip_grad_norm_, so "no clipping" is a huge norm.
    max_grad_norm: float = 1e9

    def validate(self) -> DQNHyperParams:
        """Every value possible, or a :class:`ConfigError` naming it as ``dqn.<key>``; returns ``self``.

        The one check of these settings: ``moerl train`` runs it on the config's ``dqn:`` section, and
        :class:`MoEDQN` and :class:`BatchedDQN` on their arguments, so the Python API refuses what the CLI
        refuses, with the same line (a negative clipping norm would train by gradient ascent).
        """
        LOSSES.check(self.loss)
        OPTIMIZERS.check(self.optimizer)
        if self.optimizer != "adam" and self.adam_eps != DQNHyperParams.adam_eps:
            raise ConfigError(f"dqn.adam_eps applies to optimizer adam, not {self.optimizer} (whose epsilon is "
                              f"{RMSPROP_KWARGS['eps']}); leave it at its default")
        for name in ("batch_size", "train_freq", "learning_rate", "gradient_steps", "target_update_interval",
                     "adam_eps", "max_grad_norm"):
            check_positive(f"dqn.{name}", getattr(self, name))
        for name in ("aux_loss_coef", "learning_starts"):
            check_positive(f"dqn.{name}", getattr(self, name), allow_zero=True)
        for name in ("exploration_initial_eps", "exploration_final_eps", "exploration_fraction", "gamma"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ConfigError(f"dqn.{name} must be in [0, 1], got {value}")
        if self.buffer_size is not None:
            check_positive("dqn.buffer_size", self.buffer_size)
        return self


def optimizer_of(hp: DQNHyperParams) -> tuple[Callable[..., torch.optim.Optimizer], dict[str, Any]]:
    """The optimiser class and its keyword arguments (all but the parameters and the learning rate) of ``hp``.

    One definition for both engines: the SB3 path passes them as the policy's ``optimizer_class`` and
    ``optimizer_kwargs``, the batched engine builds the class on its seed-stacked parameters (an elementwise
    optimiser on a stacked tensor is exactly one optimiser per seed, see :mod:`moerl.rl.nets.batched`).
    """
    if hp.optimizer == "rmsprop":
        return torch.optim.RMSprop, dict(RMSPROP_KWARGS)
    return torch.optim.Adam, {"eps": hp.adam_eps}


#: Replay capacity when neither the user nor a CRL schedule sets it (dopamine's).
DEFAULT_BUFFER_SIZE = 50_000


def default_capacity(crl_block_steps: int | None) -> int:
    """Dopamine's 50k, or one block where a CRL suite's ``crl_block_steps`` is shorter (see
    :attr:`DQNHyperParams.buffer_size`)."""
    return min(DEFAULT_BUFFER_SIZE, crl_block_steps) if crl_block_steps else DEFAULT_BUFFER_SIZE


def td_target(next_q: torch.Tensor, rewards: torch.Tensor, dones: torch.Tensor,
              gamma: float | torch.Tensor) -> torch.Tensor:
    """``r + (1 - done) * gamma * max_a' Q_target(s', a')``, ``(S, B)``.

    ``next_q``: ``(S, B, A)`` target-network Q-values of the next observations with invalid actions already
    pushed down (the action mask of the observation's task), so the max is over valid actions only.
    """
    return rewards + (1 - dones) * gamma * next_q.max(-1).values


def td_loss(q_all: torch.Tensor, actions: torch.Tensor, target: torch.Tensor, loss: str) -> torch.Tensor:
    """Each member's mean TD loss over its minibatch, ``(S,)``: ``q_all`` ``(S, B, A)``, ``actions`` and
    ``target`` ``(S, B)``; ``loss`` one of :data:`LOSSES` (``mse`` or ``huber``)."""
    q = q_all.gather(-1, actions[..., None])[..., 0]
    if loss == "mse":
        return F.mse_loss(q, target, reduction="none").mean(-1)
    return F.smooth_l1_loss(q, target, reduction="none").mean(-1)


def total_loss(td: torch.Tensor, aux: torch.Tensor | None, aux_loss_coef: float) -> torch.Tensor:
    """The scalar to differentiate: the members' TD losses summed (each member's gradients are those of its
    own loss, as the members share no parameter) plus ``aux_loss_coef`` times their balancing losses."""
    loss = td.sum()
    return loss if aux is None else loss + aux_loss_coef * aux.sum()
