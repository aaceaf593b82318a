"""``moerl train --algo ppo``: an MoE PPO run on the SB3 reference engine, written as DQN's runs are.

This module builds what is PPO's own (``n_envs`` environments, the :class:`~moerl.rl.sb3.moe_ppo.MoEPPO` of a
config, the checkpoint interval in whole rollouts) and hands it to the shared loop
(:class:`moerl.rl.trainer.Trainer`), which writes the run directory, checkpoints and resumes.

CRL suites: each of the ``n_envs`` environments runs the suite with ``block_steps / n_envs`` steps per block,
so the ``n_envs`` environments together spend ``block_steps`` env steps on a task, and the run switches task on
the grid of total env steps the suite (and a DQN run) schedules: the run's schedule, evaluation shading and
continual metrics are the suite's own. A ``random`` task order is refused with more than one environment
(each would draw its own order).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moerl.core.config import to_dict
from moerl.core.errors import ConfigError
from moerl.core.threads import TRAINING_THREADS
from moerl.rl.config import FAMILY_NAME, default_timesteps, engine_device, resolve_env, run_label
from moerl.rl.envs.attributes import SuiteInfo, env_attr, suite_info
from moerl.rl.ppo_config import PPORunConfig, check_rollout_size
from moerl.rl.run_env import make_env
from moerl.rl.trainer import Trainer, chunk_steps, drop_checkpoints, train_in
from moerl.runs.console import Console
from moerl.runs.kinds import TrainRequest
from moerl.runs.rundir import RunDir, running


def run_suite_info(config: PPORunConfig) -> SuiteInfo:
    """The suite as the run sees it (its tasks, return bounds, the CRL schedule on the grid of total env
    steps), read from one env built with the config's own ``env_kwargs``; refuses what PPO cannot run."""
    env = make_env(config)
    try:
        info = suite_info(env)
        n = config.ppo.n_envs
        if info.schedule and n > 1:
            if env_attr(env, "order") == "random":
                raise ConfigError(f"env_kwargs.order 'random' with ppo.n_envs {n}: each environment would draw "
                                  "its own task order; give the order as a list, or ppo.n_envs: 1")
            if info.block_steps % n:
                raise ConfigError(f"ppo.n_envs ({n}) must divide the CRL block of {info.block_steps:,} env steps "
                                  "(each environment runs block_steps / n_envs steps of each block)")
        return info
    finally:
        env.close()


def make_vec_env(config: PPORunConfig, info: SuiteInfo) -> Any:
    """``ppo.n_envs`` Monitor-wrapped environments in SB3's ``DummyVecEnv`` (seeded by SB3: seed + index)."""
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    from moerl.rl.envs.registration import make

    env_id, n = resolve_env(config.env), config.ppo.n_envs
    kwargs = dict(config.env_kwargs)
    if info.schedule:
        kwargs["block_steps"] = info.block_steps // n
    return DummyVecEnv([lambda: Monitor(make(env_id, **kwargs)) for _ in range(n)])


def build_ppo_model(config: PPORunConfig, env: Any, tensorboard_log: str | None = None,
                    device: str | None = None) -> Any:
    """An untrained :class:`MoEPPO` for ``config`` on ``env`` (seeded): the ``ppo:`` section is MoEPPO's own
    arguments (``n_envs`` excepted: ``env`` brings its environments), the ``network:`` section its network;
    ``device``: instead of the config's (the batched engine exports its members' networks on the CPU)."""
    import dataclasses

    from moerl.rl.nets.obs_layout import check_layout_fits, layout_for_env
    from moerl.rl.sb3.moe_ppo import MoEPPO

    check_layout_fits(config.network, layout_for_env(env), config.env)
    settings = {k: v for k, v in dataclasses.asdict(config.ppo).items() if k != "n_envs"}
    return MoEPPO("MoEPolicy", env, **settings, metrics_interval=config.logging.metrics_interval,
                  policy_kwargs={"network": to_dict(config.network)}, tensorboard_log=tensorboard_log,
                  seed=config.seed, device=device or engine_device(config), verbose=0)


def ppo_trainer(run: RunDir, config: PPORunConfig, model: Any, console: Console, info: SuiteInfo,
                resume: Any = None) -> Trainer:
    """The shared loop for a PPO run: checkpoints every ``checkpoint.every`` env steps in whole rollouts."""
    from moerl.rl.nets.qnetwork import count_parameters

    assert config.timesteps is not None
    rollout = config.ppo.n_envs * config.ppo.n_steps
    return Trainer(run, config, model, console, resume=resume, info=info,
                   chunk=chunk_steps(config.checkpoint.every, config.timesteps, rollout),
                   parameters=count_parameters(model.policy.ac))


def whole_rollouts(config: PPORunConfig) -> None:
    """Round ``timesteps`` up to whole rollouts (``n_envs x n_steps``), recorded in config.yaml and results.json.

    Why: SB3's PPO only stops between rollouts, so a budget of 40,000 steps at rollouts of 512 trains 40,448;
    the run's record says what was trained, not what was asked (the run id keeps the asked value).
    """
    assert config.timesteps is not None
    rollout = config.ppo.n_envs * config.ppo.n_steps
    config.timesteps = -(-config.timesteps // rollout) * rollout


def train_ppo(request: TrainRequest, config: PPORunConfig) -> Path:
    """One new PPO run (one seed): build, create the run directory, train, evaluate, write results."""
    import numpy as np
    import torch


    label = run_label(to_dict(config))
    torch.set_num_threads(TRAINING_THREADS)
    info = run_suite_info(config)
    env = make_vec_env(config, info)
    try:
        if config.timesteps is None:
            config.timesteps = default_timesteps(config)
        whole_rollouts(config)
        check_rollout_size(config, int(np.prod(env.observation_space.shape)))
        model = build_ppo_model(config, env)  # before the run directory: a bad combination leaves none
        run = RunDir.create(request.logdir, request.run_name or f"{label}_s{config.seed}")
        trainer, results = train_in(run, config, lambda r: ppo_trainer(r, config, model, request.console(), info))
    finally:
        env.close()
    drop_checkpoints(run)
    trainer.summary(results)
    return run.path


def resume_ppo(request: TrainRequest, run: RunDir, config: PPORunConfig) -> Path:
    """Continue a PPO run from its checkpoint (the config already checked against it)."""
    import torch

    from moerl.rl.sb3.checkpoint import load_checkpoint

    torch.set_num_threads(TRAINING_THREADS)
    whole_rollouts(config)  # a new --timesteps total
    info = run_suite_info(config)
    ckpt = load_checkpoint(run.path, device=engine_device(config))
    with running(run, FAMILY_NAME, config.seed, str(engine_device(config)), resumed_from=ckpt.step):
        run.write_config(to_dict(config))
        trainer = ppo_trainer(run, config, ckpt.model, request.console(), info, resume=ckpt)
        results = trainer.run()
        run.write_json("results.json", results)
    ckpt.model.env.close()
    drop_checkpoints(run)
    trainer.summary(results)
    return run.path
