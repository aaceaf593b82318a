"""Algorithms that train moerl's models, all with SB3's surface (learn / predict / save / load).

Imported lazily by name so that ``import moerl.agents.moe_dqn`` does not pull in the routing or
vision code (and vice versa).
"""

from moerl.agents.moe_dqn import MoEDQN
from moerl.agents.moe_policy import MoEDQNPolicy

__all__ = ["MoEDQN", "MoEDQNPolicy"]
