"""moerl: Mixture-of-Experts networks and learned routing under non-stationarity.

The public API, in Stable-Baselines3's shape (``from moerl import MoEDQN`` as ``from stable_baselines3
import DQN``), for the three research lines:

* MoE value networks in multi-task and continual RL: :class:`MoEDQN`, :class:`MoEDQNPolicy`,
  :class:`MoENetworkConfig`, :class:`DQNHyperParams`, :func:`evaluate_tasks`, :class:`TaskSuiteEnv`, and
  the batched engine (many seeds at once): :class:`BatchedDQN`, :class:`BatchedTaskSuite`; MoE actor-critics
  trained by PPO: :class:`MoEPPO`, :class:`MoEActorCriticPolicy`, :class:`PPOHyperParams`;
* routing networks: :class:`RoutingLearner`, :class:`LearnerConfig`, :func:`make_router`,
  :func:`build_mtl_dataset`;
* masked-expert vision models: :class:`MaskedExpertLearner`, :class:`PackNetLearner`,
  :class:`MaskedExpertsConfig`, :func:`build_vision_suite`.

Importing ``moerl`` registers its Gymnasium environments under the ``moerl/`` namespace; every other
name is imported on first use, so ``import moerl`` stays fast (no torch, no SB3).
"""

from typing import TYPE_CHECKING

from moerl import _compat
from moerl.core.lazy import lazy_exports
from moerl.rl.envs import registration as _rl_envs
from moerl.routing import registration as _routing_envs

_rl_envs.register_all()
_routing_envs.register_all()
_compat.install()

__version__ = "0.1.0"

_EXPORTS = {
    # MoE DQN (seed 001)
    "MoEDQN": "moerl.rl.sb3.moe_dqn",
    "DQNHyperParams": "moerl.rl.algos.dqn",
    "MoEDQNPolicy": "moerl.rl.sb3.policy",
    "MoENetworkConfig": "moerl.rl.nets.encoder",
    "evaluate_tasks": "moerl.rl.evaluation",
    "TaskSuiteEnv": "moerl.rl.envs.suite",
    "BatchedDQN": "moerl.rl.engine.batched_dqn",
    "BatchedTaskSuite": "moerl.rl.envs.batched",
    # MoE PPO (issue 26; the algorithm arXiv 2406.18420 ran)
    "MoEPPO": "moerl.rl.sb3.moe_ppo",
    "PPOHyperParams": "moerl.rl.algos.ppo",
    "MoEActorCriticPolicy": "moerl.rl.sb3.ppo_policy",
    # routing networks (seed 002)
    "RoutingLearner": "moerl.routing.trainer",
    "LearnerConfig": "moerl.routing.trainer",
    "make_router": "moerl.routing.policies",
    "build_mtl_dataset": "moerl.routing.data",
    # masked-expert vision models (seed 000)
    "MaskedExpertLearner": "moerl.masked.learner",
    "MaskedExpertsConfig": "moerl.masked.config",
    "PackNetLearner": "moerl.masked.packnet",
    "build_vision_suite": "moerl.masked.suites",
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
    from moerl.masked.config import MaskedExpertsConfig  # noqa: F401
    from moerl.masked.learner import MaskedExpertLearner  # noqa: F401
    from moerl.masked.packnet import PackNetLearner  # noqa: F401
    from moerl.masked.suites import build_suite as build_vision_suite  # noqa: F401
    from moerl.rl.algos.dqn import DQNHyperParams  # noqa: F401
    from moerl.rl.algos.ppo import PPOHyperParams  # noqa: F401
    from moerl.rl.engine.batched_dqn import BatchedDQN  # noqa: F401
    from moerl.rl.envs.batched import BatchedTaskSuite  # noqa: F401
    from moerl.rl.envs.suite import TaskSuiteEnv  # noqa: F401
    from moerl.rl.evaluation import evaluate_tasks  # noqa: F401
    from moerl.rl.nets.encoder import MoENetworkConfig  # noqa: F401
    from moerl.rl.sb3.moe_dqn import MoEDQN  # noqa: F401
    from moerl.rl.sb3.moe_ppo import MoEPPO  # noqa: F401
    from moerl.rl.sb3.policy import MoEDQNPolicy  # noqa: F401
    from moerl.rl.sb3.ppo_policy import MoEActorCriticPolicy  # noqa: F401
    from moerl.routing.data import build as build_mtl_dataset  # noqa: F401
    from moerl.routing.policies import make_router  # noqa: F401
    from moerl.routing.trainer import LearnerConfig, RoutingLearner  # noqa: F401
