"""Experts evaluated together: one batched matmul over the expert dimension.

A Python loop over experts costs one kernel launch (and one autograd node) per expert and layer;
stacking the experts' weights into ``(E, in, out)`` tensors and using ``torch.baddbmm`` runs all of
them at once. ``benchmarks/bench_experts.py`` measures the difference against the loop.

Seed-stacked weights (:mod:`moerl.rl.nets.batched`): a layer whose weight is ``(S, E, in, out)`` holds ``S``
seeds' experts and maps ``(S, E, N, in)`` to ``(S, E, N, out)`` with one ``bmm`` over ``S * E`` matrices
and an in-place bias add, so many seeds cost one product too. (Not ``baddbmm``: ``bmm`` + add are the kernels
the batched engine used when it ran under ``vmap``, so its results stayed bit-for-bit the same; ``baddbmm``
rounds the last bit differently and was no faster end to end.)
"""

from __future__ import annotations

import math

import torch
from torch import nn


class BatchedLinear(nn.Module):
    """``E`` independent linear layers applied as one ``baddbmm``.

    Input ``(E, N, in)`` (each expert its own N rows), output ``(E, N, out)``. Each expert is
    initialised exactly like ``nn.Linear`` (Kaiming-uniform weights, uniform bias). With seed-stacked
    weights ``(S, E, in, out)`` the input is ``(S, E, N, in)`` and the output ``(S, E, N, out)``.
    """

    def __init__(self, num_experts: int, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.num_experts = num_experts
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(num_experts, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(num_experts, 1, out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
        # nn.Linear's default init (kaiming_uniform with a=sqrt(5)) is uniform(-bound, bound).
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    @property
    def seed_stacked(self) -> bool:
        """Whether the weights carry a leading seed dimension, ``(S, E, in, out)``."""
        return self.weight.dim() == 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.seed_stacked:
            return self.forward_flat(x)
        return self.forward_flat(x.flatten(0, 1)).unflatten(0, self.weight.shape[:2])

    def forward_flat(self, x: torch.Tensor) -> torch.Tensor:
        """The layer on ``(M, N, in)`` inputs, ``M = E`` or, seed-stacked, ``S * E`` (seed-major): one kernel.

        The output is a fresh tensor (not a view), so an in-place activation after it stays cheap in
        autograd (an in-place op on a view makes backward rebuild the whole base tensor)."""
        if not self.seed_stacked:
            return torch.bmm(x, self.weight) if self.bias is None else torch.baddbmm(self.bias, x, self.weight)
        y = torch.bmm(x, self.weight.flatten(0, 1))
        return y if self.bias is None else y.add_(self.bias.flatten(0, 1))

    def load_from_linear(self, expert: int, linear: nn.Linear) -> None:
        """Copy an ``nn.Linear``'s weights into expert ``expert`` (used by tests and conversions)."""
        with torch.no_grad():
            self.weight[expert].copy_(linear.weight.t())
            if self.bias is not None and linear.bias is not None:
                self.bias[expert, 0].copy_(linear.bias)

    def extra_repr(self) -> str:
        return f"experts={self.num_experts}, in={self.in_features}, out={self.out_features}"


class ExpertMLP(nn.Module):
    """``E`` MLPs of identical shape, evaluated together.

    ``sizes = (in, h1, ..., out)``; ReLU after every layer except the last, unless
    ``activate_output`` (an expert that replaces a hidden layer ends with its ReLU).
    ``forward(x, hidden)`` appends each hidden activation ``(E, N, h)`` to ``hidden`` when a list
    is given, so dormant-neuron metrics can see inside the experts without hooks.
    """

    def __init__(self, num_experts: int, sizes: tuple[int, ...], activate_output: bool = False):
        super().__init__()
        if len(sizes) < 2:
            raise ValueError(f"an expert needs at least input and output sizes, got {sizes}")
        self.num_experts = num_experts
        self.sizes = tuple(sizes)
        self.activate_output = activate_output
        self.layers = nn.ModuleList(
            BatchedLinear(num_experts, a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )

    @property
    def out_features(self) -> int:
        return self.sizes[-1]

    def forward(self, x: torch.Tensor, hidden: list[torch.Tensor] | None = None) -> torch.Tensor:
        """``(E, N, in) -> (E, N, out)``; seed-stacked, ``(S, E, N, in) -> (S, E, N, out)``."""
        first = self.layers[0]
        assert isinstance(first, BatchedLinear)
        lead = first.weight.shape[:2] if first.seed_stacked else None
        if lead is not None:
            x = x.flatten(0, 1)  # every layer on S * E matrices; split again only for what leaves
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            assert isinstance(layer, BatchedLinear)
            x = layer.forward_flat(x)
            if i < last or self.activate_output:
                # In place: the layer's output is a fresh tensor its backward does not need, and one
                # activation-sized allocation less per layer is measurable when many seeds are batched.
                x = torch.relu_(x)
                if hidden is not None:
                    hidden.append(x if lead is None else x.unflatten(0, lead))
        return x if lead is None else x.unflatten(0, lead)
