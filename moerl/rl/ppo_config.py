"""Config of MoE PPO runs (``moerl train --algo ppo``): the common RL sections plus ``ppo:``.

The ``ppo:`` section is :class:`moerl.rl.algos.ppo.PPOHyperParams` (``MoEPPO``'s own defaults, PureJaxRL's
classic-control PPO); ``network``, ``env``, ``env_kwargs``, ``eval``, ``logging``, ``checkpoint`` and the
flags are DQN's, shared through :class:`moerl.rl.config.RLRunConfig` and validated by the same
:func:`~moerl.rl.config.validate_run`. The config names its algorithm (``algo: ppo``), so a run's
``config.yaml`` tells ``--resume``, ``moerl eval``, ``runs`` and ``report`` what trained it.

Engines as for DQN: ``sb3`` (:class:`~moerl.rl.sb3.moe_ppo.MoEPPO`), ``batched``
(:class:`~moerl.rl.engine.batched_ppo.BatchedPPO`, every seed in one process) and ``auto`` (batched for two or
more seeds of an env it runs). What PPO refuses that DQN takes: ``--compile on`` (BatchedPPO runs eager),
the ``dqn:`` section; a CRL suite whose block length ``n_envs`` does not divide (each of the ``n_envs``
environments runs ``block_steps / n_envs`` steps of each block, so the run switches task on the same grid of
total env steps as DQN's single environment).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from moerl.core.config import resolve, to_dict
from moerl.core.errors import ConfigError
from moerl.rl.algos.ppo import PPOHyperParams
from moerl.rl.config import (
    FLAGS,
    MEMORY_FRACTION,
    RLRunConfig,
    _machine_bytes,
    _RunHead,
    _RunTail,
    default_valued_file_keys,
    refuse_given_sections,
    validate_run,
)

ALGO = "ppo"

@dataclass
class _PPOSection:
    #: The algorithm (written into config.yaml; DQN's configs have no such key).
    algo: str = ALGO
    ppo: PPOHyperParams = field(default_factory=PPOHyperParams)


@dataclass
class PPORunConfig(RLRunConfig, _RunTail, _PPOSection, _RunHead):
    """MoE PPO's run config: :class:`RLRunConfig` plus ``algo: ppo`` and the ``ppo:`` section."""


def build_ppo_config(file: str | None = None, flags: Mapping[str, Any] | None = None,
                     overrides: tuple[str, ...] | list[str] = ()) -> PPORunConfig:
    """Defaults <- ``file`` <- ``flags`` <- ``overrides``, validated (as :func:`moerl.rl.config.build_config`)."""
    keyed = {FLAGS[name]: value for name, value in (flags or {}).items() if value is not None and name != "algo"}
    refuse_given_sections(ALGO, file, overrides)
    config, given = resolve(PPORunConfig, file=file, flags=keyed, overrides=overrides, aliases=FLAGS)
    if file:
        given = given - default_valued_file_keys(file, config, set(keyed), overrides)
    return validate_ppo(config, given)


def validate_ppo(config: PPORunConfig, given: frozenset[str] = frozenset()) -> PPORunConfig:
    """Every value of a PPO run config, or the one-line :class:`ConfigError` (``engine: auto`` is resolved by
    the caller, with the number of seeds: :func:`moerl.rl.batched_runs.resolve_engine`)."""
    if config.algo != ALGO:
        raise ConfigError(f"config key 'algo' is '{config.algo}' in a PPO config; leave it out or write algo: ppo")
    from moerl.rl.config import COMPILE, ENGINES

    ENGINES.check(config.engine)
    COMPILE.check(config.compile)
    if config.compile == "on":
        raise ConfigError("compile: on applies to DQN's batched engine; --algo ppo trains eager on both "
                          "engines: use compile: off")
    return validate_run(config, given, config.ppo.validate, lambda: check_rollout_size(config))


def check_rollout_size(config: PPORunConfig, obs_dim: int = 64) -> None:
    """Refuse a rollout (``n_envs x n_steps`` transitions of ``obs_dim`` float32 observations, with SB3's
    per-transition numbers) larger than one run's share of this machine's memory, naming the keys."""
    p = config.ppo
    need = p.n_envs * p.n_steps * (obs_dim * 4 + 8 * 8)
    limit = int(_machine_bytes() * MEMORY_FRACTION)
    if need > limit:
        raise ConfigError(f"a rollout of ppo.n_envs x ppo.n_steps = {p.n_envs * p.n_steps:,} transitions needs "
                          f"about {need / 2**30:,.1f} GiB; this machine allows {limit / 2**30:.1f} GiB per run")


def ppo_config_dict(config: PPORunConfig) -> dict[str, Any]:
    """The config as written to ``config.yaml`` (and hashed into the run id)."""
    return to_dict(config)
