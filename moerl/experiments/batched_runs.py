"""``moerl train --seeds 0-9 --engine batched``: many seeds of one MoE-DQN config, trained together.

Why a module beside :mod:`moerl.experiments.moe_dqn`: the batched engine
(:class:`~moerl.agents.batched_dqn.BatchedDQN`) trains S seeds in one process, but its results must
land exactly where and as the SB3 path's do, one run directory per seed, so that ``moerl eval``,
``moerl report`` and everything downstream cannot tell the engines apart:

* ``config.yaml`` (the run's config with its own ``seed`` and ``engine: batched``), ``status.json``;
* ``eval.csv``: greedy per-task evaluation every ``eval.freq`` steps, at the start and at the end (rows:
  step, task, mean_return, std_return, normalized, episodes), the SB3 path's columns;
* TensorBoard: ``eval/return/<task>``, ``eval/normalized/<task>``, ``eval/normalized_mean``,
  ``train/loss``, ``train/aux_loss`` and ``train/return/<task>`` (training episodes), at each evaluation;
* ``model.zip``: the seed's network in an SB3 ``MoEDQN`` zip (``MoEDQN.load`` reads it);
* ``results.json`` (final evaluation over ``eval.final_episodes``, continual metrics) and ``schedule.json``.

Not yet: checkpoints and ``--resume`` for a batched run (a killed batch is marked crashed and starts
over); the per-step MoE metrics (dormant neurons, router usage) the SB3 path logs every
``logging.metrics_interval`` steps.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from moerl.config import to_dict
from moerl.errors import ConfigError

#: Most seeds one ``--seeds`` may name.
MAX_SEEDS = 65_536
#: Gymnasium ids the batched engine reproduces, as one-task suites without a task one-hot.
_PLAIN_IDS = {"CartPole-v1": "cartpole-default", "MountainCar-v0": "mountaincar-default"}


def parse_seeds(spec: str) -> list[int]:
    """``"0-9"``, ``"0,3,7"`` or ``"0-3,10-12"`` -> the seeds, in order; one-line error otherwise."""
    from moerl.seeding import check_seed

    seeds: list[int] = []
    bad = ConfigError(f"--seeds '{spec}' is not a list or range of seeds, e.g. 0-9 or 0,3,7 or 0-3,10-12")
    for part in str(spec).split(","):
        part = part.strip()
        lo_text, dash, hi_text = part.partition("-") if "-" in part[1:] else (part, "", "")
        try:
            lo, hi = int(lo_text), int(hi_text) if dash else int(lo_text)
        except ValueError:
            raise bad from None
        if hi < lo:
            raise bad
        if hi - lo + 1 > MAX_SEEDS:
            raise ConfigError(f"--seeds '{spec}' names more than {MAX_SEEDS:,} seeds")
        seeds.extend(range(lo, hi + 1))
    for seed in seeds:
        check_seed(seed)
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds '{spec}' names a seed twice")
    if len(seeds) > MAX_SEEDS:
        raise ConfigError(f"--seeds '{spec}' names more than {MAX_SEEDS:,} seeds")
    return seeds


def suite_spec(env_id: str, env_kwargs: dict[str, Any], fixed_task: str | None = None):
    """The :class:`~moerl.envs.suite.TaskSuiteEnv` the batched engine reproduces for ``env_id``."""
    import gymnasium as gym

    from moerl.envs.suite import TaskSuiteEnv

    if env_id in _PLAIN_IDS:
        if env_kwargs:
            raise ConfigError(f"env_kwargs do not apply to '{env_id}' with the batched engine")
        return TaskSuiteEnv([_PLAIN_IDS[env_id]], "mtrl", task_onehot=False)
    if not env_id.startswith("moerl/") or "RoutingMDP" in env_id:
        raise ConfigError(f"the batched engine runs moerl's task suites, CartPole-v1 and MountainCar-v0, "
                          f"not '{env_id}'; use --engine sb3")
    kwargs = dict(env_kwargs)
    if fixed_task is not None:
        kwargs["fixed_task"] = fixed_task
    env = gym.make(env_id, **kwargs).unwrapped
    assert isinstance(env, TaskSuiteEnv)
    return env


def check_batch_size(config: Any, num_seeds: int, obs_dim: int, capacity: int) -> None:
    """Refuse S replay buffers that cannot fit in memory (the estimate in the message)."""
    from moerl.experiments.moe_dqn_config import MEMORY_FRACTION, _machine_bytes

    need = num_seeds * capacity * (2 * obs_dim * 4 + 16)
    limit = int(_machine_bytes() * MEMORY_FRACTION)
    if need > limit:
        raise ConfigError(f"{num_seeds} seeds x a replay buffer of {capacity:,} need about {need / 2**30:.1f} GiB; "
                          f"this machine allows {limit / 2**30:.1f} GiB; run fewer seeds at once")


class _SeedRun:
    """One seed's run directory while the batch trains: TensorBoard writer and evaluation rows."""

    def __init__(self, run: Any, seed: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.run, self.seed = run, seed
        self.writer = SummaryWriter(str(run.tb_dir))
        self.rows: list[dict[str, Any]] = []


def train_seeds(config: Any, seeds: list[int], logdir: str, run_name: str | None, progress: bool) -> list[Path]:
    """Train ``seeds`` of ``config`` together with the batched engine; one finished run directory per seed."""
    import torch

    from moerl.agents.batched_dqn import BatchedDQN
    from moerl.agents.moe_dqn import default_buffer_size
    from moerl.envs.attributes import normalized_return
    from moerl.experiments.families import default_run_name
    from moerl.experiments.moe_dqn_config import default_timesteps, resolve_env
    from moerl.experiments.rundir import RunDir, running_many

    env_id = resolve_env(config.env)
    spec = suite_spec(env_id, config.env_kwargs)
    if config.timesteps is None:
        config.timesteps = default_timesteps(config)
    capacity = config.dqn.buffer_size or default_buffer_size(spec)
    config.dqn.buffer_size = capacity
    obs_dim = int(spec.observation_space.shape[0])
    check_batch_size(config, len(seeds), obs_dim, capacity)
    eval_specs = {name: suite_spec(env_id, {k: v for k, v in config.env_kwargs.items() if k != "fixed_task"},
                                   fixed_task=name) for name in spec.task_names} if env_id not in _PLAIN_IDS \
        else {spec.task_names[0]: spec}
    torch.set_num_threads(1)
    from moerl.experiments.moe_dqn_config import engine_device

    device = engine_device(config)
    agent = BatchedDQN(spec, seeds, config.network, config.dqn, device)  # errors before any directory
    base = run_name or default_run_name(config.env.replace("/", "-"), config.network.arch,
                                        config.network.router if config.network.uses_moe else None)
    runs = [RunDir.create(logdir, f"{base}_s{seed}") for seed in seeds]
    bounds = {name: tuple(spec.return_bounds[i]) for i, name in enumerate(spec.task_names)}
    seed_runs = [_SeedRun(run, seed) for run, seed in zip(runs, seeds, strict=True)]
    started = time.perf_counter()
    with running_many(runs, "moe-dqn", list(seeds)):
        for seed_run, seed in zip(seed_runs, seeds, strict=True):
            seed_run.run.write_config(to_dict(dataclasses.replace(config, seed=seed, engine="batched")))

        def evaluate(step: int, episodes: int) -> dict[str, np.ndarray]:
            out = {name: agent.evaluate(task_spec, episodes, seed=config.seed + 10_000 + step)
                   for name, task_spec in eval_specs.items()}
            log = agent.pop_log()
            for i, sr in enumerate(seed_runs):
                norms = []
                for name, returns in out.items():
                    mean = float(returns[i].mean())
                    norm = normalized_return(mean, bounds[name]) if name in bounds else None
                    sr.rows.append({"step": step, "task": name, "mean_return": mean,
                                    "std_return": float(returns[i].std()), "normalized": norm,
                                    "episodes": episodes})
                    sr.writer.add_scalar(f"eval/return/{name}", mean, step)
                    if norm is not None:
                        sr.writer.add_scalar(f"eval/normalized/{name}", norm, step)
                        norms.append(norm)
                if norms:
                    sr.writer.add_scalar("eval/normalized_mean", float(np.mean(norms)), step)
                if log.td_loss:
                    sr.writer.add_scalar("train/loss", float(np.mean([t[i] for t in log.td_loss])), step)
                if log.aux_loss:
                    sr.writer.add_scalar("train/aux_loss", float(np.mean([a[i] for a in log.aux_loss])), step)
                per_task: dict[int, list[float]] = {}
                for _, done, task, ret, _length in log.episodes:
                    if done[i]:
                        per_task.setdefault(int(task[i]), []).append(float(ret[i]))
                for t, rets in per_task.items():
                    sr.writer.add_scalar(f"train/return/{spec.task_names[t]}", float(np.mean(rets)), step)
                _write_eval_csv(sr)
            return out

        # When the SB3 path evaluates: at the start, every eval.freq steps, at the end (PerTaskEvalCallback).
        evaluate(0, config.eval.episodes)
        last_eval, freq = 0, config.eval.freq or config.timesteps
        bar = None
        if progress:
            from tqdm.auto import tqdm  # type: ignore[import-untyped]

            bar = tqdm(total=config.timesteps, unit="step", desc=f"{len(seeds)} seeds")
        while agent.num_timesteps < config.timesteps:
            agent.learn(min(config.timesteps, (agent.num_timesteps // freq + 1) * freq),
                        schedule_timesteps=config.timesteps)
            if bar is not None:
                bar.update(agent.num_timesteps - bar.n)
            if config.eval.freq and agent.num_timesteps % config.eval.freq == 0:
                evaluate(agent.num_timesteps, config.eval.episodes)
                last_eval = agent.num_timesteps
        if bar is not None:
            bar.close()
        if last_eval != agent.num_timesteps:
            evaluate(agent.num_timesteps, config.eval.episodes)
        seconds = time.perf_counter() - started
        final = {name: agent.evaluate(task_spec, config.eval.final_episodes, seed=config.seed + 20_000)
                 for name, task_spec in eval_specs.items()}
        for i, sr in enumerate(seed_runs):
            sr.writer.close()
            _finish_seed(sr, i, agent, config, spec, env_id, final, bounds, seconds, len(seeds))
    return [r.path for r in runs]


def _write_eval_csv(sr: _SeedRun) -> None:
    import csv
    import io

    fields = ("step", "task", "mean_return", "std_return", "normalized", "episodes")
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=fields)
    writer.writeheader()
    for row in sr.rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    sr.run.write_text("eval.csv", table.getvalue())


def _finish_seed(sr: _SeedRun, i: int, agent: Any, config: Any, spec: Any, env_id: str,
                 final: dict[str, np.ndarray], bounds: dict[str, tuple[float, float]], seconds: float,
                 num_seeds: int) -> None:
    """Write seed ``i``'s model (an SB3 zip), results.json and schedule.json."""
    from moerl.agents.moe_dqn import MoEDQN
    from moerl.envs.attributes import normalized_return
    from moerl.experiments.continual import continual_metrics
    from moerl.experiments.moe_dqn_config import reference_rows
    from moerl.nn import count_parameters

    model = MoEDQN("MoEPolicy", spec, policy_kwargs={"network": to_dict(config.network)}, seed=sr.seed,
                   device="cpu", **_dqn_kwargs(config))
    state = agent.q_net.state_dict_of(i)
    model.policy.q_net.q_net.load_state_dict(state)
    model.policy.q_net_target.q_net.load_state_dict(agent.q_net_target.state_dict_of(i))
    model.num_timesteps = agent.num_timesteps
    sr.run.save_atomic("model.zip", model.save)
    schedule = spec.schedule()
    sr.run.write_json("schedule.json", {"schedule": schedule, "block_steps": spec.block_steps})
    final_eval = {}
    for name, returns in final.items():
        mean = float(returns[i].mean())
        final_eval[name] = {"mean_return": mean, "std_return": float(returns[i].std()),
                            "normalized": normalized_return(mean, bounds[name]) if name in bounds else None,
                            "episodes": int(returns.shape[1])}
    reference = reference_rows(config.eval.reference_runs)
    rows = [{k: str(v) for k, v in r.items()} for r in sr.rows]
    results = {
        "env": config.env, "env_id": env_id, "arch": config.network.arch,
        "router": config.network.router if config.network.uses_moe else None, "seed": sr.seed,
        "timesteps": config.timesteps, "engine": "batched", "seeds_in_batch": num_seeds,
        "train_seconds": round(seconds, 2),
        "steps_per_second": round(config.timesteps * num_seeds / seconds, 1) if seconds > 0 else None,
        "parameters": count_parameters(model.policy.q_net.q_net),
        "final_eval": final_eval,
        "continual": continual_metrics(rows, schedule, spec.block_steps, reference) if bounds else None,
    }
    sr.run.write_json("results.json", results)


def _dqn_kwargs(config: Any) -> dict[str, Any]:
    """MoEDQN's arguments from the ``dqn:`` section (the saved zip records the run's hyper-parameters)."""
    d = dataclasses.asdict(config.dqn)
    return {k: v for k, v in d.items() if k in ("learning_rate", "buffer_size", "batch_size", "learning_starts",
                                                 "train_freq", "gradient_steps", "target_update_interval", "gamma",
                                                 "exploration_fraction", "exploration_initial_eps",
                                                 "exploration_final_eps", "max_grad_norm")}
