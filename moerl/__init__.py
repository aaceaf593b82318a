"""moerl: Mixture-of-Experts networks and learned routing under non-stationarity.

The public API, in Stable-Baselines3's shape (``from moerl import MoEDQN`` as ``from stable_baselines3
import DQN``), for the three research lines:

* MoE value networks in multi-task and continual RL: :class:`MoEDQN`, :class:`MoEDQNPolicy`,
  :class:`MoENetworkConfig`, :class:`DQNHyperParams`, :func:`evaluate_tasks`, :class:`TaskSuiteEnv`, and
  the batched engine (many seeds at once): :class:`BatchedDQN`, :class:`BatchedTaskSuite`;
* routing networks: :class:`RoutingLearner`, :class:`LearnerConfig`, :func:`make_router`,
  :func:`build_mtl_dataset`;
* masked-expert vision models: :class:`MaskedExpertLearner`, :class:`PackNetLearner`,
  :class:`MaskedExpertsConfig`, :func:`build_vision_suite`.

Importing ``moerl`` registers its Gymnasium environments under the ``moerl/`` namespace; every other
name is imported on first use, so ``import moerl`` stays fast (no torch, no SB3).
"""

from typing import TYPE_CHECKING

from moerl import envs as _envs  # noqa: F401  (registration side effect)
from moerl._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    # MoE DQN (seed 001)
    "MoEDQN": "moerl.agents.moe_dqn",
    "DQNHyperParams": "moerl.agents.moe_dqn",
    "MoEDQNPolicy": "moerl.agents.moe_policy",
    "MoENetworkConfig": "moerl.agents.moe_policy",
    "evaluate_tasks": "moerl.agents.evaluation",
    "TaskSuiteEnv": "moerl.envs.suite",
    "BatchedDQN": "moerl.agents.batched_dqn",
    "BatchedTaskSuite": "moerl.envs.batched",
    # routing networks (seed 002)
    "RoutingLearner": "moerl.agents.routing_trainer",
    "LearnerConfig": "moerl.agents.routing_trainer",
    "make_router": "moerl.agents.routers",
    "build_mtl_dataset": "moerl.data.mtl",
    # masked-expert vision models (seed 000)
    "MaskedExpertLearner": "moerl.agents.masked_experts",
    "MaskedExpertsConfig": "moerl.agents.vision_config",
    "PackNetLearner": "moerl.agents.packnet",
    "build_vision_suite": "moerl.data.vision_suites",
}
#: Public names whose defining function has another name in its module.
_RENAMED = {"build_mtl_dataset": "build", "build_vision_suite": "build_suite"}
__all__ = sorted(_EXPORTS)
_getattr, __dir__ = lazy_exports(__name__, _EXPORTS, also=("__version__",))


def __getattr__(name: str):  # noqa: ANN202  (PEP 562)
    if name in _RENAMED:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), _RENAMED[name])
    return _getattr(name)


if TYPE_CHECKING:
    from moerl.agents.batched_dqn import BatchedDQN  # noqa: F401
    from moerl.agents.evaluation import evaluate_tasks  # noqa: F401
    from moerl.agents.masked_experts import MaskedExpertLearner  # noqa: F401
    from moerl.agents.moe_dqn import DQNHyperParams, MoEDQN  # noqa: F401
    from moerl.agents.moe_policy import MoEDQNPolicy, MoENetworkConfig  # noqa: F401
    from moerl.agents.packnet import PackNetLearner  # noqa: F401
    from moerl.agents.routers import make_router  # noqa: F401
    from moerl.agents.routing_trainer import LearnerConfig, RoutingLearner  # noqa: F401
    from moerl.agents.vision_config import MaskedExpertsConfig  # noqa: F401
    from moerl.data.mtl import build as build_mtl_dataset  # noqa: F401
    from moerl.data.vision_suites import build_suite as build_vision_suite  # noqa: F401
    from moerl.envs.batched import BatchedTaskSuite  # noqa: F401
    from moerl.envs.suite import TaskSuiteEnv  # noqa: F401
