"""What a batched engine accepts as its task suite, and the environments' seeds: shared by every engine.

Why its own module: :class:`~moerl.rl.engine.batched_dqn.BatchedDQN` and
:class:`~moerl.rl.engine.batched_ppo.BatchedPPO` read a suite the same way (the suite itself, or the suite
inside ``gym.make``'s checking wrappers; every other wrapper refused, since the engines run the suite's own
torch dynamics and a wrapper's effect would silently be lost). Pure torch and plain Python: suites are read
by attribute, so this stays free of Gymnasium (an import contract).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from moerl.core.errors import ConfigError
from moerl.core.seed_streams import splitmix64
from moerl.rl.spec import SuiteSpec

#: Gymnasium's own bookkeeping wrappers (``gym.make`` adds them): they change nothing the engine would lose.
_CHECKING_WRAPPERS = ("OrderEnforcing", "PassiveEnvChecker")


def suite_of(env: Any, engine: str = "BatchedDQN", other: str = "MoEDQN") -> SuiteSpec:
    """The task suite the engine reproduces: ``env`` itself, or the suite inside ``gym.make``'s wrappers.

    Why refuse other wrappers: the engine reads the suite's settings and runs its own torch dynamics, so a
    wrapper's effect (``gym.make(id, max_episode_steps=N)`` adds a ``TimeLimit``) would silently be lost;
    the suite's own keyword (``TaskSuiteEnv(..., max_episode_steps=N)``) takes effect. Rendering is not the
    engine's job either. ``engine`` and ``other`` (the SB3 path's class) name the caller in the messages.
    """
    wrappers = []
    inner = env
    while getattr(inner, "unwrapped", inner) is not inner and hasattr(inner, "env"):
        wrappers.append(type(inner).__name__)
        inner = inner.env
    suite = getattr(env, "unwrapped", env)
    if not all(hasattr(suite, key) for key in ("task_names", "block_steps", "episode_limits", "schedule")):
        raise ConfigError(
            f"{engine} runs moerl's task suites (TaskSuiteEnv, e.g. gym.make('moerl/CartPole-MTRL-v0'), or "
            f"MinAtarSuiteEnv), "
            f"not {type(suite).__name__}; for CartPole-v1 use TaskSuiteEnv(['cartpole-default'], 'mtrl', "
            f"task_onehot=False), for other envs {other}")
    lost = [name for name in wrappers if name not in _CHECKING_WRAPPERS]
    if lost:
        raise ConfigError(
            f"{engine} runs the suite itself, so the Gymnasium wrapper(s) {', '.join(lost)} would be ignored; "
            "give the suite its own settings instead (an episode limit: TaskSuiteEnv(..., max_episode_steps=N), "
            "not gym.make(id, max_episode_steps=N))")
    if getattr(suite, "render_mode", None) is not None:
        raise ConfigError(f"{engine} does not render; make the suite without render_mode "
                          f"(got {suite.render_mode!r})")
    return suite


def env_seeds(seeds: Sequence[int], n_envs: int) -> list[int]:
    """The seeds of ``n_envs`` environments per run seed, seed-major (``S * n_envs``).

    Environment 0 of run seed ``s`` is seeded ``s`` (the one environment :class:`BatchedDQN` gives seed
    ``s``); environment ``r > 0`` gets ``splitmix64(s, r)``. Why not SB3's ``s + r`` (``VecEnv.seed``):
    the batched suites' streams are a function of the environment's seed alone, so in a batch of seeds
    0..S-1 seed 0's environment 1 would replay seed 1's environment 0 and the runs would not be
    independent.
    """
    return [s if r == 0 else splitmix64(int(s), r) for s in seeds for r in range(n_envs)]
