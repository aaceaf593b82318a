"""Registration of the routing MDP's Gymnasium id (idempotent, runs on ``import moerl``)."""

from __future__ import annotations

import gymnasium as gym

ROUTING_MDP_ID = "moerl/RoutingMDP-v0"
ROUTING_MDP_ENTRY_POINT = "moerl.routing.mdp:RoutingMDPEnv"


def register_all() -> None:
    """Register ``moerl/RoutingMDP-v0``; the entry point is a string, so torch loads only when it is made."""
    if ROUTING_MDP_ID not in gym.registry:
        # nondeterministic: the collaboration reward depends on the history of choices and the blocks
        # train between episodes, so the same (reset seed, action) need not give the same reward twice.
        gym.register(id=ROUTING_MDP_ID, entry_point=ROUTING_MDP_ENTRY_POINT, nondeterministic=True)
