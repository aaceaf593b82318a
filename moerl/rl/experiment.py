"""The ``moe-dqn`` family (the RL line): ``moerl train --env <Gymnasium id or moerl suite> --arch A --router R
[--algo dqn|ppo]``. DQN's path is here; ``--algo ppo`` goes to :mod:`moerl.rl.ppo_run` (config:
:mod:`moerl.rl.ppo_config`); both train in :class:`moerl.rl.trainer.Trainer` and write the same run directory.

Config (YAML, every key optional; see ``configs/dqn/``)::

    env: cartpole-crl          # short name, moerl/ id or any Gymnasium id with a Box obs and Discrete actions
    env_kwargs: {}             # passed to gym.make (tasks, block_steps, cycles, order, ...)
    timesteps: null            # null = the suite's scheduled budget (CRL) or 50k (CartPole) / 100k (others)
    seed: 0
    device: auto               # cpu, cuda or auto (cuda when available)
    network: {arch, router, experts, topk, hidden, tokens, ...}    # MoENetworkConfig (policy_kwargs["network"])
    dqn: {learning_rate, adam_eps, buffer_size, batch_size, ...}   # DQNHyperParams = MoEDQN's own defaults
    eval: {freq, episodes, final_episodes, reference_runs}
    logging: {metrics_interval, log_interval}

The config dataclasses and their validation live in :mod:`moerl.rl.config`; this module
builds the env and the model, trains, evaluates and writes the run directory.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from moerl.core.config import from_dict, load_yaml, to_dict
from moerl.core.errors import ConfigError
from moerl.core.seeding import parse_seeds
from moerl.core.threads import TRAINING_THREADS
from moerl.rl.config import (
    FAMILY_NAME,
    FLAGS,
    OPTIONS,
    DQNRunConfig,
    EvalSection,
    LoggingSection,
    RLRunConfig,
    algo_of,
    apply_resume_flags,
    build_config,
    check_algo,
    check_eval_episodes,
    default_timesteps,
    engine_device,
    list_envs,
    matches,
    resolve_env,
    run_label,
    stored_config,
    validate,
)
from moerl.rl.envs.attributes import normalized_return, suite_info
from moerl.rl.ppo_config import PPORunConfig, validate_ppo
from moerl.rl.run_env import make_env
from moerl.rl.sweep_groups import estimate_group, group_key, sweep_config, train_group
from moerl.rl.trainer import Trainer, chunk_steps, drop_checkpoints, train_in
from moerl.runs.console import Console
from moerl.runs.kinds import (
    Family,
    TrainRequest,
    check_resume_request,
)
from moerl.runs.rundir import RunDir, resume_status, running

__all__ = [
    "FAMILY", "DQNRunConfig", "EvalSection", "LoggingSection", "build_config", "build_model",
    "default_timesteps", "evaluate", "make_env", "resolve_env", "train", "validate",
]


# --- building ----------------------------------------------------------------------------------


def build_model(config: DQNRunConfig, env, tensorboard_log: str | None = None):
    """An untrained :class:`MoEDQN` for ``config`` on ``env`` (seeded).

    The config's sections are MoEDQN's own arguments (``dqn``) and ``policy_kwargs["network"]``
    (``network``): nothing is renamed or defaulted here, so the Python API and ``moerl train`` cannot
    drift apart (a test trains both and compares the weights).
    """
    import dataclasses

    from moerl.rl.nets.obs_layout import check_layout_fits, layout_for_env
    from moerl.rl.sb3.moe_dqn import MoEDQN

    net = config.network
    check_layout_fits(net, layout_for_env(env), config.env)
    return MoEDQN(
        "MoEPolicy",
        env,
        **dataclasses.asdict(config.dqn),
        metrics_interval=config.logging.metrics_interval,
        policy_kwargs={"network": to_dict(net)},
        tensorboard_log=tensorboard_log,
        seed=config.seed,
        device=engine_device(config),
        verbose=0,
    )


# --- the family's train / evaluate ---------------------------------------------------------------
def train(request: TrainRequest) -> Path | list[Path]:
    """``moerl train``: a new run, or (``--resume RUN_DIR``) the continuation of an interrupted one, or
    (``--seeds``, ``engine: batched``) one run per seed."""
    import torch

    if request.resume:
        return _resume(request)
    if requested_algo(request) == "ppo":
        return _train_ppo(request)
    seeds_spec, request = request.option("seeds"), request.with_options(seeds=None, algo=None)
    config = build_config(request.config, request.flags(), request.overrides)
    if seeds_spec is not None and request.option("seed") is not None:
        raise ConfigError("give --seed or --seeds, not both")
    from moerl.rl.batched_runs import resolve_engine

    config.engine = resolve_engine(config, len(parse_seeds(seeds_spec)) if seeds_spec is not None else 1)
    if seeds_spec is not None or config.engine == "batched":
        return _train_seeds(request, config, seeds_spec)
    if config.compile == "on":
        raise ConfigError("compile: on applies to the batched engine, and this run trains on the sb3 engine "
                          "(one seed); use --engine batched, or compile: off")
    label = run_label(to_dict(config))  # before the budget is resolved: the name a sweep gives this config
    torch.set_num_threads(TRAINING_THREADS)
    env = make_env(config)
    try:
        if config.timesteps is None:
            config.timesteps = default_timesteps(config)
        import numpy as np

        from moerl.rl.config import check_sizes

        check_sizes(config, int(np.prod(env.observation_space.shape)))
        # Built before the run directory exists: impossible combinations raise ConfigError here.
        model = build_model(config, env)
        config.dqn.buffer_size = model.buffer_size  # record the resolved capacity
        name = request.run_name or f"{label}_s{config.seed}"
        run = RunDir.create(request.logdir, name)
        trainer, results = train_in(run, config, lambda r: _dqn_trainer(r, config, model, request.console()))
    finally:
        env.close()
    drop_checkpoints(run)
    trainer.summary(results)
    return run.path


def requested_algo(request: TrainRequest) -> str:
    """The algorithm a new run trains: ``--algo``, else the ``--config`` file's ``algo`` key, else ``dqn``;
    a flag and a file that disagree are refused (one of them would be silently ignored)."""
    flag = request.option("algo")
    if flag is not None:
        check_algo(flag)
    raw = load_yaml(request.config) if request.config else {}
    from_file = algo_of(raw) if "algo" in raw else None
    if flag is not None and from_file is not None and flag != from_file:
        raise ConfigError(f"--algo {flag}, but config file '{request.config}' says algo: {from_file}; "
                          "give one of them")
    return flag or from_file or "dqn"


def _train_ppo(request: TrainRequest) -> Path | list[Path]:
    """``--algo ppo``: one run, or (``--seeds``) one run per seed: together on the batched engine
    (:class:`~moerl.rl.engine.batched_ppo.BatchedPPO`, through :mod:`moerl.rl.batched_runs` as DQN's batches),
    or one after another on the SB3 engine; ``engine: auto`` resolves as for DQN."""
    import copy

    from moerl.rl.batched_runs import resolve_engine, train_seeds
    from moerl.rl.ppo_config import build_ppo_config
    from moerl.rl.ppo_run import train_ppo

    seeds_spec, request = request.option("seeds"), request.with_options(seeds=None, algo=None)
    if seeds_spec is not None and request.option("seed") is not None:
        raise ConfigError("give --seed or --seeds, not both")
    config = build_ppo_config(request.config, request.flags(), request.overrides)
    seeds = parse_seeds(seeds_spec) if seeds_spec is not None else [config.seed]
    config.engine = resolve_engine(config, len(seeds))
    if config.engine == "batched":
        return train_seeds(config, seeds, request.logdir, request.run_name, request.console())
    if seeds_spec is None:
        return train_ppo(request, config)
    paths = []
    for seed in seeds:
        one = copy.deepcopy(config)
        one.seed = seed
        name = f"{request.run_name}_s{seed}" if request.run_name else None
        paths.append(train_ppo(dataclasses.replace(request, run_name=name), one))
    return paths


def _train_seeds(request: TrainRequest, config: DQNRunConfig, seeds_spec: str | None) -> list[Path]:
    """Several seeds: together (``engine: batched``) or one after another (``engine: sb3``)."""
    from moerl.rl.batched_runs import train_seeds

    if seeds_spec is not None and request.option("seed") is not None:
        raise ConfigError("give --seed or --seeds, not both")
    seeds = parse_seeds(seeds_spec) if seeds_spec is not None else [config.seed]
    if config.engine == "batched":
        return train_seeds(config, seeds, request.logdir, request.run_name, request.console())
    paths = []
    for seed in seeds:
        name = f"{request.run_name}_s{seed}" if request.run_name else None
        one = dataclasses.replace(request.with_options(seed=seed), run_name=name)
        paths.append(Path(train(one)))  # type: ignore[arg-type]
    return paths


def _dqn_trainer(run: RunDir, config: DQNRunConfig, model: Any, console: Console, resume: Any = None) -> Trainer:
    """The SB3 engine's training loop for a DQN run: chunks a multiple of ``train_freq``."""
    from moerl.rl.nets.qnetwork import count_parameters

    assert config.timesteps is not None
    return Trainer(run, config, model, console, resume=resume,
                   chunk=chunk_steps(config.checkpoint.every, config.timesteps, config.dqn.train_freq),
                   parameters=count_parameters(model.policy.q_net.q_net), info=suite_info(model.env))




def _resume(request: TrainRequest) -> Path | list[Path]:
    """Continue a killed, interrupted or crashed run from its last checkpoint to the requested total."""
    import torch

    from moerl.rl.sb3.checkpoint import load_checkpoint

    assert request.resume is not None
    if resume_status(request.resume).get("batch"):  # a member of a batched-engine batch
        from moerl.rl.batched_runs import resume_seeds

        return resume_seeds(request)
    check_resume_request(request, {"timesteps": "a new total", "device": "where to continue"})
    assert request.resume is not None
    run, step = RunDir.open_resumable(request.resume, FAMILY_NAME)
    try:
        config = load_run_config(run.read_config())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"'{request.resume}' has no readable config.yaml ({exc})") from None
    if isinstance(config, PPORunConfig):
        from moerl.rl.ppo_run import resume_ppo

        config = apply_resume_flags(config, request.option("timesteps"), request.option("device"), step,
                                    validate_ppo)
        return resume_ppo(request, run, config)
    config = apply_resume_flags(config, request.option("timesteps"), request.option("device"), step)
    torch.set_num_threads(TRAINING_THREADS)
    ckpt = load_checkpoint(run.path, device=engine_device(config))
    with running(run, FAMILY_NAME, config.seed, str(engine_device(config)), resumed_from=step):
        run.write_config(to_dict(config))
        trainer = _dqn_trainer(run, config, ckpt.model, request.console(), resume=ckpt)
        results = trainer.run()
        run.write_json("results.json", results)
    ckpt.model.env.close()
    drop_checkpoints(run)
    trainer.summary(results)
    return run.path


def load_run_config(raw: dict[str, Any]) -> DQNRunConfig | PPORunConfig:
    """A run's ``config.yaml``, as its algorithm's config (``algo: ppo``, else DQN), validated."""
    if algo_of(raw) == "ppo":
        return validate_ppo(from_dict(PPORunConfig, stored_config(raw)))
    return validate(from_dict(DQNRunConfig, stored_config(raw)))


def evaluate(run_path: Path, options: dict[str, Any]) -> dict[str, Any]:
    """Reload ``model.zip`` of a finished run and evaluate it greedily on every task."""
    import torch

    from moerl.rl.evaluation import evaluate_tasks, task_env_factories
    from moerl.rl.sb3.moe_dqn import MoEDQN
    from moerl.rl.sb3.moe_ppo import MoEPPO

    if options.get("episodes") is not None:
        check_eval_episodes("--episodes", options["episodes"])
    torch.set_num_threads(TRAINING_THREADS)
    run = RunDir(run_path)
    raw = stored_config(run.read_config())
    ppo = algo_of(raw) == "ppo"
    schema: type[RLRunConfig] = PPORunConfig if ppo else DQNRunConfig
    config = from_dict(schema, raw)
    _check_env_unchanged(run, config)
    device = engine_device(config, options.get("device"))
    cls: Any = MoEPPO if ppo else MoEDQN
    model = run.load_artifact("model.zip", lambda path: cls.load(path, device=device))
    env = make_env(config)
    try:
        info = suite_info(env)
        _check_model_fits(run, config, model, env)
    finally:
        env.close()
    names, bounds = info.task_names, info.return_bounds
    env_kwargs = {k: v for k, v in config.env_kwargs.items() if k != "fixed_task"}
    factories = task_env_factories(resolve_env(config.env), env_kwargs, names)
    episodes = int(options.get("episodes") or config.eval.final_episodes)
    seed = int(options.get("seed", config.seed + 30_000))
    results = {}
    for res in evaluate_tasks(model, factories, episodes, seed):
        entry = {"mean_return": res.mean_return, "std_return": res.std_return, "episodes": len(res.returns)}
        if res.task in bounds:
            entry["normalized"] = normalized_return(res.mean_return, bounds[res.task])
        results[res.task] = entry
    return {"run": str(run.path), "per_task": results}


def _check_env_unchanged(run: RunDir, config: RLRunConfig) -> None:
    """Refuse a run whose ``config.yaml`` names another env than the one it trained (``results.json``'s
    ``env``): its model would be evaluated on tasks it never saw (an edited file gave tracebacks or,
    worse, numbers)."""
    try:
        trained = run.read_json("results.json").get("env")
    except (OSError, ValueError, AttributeError):
        return  # no readable record of the env: the model's spaces are still checked
    if isinstance(trained, str) and trained != config.env:
        raise ConfigError(f"run '{run.path}': config.yaml names env '{config.env}', but the run trained "
                          f"'{trained}' (results.json); was config.yaml edited? restore env: {trained}")


def _check_model_fits(run: RunDir, config: RLRunConfig, model: Any, env: Any) -> None:
    """Refuse to evaluate a model on an env whose observations or actions it was not built for (one line,
    instead of a shape error from the network)."""
    model_obs, env_obs = model.observation_space, env.observation_space
    if getattr(model_obs, "shape", None) != getattr(env_obs, "shape", None) or model.action_space != env.action_space:
        raise ConfigError(
            f"run '{run.path}': its model takes observations {model_obs.shape} and actions {model.action_space}, "
            f"but env '{config.env}' of its config.yaml has {env_obs.shape} and {env.action_space}; "
            "was config.yaml edited?")


FAMILY = Family(
    name=FAMILY_NAME,
    description="MoE DQN on Gymnasium envs and moerl's MTRL/CRL task suites (seed 001)",
    matches=matches,
    list_envs=list_envs,
    train=train,
    evaluate=evaluate,
    options=OPTIONS,
    eval_options=frozenset({"episodes", "seed", "device"}),
    resume=train,
    sweep_config=sweep_config,
    run_label=run_label,
    config_aliases=FLAGS,
    group_key=group_key,
    train_group=train_group,
    estimate_group=estimate_group,
)

