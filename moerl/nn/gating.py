"""Routers: how tokens reach experts.

Each router owns its experts (an :class:`~moerl.nn.experts.ExpertMLP`) and maps tokens
``(B, m, d)`` to outputs ``(B, m, o)``. Semantics follow ``docs/moe-dqn.md`` (checked against
dopamine's ``labs/moes`` and the Soft MoE paper):

* ``softmoe``: slots, dispatch softmax over tokens, combine softmax over all slots.
* ``topk``: bias-free linear router, softmax over all experts, keep the top k, no renormalisation,
  every token routed (no capacity limit, nothing dropped).
* ``hardcoded``: expert = task id, weight 1, no parameters.

Every router also runs seed-stacked (:mod:`moerl.rl.nets.batched`): tokens ``(S, B, m, d)``, parameters with a
leading ``S``, every reduction per seed; written with leading-dimension ellipses so that one code path
serves one network and ``S`` of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from moerl.core.errors import ConfigError
from moerl.nn.choices import BALANCE_LOSSES, EXPERT_COMPUTES, ROUTED_COMPUTE_ROUTERS, ROUTERS
from moerl.nn.experts import ROUTED_MIN_TOKENS, ExpertMLP
from moerl.nn.metrics import entropy
from moerl.nn.record import ForwardRecord, HiddenRecord, RoutingRecord


@dataclass
class RouterConfig:
    """Plain-data description of a router, with the CLI's names (``--router``, ``--experts``, ``--topk``).

    :class:`moerl.nn.QNetworkConfig` extends it, so a Q-network's config *is* its router's config: one set
    of keys from the CLI down to the router modules.
    """

    router: str = "softmoe"
    #: Number of experts (for the ``wide`` Q-network: its width multiplier).
    experts: int = 4
    #: topk: experts per token.
    topk: int = 1
    #: softmoe: slots per expert; None = ceil(tokens / experts) as in the spec.
    slots_per_expert: int | None = None
    #: softmoe: l2-normalise tokens and Phi, with a learnable scale (vmoe does, dopamine does not).
    normalize: bool = False
    #: topk: std of Gaussian noise added to router logits in training (0 = off).
    noise_std: float = 0.0
    #: topk: balancing loss (importance CV^2, switch-style load, entropy of mean routing).
    balance_loss: str = "none"
    #: hardcoded, topk: ``routed`` (each expert only on its tokens, in passes of at least
    #: :data:`~moerl.nn.experts.ROUTED_MIN_TOKENS` tokens per network) or ``dense`` (every expert on every
    #: token: the reference). ``auto`` (default): routed for these two routers, which measured 1.4-2.3x the
    #: env steps/s of dense compute end to end; the two differ by float rounding only.
    expert_compute: str = "auto"

    def validate(self) -> RouterConfig:

        ROUTERS.check(self.router)
        BALANCE_LOSSES.check(self.balance_loss)
        EXPERT_COMPUTES.check(self.expert_compute)
        if self.expert_compute == "routed" and self.router not in ROUTED_COMPUTE_ROUTERS:
            raise ConfigError(f"expert_compute 'routed' does not apply to router '{self.router}'; "
                              f"it applies to router {', '.join(ROUTED_COMPUTE_ROUTERS)}")
        if self.experts < 1:
            raise ConfigError(f"number of experts must be >= 1, got {self.experts}")
        if self.router == "topk" and not 1 <= self.topk <= self.experts:
            raise ConfigError(f"topk must be between 1 and the number of experts ({self.experts}), got {self.topk}")
        if self.slots_per_expert is not None and self.slots_per_expert < 1:
            raise ConfigError(f"slots_per_expert must be >= 1, got {self.slots_per_expert}")
        if self.noise_std < 0:
            raise ConfigError(f"noise_std must be >= 0, got {self.noise_std}")
        return self


def _cv_squared(x: torch.Tensor) -> torch.Tensor:
    """Squared coefficient of variation along the last dimension."""
    return x.var(-1, unbiased=False) / (x.mean(-1) ** 2 + 1e-10)


class SoftMoERouter(nn.Module):
    """Soft MoE (Puigcerver et al. 2023) over tokens ``(B, m, d)``."""

    def __init__(self, experts: ExpertMLP, token_dim: int, num_tokens: int, config: RouterConfig):
        super().__init__()
        self.experts = experts
        self.num_experts = config.experts
        self.slots = config.slots_per_expert or math.ceil(num_tokens / config.experts)
        self.normalize = config.normalize
        self.phi = nn.Parameter(torch.empty(token_dim, self.num_experts * self.slots))
        nn.init.normal_(self.phi, std=1.0 / math.sqrt(token_dim))
        self.scale = nn.Parameter(torch.ones(())) if config.normalize else None

    def forward(self, x: torch.Tensor, task_id: torch.Tensor | None, record: ForwardRecord | None,
                name: str) -> torch.Tensor:
        *lead, b, m, d = x.shape  # lead: () or, with seed-stacked weights, (S,)
        n, p = self.num_experts, self.slots
        if self.scale is not None:  # config.normalize
            scale = self.scale.reshape(*self.scale.shape, 1, 1)
            logits = torch.einsum("...bmd,...ds->...bms", F.normalize(x, dim=-1),
                                  scale * F.normalize(self.phi, dim=-2))
        else:
            logits = torch.einsum("...bmd,...ds->...bms", x, self.phi)
        dispatch = torch.softmax(logits, dim=-2)  # over tokens: each slot is a convex mix of tokens
        combine = torch.softmax(logits, dim=-1)  # over all n*p slots: each token a convex mix of slots
        slot_in = torch.einsum("...bms,...bmd->...bsd", dispatch, x)
        expert_in = slot_in.reshape(*lead, b, n, p, d).transpose(-4, -3).reshape(*lead, n, b * p, d)
        hidden: list[torch.Tensor] | None = [] if record is not None else None
        out = self.experts(expert_in, hidden)
        o = out.shape[-1]
        slot_out = out.reshape(*lead, n, b, p, o).transpose(-4, -3).reshape(*lead, b, n * p, o)
        y = torch.einsum("...bms,...bso->...bmo", combine, slot_out)
        if record is not None:
            for i, h in enumerate(hidden or ()):
                record.hidden[f"{name}.hidden{i}"] = HiddenRecord(h)
            record.routing[name] = RoutingRecord(
                usage=combine.reshape(*lead, b, m, n, p).sum(-1).mean(-2),
                entropy=entropy(combine).mean(dim=(-2, -1)),
                aux_loss=x.new_zeros(lead),
            )
        return y


class TopKRouter(nn.Module):
    """Softmax over all experts, then top-k without renormalisation; every token is routed."""

    def __init__(self, experts: ExpertMLP, token_dim: int, config: RouterConfig):
        super().__init__()
        self.experts = experts
        self.num_experts = config.experts
        self.k = config.topk
        self.noise_std = config.noise_std
        self.balance_loss = config.balance_loss
        self.routed = config.expert_compute != "dense" and experts.can_route  # "auto" routes these routers
        self.weight = nn.Parameter(torch.empty(token_dim, self.num_experts))
        nn.init.normal_(self.weight, std=1.0 / math.sqrt(token_dim))

    def gates(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (probs, gates, selected) for tokens ``(T, d)`` (seed-stacked: ``(S, T, d)``); gates are zero
        off the top k."""
        probs, top_vals, top_idx = self.choices(tokens)
        gates = torch.zeros_like(probs).scatter(-1, top_idx, top_vals)
        selected = torch.zeros_like(probs).scatter(-1, top_idx, 1.0)
        return probs, gates, selected

    def choices(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(probs ``(..., T, E)``, top-k probabilities and experts ``(..., T, k)``) of tokens ``(..., T, d)``."""
        logits = tokens @ self.weight
        if self.training and self.noise_std > 0:
            logits = logits + self.noise_std * torch.randn_like(logits)
        probs = torch.softmax(logits, dim=-1)
        top_vals, top_idx = probs.topk(self.k, dim=-1)
        return probs, top_vals, top_idx

    def forward(self, x: torch.Tensor, task_id: torch.Tensor | None, record: ForwardRecord | None,
                name: str) -> torch.Tensor:
        *lead, b, m, d = x.shape  # lead: () or, with seed-stacked weights, (S,)
        tokens = x.reshape(*lead, b * m, d)
        hidden: list[torch.Tensor] | None = [] if record is not None else None
        if self.routed and b * m >= ROUTED_MIN_TOKENS:  # expert_compute: routed, a pass of many tokens
            probs, top_vals, top_idx = self.choices(tokens)
            selected = torch.zeros_like(probs).scatter(-1, top_idx, 1.0)
            y = self.experts.forward_routed(tokens, top_idx, top_vals, hidden).reshape(*lead, b, m, -1)
            return self._finish(y, probs, selected, hidden, record, name, lead, b, m, x)
        probs, gates, selected = self.gates(tokens)
        # All experts on all tokens in one bmm, then zero weight off the top k: for a handful of
        # small experts this beats gathering per-expert token lists (benchmarks/bench_experts.py).
        out = self.experts(tokens.unsqueeze(-3).expand(*lead, self.num_experts, b * m, d), hidden)
        y = torch.einsum("...tn,...nto->...to", gates, out).reshape(*lead, b, m, -1)
        return self._finish(y, probs, selected, hidden, record, name, lead, b, m, x)

    def _finish(self, y: torch.Tensor, probs: torch.Tensor, selected: torch.Tensor,
                hidden: list[torch.Tensor] | None, record: ForwardRecord | None, name: str,
                lead: list[int], b: int, m: int, x: torch.Tensor) -> torch.Tensor:
        """Write the record (balancing loss, routing, hidden activations) of a pass whose output is ``y``."""
        aux = self._balance_loss(probs, selected) if self.balance_loss != "none" else x.new_zeros(lead)
        if record is not None:
            processed = selected.transpose(-1, -2) > 0
            for i, h in enumerate(hidden or ()):
                record.hidden[f"{name}.hidden{i}"] = HiddenRecord(h, processed)
            record.routing[name] = RoutingRecord(
                usage=selected.reshape(*lead, b, m, -1).mean(-2),
                entropy=entropy(probs).mean(-1),
                aux_loss=aux,
            )
        return y

    def _balance_loss(self, probs: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
        """The balancing loss of tokens' ``probs`` and ``selected`` ``(..., T, E)``: shape ``(...)``."""
        if self.balance_loss == "importance":  # Shazeer et al. 2017: CV^2 of summed gate probs
            return _cv_squared(probs.sum(-2))
        if self.balance_loss == "load":  # Switch Transformer: n * sum_e f_e * P_e
            frac = selected.mean(-2) / self.k
            return self.num_experts * (frac * probs.mean(-2)).sum(-1)
        # "entropy": maximise the entropy of the batch-mean routing distribution
        return -entropy(probs.mean(-2))


class HardcodedRouter(nn.Module):
    """Expert index = task id, weight 1: per-task networks inside one module, no parameters."""

    def __init__(self, experts: ExpertMLP, config: RouterConfig):
        super().__init__()
        self.experts = experts
        self.num_experts = config.experts
        self.routed = config.expert_compute != "dense" and experts.can_route  # "auto" routes these routers

    def forward(self, x: torch.Tensor, task_id: torch.Tensor | None, record: ForwardRecord | None,
                name: str) -> torch.Tensor:
        if task_id is None:
            raise ValueError(
                "the hardcoded router needs a task id at every forward pass: use a task suite with a "
                "task one-hot in the observation (e.g. cartpole-mtrl) or pass task_id"
            )
        *lead, b, m, d = x.shape  # lead: () or, with seed-stacked weights, (S,)
        onehot = F.one_hot(task_id.long(), self.num_experts).to(x.dtype)  # (*lead, B, E)
        tokens = x.reshape(*lead, b * m, d)
        hidden: list[torch.Tensor] | None = [] if record is not None else None
        token_gate = onehot.repeat_interleave(m, dim=-2)  # (*lead, B*m, E)
        if self.routed and b * m >= ROUTED_MIN_TOKENS:  # expert_compute: routed, a pass of many tokens
            token_task = task_id.long().repeat_interleave(m, dim=-1).unsqueeze(-1)  # (*lead, B*m, 1)
            y = self.experts.forward_routed(tokens, token_task, None, hidden).reshape(*lead, b, m, -1)
        else:
            out = self.experts(tokens.unsqueeze(-3).expand(*lead, self.num_experts, b * m, d), hidden)
            y = torch.einsum("...tn,...nto->...to", token_gate, out).reshape(*lead, b, m, -1)
        if record is not None:
            processed = token_gate.transpose(-1, -2) > 0
            for i, h in enumerate(hidden or ()):
                record.hidden[f"{name}.hidden{i}"] = HiddenRecord(h, processed)
            record.routing[name] = RoutingRecord(usage=onehot, entropy=x.new_zeros(lead),
                                                 aux_loss=x.new_zeros(lead))
        return y


def build_router(config: RouterConfig, experts: ExpertMLP, token_dim: int, num_tokens: int) -> nn.Module:
    """Router of ``config.router`` over ``experts`` for tokens of size ``token_dim``."""
    config.validate()
    if config.router == "softmoe":
        return SoftMoERouter(experts, token_dim, num_tokens, config)
    if config.router == "topk":
        return TopKRouter(experts, token_dim, config)
    return HardcodedRouter(experts, config)
