"""Routed SimpleConvNet (Rosenbaum et al., ICLR 2018): a shared conv trunk and hard-routed FC blocks.

Why this shape: the paper's routed network is a SimpleConvNet trunk (4 x [3x3 conv, 32 filters, BN,
ReLU, 2x2 max-pool]) followed by three fully connected *routed* layers with one block per task at
each layer. A router (any policy, see :mod:`moerl.routing.policies`) picks, for every sample and depth,
which block to apply. Routing is hard and not differentiable, so this module only *applies* given
routes; choosing them is the agents' job.

Per-sample routing is batched: samples are grouped by chosen block (``index_select``), each used block
runs once on its group, and results are put back with an out-of-place ``index_copy``. Unused blocks
are never called, so they cost nothing and receive no gradient (their ``.grad`` stays ``None``).

Two routing modes:

* ``layered``: depth ``d`` chooses among the blocks of layer ``d`` (input, middle, output layers).
* ``recursive``: depth 0 picks an input block, depths ``1..n_middle`` pick from the one pool of
  dimension-compatible middle blocks (which may be reused at several depths), and the last depth
  picks an output block.

With ``allow_pass`` the middle depths get one extra action, PASS (index ``n_blocks``), an identity
block that keeps ``v`` and still counts as a step. Pure torch: nothing here knows Gymnasium or SB3.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, cast

import torch
from torch import nn

RoutingMode = Literal["layered", "recursive"]


class SimpleConvTrunk(nn.Module):
    """4 x [3x3 conv (``channels`` filters), BN, ReLU, 2x2 max-pool]; ``ceil_mode`` handles 28x28 input.

    With ceil-mode pooling 28 -> 14 -> 7 -> 4 -> 2, so the trunk emits ``channels * 4`` features
    instead of losing the borders (floor pooling would end at 1x1).
    """

    def __init__(self, image_shape: Sequence[int] = (28, 28), channels: int = 32, n_layers: int = 4):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for _ in range(n_layers):
            layers += [
                nn.Conv2d(c_in, channels, 3, padding=1),
                nn.BatchNorm2d(channels),
                nn.ReLU(),
                nn.MaxPool2d(2, ceil_mode=True),
            ]
            c_in = channels
        self.net = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            self.out_dim = int(self.net(torch.zeros(2, 1, *image_shape)).shape[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def apply_blocks(blocks: nn.ModuleList, x: torch.Tensor, actions: torch.Tensor, out_dim: int) -> torch.Tensor:
    """Apply ``blocks[actions[i]]`` to ``x[i]`` for every row; action ``len(blocks)`` is PASS (identity).

    Each used block runs once on the rows that chose it; rows are gathered with ``index_select`` and
    scattered back with out-of-place ``index_copy`` so autograd sees a pure function.
    """
    n = len(blocks)
    out = x.new_zeros((x.shape[0], out_dim))
    for a in torch.unique(actions).tolist():
        rows = torch.nonzero(actions == a, as_tuple=True)[0]
        xa = x.index_select(0, rows)
        ya = xa if a == n else blocks[a](xa)
        out = out.index_copy(0, rows, ya)
    return out


class RoutedFC(nn.Module):
    """The routed part: input, middle and output pools of FC blocks, applied along given routes."""

    def __init__(
        self,
        in_dim: int,
        n_blocks: int,
        n_classes: int,
        hidden: int = 48,
        mode: RoutingMode = "layered",
        n_middle: int = 1,
        allow_pass: bool = False,
    ):
        super().__init__()
        if mode not in ("layered", "recursive"):
            raise ValueError(f"unknown routing mode '{mode}'; valid choices: layered, recursive")
        self.mode, self.n_blocks, self.hidden, self.n_classes = mode, n_blocks, hidden, n_classes
        self.allow_pass = allow_pass
        self.in_dim = in_dim
        self.n_middle = n_middle
        act = lambda m: nn.Sequential(m, nn.ReLU())  # noqa: E731
        self.input_blocks = nn.ModuleList(act(nn.Linear(in_dim, hidden)) for _ in range(n_blocks))
        n_mid_pools = n_middle if mode == "layered" else 1
        self.middle_blocks = nn.ModuleList(
            nn.ModuleList(act(nn.Linear(hidden, hidden)) for _ in range(n_blocks)) for _ in range(n_mid_pools)
        )
        self.output_blocks = nn.ModuleList(nn.Linear(hidden, n_classes) for _ in range(n_blocks))

    @property
    def n_depths(self) -> int:
        return self.n_middle + 2

    def pool(self, depth: int) -> nn.ModuleList:
        if depth == 0:
            return self.input_blocks
        if depth == self.n_depths - 1:
            return self.output_blocks
        return cast(nn.ModuleList, self.middle_blocks[depth - 1 if self.mode == "layered" else 0])

    def n_actions(self, depth: int) -> int:
        """Blocks to choose from at ``depth`` (+1 for PASS on middle depths when allowed)."""
        middle = 0 < depth < self.n_depths - 1
        return self.n_blocks + int(self.allow_pass and middle)

    def dim_in(self, depth: int) -> int:
        return self.in_dim if depth == 0 else self.hidden

    def dim_out(self, depth: int) -> int:
        return self.n_classes if depth == self.n_depths - 1 else self.hidden

    def step(self, v: torch.Tensor, depth: int, actions: torch.Tensor) -> torch.Tensor:
        """Apply depth ``depth``'s chosen blocks to representations ``v``."""
        return apply_blocks(self.pool(depth), v, actions, self.dim_out(depth))

    def forward(self, v: torch.Tensor, routes: torch.Tensor) -> torch.Tensor:
        """Apply whole routes: ``routes`` is int64 (B, n_depths)."""
        for d in range(self.n_depths):
            v = self.step(v, d, routes[:, d])
        return v


class RoutedConvNet(nn.Module):
    """SimpleConvNet trunk + :class:`RoutedFC` head (one block per task per layer by default)."""

    def __init__(
        self,
        image_shape: Sequence[int],
        n_tasks: int,
        n_classes: int,
        hidden: int = 48,
        channels: int = 32,
        mode: RoutingMode = "layered",
        n_middle: int = 1,
        allow_pass: bool = False,
        n_blocks: int | None = None,
    ):
        super().__init__()
        self.trunk = SimpleConvTrunk(image_shape, channels)
        self.head = RoutedFC(
            self.trunk.out_dim, n_blocks or n_tasks, n_classes, hidden, mode, n_middle, allow_pass
        )

    def forward(self, x: torch.Tensor, routes: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x), routes)
