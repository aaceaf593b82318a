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

**Torsos** (``torso``). ``mlp`` (the default): the features feed the trunk above. ``conv``: the features are
``[grid | extra]`` (a grid suite's observation, the one-hot task id as ``extra``; the grid's shape comes from the
observation layout, :attr:`~moerl.rl.nets.obs_layout.ObsLayout.grid_shape`, so both engines build the same
network) and the trunk is MinAtar's DQN (Young & Tian 2019): ``conv -> hidden -> actions``, the conv
(:mod:`moerl.nn.conv`: 3x3, 16 channels, stride 1, no padding, ReLU; 10x10 -> 8x8 x 16 = 1024 features) in
place of the first hidden layer, ``extra`` appended after its features (as the MLP path appends the one-hot).
The grid arrives as the encoder gives every input, rescaled to [-1, 1] by default (MinAtar's DQN reads its
0/1 cells: ``rescale_inputs: false``; a valid conv has no zero padding for the shift to matter). Per placement:

==========  ==========================================================================================
``dense``   ``conv -> [1024 | one-hot] -> hidden -> actions``: MinAtar's DQN network (plus the one-hot)
``wide``    the same, hidden width x ``experts``
``middle``  the hidden layer, right after the conv, is an MoE over *position tokens* (below), whose 1024
            outputs feed the output layer
``final``   the output layer is an MoE (``tokens`` splits the hidden vector, as on the MLP path)
``all``     both: the position-token MoE, then an MoE output layer over its 1024 outputs (``tokens`` splits
            those)
``big``     every expert is a whole MinAtar DQN *with its own conv* (``big`` makes the whole network the
            expert): the router reads the flat observation as one token (``tokens`` must be 1), so a soft MoE
            there is a softmax gate over the experts' Q-values, as ``big`` is on the MLP path at one token
==========  ==========================================================================================

**Position tokens** (``middle``, ``all``): the MoE right after the conv reads one token per position of the
conv output, 8 x 8 = 64 tokens of ``[16 channels | one-hot]``, as dopamine's MoE networks tokenize a conv
output (``labs/moes``, ``PER_PIXEL``), and, as there, each expert maps a token back to the token's size
through a hidden layer as wide as the layer it replaces: ``16 + one-hot -> hidden -> 16`` (ReLU after both, as
every hidden layer here); the 64 outputs, concatenated in position order, are the 1024 features the next
layer reads. ``tokens`` does not apply to that layer (``middle`` refuses it). Why tokens there: with one
token per sample a soft MoE's slots all receive the same input and its combine weights collapse into a
softmax gate per sample; 64 position tokens let the slots mix positions and topk route each position to its
experts. The experts are small (``E x (19 x 128 + 128 x 16)`` weights at hidden 128 and 3 tasks, against the
dense hidden layer's ``1027 x 128``), as in dopamine's, where an MoE scales with its number of experts.
*Cost*: an expert's hidden layer holds ``hidden`` units per slot (softmoe) or token (topk, hardcoded), and a
soft MoE has as many slots as tokens by default, so per sample 64 x ``hidden`` activations where the dense layer
has ``hidden``: 8 seeds of ``middle``/softmoe (4 experts) took ~300 ms per forward+backward at batch 128
against ~40 ms for ``dense`` (one loaded CPU thread, ``benchmarks/grid_conv.py``); with
``slots_per_expert: 1`` (4 slots) it took 28 ms against dense's 31 ms in one interleaved measurement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from moerl.core.errors import ConfigError
from moerl.nn.choices import ARCHS, ROUTED_ARCHS, TORSOS
from moerl.nn.conv import GridSpec, GridTorso
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
    #: Tokens the features are split into before an MoE layer (with ``torso: conv``: see the module docs).
    tokens: int = 1
    #: What reads the observation first (:data:`~moerl.nn.choices.TORSOS`): ``mlp`` (the flat features) or
    #: ``conv`` (MinAtar's conv torso on the observation's grid; suites with a grid only).
    torso: str = "mlp"

    def validate(self) -> QNetworkConfig:

        ARCHS.check(self.arch)
        TORSOS.check(self.torso)
        if self.hidden < 1:
            raise ConfigError(f"hidden width must be >= 1, got {self.hidden}")
        if self.tokens < 1:
            raise ConfigError(f"tokens must be >= 1, got {self.tokens}")
        if self.expert_compute == "routed" and self.arch not in ROUTED_ARCHS:
            raise ConfigError(f"expert_compute 'routed' does not apply to arch '{self.arch}' (it has no router); "
                              f"archs with a router: {', '.join(ROUTED_ARCHS)}")
        if self.torso == "conv" and self.tokens != 1 and self.arch in ("big", "middle"):
            why = ("each expert's conv reads the whole grid, one token per sample" if self.arch == "big" else
                   "its MoE reads one token per conv position")
            raise ConfigError(f"tokens does not apply to arch '{self.arch}' with torso 'conv' ({why}); "
                              f"got tokens {self.tokens}, leave it at 1")
        if self.torso == "conv" and self.arch == "big":
            if self.expert_compute == "routed":
                raise ConfigError("expert_compute 'routed' does not run arch 'big' with torso 'conv' (its experts' "
                                  "convs are computed densely); use expert_compute dense")
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

    ``grid_shape``: ``(H, W, C)`` of the grid the features begin with (:attr:`ObsLayout.grid_shape
    <moerl.rl.nets.obs_layout.ObsLayout.grid_shape>`), read by ``torso: conv`` (required there, ignored by
    ``mlp``); the features after the grid (``in - H * W * C``, the one-hot) are appended after the conv's.

    Every layer also runs with *seed-stacked* parameters (a leading dimension ``S`` on each, as
    :class:`moerl.rl.nets.batched.BatchedQNetwork` registers them): then ``(S, B, in)`` (+ ``(S, B)``) ->
    ``(S, B, n_actions)``, seed ``i`` computed with its own slice of the weights, and every record
    entry gains the leading ``S``.
    """

    def __init__(self, in_features: int, n_actions: int, config: QNetworkConfig,
                 grid_shape: tuple[int, int, int] | None = None):
        super().__init__()
        config.validate()
        self.config = config
        self.in_features, self.n_actions = in_features, n_actions
        self.grid_shape: tuple[int, int, int] | None = (
            None if grid_shape is None else (int(grid_shape[0]), int(grid_shape[1]), int(grid_shape[2])))
        h, arch, router = config.hidden, config.arch, config
        m = config.tokens
        grid = self._grid_spec(in_features, config, self.grid_shape)
        #: The conv torso in front of the layers (``torso: conv``, every arch but ``big``), else None.
        self.torso: GridTorso | None = None
        layers: list[nn.Module]
        if arch == "big":  # with the conv torso, each expert is a whole MinAtar DQN, its conv included
            layers = [MoEBlock(in_features, n_actions, router, expert_hidden=(h,) if grid else (h, h),
                               num_tokens=m, name="big", grid=grid)]
        elif grid is not None:
            layers = self._conv_trunk(grid, n_actions, config)
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

    def _conv_trunk(self, grid: GridSpec, n_actions: int, config: QNetworkConfig) -> list[nn.Module]:
        """``conv -> hidden -> actions`` (module docs): sets :attr:`torso`, returns the hidden and output layers."""
        h, arch = config.hidden, config.arch
        position_moe = arch in ("middle", "all")
        self.torso = GridTorso(grid, tokens=position_moe)
        hidden: nn.Module
        if position_moe:  # one token per conv position; each expert token -> hidden -> 16 channels
            hidden = MoEBlock(self.torso.out_features, grid.conv_features, config, expert_hidden=(h,),
                              activate_output=True, num_tokens=grid.positions, name="hidden1_moe")
            width = grid.conv_features
        else:
            width = h * config.experts if arch == "wide" else h
            hidden = DenseLayer(self.torso.out_features, width, True, "hidden1")
        output: nn.Module
        if arch in ("final", "all"):
            output = MoEBlock(width, n_actions, config, num_tokens=config.tokens, name="output_moe")
        else:
            output = DenseLayer(width, n_actions, False, "output")
        return [hidden, output]

    @staticmethod
    def _grid_spec(in_features: int, config: QNetworkConfig,
                   shape: tuple[int, int, int] | None) -> GridSpec | None:
        """The conv torso's :class:`GridSpec` (``torso: conv``), or None (``mlp``)."""
        if config.torso != "conv":
            return None
        if shape is None:
            raise ConfigError("torso 'conv' reads a grid, but these observations have none (no grid shape); use a "
                              "suite with a grid (minatar-mtrl, minatar-crl) or torso 'mlp'")
        extra = in_features - math.prod(shape)
        if extra < 0:
            raise ConfigError(f"torso 'conv': {in_features} input features cannot hold a {shape} grid")
        return GridSpec(shape, extra)

    def forward(self, x: torch.Tensor, task_id: torch.Tensor | None = None,
                record: ForwardRecord | None = None) -> torch.Tensor:
        if self.torso is not None:
            x = self.torso(x, task_id, record)
        for layer in self.layers:
            x = layer(x, task_id, record)
        return x


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
