"""How ``moerl sweep`` batches the MoE DQN line's runs: which configs may share a batch, how a group trains,
and what it costs.

A sweep's runs of one architecture differ only in what the batched engine holds per member (the seed, the
env settings of one set of tasks, the budget, the replay capacity, the discount, the exploration schedule,
the learning rate and Adam's epsilon:
:data:`~moerl.rl.batched_runs.MEMBER_KEYS`, :data:`~moerl.rl.engine.batched_dqn.PER_MEMBER`); such runs
get one :func:`group_key`, and the sweep trains them in processes of many members
(:func:`moerl.runs.sweep.jobs.group_plans`), each member still writing its own run directory.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from moerl.core.config import from_dict
from moerl.core.errors import ConfigError
from moerl.rl.config import DQNRunConfig, resolve_env, validate
from moerl.runs.console import Console


def group_key(config: Mapping[str, Any]) -> str | None:
    """Equal for configs whose runs may train in one batch, None for a config that trains alone (the sb3
    engine, or an env the batched engine does not run)."""
    from moerl.rl.batched_runs import MEMBER_KEYS, suite_spec
    from moerl.rl.engine.batched_dqn import PER_MEMBER

    if config.get("engine") not in ("batched", "auto"):
        return None
    parsed = from_dict(DQNRunConfig, dict(config))
    try:
        tasks = suite_spec(resolve_env(parsed.env), parsed.env_kwargs).task_names
    except ConfigError:
        return None
    # budgets are per member (timesteps is one of MEMBER_KEYS): a member leaves its batch at its own
    shared = {key: value for key, value in config.items() if key not in (*MEMBER_KEYS, "eval", "dqn", "seed")}
    shared["eval"] = {k: v for k, v in config.get("eval", {}).items() if k != "reference_runs"}
    shared["dqn"] = {k: v for k, v in config.get("dqn", {}).items() if k not in PER_MEMBER}
    shared["tasks"] = list(tasks)
    return hashlib.sha256(json.dumps(shared, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _members(members: Sequence[Mapping[str, Any]], device: str | None) -> tuple[list[Any], list[int], list[str]]:
    configs, seeds, names = [], [], []
    for member in members:
        config = from_dict(DQNRunConfig, dict(member["config"]))
        if device is not None:
            config.device = device
        validate(config)
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
