"""The named choices of moerl's Q-networks (archs, routers, balancing losses), defined once.

Kept free of torch so that the CLI can build its help and validate flags without importing torch.
"""

from __future__ import annotations

from moerl.core.registry import Registry

ARCHS = Registry("arch", {
    "dense": "no mixture: in -> hidden -> hidden -> actions (the baseline)",
    "wide": "dense with hidden width x experts (the parameter-count control)",
    "middle": "the last hidden layer is an MoE",
    "final": "the output layer is an MoE",
    "all": "every layer is an MoE",
    "big": "one MoE whose experts are whole Q-networks",
})
#: Archs with a router; ``dense`` and ``wide`` have none (``wide`` still reads ``experts`` as its width factor).
ROUTED_ARCHS = ("middle", "final", "all", "big")

#: What reads the observation before the placements' layers (``network.torso``).
TORSOS = Registry("torso", {
    "mlp": "the flat observation feeds the first layer directly (default)",
    "conv": "MinAtar's DQN torso on the observation's grid (3x3 conv, 16 channels, stride 1, no padding, ReLU), "
            "then the placement's layers; suites with a grid only (minatar-*)",
})

ROUTERS = Registry("router", {
    "softmoe": "Soft MoE: slots; dispatch softmax over tokens, combine softmax over all slots",
    "topk": "softmax over all experts, keep the top k (no renormalisation); optional noise and balancing",
    "hardcoded": "expert = task id (no parameters); with arch big: independent per-task networks",
})
#: The router keys (``network.*``) that only one router reads; the others ignore them, so a listing that
#: compares runs leaves them out of the runs of other routers.
ROUTER_ONLY_KEYS = {"topk": ("topk", "noise_std", "balance_loss"), "softmoe": ("slots_per_expert", "normalize")}
#: How the MoE layers of the ``hardcoded`` and ``topk`` routers compute their experts (``network.expert_compute``).
EXPERT_COMPUTES = Registry("expert compute", {
    "auto": "routed where it applies (routers hardcoded and topk, updates not compiled), dense elsewhere "
            "(the default: measured faster in docs/batched-engine.md)",
    "dense": "every expert on every token, then the gates zero off the unchosen ones (the reference)",
    "routed": "each expert only on the tokens routed to it (grouped_mm) in passes of many tokens per network "
              "(updates); routers hardcoded and topk only",
})
#: Routers whose experts can be computed only where routed (each token goes to a fixed set of experts).
ROUTED_COMPUTE_ROUTERS = ("topk", "hardcoded")
BALANCE_LOSSES = Registry("balance loss", {
    "none": "no balancing loss",
    "importance": "squared coefficient of variation of the experts' summed routing weights",
    "load": "switch-style load balancing (fraction routed x mean probability)",
    "entropy": "negative entropy of the mean routing distribution",
})
