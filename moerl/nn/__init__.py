"""The shared pure-torch MoE kit: experts, gating (routers), MoE layers, forward records, metrics.

Nothing here imports Stable-Baselines3, Gymnasium or a research line, so every line builds on it; layers
take seed-stacked weights (a leading seed dimension), so S networks run as one batch. The RL line's
Q-networks (placements, heads) are in :mod:`moerl.rl.nets`. Names are imported lazily
(``moerl.nn.choices`` is torch-free, so the CLI can read the registries without importing torch).
"""

from typing import TYPE_CHECKING

from moerl.core.lazy import lazy_exports

_EXPORTS = {
    "BatchedLinear": "moerl.nn.experts", "ExpertMLP": "moerl.nn.experts",
    "DORMANT_TAUS": "moerl.nn.metrics", "dormant_fraction": "moerl.nn.metrics",
    "dormant_scores": "moerl.nn.metrics", "forward_metrics": "moerl.nn.metrics",
    "MoEBlock": "moerl.nn.moe",
    "ForwardRecord": "moerl.nn.record", "HiddenRecord": "moerl.nn.record", "RoutingRecord": "moerl.nn.record",
    "RouterConfig": "moerl.nn.gating", "build_router": "moerl.nn.gating",
    "ARCHS": "moerl.nn.choices", "ROUTERS": "moerl.nn.choices", "ROUTED_ARCHS": "moerl.nn.choices",
    "BALANCE_LOSSES": "moerl.nn.choices",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from moerl.nn.choices import ARCHS, BALANCE_LOSSES, ROUTED_ARCHS, ROUTERS  # noqa: F401
    from moerl.nn.experts import BatchedLinear, ExpertMLP  # noqa: F401
    from moerl.nn.gating import RouterConfig, build_router  # noqa: F401
    from moerl.nn.metrics import DORMANT_TAUS, dormant_fraction, dormant_scores, forward_metrics  # noqa: F401
    from moerl.nn.moe import MoEBlock  # noqa: F401
    from moerl.nn.record import ForwardRecord, HiddenRecord, RoutingRecord  # noqa: F401
