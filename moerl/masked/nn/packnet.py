"""PackNet (Mallya and Lazebnik, CVPR 2018): several tasks packed into one network by pruning.

Every packed layer keeps a ``uint8`` *owner* tensor of its weight's shape: 0 = free, t = owned by task t
(1-based). Training task t updates only free weights (the gradients of weights owned by earlier tasks
are zeroed by :meth:`PackNet.mask_gradients`); afterwards :meth:`PackNet.prune` keeps the largest-magnitude
``1 - prune_ratio`` of the weights task t took, gives them owner t and frees the rest (set to 0), then the
learner fine-tunes the kept weights. Inference for task t uses the weights owned by tasks ``1..t`` and
task t's head; weights owned by later tasks are masked out, so learning task t+1 cannot change task t.
Biases (and any normalisation) are trained with task 1 only and frozen afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn


class _Packed(nn.Module):
    """Shared owner bookkeeping for packed layers."""

    weight: nn.Parameter
    owner: torch.Tensor

    def visible(self, task: int) -> torch.Tensor:
        """Float mask of the weights task ``task`` (1-based) may use at inference."""
        o = self.owner
        return ((o > 0) & (o <= task)).to(self.weight.dtype)

    def training_mask(self, task: int) -> torch.Tensor:
        """Weights usable while training task ``task``: earlier tasks' (frozen) plus the free ones."""
        o = self.owner
        return ((o == 0) | (o <= task)).to(self.weight.dtype)


class PackedLinear(_Packed):
    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        lin = nn.Linear(in_features, out_features)
        self.weight = nn.Parameter(lin.weight.detach().clone())
        self.bias = nn.Parameter(lin.bias.detach().clone())
        self.register_buffer("owner", torch.zeros(out_features, in_features, dtype=torch.uint8))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * mask, self.bias)


class PackedConv2d(_Packed):
    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3, padding: int = 1) -> None:
        super().__init__()
        conv = nn.Conv2d(in_channels, out_channels, kernel, padding=padding)
        self.weight = nn.Parameter(conv.weight.detach().clone())
        assert conv.bias is not None
        self.bias = nn.Parameter(conv.bias.detach().clone())
        self.padding = padding
        self.register_buffer("owner", torch.zeros_like(conv.weight, dtype=torch.uint8))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * mask, self.bias, padding=self.padding)


class PackNet(nn.Module):
    """The same shape as the masked-expert model with one expert: convnet features + 4-layer MLP, packed.

    ``backbone=None`` packs the conv layers too (the default convnet architecture); a given frozen
    backbone (e.g. resnet18) is used as a fixed feature extractor and only the MLP is packed.
    """

    def __init__(
        self,
        classes: Sequence[int],
        feature_dim: int = 256,
        expert_dims: Sequence[int] = (256, 128, 128, 64),
        backbone: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.convs = nn.ModuleList()
        self.conv_proj: PackedLinear | None
        if backbone is None:
            self.convs.extend([PackedConv2d(1, 16), PackedConv2d(16, 32)])
            self.conv_proj = PackedLinear(32 * 16, feature_dim)
            in_dim = feature_dim
        else:
            self.conv_proj = None
            in_dim = int(cast(int, backbone.out_dim))
        dims = [in_dim, *expert_dims]
        self.mlp = nn.ModuleList(PackedLinear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))
        self.heads = nn.ModuleList(nn.Linear(expert_dims[-1], c) for c in classes)

    def packed_layers(self) -> list[_Packed]:
        layers = cast(list[_Packed], list(self.convs))
        if self.conv_proj is not None:
            layers.append(self.conv_proj)
        return layers + cast(list[_Packed], list(self.mlp))

    def forward(self, x: torch.Tensor, task: int, training: bool = False) -> torch.Tensor:
        """Logits of task ``task`` (1-based) over that task's classes."""
        masks = [
            (layer.training_mask(task) if training else layer.visible(task)) for layer in self.packed_layers()
        ]
        i = 0
        if self.backbone is None:
            for conv in self.convs:
                x = F.max_pool2d(torch.relu(conv(x, masks[i])), 2)
                i += 1
            x = F.adaptive_avg_pool2d(x, 4).flatten(1)
            assert self.conv_proj is not None  # built whenever backbone is None
            x = torch.relu(self.conv_proj(x, masks[i]))
            i += 1
        else:
            x = self.backbone(x)
        last = len(self.mlp) - 1
        for j, layer in enumerate(self.mlp):
            x = layer(x, masks[i])
            i += 1
            if j < last:
                x = torch.relu(x)
        return self.heads[task - 1](x)

    # ---------------------------------------------------------------------------------- bookkeeping
    @torch.no_grad()
    def start_task(self, task: int) -> None:
        """Before training ``task``: freeze earlier heads and, from task 2 on, every bias."""
        for d, head in enumerate(self.heads):
            head.requires_grad_(d == task - 1)
        for layer in self.packed_layers():
            layer.bias.requires_grad_(task == 1)

    @torch.no_grad()
    def mask_gradients(self, task: int) -> None:
        """Zero the gradients of weights owned by earlier tasks (call between backward and step)."""
        for layer in self.packed_layers():
            if layer.weight.grad is not None:
                layer.weight.grad.mul_(((layer.owner == 0) | (layer.owner == task)).to(layer.weight.dtype))

    @torch.no_grad()
    def prune(self, task: int, ratio: float) -> None:
        """Give task ``task`` the largest ``1 - ratio`` of the free weights it trained; zero the rest."""
        for layer in self.packed_layers():
            free = layer.owner == 0
            values = layer.weight.abs()[free]
            if values.numel() == 0:
                continue
            keep = int(round((1.0 - ratio) * values.numel()))
            order = torch.argsort(values, descending=True, stable=True)
            kept = torch.zeros_like(values, dtype=torch.bool)
            kept[order[:keep]] = True
            new_owner = torch.zeros_like(values, dtype=torch.uint8)
            new_owner[kept] = task
            layer.owner[free] = new_owner
            w = layer.weight.data
            w[free & (layer.owner == 0)] = 0.0

    def ownership(self) -> list[dict[str, float]]:
        """Per packed layer: fraction of weights owned by each task and the free fraction."""
        out = []
        for layer in self.packed_layers():
            o = layer.owner
            row = {"free": float((o == 0).float().mean())}
            for t in range(1, int(o.max()) + 1):
                row[f"task{t}"] = float((o == t).float().mean())
            out.append(row)
        return out
