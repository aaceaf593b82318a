"""Algorithms that train moerl's models, all with SB3's surface (learn / predict / save / load).

Imported lazily by name (PEP 562) so that ``import moerl.agents.moe_dqn`` does not pull in the routing or
vision code (and vice versa), and so that torch-free submodules (``moerl.agents.routing_config``, read by
the CLI at start-up) can be imported without Stable-Baselines3 or torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"MoEDQN": "moerl.agents.moe_dqn", "MoEDQNPolicy": "moerl.agents.moe_policy"}

__all__ = ["MoEDQN", "MoEDQNPolicy"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'moerl.agents' has no attribute '{name}'")
