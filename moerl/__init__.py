"""moerl: Mixture-of-Experts networks and learned routing under non-stationarity.

Importing ``moerl`` registers its Gymnasium environments under the ``moerl/`` namespace.
"""

__version__ = "0.1.0"

from moerl import envs as _envs  # noqa: E402,F401  (registration side effect)
