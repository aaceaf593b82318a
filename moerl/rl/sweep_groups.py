"""How ``moerl sweep`` batches the RL line's runs (MoE DQN and MoE PPO): which configs may share a batch, how a
group trains, and what it costs; and what one sweep point is (:func:`sweep_config`, ``algo: ppo`` included).

A sweep's runs of one architecture differ only in what the batched engine holds per member (the seed, the
env settings of one set of tasks, the budget, the replay capacity, the discount, the exploration schedule,
the learning rate and Adam's epsilon:
:data:`~moerl.rl.batched_runs.MEMBER_KEYS`, :data:`~moerl.rl.engine.batched_dqn.PER_MEMBER`); such runs
get one :func:`group_key`, and the sweep trains them in processes of many members
(:func:`moerl.runs.sweep.jobs.group_plans`), each member still writing its own run directory. PPO's runs group
the same way over what :class:`~moerl.rl.engine.batched_ppo.BatchedPPO` holds per member (env settings,
learning rate, Adam's epsilon, discount, GAE lambda), with one budget per group (BatchedPPO's members cannot
leave a batch early); a PPO config never shares a key with a DQN config (``algo`` is part of the key).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from moerl.core.config import from_dict, load_yaml, resolve, to_dict
from moerl.core.config_files import resolve_config_file
from moerl.core.errors import ConfigError
from moerl.rl.batch_engines import engine_of, suite_spec
from moerl.rl.config import FLAGS, algo_of, check_algo, refuse_other_algos, resolve_env
from moerl.rl.config import sweep_config as dqn_sweep_config
from moerl.rl.ppo_config import PPORunConfig, validate_ppo
from moerl.rl.ppo_run import run_suite_info
from moerl.runs.console import Console


def sweep_config(base_file: str | None, keys: Mapping[str, Any]) -> dict[str, Any]:
    """One ``moerl sweep`` point: :func:`moerl.rl.config.sweep_config` for DQN; for ``algo: ppo`` (a key of the
    point or of the base config file) the same over :class:`~moerl.rl.ppo_config.PPORunConfig`, validated as
    ``moerl train --algo ppo`` validates it (a ``dqn.`` key in a PPO point is refused, and the reverse)."""
    from moerl.rl.config import default_valued_file_keys

    file = str(resolve_config_file(base_file)) if base_file else None
    flags = {FLAGS.get(k, k): v for k, v in keys.items()}
    algo = check_algo(flags.pop("algo", None) or (algo_of(load_yaml(file)) if file else None))
    refuse_other_algos(algo, flags, "the sweep")
    if algo != "ppo":
        return dqn_sweep_config(base_file, {k: v for k, v in keys.items() if k != "algo"})
    config, given = resolve(PPORunConfig, file=file, flags=flags, aliases=FLAGS)
    if file:
        given = given - default_valued_file_keys(file, config, set(flags), ())
    checked = validate_ppo(config, given)
    # What only the env can tell (ppo.n_envs against the CRL blocks, a random task order), refused here as
    # `moerl train` refuses it, so that a sweep never launches a run that stops at its start.
    run_suite_info(checked)
    return to_dict(checked)


def group_key(config: Mapping[str, Any]) -> str | None:
    """Equal for configs whose runs may train in one batch, None for a config that trains alone (the sb3
    engine, or an env the batched engine does not run)."""
    from moerl.rl.batched_runs import MEMBER_KEYS

    if config.get("engine") not in ("batched", "auto"):
        return None
    engine = engine_of(config)
    parsed = from_dict(engine.schema, dict(config))
    try:
        tasks = suite_spec(resolve_env(parsed.env), parsed.env_kwargs).task_names
    except ConfigError:
        return None
    section = engine.algo  # the algorithm's own settings: dqn: or ppo:
    per_member = {k.split(".", 1)[1] for k in engine.member_keys() if k.startswith(f"{section}.")}
    # DQN's budgets are per member (timesteps is one of MEMBER_KEYS): a member leaves its batch at its own;
    # PPO's members share one (the key holds it)
    own = MEMBER_KEYS if section == "dqn" else tuple(k for k in MEMBER_KEYS if k != "timesteps")
    shared = {key: value for key, value in config.items() if key not in (*own, "eval", section, "seed")}
    shared["eval"] = {k: v for k, v in config.get("eval", {}).items() if k != "reference_runs"}
    shared[section] = {k: v for k, v in config.get(section, {}).items() if k not in per_member}
    shared["tasks"] = list(tasks)
    if section == "ppo":  # the budget as trained (null: the suite's own), so MTRL's 3e7 meets CRL's 3 x 1e7
        from moerl.rl.config import default_timesteps
        from moerl.rl.ppo_run import whole_rollouts

        if parsed.timesteps is None:
            parsed.timesteps = default_timesteps(parsed)
        whole_rollouts(parsed)
        shared["timesteps"] = parsed.timesteps
    return hashlib.sha256(json.dumps(shared, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _members(members: Sequence[Mapping[str, Any]], device: str | None) -> tuple[list[Any], list[int], list[str]]:
    configs, seeds, names = [], [], []
    for member in members:
        engine = engine_of(member["config"])
        config = from_dict(engine.schema, dict(member["config"]))
        if device is not None:
            config.device = device
        engine.validate(config)
        for seed in member["seeds"]:
            configs.append(config)
            seeds.append(int(seed))
            names.append(str(member["name"]))
    return configs, seeds, names


def train_group(members: Sequence[Mapping[str, Any]], logdir: str, device: str | None) -> list[Path]:
    """Train a sweep group: ``members`` are ``{"name", "seeds", "config"}`` (a job each); one batch."""
    from moerl.rl.batched_runs import train_members

    configs, seeds, names = _members(members, device)
    return train_members(configs, seeds, logdir, list(names), Console(progress=False))


def estimate_group(members: Sequence[Mapping[str, Any]]) -> float:
    """Core seconds the group takes on this machine, from a calibration (:mod:`moerl.rl.calibration`)."""
    from moerl.rl.calibration import calibrate, estimate_seconds

    configs, seeds, _ = _members(members, None)
    return estimate_seconds(configs, calibrate(configs, seeds))
