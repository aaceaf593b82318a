"""Metrics of a network on a batch: dormant neurons (Sokar et al. 2023) and router usage.

Dormant score of neuron i in a layer: s_i = mean|h_i| / mean_k mean|h_k| over the batch; the
neuron is tau-dormant when s_i <= tau. For an expert layer every (expert, unit) pair is a neuron of
that layer, and an expert's mean is taken over the rows it really processed (a topk expert that
received no token in the batch has all its neurons dormant). Output layers are not included.
"""

from __future__ import annotations

import torch

from moerl.nn.record import ForwardRecord

DORMANT_TAUS = (0.0, 0.025, 0.1)


def entropy(probs: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Entropy (nats) of distributions along ``dim``; zero-probability entries contribute 0."""
    return -(probs * torch.log(probs.clamp_min(1e-12))).sum(dim)


def dormant_scores(values: torch.Tensor, processed: torch.Tensor | None = None) -> torch.Tensor:
    """Normalised activity s_i of each neuron.

    ``values``: (N, units) or (E, N, units); ``processed``: (E, N) bool mask of the rows each expert
    handled. Returns (units,) or (E, units). A layer with no activity at all scores 0 everywhere.
    """
    a = values.detach().abs()
    if values.dim() == 2:
        mean_abs = a.mean(0)
    else:
        if processed is None:
            mean_abs = a.mean(1)
        else:
            w = processed.to(a.dtype).unsqueeze(-1)  # (E, N, 1)
            mean_abs = (a * w).sum(1) / w.sum(1).clamp_min(1.0)
    layer_mean = mean_abs.mean()
    if layer_mean <= 0:
        return torch.zeros_like(mean_abs)
    return mean_abs / layer_mean


def dormant_fraction(values: torch.Tensor, tau: float, processed: torch.Tensor | None = None) -> float:
    """Fraction of the layer's neurons that are tau-dormant."""
    return float((dormant_scores(values, processed) <= tau).float().mean())



def forward_metrics(record: ForwardRecord, taus: tuple[float, ...] = DORMANT_TAUS) -> dict[str, float]:
    """Flatten a filled :class:`ForwardRecord` into TensorBoard-ready scalars.

    Keys: ``dormant/tau{tau}/{layer}`` per layer and ``dormant/tau{tau}/all`` (over every neuron
    of every hidden layer), ``router/{layer}/usage_expert{e}``, ``router/{layer}/entropy``,
    ``router/{layer}/aux_loss``.
    """
    out: dict[str, float] = {}
    for tau in taus:
        total, dormant = 0, 0
        for name, rec in record.hidden.items():
            scores = dormant_scores(rec.values, rec.processed)
            flags = scores <= tau
            out[f"dormant/tau{tau:g}/{name}"] = float(flags.float().mean())
            total += flags.numel()
            dormant += int(flags.sum())
        if total:
            out[f"dormant/tau{tau:g}/all"] = dormant / total
    for name, rout in record.routing.items():
        usage = rout.usage.detach().float().mean(0)
        for e, u in enumerate(usage.tolist()):
            out[f"router/{name}/usage_expert{e}"] = u
        out[f"router/{name}/entropy"] = float(rout.entropy.detach())
        out[f"router/{name}/aux_loss"] = float(rout.aux_loss.detach())
    return out

