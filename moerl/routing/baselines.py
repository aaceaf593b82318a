"""Multi-task baselines of the routing paper, on the same SimpleConvNet trunk as the routed network.

Why these four: they bracket routing. ``task-specific-1-fc`` shares everything but the last layer,
``task-specific-all-fc`` shares only the trunk, ``soft-mixture-all-fc`` is the differentiable
(soft) version of routing, and ``cross-stitch-all-fc`` (Misra et al., 2016) learns linear sharing
between task columns. The last two run every block on every sample, which is why their cost grows
with the number of tasks while routing's does not (see ``benchmarks/routing_scaling.py``).

All models map ``(x, task) -> logits`` with ``x`` float (B, 1, H, W) and ``task`` int64 (B,).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import nn

from moerl.core.errors import choice_error
from moerl.routing.nets import SimpleConvTrunk, apply_blocks


def _fc_stack(dims: Sequence[int]) -> list[nn.Module]:
    """Linear layers with ReLU between them (none after the last)."""
    out: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=False)):
        out.append(nn.Sequential(nn.Linear(a, b), nn.ReLU()) if i < len(dims) - 2 else nn.Linear(a, b))
    return out


class _Base(nn.Module):
    def __init__(self, image_shape: Sequence[int], n_tasks: int, n_classes: int, hidden: int, channels: int):
        super().__init__()
        self.trunk = SimpleConvTrunk(image_shape, channels)
        self.n_tasks, self.n_classes, self.hidden = n_tasks, n_classes, hidden
        self.dims = [self.trunk.out_dim, hidden, hidden, n_classes]


class TaskSpecific1FC(_Base):
    """Trunk and first two FC layers shared; one last layer per task."""

    def __init__(self, image_shape, n_tasks, n_classes, hidden=48, channels=32):
        super().__init__(image_shape, n_tasks, n_classes, hidden, channels)
        self.shared = nn.Sequential(*_fc_stack(self.dims[:3]), nn.ReLU())
        self.heads = nn.ModuleList(nn.Linear(hidden, n_classes) for _ in range(n_tasks))

    def forward(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        return apply_blocks(self.heads, self.shared(self.trunk(x)), task, self.n_classes)


class TaskSpecificAllFC(_Base):
    """Only the trunk is shared; each task has its own three FC layers (routing with fixed routes)."""

    def __init__(self, image_shape, n_tasks, n_classes, hidden=48, channels=32):
        super().__init__(image_shape, n_tasks, n_classes, hidden, channels)
        self.columns = nn.ModuleList(nn.Sequential(*_fc_stack(self.dims)) for _ in range(n_tasks))

    def forward(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        return apply_blocks(self.columns, self.trunk(x), task, self.n_classes)


class SoftMixtureAllFC(_Base):
    """Each layer outputs a softmax-weighted sum of all its blocks; weights from a per-task MLP.

    The weight approximator of layer ``l`` is a 2-layer MLP (hidden 64) of ``concat(v, onehot(t))``,
    as in the paper's soft-routing variant. Every block runs on every sample.
    """

    def __init__(self, image_shape, n_tasks, n_classes, hidden=48, channels=32, n_blocks: int | None = None):
        super().__init__(image_shape, n_tasks, n_classes, hidden, channels)
        k = n_blocks or n_tasks
        self.layers = nn.ModuleList()
        self.gates = nn.ModuleList()
        for li, (a, b) in enumerate(zip(self.dims[:-1], self.dims[1:], strict=False)):
            last = li == len(self.dims) - 2
            self.layers.append(nn.ModuleList(nn.Linear(a, b) if last else nn.Sequential(nn.Linear(a, b), nn.ReLU())
                                             for _ in range(k)))
            self.gates.append(nn.Sequential(nn.Linear(a + n_tasks, 64), nn.ReLU(), nn.Linear(64, k)))

    def forward(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        v = self.trunk(x)
        onehot = nn.functional.one_hot(task, self.n_tasks).to(v.dtype)
        for blocks, gate in zip(self.layers, self.gates, strict=True):
            w = torch.softmax(gate(torch.cat([v, onehot], 1)), dim=1)  # (B, k)
            outs = torch.stack([b(v) for b in cast(nn.ModuleList, blocks)], dim=1)  # (B, k, out)
            v = (w.unsqueeze(2) * outs).sum(1)
        return v


class CrossStitchAllFC(_Base):
    """One FC column per task; before each layer a learned ``T x T`` cross-stitch mix of the columns.

    ``alpha`` starts near identity (0.9 on the diagonal, 0.1 spread over the rest) as in Misra et al.
    Every column runs on every sample; task ``t`` reads column ``t``'s output.
    """

    def __init__(self, image_shape, n_tasks, n_classes, hidden=48, channels=32):
        super().__init__(image_shape, n_tasks, n_classes, hidden, channels)
        self.layers = nn.ModuleList(
            nn.ModuleList(nn.Linear(a, b) for _ in range(n_tasks)) for a, b in zip(self.dims[:-1], self.dims[1:], strict=False)
        )
        off = 0.1 / max(n_tasks - 1, 1)
        init = torch.full((n_tasks, n_tasks), off) + torch.eye(n_tasks) * (0.9 - off)
        if n_tasks == 1:
            init = torch.ones(1, 1)
        self.alphas = nn.ParameterList(nn.Parameter(init.clone()) for _ in range(len(self.dims) - 2))

    def forward(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        v = self.trunk(x)
        columns = [cast(nn.ModuleList, layers) for layers in self.layers]  # per depth: one layer per task
        cols = [layer(v) for layer in columns[0]]  # T x (B, hidden)
        for li in range(1, len(self.layers)):
            h = torch.relu(torch.stack(cols, 0))  # (T, B, hidden)
            mixed = torch.einsum("ij,jbh->ibh", self.alphas[li - 1], h)
            cols = [layer(mixed[i]) for i, layer in enumerate(columns[li])]
        out = torch.stack(cols, 0)  # (T, B, n_classes)
        return out[task, torch.arange(x.shape[0])]


#: Baseline name (one of :data:`moerl.routing.config.BASELINES`, the registry of names) -> class.
BASELINES = {
    "task-specific-1-fc": TaskSpecific1FC,
    "task-specific-all-fc": TaskSpecificAllFC,
    "soft-mixture-all-fc": SoftMixtureAllFC,
    "cross-stitch-all-fc": CrossStitchAllFC,
}


def make_baseline(name: str, image_shape: Sequence[int], n_tasks: int, n_classes: int, hidden: int = 48,
                  channels: int = 32) -> nn.Module:
    """Build a baseline by name (see :data:`BASELINES`); ConfigError for an unknown one."""
    if name not in BASELINES:  # the names users see are moerl.routing.config.BASELINES (checked equal there)
        raise choice_error("routing baseline", name, BASELINES)
    return BASELINES[name](image_shape, n_tasks, n_classes, hidden=hidden, channels=channels)
