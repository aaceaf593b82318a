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
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch


class MemberAdam(torch.optim.Optimizer):
    """Adam with ``lr`` and ``eps`` of shape ``(S,)`` for parameters whose first dimension is the member."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: torch.Tensor, eps: torch.Tensor,
                 betas: tuple[float, float] = (0.9, 0.999)) -> None:
        super().__init__(params, {"betas": betas})
        if lr.dim() != 1 or lr.shape != eps.shape:
            raise ValueError(f"lr and eps must be (S,) tensors of one shape, got {tuple(lr.shape)} and {tuple(eps.shape)}")
        self.lr, self.eps = lr, eps

    def _stepped(self, first_step: Callable[[torch.Tensor], Any]) -> Iterator[
            tuple[torch.Tensor, torch.Tensor, dict[str, Any], float, float, tuple[int, ...]]]:
        """Each parameter with a gradient: ``(p, grad, state, beta1, beta2, members)``, its state made on first use
        (``first_step(p)``: the step count's initial value), ``members`` the shape that broadcasts an ``(S,)``
        tensor along ``p``'s member dimension."""
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = first_step(p)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                yield p, grad, state, beta1, beta2, (-1,) + (1,) * (p.dim() - 1)

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        for p, grad, state, beta1, beta2, members in self._stepped(lambda p: 0):
            state["step"] += 1
            step = state["step"]
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            step_size = (self.lr / (1 - beta1 ** step)).view(members)
            denom = (exp_avg_sq.sqrt() / math.sqrt(1 - beta2 ** step)).add_(self.eps.view(members))
            p.addcdiv_(exp_avg * step_size, denom, value=-1.0)


class MaskedMemberAdam(MemberAdam):
    """:class:`MemberAdam` whose :meth:`step` can leave members out, each member with its own step count.

    Why: PPO's ``target_kl`` stops a seed's epochs early (SB3 breaks before the optimiser step), so in one
    batch of seeds those that stopped must see no step at all (weights, moments and bias-correction count
    unchanged) while the others go on; torch's Adam keeps one step count per tensor. Without ``active`` every
    member steps, as :class:`MemberAdam` does (bias corrections from an ``(S,)`` count instead of one int).
    """

    @torch.no_grad()
    def step(self, closure: None = None, active: torch.Tensor | None = None) -> None:  # type: ignore[override]
        counts = self._stepped(lambda p: torch.zeros(p.shape[0], dtype=torch.float64, device=p.device))
        for p, grad, state, beta1, beta2, members in counts:
            taken = torch.ones(p.shape[0], dtype=torch.bool, device=p.device) if active is None else active
            state["step"] += taken
            step = state["step"].clamp(min=1)  # a member never stepped: any finite correction (masked)
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
            mask = taken.view(members)
            exp_avg.copy_(torch.where(mask, exp_avg.lerp(grad, 1 - beta1), exp_avg))
            exp_avg_sq.copy_(torch.where(mask, torch.addcmul(exp_avg_sq * beta2, grad, grad, value=1 - beta2),
                                         exp_avg_sq))
            step_size = (self.lr / (1 - beta1 ** step).float()).view(members)
            denom = (exp_avg_sq.sqrt() / (1 - beta2 ** step).sqrt().float().view(members)).add_(self.eps.view(members))
            p.sub_(torch.where(mask, exp_avg * step_size / denom, 0.0))
