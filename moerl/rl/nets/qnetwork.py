"""Q-networks with a mixture of experts at a chosen place.

The dense baseline is ``in -> Linear -> ReLU -> Linear -> ReLU -> Linear(n_actions)``. Placements
(names from arXiv 2406.18420; see docs/moe-dqn.md):

========  ==============================================================
``dense``   nothing is a mixture (baseline)
``wide``    dense with hidden width x num_experts (parameter-count control)
``middle``  the penultimate (last hidden) layer is an MoE
``final``   the output layer is an MoE
``all``     every layer is an MoE
``big``     one MoE whose experts are whole Q-networks
========  ==============================================================

The network knows nothing of the algorithm that trains it: it maps features (and, for the
``hardcoded`` router, a task id) to one value per action.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from moerl.core.errors import ConfigError
from moerl.nn.choices import ARCHS, ROUTED_ARCHS
from moerl.nn.gating import RouterConfig
from moerl.nn.moe import MoEBlock
from moerl.nn.record import ForwardRecord, HiddenRecord


@dataclass
class QNetworkConfig(RouterConfig):
    """Plain-data description of a Q-network (saved with every model): its router's keys
    (:class:`RouterConfig`: ``router``, ``experts``, ``topk``...) plus the placement and sizes.

    Flat, with the CLI's names, so that the same keys are used by ``moerl train`` flags, YAML files and
    ``MoEDQN(policy_kwargs={"network": {...}})``.
    """

    arch: str = "dense"
    #: Hidden width. 128, not dopamine's 512: on a 2-core CPU one update at batch 128 costs ~6.5-10 ms at
    #: width 512 (37 ms for a 4-expert softmoe big), too slow for minutes-long runs.
    hidden: int = 128
    #: Tokens the features are split into before an MoE layer.
    tokens: int = 1

    def validate(self) -> QNetworkConfig:

        ARCHS.check(self.arch)
        if self.hidden < 1:
            raise ConfigError(f"hidden width must be >= 1, got {self.hidden}")
        if self.tokens < 1:
            raise ConfigError(f"tokens must be >= 1, got {self.tokens}")
        if self.expert_compute == "routed" and self.arch not in ROUTED_ARCHS:
            raise ConfigError(f"expert_compute 'routed' does not apply to arch '{self.arch}' (it has no router); "
                              f"archs with a router: {', '.join(ROUTED_ARCHS)}")
        super().validate()
        return self

    @property
    def uses_moe(self) -> bool:
        return self.arch in ROUTED_ARCHS


class DenseLayer(nn.Module):
    """``nn.Linear`` with an optional ReLU, recording its activation when asked.

    With a seed-stacked weight ``(S, out, in)`` (:mod:`moerl.rl.nets.batched`) it maps ``(S, N, in)`` to
    ``(S, N, out)``, seed ``i`` by its own weights, in one ``baddbmm``.
    """

    def __init__(self, in_features: int, out_features: int, activate: bool, name: str):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.activate, self.name = activate, name

    def forward(self, x: torch.Tensor, task_id: torch.Tensor | None = None,
                record: ForwardRecord | None = None) -> torch.Tensor:
        w, b = self.linear.weight, self.linear.bias
        y = F.linear(x, w, b) if w.dim() == 2 else torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))
        if self.activate:
            y = torch.relu_(y)  # in place: a fresh tensor (see ExpertMLP.forward)
            if record is not None:
                record.hidden[self.name] = HiddenRecord(y)
        return y


class MoEQNetwork(nn.Module):
    """Features ``(B, in)`` (+ task ids ``(B,)``) -> Q-values ``(B, n_actions)``.

    Every layer also runs with *seed-stacked* parameters (a leading dimension ``S`` on each, as
    :class:`moerl.rl.nets.batched.BatchedQNetwork` registers them): then ``(S, B, in)`` (+ ``(S, B)``) ->
    ``(S, B, n_actions)``, seed ``i`` computed with its own slice of the weights, and every record
    entry gains the leading ``S``.
    """

    def __init__(self, in_features: int, n_actions: int, config: QNetworkConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.in_features, self.n_actions = in_features, n_actions
        h, arch, router = config.hidden, config.arch, config
        m = config.tokens
        layers: list[nn.Module]
        if arch == "big":
            layers = [MoEBlock(in_features, n_actions, router, expert_hidden=(h, h), num_tokens=m, name="big")]
        else:
            width = h * router.experts if arch == "wide" else h
            moe_at = {"middle": {1}, "final": {2}, "all": {0, 1, 2}}.get(arch, set())
            sizes = [(in_features, width), (width, width), (width, n_actions)]
            names = ["hidden1", "hidden2", "output"]
            layers = []
            for i, ((a, b), name) in enumerate(zip(sizes, names, strict=True)):
                hidden_layer = i < 2
                if i in moe_at:
                    layers.append(MoEBlock(a, b, router, activate_output=hidden_layer, num_tokens=m,
                                           name=f"{name}_moe"))
                else:
                    layers.append(DenseLayer(a, b, hidden_layer, name))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor, task_id: torch.Tensor | None = None,
                record: ForwardRecord | None = None) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, task_id, record)
        return x


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
