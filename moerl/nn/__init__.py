"""Pure-torch building blocks: experts, routers, MoE layers and placements, metrics.

Nothing here imports Stable-Baselines3 or Gymnasium, so the same networks can be trained by any
algorithm (DQN today; PPO later) and mapped over seeds with ``torch.func``.
"""

from moerl.nn.experts import BatchedLinear, ExpertMLP
from moerl.nn.metrics import DORMANT_TAUS, dormant_fraction, dormant_scores, forward_metrics
from moerl.nn.moe import MoEBlock
from moerl.nn.qnetwork import ARCHS, MoEQNetwork, QNetworkConfig, count_parameters
from moerl.nn.record import ForwardRecord, HiddenRecord, RoutingRecord
from moerl.nn.routers import ROUTERS, RouterConfig, build_router

__all__ = [
    "ARCHS", "ROUTERS", "DORMANT_TAUS", "BatchedLinear", "ExpertMLP", "ForwardRecord", "HiddenRecord",
    "MoEBlock", "MoEQNetwork", "QNetworkConfig", "RouterConfig", "RoutingRecord", "build_router",
    "count_parameters", "dormant_fraction", "dormant_scores", "forward_metrics",
]
