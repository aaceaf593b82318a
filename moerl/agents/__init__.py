"""Algorithms that train moerl's models, all with SB3's surface (learn / predict / save / load).

Names are imported lazily, so that ``import moerl.agents.moe_dqn`` does not pull in the routing or
vision code (and vice versa). The public names are re-exported from :mod:`moerl`.
"""

from typing import TYPE_CHECKING

from moerl._lazy import lazy_exports

_EXPORTS = {"MoEDQN": "moerl.agents.moe_dqn", "MoEDQNPolicy": "moerl.agents.moe_policy"}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from moerl.agents.moe_dqn import MoEDQN  # noqa: F401
    from moerl.agents.moe_policy import MoEDQNPolicy  # noqa: F401
