"""A mixture-of-experts layer that stands in for a dense layer (or a whole network).

``MoEBlock(in, out)`` maps ``(B, in) -> (B, out)`` like the ``nn.Linear`` (+ ReLU) it replaces:
the feature vector is split into ``num_tokens`` equal tokens, routed to experts, and the expert
outputs are put back together. For hidden layers each token's output has ``out / m`` units and the
tokens are concatenated (the "tokenize, don't flatten" layout); for output layers (Q-values) each
token predicts all ``out`` values and the tokens are averaged. With one token (the default) both
are the identity, and one expert with weight 1 gives back exactly the dense layer.

With ``grid`` (the conv torso of the ``big`` placement) each expert starts with a conv of its own
(:class:`~moerl.nn.conv.ExpertConvMLP`): the token is then the whole observation, one per sample, since an
expert's conv reads the whole grid.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from moerl.core.errors import ConfigError
from moerl.nn.conv import ExpertConvMLP, GridSpec
from moerl.nn.experts import ExpertMLP
from moerl.nn.gating import RouterConfig, build_router
from moerl.nn.record import ForwardRecord


class MoEBlock(nn.Module):
    """Tokenise, route to experts, and reassemble.

    ``expert_hidden`` are the hidden sizes inside each expert (empty: each expert is one linear
    layer; ``(h, h)``: each expert is a whole 3-layer MLP, the ``big`` placement).
    ``activate_output``: end each expert with ReLU (a hidden-layer replacement).
    ``grid``: the input is ``[grid | extra]`` features and each expert begins with the conv torso on its grid
    (:class:`~moerl.nn.conv.ExpertConvMLP`); one token only.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        router: RouterConfig,
        *,
        expert_hidden: tuple[int, ...] = (),
        activate_output: bool = False,
        num_tokens: int = 1,
        name: str = "moe",
        grid: GridSpec | None = None,
    ):
        super().__init__()

        if num_tokens < 1 or in_features % num_tokens:
            raise ConfigError(
                f"cannot split {in_features} input features into {num_tokens} equal tokens "
                f"(choose a number of tokens that divides {in_features})"
            )
        self.concat_tokens = activate_output  # hidden layer: concatenate; output layer: average
        if self.concat_tokens and out_features % num_tokens:
            raise ConfigError(
                f"cannot split {out_features} output units into {num_tokens} tokens "
                f"(choose a number of tokens that divides {out_features})"
            )
        self.in_features, self.out_features = in_features, out_features
        self.num_tokens, self.name = num_tokens, name
        token_in = in_features // num_tokens
        token_out = out_features // num_tokens if self.concat_tokens else out_features
        experts: ExpertMLP
        if grid is None:
            experts = ExpertMLP(router.experts, (token_in, *expert_hidden, token_out), activate_output)
        else:
            if num_tokens != 1 or grid.in_features != in_features:
                raise ConfigError(f"experts with a conv torso read the whole observation as one token ({grid.in_features} "
                                  f"features), got {num_tokens} tokens of {in_features} features")
            sizes = (grid.conv_features + grid.extra, *expert_hidden, token_out)
            experts = ExpertConvMLP(router.experts, grid, sizes, activate_output)
        self.router = build_router(router, experts, token_in, num_tokens)

    @property
    def experts(self) -> ExpertMLP:
        return cast(ExpertMLP, self.router.experts)

    def forward(self, x: torch.Tensor, task_id: torch.Tensor | None = None,
                record: ForwardRecord | None = None) -> torch.Tensor:
        lead = x.shape[:-1]  # (B,) or, with seed-stacked weights, (S, B)
        tokens = x.reshape(*lead, self.num_tokens, self.in_features // self.num_tokens)
        y = self.router(tokens, task_id, record, self.name)
        if self.concat_tokens:
            return y.reshape(*lead, self.out_features)
        return y.mean(-2)

