"""The ``moe-dqn`` family: ``moerl train --env <Gymnasium id or moerl suite> --arch A --router R``.

Config (YAML, every key optional; see ``configs/dqn/``)::

    env: cartpole-crl          # short name, moerl/ id or any Gymnasium id with a Box obs and Discrete actions
    env_kwargs: {}             # passed to gym.make (tasks, block_steps, cycles, order, ...)
    timesteps: null            # null = the suite's scheduled budget (CRL) or 50k (CartPole) / 100k (others)
    seed: 0
    device: auto               # cpu, cuda or auto (cuda when available)
    network: {arch, router, experts, topk, hidden, tokens, ...}
    dqn: {learning_rate, adam_eps, buffer_size, batch_size, ...}   # dopamine classic-control defaults
    eval: {freq, episodes, final_episodes, reference_runs}
    logging: {metrics_interval, log_interval}

The config dataclasses and their validation live in :mod:`moerl.experiments.moe_dqn_config`; this module
builds the env and the model, trains, evaluates and writes the run directory.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from moerl.config import from_dict, to_dict
from moerl.errors import ConfigError, check_choice
from moerl.experiments.families import Family, TrainRequest, default_run_name, reject_unused
from moerl.experiments.moe_dqn_config import (
    DEVICES,
    FAMILY_NAME,
    DQNRunConfig,
    DQNSection,
    EvalSection,
    LoggingSection,
    NetworkSection,
    build_config,
    list_envs,
    matches,
    network_config,
    resolve_env,
    validate,
)
from moerl.experiments.rundir import RunDir, running

__all__ = [
    "FAMILY", "DQNRunConfig", "DQNSection", "EvalSection", "LoggingSection", "NetworkSection", "build_config",
    "build_model", "default_buffer_size", "default_timesteps", "evaluate", "make_env", "resolve_env", "train",
    "validate",
]


# --- building ----------------------------------------------------------------------------------
def make_env(config: DQNRunConfig):
    import gymnasium as gym
    from stable_baselines3.common.monitor import Monitor

    env_id = resolve_env(config.env)
    try:
        env = gym.make(env_id, **config.env_kwargs)
    except ConfigError:
        raise
    except TypeError as exc:
        raise ConfigError(f"bad env_kwargs for '{config.env}': {exc}") from None
    if not isinstance(env.action_space, gym.spaces.Discrete):
        env.close()
        raise ConfigError(f"env '{config.env}' has action space {env.action_space}; DQN needs Discrete actions")
    return Monitor(env)


def default_timesteps(config: DQNRunConfig) -> int:
    from moerl.envs.registration import default_timesteps as suite_default

    steps = suite_default(resolve_env(config.env), **config.env_kwargs)
    if steps is not None:
        return steps
    return 50_000 if config.env.startswith("CartPole") else 100_000


def default_buffer_size(env) -> int:
    """Dopamine's 50k, or one CRL block when the env is a CRL suite (see ``DQNSection.buffer_size``)."""
    _, _, schedule, block_steps = task_info(env)
    return min(50_000, block_steps) if schedule else 50_000


def build_model(config: DQNRunConfig, env, tensorboard_log: str | None = None):
    """An untrained :class:`MoEDQN` for ``config`` on ``env`` (seeded)."""
    import torch

    from moerl.agents.moe_dqn import MoEDQN
    from moerl.agents.obs_layout import layout_for_env

    layout = layout_for_env(env)
    net = config.network
    if net.router == "hardcoded" and net.arch not in ("dense", "wide"):
        if layout.num_tasks == 0:
            raise ConfigError(
                f"router 'hardcoded' routes by task id, but env '{config.env}' has no task one-hot; "
                "use a task suite (e.g. cartpole-mtrl, cartpole-crl)"
            )
        if net.experts != layout.num_tasks:
            raise ConfigError(
                f"router 'hardcoded' needs one expert per task: env '{config.env}' has {layout.num_tasks} tasks "
                f"but --experts is {net.experts}"
            )
    device = config.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    d = config.dqn
    return MoEDQN(
        "MoEPolicy",
        env,
        loss=d.loss,
        aux_loss_coef=net.aux_loss_coef if net.balance_loss != "none" else 0.0,
        metrics_interval=config.logging.metrics_interval,
        learning_rate=d.learning_rate,
        buffer_size=d.buffer_size if d.buffer_size is not None else default_buffer_size(env),
        learning_starts=d.learning_starts,
        batch_size=d.batch_size,
        gamma=d.gamma,
        train_freq=d.train_freq,
        gradient_steps=d.gradient_steps,
        target_update_interval=d.target_update_interval,
        exploration_fraction=d.exploration_fraction,
        exploration_initial_eps=d.exploration_initial_eps,
        exploration_final_eps=d.exploration_final_eps,
        max_grad_norm=d.max_grad_norm,
        policy_kwargs={
            "network": network_config(net),
            "obs_layout": layout.to_dict(),
            "task_id_in_features": net.task_id_in_features,
            "rescale_inputs": net.rescale_inputs,
            "optimizer_kwargs": {"eps": d.adam_eps},
        },
        tensorboard_log=tensorboard_log,
        seed=config.seed,
        device=device,
        verbose=0,
    )


def task_info(env) -> tuple[tuple[str, ...], dict[str, tuple[float, float]], list[dict], int]:
    """(task names, return bounds per task, CRL schedule, block length) of a suite; empty for plain envs."""
    import numpy as np

    def attr(name):
        try:
            return env.get_wrapper_attr(name)
        except AttributeError:
            return None

    names = tuple(attr("task_names") or ())
    bounds = attr("return_bounds")
    bounds_by_task = {n: (float(b[0]), float(b[1])) for n, b in zip(names, np.asarray(bounds), strict=True)} \
        if bounds is not None and names else {}
    schedule_fn = attr("schedule")
    schedule = list(schedule_fn()) if callable(schedule_fn) else []
    block = int(attr("block_steps") or 0) if schedule else 0
    return names, bounds_by_task, schedule, block


# --- the family's train / evaluate ---------------------------------------------------------------
def train(request: TrainRequest) -> Path:
    import torch

    reject_unused(request, FAMILY)
    config = build_config(request)
    torch.set_num_threads(1)
    env = make_env(config)
    try:
        if config.timesteps is None:
            config.timesteps = default_timesteps(config)
        if config.dqn.buffer_size is None:
            config.dqn.buffer_size = default_buffer_size(env)
        # Built before the run directory exists: impossible combinations raise ConfigError here.
        model = build_model(config, env)
        name = request.run_name or default_run_name(
            config.env.replace("/", "-"), config.network.arch,
            None if config.network.arch in ("dense", "wide") else config.network.router, f"s{config.seed}")
        run = RunDir.create(request.logdir, name)
        with running(run, FAMILY_NAME, config.seed):
            run.write_config(to_dict(config))
            results = _train_in(run, config, env, model, request.progress)
            run.write_json("results.json", results)
    finally:
        env.close()
    return run.path


def _train_in(run: RunDir, config: DQNRunConfig, env, model, progress: bool) -> dict[str, Any]:
    from stable_baselines3.common.callbacks import CallbackList
    from stable_baselines3.common.logger import configure

    from moerl.agents.callbacks import PerTaskEvalCallback, TaskEpisodeCallback
    from moerl.agents.evaluation import evaluate_tasks, task_env_factories
    from moerl.experiments.continual import continual_metrics
    from moerl.nn import count_parameters

    model.set_logger(configure(str(run.tb_dir), ["tensorboard", "csv"]))
    names, bounds, schedule, block_steps = task_info(env)
    env_id = resolve_env(config.env)
    eval_kwargs = {k: v for k, v in config.env_kwargs.items() if k != "fixed_task"}
    factories = task_env_factories(env_id, eval_kwargs, names)
    episodes_cb = TaskEpisodeCallback()
    eval_cb = PerTaskEvalCallback(factories, config.eval.freq, config.eval.episodes, run.path / "eval.csv",
                                  bounds, seed=config.seed + 10_000)
    start = time.perf_counter()
    model.learn(total_timesteps=config.timesteps, callback=CallbackList([episodes_cb, eval_cb]),
                log_interval=config.logging.log_interval, progress_bar=progress)
    seconds = time.perf_counter() - start
    model.save(run.path / "model.zip")
    final = evaluate_tasks(model, factories, config.eval.final_episodes, config.seed + 20_000)
    run.write_json("schedule.json", {"schedule": schedule, "block_steps": block_steps,
                                     "switches_seen": episodes_cb.switches})
    reference = _reference_rows(config.eval.reference_runs)
    results: dict[str, Any] = {
        "env": config.env,
        "env_id": env_id,
        "arch": config.network.arch,
        "router": config.network.router,
        "seed": config.seed,
        "timesteps": config.timesteps,
        "train_seconds": round(seconds, 2),
        "steps_per_second": round(config.timesteps / seconds, 1) if seconds > 0 else None,
        "parameters": count_parameters(model.policy.q_net.q_net),
        "final_eval": {r.task: {"mean_return": r.mean_return, "std_return": r.std_return,
                                "normalized": eval_cb.normalize(r.task, r.mean_return),
                                "episodes": len(r.returns)} for r in final},
        "continual": continual_metrics(eval_cb.rows, schedule, block_steps, reference) if bounds else None,
    }
    return results


def _reference_rows(reference_runs: dict[str, str]) -> dict[str, list[dict]]:
    import csv

    out = {}
    for task, path in reference_runs.items():
        f = Path(path) / "eval.csv"
        if not f.is_file():
            raise ConfigError(f"reference run for task '{task}' has no eval.csv: '{path}'")
        with f.open() as fh:
            out[task] = list(csv.DictReader(fh))
    return out


def evaluate(run_path: Path, options: dict[str, Any]) -> dict[str, Any]:
    """Reload ``model.zip`` of a finished run and evaluate it greedily on every task."""
    import torch

    from moerl.agents.evaluation import evaluate_tasks, task_env_factories
    from moerl.agents.moe_dqn import MoEDQN

    torch.set_num_threads(1)
    run = RunDir(run_path)
    config = from_dict(DQNRunConfig, run.read_config())
    device = options.get("device") or "cpu"
    check_choice("device", device, DEVICES)
    model = MoEDQN.load(run.path / "model.zip", device="cpu" if device == "auto" else device)
    env = make_env(config)
    try:
        names, bounds, _, _ = task_info(env)
    finally:
        env.close()
    env_kwargs = {k: v for k, v in config.env_kwargs.items() if k != "fixed_task"}
    factories = task_env_factories(resolve_env(config.env), env_kwargs, names)
    episodes = int(options.get("episodes") or config.eval.final_episodes)
    seed = int(options.get("seed", config.seed + 30_000))
    results = {}
    for res in evaluate_tasks(model, factories, episodes, seed):
        entry = {"mean_return": res.mean_return, "std_return": res.std_return, "episodes": len(res.returns)}
        if res.task in bounds:
            low, high = bounds[res.task]
            entry["normalized"] = float(min(max((res.mean_return - low) / (high - low), 0.0), 1.0))
        results[res.task] = entry
    run.write_json("eval_results.json", results)
    return {"run": str(run.path), "per_task": results}


FAMILY = Family(
    name=FAMILY_NAME,
    description="MoE DQN on Gymnasium envs and moerl's MTRL/CRL task suites (seed 001)",
    matches=matches,
    list_envs=list_envs,
    train=train,
    evaluate=evaluate,
    options=frozenset({"arch", "router", "experts", "topk", "timesteps"}),
)

