"""The reference engine: MoE DQN and MoE PPO as Stable-Baselines3 algorithms (one seed per process).

Names are imported lazily, so that importing a sibling module does not pull in SB3's training code.
The public names are re-exported from :mod:`moerl`.
"""

from typing import TYPE_CHECKING

from moerl.core.lazy import lazy_exports

_EXPORTS = {"MoEDQN": "moerl.rl.sb3.moe_dqn", "MoEDQNPolicy": "moerl.rl.sb3.policy",
            "MoEPPO": "moerl.rl.sb3.moe_ppo", "MoEActorCriticPolicy": "moerl.rl.sb3.ppo_policy"}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from moerl.rl.sb3.moe_dqn import MoEDQN  # noqa: F401
    from moerl.rl.sb3.moe_ppo import MoEPPO  # noqa: F401
    from moerl.rl.sb3.policy import MoEDQNPolicy  # noqa: F401
    from moerl.rl.sb3.ppo_policy import MoEActorCriticPolicy  # noqa: F401
