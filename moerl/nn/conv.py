"""A convolutional torso for grid observations: one network, ``E`` experts and ``S`` seeds in one op.

The torso is MinAtar's DQN's (Young & Tian 2019, ``examples/dqn.py`` of the ``minatar`` package): one 3x3
convolution with 16 output channels, stride 1 and no padding (a 10x10 grid becomes 8x8), then a ReLU. It
reads the grid part of a flat feature vector ``[grid (H * W * C) | extra]``, the grid flattened in (row,
column, channel) order as moerl's MinAtar suites lay it out (:class:`moerl.rl.envs.minatar_suite.MinAtarSuiteEnv`);
``extra`` are the features after the grid (the one-hot task id, when the network is fed it).

**Layouts.** Channel-last throughout: the conv output is ``(..., N, H', W', O)``. Flattened, it is the
``H' * W' * O`` (= 1024 for MinAtar) feature vector a dense layer reads, in (row, column, channel) order;
reshaped to ``(..., N, H' * W', O)`` it is the per-position tokens an MoE layer reads (dopamine's MoE
networks tokenize a conv output the same way: one token per spatial position, its channels as features),
so neither layout costs a copy beyond the conv's own output.

**Groups.** The weight is ``nn.Conv2d``'s ``(O, C, k, k)`` with leading *group* dimensions: ``(E, O, C, k, k)``
for ``E`` experts (the ``big`` placement's experts each have a conv of their own), ``(S, O, C, k, k)`` or
``(S, E, O, C, k, k)`` seed-stacked (:mod:`moerl.rl.nets.batched`). The input carries the same leading
dimensions. All ``G = S * E`` convolutions run as one grouped ``conv2d(groups=G)`` over the channel-last input
``(N, H, W, G * C)`` (channels-last memory, no copy for ``G = 1``). Why this and not the alternatives,
measured with ``benchmarks/grid_conv.py`` (one CPU thread, ``C = 6``, 16 channels; ms per forward /
forward+backward, best of 5 rounds, the four alternating within each round, on a 2-core machine loaded by
other work, so the numbers move by tens of percent between runs and sub-millisecond ones are noise):

=====================  =============  =============  ==============  =============
groups x rows           grouped conv   grouped NCHW   unfold + bmm    loop of convs
=====================  =============  =============  ==============  =============
S=8, batch 1 (acting)   0.25 / 0.75    0.12 / 0.75    0.12 / 0.47     0.34 / 1.43
S=8, batch 128          4.6 / 9.1      14 / 39        37 / 46         8.4 / 16
S=64, batch 1           0.48 / 1.2     0.56 / 2.7     0.72 / 1.1      3.0 / 11
S=64, batch 128         45 / 108       138 / 329      292 / 398       74 / 146
=====================  =============  =============  ==============  =============

The grouped conv in channels-last layout wins at update batches by 1.3-1.8x over a Python loop of one
``conv2d`` per group (each returning its own tensor, then stacked) and by 3x over the same grouped conv on a
channels-first copy ``(N, G * C, H, W)``; im2col (``unfold``, then one ``bmm`` over the groups) moves 9x the
input through memory and is the slowest there; acting (batch 1) is a fraction of a millisecond for all but the
loop, whose launches and autograd nodes per group cost 3-10x. Whole networks (same script, batch 128): a
seed-stacked conv network's forward+backward is about a loop of S plain networks' (0.9-1.0x at S=8 and 64:
the arithmetic dominates at that batch), its gain is in acting and in the engine's one Python step for all seeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from moerl.nn.experts import ExpertMLP
from moerl.nn.record import ForwardRecord, HiddenRecord

#: MinAtar's DQN torso: output channels and kernel size (stride 1, no padding).
CONV_CHANNELS = 16
CONV_KERNEL = 3


@dataclass(frozen=True)
class GridSpec:
    """Where the grid sits in a flat feature vector ``[grid (H * W * C, row-column-channel) | extra]``, and the
    conv that reads it."""

    #: ``(H, W, C)``: rows, columns and channels of the grid (MinAtar: ``(10, 10, C)``).
    shape: tuple[int, int, int]
    #: Features after the grid (the one-hot task id when the network is fed it; 0 otherwise).
    extra: int = 0
    channels: int = CONV_CHANNELS
    kernel: int = CONV_KERNEL

    def __post_init__(self) -> None:
        h, w, c = self.shape
        if min(h, w) < self.kernel or c < 1 or self.extra < 0:
            raise ValueError(f"a {self.kernel}x{self.kernel} conv needs a grid of at least that size and >= 1 channel "
                             f"(and extra >= 0), got grid {self.shape}, extra {self.extra}")

    @property
    def grid_dim(self) -> int:
        """``H * W * C``: the grid's share of the flat features."""
        h, w, c = self.shape
        return h * w * c

    @property
    def in_features(self) -> int:
        return self.grid_dim + self.extra

    @property
    def out_hw(self) -> tuple[int, int]:
        """The conv output's rows and columns (a valid conv: ``H - k + 1``, ``W - k + 1``)."""
        h, w, _ = self.shape
        return h - self.kernel + 1, w - self.kernel + 1

    @property
    def positions(self) -> int:
        """Spatial positions of the conv output (MinAtar: 8 x 8 = 64): the tokens of an MoE layer after the conv."""
        oh, ow = self.out_hw
        return oh * ow

    @property
    def conv_features(self) -> int:
        """Units of the flattened conv output (MinAtar: 64 positions x 16 channels = 1024)."""
        return self.positions * self.channels

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat features ``(..., in_features)`` -> (grids ``(..., H, W, C)`` (a view), extra ``(..., extra)``)."""
        return x[..., : self.grid_dim].unflatten(-1, self.shape), x[..., self.grid_dim :]


def grid_conv_relu(grid: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``relu(conv(grid))`` of every group in one grouped ``conv2d`` (stride 1, no padding), channel-last.

    ``weight``: ``(*groups, O, C, k, k)``; ``bias``: ``(*groups, O)``; ``grid``: ``(*groups, *batch, H, W, C)``,
    each group's grids convolved with that group's weights. Returns ``(*groups, *batch, H', W', O)``, a fresh
    tensor (not a view of the input).
    """
    groups = weight.shape[:-4]
    o, c, k = weight.shape[-4], weight.shape[-3], weight.shape[-1]
    g = math.prod(groups)
    batch = grid.shape[len(groups) : -3]
    h, w = grid.shape[-3], grid.shape[-2]
    n = math.prod(batch)
    x = grid.reshape(g, n, h, w, c)
    # (N, H, W, G * C) channel-last, seen as NCHW with channels-last strides: the layout the CPU's grouped conv
    # runs fastest on (module docstring); for one group a view, no copy.
    x = (x[0] if g == 1 else x.permute(1, 2, 3, 0, 4).reshape(n, h, w, g * c)).permute(0, 3, 1, 2)
    y = F.conv2d(x, weight.reshape(g * o, c, k, k), bias.reshape(g * o), groups=g)
    y = torch.relu_(y)  # in place on the conv's fresh output (its backward needs the input and weight only)
    oh, ow = y.shape[-2], y.shape[-1]
    y = y.permute(0, 2, 3, 1)  # (N, H', W', G * O): a view of channels-last memory
    if g == 1:
        return y.reshape(*groups, *batch, oh, ow, o)
    return y.reshape(n, oh, ow, g, o).permute(3, 0, 1, 2, 4).reshape(*groups, *batch, oh, ow, o)


class GridConv(nn.Module):
    """The torso's conv: weight ``(*experts, O, C, k, k)`` and bias ``(*experts, O)``, each group initialised
    exactly like ``nn.Conv2d`` (uniform in ``+-1 / sqrt(C * k * k)``), ``experts`` empty or ``(E,)``.

    ``forward(grid (*lead, *batch, H, W, C)) -> (*lead, *batch, H', W', O)`` with ``lead`` the weight's leading
    dimensions: ``()`` or ``(E,)``; seed-stacked, ``(S,)`` or ``(S, E)``.
    """

    def __init__(self, spec: GridSpec, num_experts: int | None = None):
        super().__init__()
        self.spec = spec
        experts = () if num_experts is None else (num_experts,)
        c, o, k = spec.shape[2], spec.channels, spec.kernel
        self.weight = nn.Parameter(torch.empty(*experts, o, c, k, k))
        self.bias = nn.Parameter(torch.empty(*experts, o))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.weight.shape[-3] * self.weight.shape[-2] * self.weight.shape[-1])
        nn.init.uniform_(self.weight, -bound, bound)  # nn.Conv2d's kaiming_uniform(a=sqrt(5)) is this uniform
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        return grid_conv_relu(grid, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"grid={self.spec.shape}, channels={self.spec.channels}, kernel={self.spec.kernel}"


def channel_activity(y: torch.Tensor) -> torch.Tensor:
    """``(..., H', W', O) -> (..., O)``: each channel's mean ``|activation|`` over the positions.

    What a conv layer records for the dormant-neuron metrics (:mod:`moerl.nn.metrics`): a neuron of a conv
    layer is a channel (Sokar et al. 2023 score a feature map by its mean activation over positions), and the
    metrics' score of a row is its mean ``|value|``, so recording this average scores each channel over the
    batch and all positions. Detached: records are read, never differentiated.
    """
    return y.detach().abs().mean((-3, -2))


class GridTorso(nn.Module):
    """Flat features ``[grid | extra]`` -> the conv's features, ``extra`` appended after them: the torso in front
    of the dense and MoE layers of a Q-network (every placement but ``big``, whose experts hold their own; see
    :mod:`moerl.rl.nets.qnetwork`).

    ``tokens=False``: ``[conv output flattened (H' * W' * O) | extra]``, what a dense layer reads (MinAtar's DQN
    flattens the conv output the same way; the extra features appended as the MLP path appends the one-hot).
    ``tokens=True``: one token per position, ``[its O channels | extra]``, flattened position-major to
    ``H' * W' * (O + extra)`` features, so that an :class:`~moerl.nn.moe.MoEBlock` with ``num_tokens = H' * W'``
    splits them back into exactly those tokens: each token carries the task one-hot, so a router (topk, softmoe)
    can route a position by its task too, and an expert knows the task it computes for.

    ``forward(x (*lead, in_features), task_id, record)``, ``lead`` ``(B,)`` or seed-stacked ``(S, B)``; the
    record gets the conv's per-channel activity under ``name`` (:func:`channel_activity`, ``(*lead, O)``).
    """

    def __init__(self, spec: GridSpec, tokens: bool, name: str = "torso"):
        super().__init__()
        self.spec, self.tokens, self.name = spec, tokens, name
        self.conv = GridConv(spec)

    @property
    def out_features(self) -> int:
        s = self.spec
        return s.positions * (s.channels + s.extra) if self.tokens else s.conv_features + s.extra

    def forward(self, x: torch.Tensor, task_id: torch.Tensor | None = None,
                record: ForwardRecord | None = None) -> torch.Tensor:
        lead = x.shape[:-1]
        grid, extra = self.spec.split(x)
        y = self.conv(grid)  # (*lead, H', W', O)
        if record is not None:
            record.hidden[self.name] = HiddenRecord(channel_activity(y))
        if not self.tokens:
            y = y.reshape(*lead, self.spec.conv_features)
            return torch.cat([y, extra], dim=-1) if self.spec.extra else y
        y = y.reshape(*lead, self.spec.positions, self.spec.channels)
        if self.spec.extra:
            y = torch.cat([y, extra.unsqueeze(-2).expand(*lead, self.spec.positions, self.spec.extra)], dim=-1)
        return y.reshape(*lead, self.out_features)


class ExpertConvMLP(ExpertMLP):
    """``E`` experts that are each a whole Q-network with the conv torso: conv, ReLU, then an MLP of ``sizes``
    (``sizes[0]`` must be ``spec.conv_features + spec.extra``), evaluated together (the ``big`` placement).

    ``forward(x (E, N, spec.in_features)) -> (E, N, out)`` (seed-stacked ``(S, E, N, ...)``), each expert's conv on
    its rows' grids and the ``extra`` features appended after the conv's, as :class:`GridTorso` does. ``hidden``
    receives the conv's per-channel activity ``(E, N, O)`` first, then the MLP's hidden layers: the router's record
    names them ``<layer>.hidden0`` (the conv), ``hidden1``, ...
    """

    can_route = False  # its convs are computed densely; expert_compute "auto" keeps the dense compute

    def __init__(self, num_experts: int, spec: GridSpec, sizes: tuple[int, ...], activate_output: bool = False):
        if sizes[0] != spec.conv_features + spec.extra:
            raise ValueError(f"the MLP after the conv reads {spec.conv_features + spec.extra} features, got {sizes}")
        super().__init__(num_experts, sizes, activate_output)
        self.spec = spec
        self.conv = GridConv(spec, num_experts)

    def forward(self, x: torch.Tensor, hidden: list[torch.Tensor] | None = None) -> torch.Tensor:
        lead = x.shape[:-1]  # (E, N) or (S, E, N)
        grid, extra = self.spec.split(x)
        y = self.conv(grid)  # (*lead, H', W', O)
        if hidden is not None:
            hidden.append(channel_activity(y))
        y = y.reshape(*lead, self.spec.conv_features)
        if self.spec.extra:
            y = torch.cat([y, extra], dim=-1)
        return super().forward(y, hidden)

    def forward_routed(self, tokens: torch.Tensor, idx: torch.Tensor, gates: torch.Tensor | None,
                       hidden: list[torch.Tensor] | None = None) -> torch.Tensor:
        raise NotImplementedError("expert_compute 'routed' does not run experts with a conv torso "
                                  "(QNetworkConfig.validate refuses the combination)")
