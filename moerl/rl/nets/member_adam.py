"""Adam over seed-stacked parameters with a learning rate and an epsilon per member.

Why our own: the batched engine holds every member's weights in one tensor with a leading member dimension
(:mod:`moerl.rl.nets.batched`), and torch's Adam takes one learning rate and one epsilon per parameter
group, so members of one batch could not differ in them. This is Adam's update as torch writes it
(``torch.optim.Adam``, ``foreach=False``: moments, bias corrections, ``denom = sqrt(v_hat) + eps``), with
``lr`` and ``eps`` broadcast along the member dimension. It is used only when members differ; a batch of
one config keeps torch's fused Adam, so its numbers stay what they were.

A member whose learning rate is 0 is left exactly as it is (``p - 0 * x == p``): what a member that reached
its budget needs while the others go on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


class MemberAdam(torch.optim.Optimizer):
    """Adam with ``lr`` and ``eps`` of shape ``(S,)`` for parameters whose first dimension is the member."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: torch.Tensor, eps: torch.Tensor,
                 betas: tuple[float, float] = (0.9, 0.999)) -> None:
        super().__init__(params, {"betas": betas})
        if lr.dim() != 1 or lr.shape != eps.shape:
            raise ValueError(f"lr and eps must be (S,) tensors of one shape, got {tuple(lr.shape)} and {tuple(eps.shape)}")
        self.lr, self.eps = lr, eps

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                step = state["step"]
                exp_avg, exp_avg_sq, grad = state["exp_avg"], state["exp_avg_sq"], p.grad
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                members = (-1,) + (1,) * (p.dim() - 1)
                step_size = (self.lr / (1 - beta1 ** step)).view(members)
                denom = (exp_avg_sq.sqrt() / math.sqrt(1 - beta2 ** step)).add_(self.eps.view(members))
                p.addcdiv_(exp_avg * step_size, denom, value=-1.0)
