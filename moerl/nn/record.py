"""What a forward pass can report besides its output: routing weights and hidden activations.

Networks take an optional :class:`ForwardRecord`; when one is given, each layer writes what the
metrics need into it. Nothing is stored on the modules themselves, so forward stays free of state
(the design's rule for ``torch.func`` friendliness) and costs nothing when no record is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class RoutingRecord:
    """One MoE layer's routing on one batch.

    ``usage``: (B, E) weight each sample gives each expert (softmoe: mean combine weight over the
    sample's tokens; topk: fraction of the sample's tokens that selected the expert; hardcoded:
    one-hot). ``entropy``: mean per-token entropy of the router's distribution (nats).
    ``aux_loss``: the router's balancing loss (0 when disabled).
    """

    usage: torch.Tensor
    entropy: torch.Tensor
    aux_loss: torch.Tensor


@dataclass
class HiddenRecord:
    """Post-ReLU activations of one hidden layer.

    ``values``: (N, units) for a plain layer or (E, N, units) for an expert layer. ``processed``:
    (E, N) bool mask of the rows each expert really handled (topk/hardcoded route each token to
    some experts only), or None when every row counts.
    """

    values: torch.Tensor
    processed: torch.Tensor | None = None


@dataclass
class ForwardRecord:
    """Filled by a network's forward when passed in; read by :mod:`moerl.nn.metrics`."""

    routing: dict[str, RoutingRecord] = field(default_factory=dict)
    hidden: dict[str, HiddenRecord] = field(default_factory=dict)

    def aux_loss(self) -> torch.Tensor | None:
        """Sum of every MoE layer's auxiliary loss, or None when there is no MoE layer."""
        losses = [r.aux_loss for r in self.routing.values()]
        return torch.stack(losses).sum() if losses else None
