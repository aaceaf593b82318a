"""Mixture of masked experts (seed 000): backbone -> Gumbel gate -> masked MLP experts -> shared classifier.

Structure::

    x -> backbone -> f (F) -> gate(f) = w (N, E)
                           -> expert_k(f) = h_k (N, 64), 4 masked linear layers with ReLU between
    z = sum_k w_k h_k -> classifier = [head_1(z) | head_2(z) | ...]  (one block per dataset)

The classifier is shared in the sense of the seed (one output space over the union of all datasets'
classes; dataset d's labels are offset by the number of classes before it), stored as one linear block
per dataset so that adding a dataset widens it and freezing old rows is just freezing old blocks.

Continual learning: :meth:`MaskedMoE.freeze_expert` turns an expert into a fixed function (uint8
masks, no gradients); :meth:`MaskedMoE.add_expert` appends a fresh expert, widens the gate by a zero
row and, when given a class count, the classifier by a new block. ``route`` forces the expert per
sample (routing by known task id), which is also how we check that frozen experts stay bitwise equal.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn

from moerl.masked.nn.gates import GumbelGate
from moerl.masked.nn.linear import MaskedLinear


class MaskedExpert(nn.Module):
    """An MLP of masked linear layers (``dims = [in, h1, ..., out]``) with ReLU (and dropout) between."""

    def __init__(
        self,
        dims: Sequence[int],
        mask: str = "lu",
        density: float = 0.5,
        rank: int = 32,
        mode: str = "topk",
        dropout: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            MaskedLinear(a, b, mask=mask, density=density, rank=rank, mode=mode, generator=generator)
            for a, b in zip(dims[:-1], dims[1:], strict=True)
        )
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.frozen = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = self.dropout(torch.relu(x))
        return x

    def freeze(self) -> None:
        for layer in self.masked_layers:
            layer.freeze()
        self.frozen = True

    def train(self, mode: bool = True) -> MaskedExpert:
        # A frozen expert stays in eval mode (no dropout), so its function is fixed.
        return super().train(mode and not self.frozen)

    def density_penalty(self) -> torch.Tensor:
        return sum((layer.density_penalty() for layer in self.masked_layers), torch.zeros(()))

    def densities(self) -> list[float]:
        return [layer.density() for layer in self.masked_layers]

    @property
    def masked_layers(self) -> list[MaskedLinear]:
        """``layers`` with their type (to a type checker, ``nn.ModuleList`` items are plain modules)."""
        return cast(list[MaskedLinear], list(self.layers))


class MaskedMoE(nn.Module):
    """Gate + experts + per-dataset classifier blocks, on top of a backbone.

    Args:
        backbone: module mapping images ``(N, C, H, W)`` to features ``(N, F)`` with attribute ``out_dim``.
        num_experts: initial number of experts.
        classes: classes per dataset, in order (labels of dataset d are offset by ``sum(classes[:d])``).
        expert_dims: output widths of the expert layers (default 4 layers ending at 64).
        mask, density, rank, mask_mode, dropout: see :class:`MaskedExpert` / :class:`MaskedLinear`.
        seed: seeds this model's own generator for expert weights, masks and permutations (also of experts
            added later). The gate, the classifier blocks and the backbone use torch's global generator:
            build the model inside :func:`moerl.core.seeding.seeded` (the learners do) so they depend on a seed
            too, without reseeding anything.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_experts: int,
        classes: Sequence[int],
        expert_dims: Sequence[int] = (256, 128, 128, 64),
        mask: str = "lu",
        density: float = 0.5,
        rank: int = 32,
        mask_mode: str = "topk",
        dropout: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.feature_dim = int(cast(int, backbone.out_dim))
        self.expert_kwargs: dict[str, Any] = dict(
            dims=[self.feature_dim, *expert_dims], mask=mask, density=density, rank=rank, mode=mask_mode,
            dropout=dropout,
        )
        self._gen = torch.Generator().manual_seed(seed)
        self.experts = nn.ModuleList(self._new_expert() for _ in range(num_experts))
        self.gate = GumbelGate(self.feature_dim, num_experts)
        self.heads = nn.ModuleList(nn.Linear(expert_dims[-1], c) for c in classes)

    def _new_expert(self) -> MaskedExpert:
        return MaskedExpert(generator=self._gen, **self.expert_kwargs)

    @property
    def expert_generator(self) -> torch.Generator:
        """The generator experts draw their weights, masks and permutations from (also those added later);
        not part of ``state_dict``: a learner saves its state to resume training exactly."""
        return self._gen

    # ------------------------------------------------------------------------------------ shape info
    @property
    def expert_list(self) -> list[MaskedExpert]:
        """``experts`` with their type (to a type checker, ``nn.ModuleList`` items are plain modules)."""
        return cast(list[MaskedExpert], list(self.experts))

    @property
    def num_experts(self) -> int:
        return len(self.experts)

    @property
    def classes(self) -> list[int]:
        return [cast(nn.Linear, h).out_features for h in self.heads]

    @property
    def offsets(self) -> list[int]:
        out, total = [], 0
        for c in self.classes:
            out.append(total)
            total += c
        return out

    # ------------------------------------------------------------------------------------ forward
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def head_forward(
        self, feats: torch.Tensor, route: torch.Tensor | None = None, deterministic: bool | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """From features: (logits over all classes, mixture weights, gate logits).

        ``route`` (LongTensor ``(N,)``) forces a one-hot mixture on the given expert per sample.
        """
        gate_logits = self.gate.logits(feats)
        if route is None:
            weights = self.gate(feats, deterministic=deterministic)
        else:
            weights = nn.functional.one_hot(route, self.num_experts).to(feats.dtype)
        outs = torch.stack([e(feats) for e in self.experts], dim=1)  # (N, E, D)
        mixed = (weights.unsqueeze(-1) * outs).sum(dim=1)
        logits = torch.cat([h(mixed) for h in self.heads], dim=-1)
        return logits, weights, gate_logits

    def forward(
        self, x: torch.Tensor, route: torch.Tensor | None = None, deterministic: bool | None = None
    ) -> torch.Tensor:
        return self.head_forward(self.features(x), route=route, deterministic=deterministic)[0]

    def density_penalty(self) -> torch.Tensor:
        return sum((e.density_penalty() for e in self.expert_list), torch.zeros(()))

    def mask_parameters(self) -> list[nn.Parameter]:
        return [p for e in self.expert_list for layer in e.masked_layers for p in layer.mask_factors()]

    # ------------------------------------------------------------------------------------ continual
    def freeze_expert(self, k: int) -> None:
        """Make expert ``k`` a fixed function (uint8 masks, no gradients). Rebuild the optimiser after."""
        self.expert_list[k].freeze()

    def freeze_head(self, d: int) -> None:
        for p in self.heads[d].parameters():
            p.requires_grad_(False)

    def add_expert(self, new_classes: int | None = None) -> int:
        """Append a fresh expert (gate widened by a zero row); optionally a classifier block. Returns k."""
        device = self.gate.linear.weight.device
        self.experts.append(self._new_expert().to(device))
        self.gate.add_output()
        if new_classes is not None:
            self.heads.append(nn.Linear(cast(nn.Linear, self.heads[0]).in_features, new_classes).to(device))
        return self.num_experts - 1

    def structure(self) -> dict:
        """What :meth:`from_structure`-style rebuilding needs besides the config (for save/load)."""
        return {"num_experts": self.num_experts, "classes": self.classes,
                "frozen_experts": [i for i, e in enumerate(self.experts) if e.frozen]}
