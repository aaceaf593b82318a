"""Gumbel-softmax gate for mixtures of experts.

Why Gumbel-softmax: the seed wants each input to go (mostly) to one expert, so that experts become
separate sub-networks; a plain softmax gate tends to stay soft. During training the gate samples
``softmax((logits + Gumbel noise) / tau)`` with ``tau`` annealed by the learner from 1.0 to a floor of
0.5. At evaluation the gate is deterministic: **argmax**, i.e. a one-hot weight on the most likely
expert (so evaluation uses exactly one expert per input, the same path that forced routing uses).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from moerl.nn.metrics import entropy


class GumbelGate(nn.Module):
    """One linear layer ``features -> E`` producing mixture weights."""

    def __init__(self, in_features: int, num_experts: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, num_experts)
        self.tau = 1.0

    @property
    def num_experts(self) -> int:
        return self.linear.out_features

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)

    def forward(self, features: torch.Tensor, deterministic: bool | None = None) -> torch.Tensor:
        """Mixture weights ``(N, E)``; stochastic Gumbel-softmax in training, argmax one-hot otherwise."""
        logits = self.logits(features)
        stochastic = self.training if deterministic is None else not deterministic
        if stochastic:
            return F.gumbel_softmax(logits, tau=self.tau, hard=False)
        return F.one_hot(logits.argmax(dim=-1), logits.shape[-1]).to(logits.dtype)

    @torch.no_grad()
    def add_output(self) -> None:
        """Widen by one expert; the new row (weights and bias) starts at zero, old rows are kept."""
        old = self.linear
        new = nn.Linear(old.in_features, old.out_features + 1).to(old.weight.device, old.weight.dtype)
        new.weight.zero_()
        new.bias.zero_()
        new.weight[: old.out_features] = old.weight
        new.bias[: old.out_features] = old.bias
        self.linear = new


def balance_loss(weights: torch.Tensor) -> torch.Tensor:
    """``E * sum_k mean_k^2 - 1``: 0 when experts get equal average weight, ``E - 1`` at full collapse."""
    mean = weights.mean(dim=0)
    return weights.shape[-1] * (mean * mean).sum() - 1.0


def gate_entropy(weights: torch.Tensor) -> torch.Tensor:
    """Mean per-sample entropy (nats) of gate weights (or probabilities)."""
    return entropy(weights).mean()
