"""Linear layers whose weights are gated by a binary mask.

Why this module exists: the seed (000) wants experts that are sparse sub-networks, with masks that are
either fixed (PackNet-style baseline, 50% density) or *learned* from a low-parameter score matrix. The
learned variant parameterises a score matrix ``S`` by an LU-like product and keeps the top ``rho``
fraction of scores, so a layer with ``out x in`` weights learns its mask through only
``r * (out + in)`` factor values.

Mask kinds
----------
``none``     plain linear layer (mask of ones).
``fixed``    a random binary mask drawn once with *exactly* ``round(rho * out * in)`` ones.
``lu``       ``S = P_r (L U) P_c`` with ``L`` (out x r) unit-lower-trapezoidal, ``U`` (r x in)
             upper-trapezoidal and fixed random row/column permutations ``P_r``/``P_c`` (without them the
             triangular structure would favour the top-left corner of the weight matrix).
``lowrank``  ``S = A B`` without triangular structure: the ablation that tells whether "LU" matters.

Binarisation (``lu`` and ``lowrank``)
-------------------------------------
``topk``      (default) mask = the ``k = round(rho * numel)`` largest scores, exact density; the gradient
              passes straight through (``dM/dS = 1``).
``threshold`` mask = ``sigmoid(S) > 0.5``; gradient of ``sigmoid(S)`` (straight-through estimator); the
              density is not exact, so :meth:`MaskedLinear.density_penalty` returns ``(mean - rho)^2``.
              Factors are initialised randomly (never at 0, where every score is 0 and the hard mask
              would be all-off: a dead start).

:meth:`MaskedLinear.freeze` stores the current binary mask as ``uint8`` and stops all gradients, so a
frozen layer computes the same function bitwise forever (used by continual learning).

The forward pass has no in-place updates and no Python branching on tensor values (branching is on the
configuration only), keeping the module ``torch.func`` friendly.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from moerl.core.errors import ConfigError
from moerl.core.registry import Registry

MASK_KINDS = Registry("mask", {
    "none": "plain linear layer (mask of ones)",
    "fixed": "random binary mask drawn once, exact density",
    "lu": "learned: top-k of a permuted unit-lower x upper trapezoidal score product",
    "lowrank": "learned: top-k of a plain low-rank score product (ablation of lu)",
})
MASK_MODES = Registry("mask mode", {
    "topk": "keep the largest scores at exact density (straight-through gradient)",
    "threshold": "keep scores with sigmoid > 0.5, density held by a penalty",
})


def exact_count(numel: int, density: float) -> int:
    """Number of ones a mask of ``numel`` entries has at ``density`` (at least 1)."""
    return max(1, min(numel, int(round(density * numel))))


def topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Binary float mask with ones at the ``k`` largest entries of ``scores`` (ties broken by index)."""
    flat = scores.reshape(-1)
    idx = torch.topk(flat, k, sorted=False).indices
    hard = torch.zeros_like(flat).scatter(0, idx, 1.0)
    return hard.reshape(scores.shape)


class MaskedLinear(nn.Module):
    """``y = x (W * M)^T + b`` with a binary mask ``M`` of kind ``none | fixed | lu | lowrank``.

    Args:
        in_features, out_features: layer shape.
        mask: mask kind (see module docstring).
        density: target fraction ``rho`` of weights kept (``fixed``, ``lu``, ``lowrank``).
        rank: rank ``r`` of the score factorisation (clipped to ``min(in, out)`` for ``lu``).
        mode: ``topk`` (exact density) or ``threshold`` (sigmoid > 0.5 plus density penalty).
        bias: whether to learn a bias.
        generator: torch generator for the fixed mask and permutations (reproducible given a seed).
    """

    # Buffers, registered in __init__ (declared here for the type checker; which exist depends on the kind).
    frozen_mask: torch.Tensor
    fixed_mask: torch.Tensor
    row_perm: torch.Tensor
    col_perm: torch.Tensor
    unit_diag: torch.Tensor

    def __init__(
        self,
        in_features: int,
        out_features: int,
        mask: str = "none",
        density: float = 0.5,
        rank: int = 32,
        mode: str = "topk",
        bias: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        MASK_KINDS.check(mask)
        MASK_MODES.check(mode)
        if not 0.0 < density <= 1.0:
            raise ConfigError(f"mask density must be in (0, 1], got {density}")
        if rank < 1:
            raise ConfigError(f"mask rank must be a positive integer, got {rank}")
        self.in_features = in_features
        self.out_features = out_features
        self.kind = mask
        self.mode = mode
        self.density_target = float(density)
        self.k = exact_count(in_features * out_features, density)
        self.frozen = False

        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5), generator=generator)
        if self.bias is not None:
            bound = 1.0 / math.sqrt(in_features)
            nn.init.uniform_(self.bias, -bound, bound, generator=generator)

        # Filled by freeze(); always present so state dicts have one shape.
        self.register_buffer("frozen_mask", torch.ones(out_features, in_features, dtype=torch.uint8))
        if mask == "fixed":
            perm = torch.randperm(in_features * out_features, generator=generator)
            fixed = torch.zeros(in_features * out_features, dtype=torch.uint8)
            fixed[perm[: self.k]] = 1
            self.register_buffer("fixed_mask", fixed.reshape(out_features, in_features))
        elif mask == "lu":
            r = min(rank, in_features, out_features)
            # Scale so that entries of L U have unit-order spread; never all zero (threshold dead start).
            std = 1.0 / math.sqrt(r)
            self.mask_l = nn.Parameter(torch.randn(out_features, r, generator=generator) * std)
            self.mask_u = nn.Parameter(torch.randn(r, in_features, generator=generator) * std)
            self.register_buffer("row_perm", torch.randperm(out_features, generator=generator))
            self.register_buffer("col_perm", torch.randperm(in_features, generator=generator))
            self.register_buffer("unit_diag", torch.eye(out_features, r))
        elif mask == "lowrank":
            r = min(rank, in_features, out_features)
            std = 1.0 / math.sqrt(r)
            self.mask_a = nn.Parameter(torch.randn(out_features, r, generator=generator) * std)
            self.mask_b = nn.Parameter(torch.randn(r, in_features, generator=generator) * std)

    # ----------------------------------------------------------------------------------- scores/masks
    @property
    def learnable_mask(self) -> bool:
        return self.kind in ("lu", "lowrank")

    def scores(self) -> torch.Tensor:
        """The real-valued score matrix ``S`` (learnable kinds only)."""
        if self.kind == "lu":
            lower = torch.tril(self.mask_l, diagonal=-1) + self.unit_diag
            upper = torch.triu(self.mask_u)
            s = lower @ upper
            return s.index_select(0, self.row_perm).index_select(1, self.col_perm)
        if self.kind == "lowrank":
            return self.mask_a @ self.mask_b
        raise ValueError(f"mask kind '{self.kind}' has no scores")

    def mask_factors(self) -> list[nn.Parameter]:
        """Parameters of the mask (kept out of weight decay by the learner)."""
        if self.kind == "lu":
            return [self.mask_l, self.mask_u]
        if self.kind == "lowrank":
            return [self.mask_a, self.mask_b]
        return []

    def _live_mask(self) -> torch.Tensor | None:
        """Mask used in forward: float, carrying the straight-through gradient when learnable."""
        if self.frozen:
            return self.frozen_mask.to(self.weight.dtype)
        if self.kind == "none":
            return None
        if self.kind == "fixed":
            return self.fixed_mask.to(self.weight.dtype)
        s = self.scores()
        if self.mode == "topk":
            hard = topk_mask(s.detach(), self.k)
            return hard + (s - s.detach())
        soft = torch.sigmoid(s)
        hard = (s.detach() > 0).to(s.dtype)
        return hard + (soft - soft.detach())

    def binary_mask(self) -> torch.Tensor:
        """The current binary mask as ``uint8`` (ones where the weight is used)."""
        with torch.no_grad():
            m = self._live_mask()
            if m is None:
                return torch.ones_like(self.weight, dtype=torch.uint8)
            return (m.detach() > 0.5).to(torch.uint8)

    def density(self) -> float:
        """Fraction of weights the current mask keeps."""
        return float(self.binary_mask().float().mean())

    def density_penalty(self) -> torch.Tensor:
        """``(mean(sigmoid S) - rho)^2`` in threshold mode; 0 otherwise (top-k density is exact)."""
        if self.frozen or not self.learnable_mask or self.mode != "threshold":
            return self.weight.new_zeros(())
        return (torch.sigmoid(self.scores()).mean() - self.density_target) ** 2

    def effective_weight(self) -> torch.Tensor:
        m = self._live_mask()
        w = self.weight.detach() if self.frozen else self.weight
        return w if m is None else w * m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias: torch.Tensor | None = self.bias
        if bias is not None and self.frozen:
            bias = bias.detach()
        return F.linear(x, self.effective_weight(), bias)

    # ----------------------------------------------------------------------------------- freezing
    @torch.no_grad()
    def freeze(self) -> None:
        """Store the current binary mask as ``uint8`` and stop every gradient of this layer.

        After this the layer is a fixed function: weights, bias and mask factors no longer receive
        gradients (``requires_grad=False``), and the forward pass detaches them as well, so even an
        optimiser that still holds them sees no gradient. Rebuild optimisers after freezing so that
        momentum cannot move the frozen values either.
        """
        self.frozen_mask.copy_(self.binary_mask())
        self.frozen = True
        for p in self.parameters():
            p.requires_grad_(False)

    def get_extra_state(self) -> Any:
        return {"frozen": self.frozen}

    def set_extra_state(self, state: Any) -> None:
        self.frozen = bool(state.get("frozen", False))
        if self.frozen:
            for p in self.parameters():
                p.requires_grad_(False)

    def extra_repr(self) -> str:
        return (
            f"in={self.in_features}, out={self.out_features}, mask={self.kind}, mode={self.mode}, "
            f"density={self.density_target}, frozen={self.frozen}"
        )
