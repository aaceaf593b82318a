"""Checkpoints of an MoE DQN or MoE PPO run that resume bit for bit.

A checkpoint is taken at a rollout boundary (between ``learn`` chunks, or after the model's
``request_stop``), where nothing is half-done, and holds everything the rest of the run depends on:

* the model, its optimiser state and SB3's counters (SB3's ``save``: ``num_timesteps``, ``_last_obs``,
  ``_last_episode_starts``, ``_episode_num``, the episode-info buffer, the exploration rate...);
* DQN's replay buffer (SB3's ``save_replay_buffer``); PPO has none to keep: at a rollout boundary its rollout
  buffer has been used up and the next rollout refills it whole;
* the training env itself, pickled with cloudpickle: the game state mid-episode, its random generator, the
  CRL schedule position (block, cycle, step in block) and the Monitor's episode bookkeeping;
* the global random states (python, numpy, torch) that exploration and minibatch sampling draw from (SB3's
  PPO draws each epoch's minibatch permutation from numpy's global generator, its actions from torch's);
* the logger's values recorded but not yet written, and the callbacks' own state (``extra``).

Why our own module rather than SB3's ``CheckpointCallback``: that callback saves the model (and optionally
the buffer) from inside a step, without the env, the random states or the logger, so a run resumed from it
takes a different path from the uninterrupted one.

Where it is written: :mod:`moerl.core.checkpoint_store` (one complete folder, swapped in atomically).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle  # type: ignore[import-untyped]
import numpy as np
import torch

from moerl.core.checkpoint_store import (
    checkpoint_step,
    load_checkpoint_file,
    remove_checkpoints,
    write_checkpoint,
)

__all__ = ["Checkpoint", "checkpoint_step", "load_checkpoint", "remove_checkpoints", "restore_logger_values",
           "save_checkpoint"]


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` gives back."""

    model: Any
    step: int
    extra: dict[str, Any]


def _algo(model: Any) -> str:
    from moerl.rl.sb3.moe_ppo import MoEPPO

    return "ppo" if isinstance(model, MoEPPO) else "dqn"


def _write_state(work: Path, model: Any, extra: dict[str, Any], step: int) -> None:
    model.save(work / "model.zip")
    algo = _algo(model)
    if algo == "dqn":
        model.save_replay_buffer(work / "replay.pkl")
    logger = model.logger
    state = {
        "step": step,
        "algo": algo,
        "env": model.env,
        "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        "logger": {"values": dict(logger.name_to_value), "counts": dict(logger.name_to_count),
                   "excluded": dict(logger.name_to_excluded)},
        "last_metrics_step": model._last_metrics_step,
        "extra": extra,
    }
    (work / "state.pkl").write_bytes(cloudpickle.dumps(state))


def save_checkpoint(run_path: str | Path, model: Any, extra: dict[str, Any]) -> Path:
    """Write a complete checkpoint of ``model`` (and ``extra``) under ``run_path``; return its folder."""
    step = int(model.num_timesteps)
    return write_checkpoint(run_path, step, lambda work: _write_state(work, model, extra, step))


#: What ``state.pkl`` must hold (``extra``: what :class:`~moerl.rl.experiment._Trainer` restores from it).
STATE_KEYS = ("step", "env", "rng", "logger", "last_metrics_step", "extra")
EXTRA_KEYS = ("episodes", "eval", "seconds")


def load_checkpoint(run_path: str | Path, device: Any = "cpu") -> Checkpoint:
    """Rebuild the model (``MoEDQN`` or ``MoEPPO``, as ``state.pkl`` says), its env, DQN's replay buffer, the
    random states and logger values from the checkpoint.

    A missing or damaged file (``state.pkl``, ``model.zip``, DQN's ``replay.pkl``) is one ConfigError naming it
    (:func:`~moerl.core.checkpoint_store.load_checkpoint_file`), raised before anything is written.
    """
    from moerl.rl.sb3.moe_dqn import MoEDQN
    from moerl.rl.sb3.moe_ppo import MoEPPO

    state = load_checkpoint_file(run_path, "state.pkl", _read_state)
    algo = state.get("algo", "dqn")  # checkpoints written before PPO are DQN's
    cls: Any = MoEPPO if algo == "ppo" else MoEDQN
    # force_reset=False: SB3 would otherwise drop _last_obs and reset the env mid-episode.
    model = load_checkpoint_file(run_path, "model.zip", lambda path: cls.load(
        path, env=state["env"], device=device, force_reset=False))
    if algo == "dqn":
        load_checkpoint_file(run_path, "replay.pkl", model.load_replay_buffer)
    model._last_metrics_step = state["last_metrics_step"]
    # SB3's load re-seeds the global generators (set_random_seed in _setup_model): restore them last.
    rng = state["rng"]
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    model._pending_log = state["logger"]
    return Checkpoint(model, int(state["step"]), state["extra"])


def _read_state(path: Path) -> dict[str, Any]:
    """``state.pkl``, with everything a resume reads from it (a pickle of something else is damaged)."""
    state = cloudpickle.loads(path.read_bytes())
    missing = [k for k in STATE_KEYS if not isinstance(state, dict) or k not in state]
    missing += [f"extra.{k}" for k in EXTRA_KEYS if not missing and (not isinstance(state["extra"], dict)
                                                                      or k not in state["extra"])]
    if missing:
        raise ValueError(f"it lacks {', '.join(missing)}")
    return state


def restore_logger_values(model: Any, pending: dict[str, Any] | None) -> None:
    """Put back the values the logger had recorded but not yet written when the checkpoint was taken."""
    if not pending:
        return
    logger = model.logger
    logger.name_to_value.update(pending["values"])
    logger.name_to_count.update(pending["counts"])
    logger.name_to_excluded.update(pending["excluded"])
