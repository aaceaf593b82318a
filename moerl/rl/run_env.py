"""The environment of an RL run on the SB3 engine, built from its config (every algorithm's).

Apart from :mod:`moerl.rl.experiment` so that algorithms' run modules (:mod:`moerl.rl.ppo_run`) build the same
env without importing the family module that dispatches to them.
"""

from __future__ import annotations

from typing import Any

from moerl.core.errors import ConfigError
from moerl.rl.config import RLRunConfig, resolve_env


def make_env(config: RLRunConfig) -> Any:
    """One environment of the run's config, wrapped in SB3's ``Monitor``; whatever makes it fail (an unknown
    keyword, a missing package, a continuous action space) is the one-line :class:`ConfigError`."""
    import gymnasium as gym
    from gymnasium.error import DependencyNotInstalled
    from stable_baselines3.common.monitor import Monitor

    from moerl.rl.envs.registration import make

    env_id = resolve_env(config.env)
    try:
        env = make(env_id, **config.env_kwargs)
    except ConfigError:
        raise
    except DependencyNotInstalled as exc:
        raise ConfigError(f"env '{config.env}' needs a package that is not installed: {exc}") from None
    except (TypeError, ValueError, AssertionError) as exc:
        raise ConfigError(f"bad env_kwargs for '{config.env}': {exc}") from None
    if not isinstance(env.action_space, gym.spaces.Discrete):
        env.close()
        raise ConfigError(f"env '{config.env}' has action space {env.action_space}; MoE DQN and MoE PPO need "
                          "Discrete actions")
    return Monitor(env)
