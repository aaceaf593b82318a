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
import torch.nn.functional as F
from torch import nn

#: Fewest tokens per network (per member, seed-stacked) for which ``expert_compute: routed`` computes the experts
#: only where routed; smaller passes (acting: 1 token per member; evaluation batches) keep the dense compute.
#: From ``benchmarks/routed_experts.py --passes target --batch 4,16,32`` (one expert per token, 8 and 64
#: members): ``big`` (three layers of small products) loses at 4 and 16 tokens (0.57-1.12x) and breaks even
#: to gains at 32 (0.94-1.43x), 128 gains 1.8-3x; ``middle`` gains from 4 tokens on. A rule on shapes, not on
#: data, so a pass always takes the same path.
ROUTED_MIN_TOKENS = 32


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

    #: Whether :meth:`forward_routed` computes these experts (``expert_compute: auto`` routes only such experts).
    can_route = True

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

    def forward_routed(self, tokens: torch.Tensor, idx: torch.Tensor, gates: torch.Tensor | None,
                       hidden: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Each expert on the tokens routed to it only: ``tokens (*lead, T, in)``, each token's ``k`` experts
        ``idx (*lead, T, k)`` and their ``gates (*lead, T, k)`` (None: weight 1) -> ``sum_k gate * expert(token)``,
        ``(*lead, T, out)``; ``lead`` is ``()`` or, seed-stacked, ``(S,)``.

        What :meth:`forward` on every token followed by the gates' combine computes, up to float rounding, for
        ``E / k`` times fewer expert FLOPs: the ``lead * T * k`` (token, expert) rows are sorted by (member,
        expert) and each layer is one ``torch.nn.functional.grouped_mm`` over the ``lead * E`` groups (no
        padding, shapes fixed whatever the routing). ``grouped_mm``'s own bias is not differentiable, so the
        bias is added per row; its row strides must be 16-byte aligned, so thin layers are zero-padded to a
        multiple of 4 units for the kernel. ``hidden`` receives each hidden activation laid out as
        :meth:`forward` gives it, ``(*lead, E, T, h)``, zero on the rows an expert did not process (the
        routers' records mark those rows as not processed).
        """
        *lead, t, d = tokens.shape
        k = idx.shape[-1]
        e = self.num_experts
        members = 1
        for n in lead:
            members *= n
        groups = members * e
        device = tokens.device
        group = idx.long()
        if lead:
            group = group + (torch.arange(members, device=device) * e).view(*lead, 1, 1)
        group = group.reshape(-1)  # (members * T * k,): member-major, then token, then choice
        order = torch.argsort(group, stable=True)
        sorted_group = group.index_select(0, order)
        counts = torch.zeros(groups, dtype=torch.long, device=device).scatter_add_(0, group, torch.ones_like(group))
        offs = counts.cumsum(0).to(torch.int32)
        source = order // k  # each sorted row's token, in (members * T) order
        h = tokens.reshape(-1, d).index_select(0, source)
        dense_row = None
        if hidden is not None:  # each sorted row's place in forward's (members * E * T) layout
            dense_row = sorted_group * t + source % t
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            assert isinstance(layer, BatchedLinear)
            w = layer.weight.flatten(0, 1) if layer.seed_stacked else layer.weight
            h = _grouped_linear(h, w, offs)
            if layer.bias is not None:
                h = h + layer.bias.reshape(groups, -1).index_select(0, sorted_group)
            if i < last or self.activate_output:
                h = torch.relu(h)
                if hidden is not None and dense_row is not None:
                    full = h.new_zeros(groups * t, h.shape[-1]).index_copy(0, dense_row, h)
                    hidden.append(full.view(*lead, e, t, -1))
        inverse = torch.empty_like(order).scatter_(0, order, torch.arange(order.numel(), device=device))
        y = h.index_select(0, inverse)  # back to (member, token, choice) order
        if gates is not None:
            y = y * gates.reshape(-1, 1)
        if k == 1:
            return y.view(*lead, t, -1)
        return y.view(*lead, t, k, -1).sum(-2)


def _grouped_linear(h: torch.Tensor, w: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
    """``grouped_mm`` of rows ``h (N, in)`` (sorted by group) with weights ``w (G, in, out)``, group ``g`` the
    rows ``offs[g-1]:offs[g]``. ``in`` and ``out`` that are not a multiple of 4 floats (16 bytes, the kernel's
    stride alignment; e.g. the 2 Q-values) are zero-padded for the kernel and the output sliced back."""
    n_in, n_out = w.shape[-2], w.shape[-1]
    pad_in, pad_out = -n_in % 4, -n_out % 4
    if pad_in or pad_out:
        w = F.pad(w, (0, pad_out, 0, pad_in))
    if pad_in:
        h = F.pad(h, (0, pad_in))
    y = F.grouped_mm(h.contiguous(), w, offs=offs)
    return y[:, :n_out] if pad_out else y
