"""The ``moe-dqn`` family: ``moerl train --env <Gymnasium id or moerl suite> --arch A --router R``.

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
import time
from pathlib import Path
from typing import Any

from stable_baselines3.common.logger import TensorBoardOutputFormat

from moerl.core.config import from_dict, to_dict
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
    apply_resume_flags,
    build_config,
    check_algo,
    check_eval_episodes,
    default_timesteps,
    engine_device,
    list_envs,
    matches,
    reference_rows,
    resolve_env,
    run_label,
    stored_config,
    sweep_config,
    validate,
)
from moerl.rl.console import ProgressCallback, last_eval_returns, summary_lines
from moerl.rl.envs.attributes import normalized_return, suite_info
from moerl.rl.record import export_model, final_eval_entry, run_results, schedule_record
from moerl.rl.sweep_groups import estimate_group, group_key, train_group
from moerl.runs.console import Console
from moerl.runs.kinds import (
    Family,
    TrainRequest,
    check_resume_request,
)
from moerl.runs.rundir import RunDir, resume_status, running, stop_on_signals

__all__ = [
    "FAMILY", "DQNRunConfig", "EvalSection", "LoggingSection", "build_config", "build_model",
    "default_timesteps", "evaluate", "make_env", "resolve_env", "train", "validate",
]


# --- building ----------------------------------------------------------------------------------
def make_env(config: DQNRunConfig):
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
        raise ConfigError(f"env '{config.env}' has action space {env.action_space}; DQN needs Discrete actions")
    return Monitor(env)


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
    check_algo(request.option("algo"))
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
        with running(run, FAMILY_NAME, config.seed, str(engine_device(config))):
            run.write_config(to_dict(config))
            trainer = _Trainer(run, config, model, request.console())
            results = trainer.run()
            run.write_json("results.json", results)
    finally:
        env.close()
    _drop_checkpoints(run)
    trainer.summary(results)
    return run.path


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


def _drop_checkpoints(run: RunDir) -> None:
    """Once a run is marked finished, its checkpoint is dead weight (a replay buffer per run in a study)."""
    from moerl.rl.sb3.checkpoint import remove_checkpoints

    remove_checkpoints(run.path)


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
        config = validate(from_dict(DQNRunConfig, stored_config(run.read_config())))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"'{request.resume}' has no readable config.yaml ({exc})") from None
    config = apply_resume_flags(config, request.option("timesteps"), request.option("device"), step)
    torch.set_num_threads(TRAINING_THREADS)
    ckpt = load_checkpoint(run.path, device=engine_device(config))
    with running(run, FAMILY_NAME, config.seed, str(engine_device(config)), resumed_from=step):
        run.write_config(to_dict(config))
        trainer = _Trainer(run, config, ckpt.model, request.console(), resume=ckpt)
        results = trainer.run()
        run.write_json("results.json", results)
    ckpt.model.env.close()
    _drop_checkpoints(run)
    trainer.summary(results)
    return run.path


class _Trainer:
    """The training loop of one run: ``learn`` in chunks of ``checkpoint.every`` env steps, a checkpoint
    after each, evaluation callbacks, and a clean stop on SIGINT / SIGTERM.

    Chunks do not change what is trained: the schedules follow the whole run
    (:attr:`MoEDQN.schedule_timesteps`), the callbacks evaluate on the run's clock, and values the logger
    holds between dumps are carried across checkpoints, so a run cut in chunks, or killed and resumed,
    gives the same weights, evaluations and TensorBoard curves as one uninterrupted ``learn`` (tested).
    """

    def __init__(self, run: RunDir, config: DQNRunConfig, model, console: Console, resume=None) -> None:
        from stable_baselines3.common.logger import Logger

        from moerl.rl.evaluation import task_env_factories
        from moerl.rl.sb3.callbacks import (
            MetricsFileCallback,
            PerTaskEvalCallback,
            TaskEpisodeCallback,
        )
        from moerl.rl.sb3.checkpoint import restore_logger_values
        from moerl.rl.tb_layout import TaskSchedule, return_scale

        self.run_dir, self.config, self.model = run, config, model
        # Events after the checkpoint's step were written by the killed process and are written again.
        purge = resume.step + 1 if resume is not None else None
        model.set_logger(Logger(str(run.tb_dir), [_TensorBoard(str(run.tb_dir), purge_step=purge)]))
        info = suite_info(model.env)
        self.schedule, self.block_steps = list(info.schedule), info.block_steps
        self.env_id = resolve_env(config.env)
        eval_kwargs = {k: v for k, v in config.env_kwargs.items() if k != "fixed_task"}
        self.factories = task_env_factories(self.env_id, eval_kwargs, info.task_names)
        self.bounds = info.return_bounds
        self.episodes_cb = TaskEpisodeCallback()
        schedule = TaskSchedule(self.schedule, info.task_names, return_scale(self.bounds)) if self.bounds else None
        self.eval_cb = PerTaskEvalCallback(self.factories, config.eval.freq, config.eval.episodes,
                                           run.path / "eval.csv", self.bounds, seed=config.seed + 10_000,
                                           schedule=schedule)
        self.metrics_cb = MetricsFileCallback(run.path / "metrics.csv")
        assert config.timesteps is not None  # resolved before a trainer is built
        self.total: int = config.timesteps
        self.console = console
        label = f"{config.env} {config.network.arch}" + (f"/{config.network.router}" if config.network.uses_moe
                                                         else "") + f" s{config.seed}"
        self.progress = ProgressCallback(console, self.total, label, self.episodes_cb, self.eval_cb, self.metrics_cb)
        self.seconds = 0.0
        self.start_step = int(model.num_timesteps)
        if resume is not None:
            self.episodes_cb.load_state_dict(resume.extra["episodes"])
            self.eval_cb.load_state_dict(resume.extra["eval"])
            # A checkpoint from before metrics.csv existed: the file starts at the resumed step.
            self.metrics_cb.load_state_dict(resume.extra.get("metrics", {"rows": []}))
            self.seconds = float(resume.extra["seconds"])
            restore_logger_values(model, getattr(model, "_pending_log", None))

    def _extra(self) -> dict[str, Any]:
        return {"episodes": self.episodes_cb.state_dict(), "eval": self.eval_cb.state_dict(),
                "metrics": self.metrics_cb.state_dict(), "seconds": self.seconds}

    def run(self) -> dict[str, Any]:
        from stable_baselines3.common.callbacks import CallbackList

        from moerl.rl.sb3.checkpoint import save_checkpoint

        model, config = self.model, self.config
        model.schedule_timesteps = config.timesteps
        every = _chunk_steps(config)
        callbacks = [self.episodes_cb, self.eval_cb, self.metrics_cb, self.progress]
        try:
            with stop_on_signals(lambda name: model.request_stop()) as signals:
                while model.num_timesteps < config.timesteps and not model.stop_requested:
                    target = min(config.timesteps, (model.num_timesteps // every + 1) * every)
                    start = time.perf_counter()
                    model.learn(total_timesteps=target - model.num_timesteps, callback=CallbackList(callbacks),
                                log_interval=config.logging.log_interval,
                                reset_num_timesteps=model._last_obs is None)
                    self.seconds += time.perf_counter() - start
                    if model.num_timesteps < config.timesteps:
                        self.eval_cb.before_checkpoint()
                        save_checkpoint(self.run_dir.path, model, self._extra())
                signals.raise_if_stopped()
        finally:
            self.console.close()
        if model.num_timesteps == self.start_step:  # a resume with nothing left to train: no learn() call
            _attach(callbacks, model)
        self.eval_cb.finish()
        self.progress.report_evaluations()
        model.logger.close()
        self.console.say(f"final evaluation: {config.eval.final_episodes} greedy episodes per task ...")
        return self._results()

    def summary(self, results: dict[str, Any]) -> None:
        """The closing table (see :mod:`moerl.rl.console`)."""
        step, returns = last_eval_returns(self.eval_cb.rows)
        self.console.summary(summary_lines([results], [returns], step, self.config.eval.episodes))

    def _results(self) -> dict[str, Any]:
        from moerl.rl.continual import continual_metrics
        from moerl.rl.evaluation import evaluate_tasks
        from moerl.rl.nets.qnetwork import count_parameters

        model, config, run = self.model, self.config, self.run_dir
        export_model(run, model)
        final = evaluate_tasks(model, self.factories, config.eval.final_episodes, config.seed + 20_000)
        run.write_json("schedule.json", schedule_record(self.schedule, self.block_steps, self.episodes_cb.switches))
        reference = reference_rows(config.eval.reference_runs)
        return run_results(
            config, self.env_id, config.seed, engine="sb3", seeds_in_batch=1, seconds=self.seconds,
            env_steps=self.total, parameters=count_parameters(model.policy.q_net.q_net),
            final_eval={r.task: final_eval_entry(r.mean_return, r.std_return,
                                                 self.eval_cb.normalize(r.task, r.mean_return), len(r.returns))
                        for r in final},
            continual=(continual_metrics(self.eval_cb.rows, self.schedule, self.block_steps, reference)
                       if self.bounds else None))


def _attach(callbacks: list[Any], model: Any) -> None:
    """Give the callbacks the model ``learn`` would have given them: a run resumed at its total (a checkpoint
    taken at the last step, or ``--timesteps`` equal to the checkpoint's step) trains nothing, yet writes its
    last evaluation and results as a finished run does."""
    for callback in callbacks:
        callback.init_callback(model)
        callback.num_timesteps = model.num_timesteps


def _chunk_steps(config: DQNRunConfig) -> int:
    """Env steps between checkpoints, a multiple of ``train_freq`` (a rollout never straddles two chunks)."""
    every = config.checkpoint.every or config.timesteps or 1
    freq = config.dqn.train_freq
    return max(freq, (every // freq) * freq)


class _TensorBoard(TensorBoardOutputFormat):
    """SB3's TensorBoard output, opened with ``purge_step`` on resume.

    Events a killed run wrote after its last checkpoint are superseded: TensorBoard drops every event at or
    after ``purge_step`` written before the purge marker, so resumed curves have no duplicated steps. SB3's
    ``TensorBoardOutputFormat`` takes no ``purge_step``; this subclass only opens its writer with one.
    """

    def __init__(self, folder: str, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=folder, purge_step=purge_step)
        self._is_closed = False


def evaluate(run_path: Path, options: dict[str, Any]) -> dict[str, Any]:
    """Reload ``model.zip`` of a finished run and evaluate it greedily on every task."""
    import torch

    from moerl.rl.evaluation import evaluate_tasks, task_env_factories
    from moerl.rl.sb3.moe_dqn import MoEDQN

    if options.get("episodes") is not None:
        check_eval_episodes("--episodes", options["episodes"])
    torch.set_num_threads(TRAINING_THREADS)
    run = RunDir(run_path)
    config = from_dict(DQNRunConfig, stored_config(run.read_config()))
    _check_env_unchanged(run, config)
    device = engine_device(config, options.get("device"))
    model = run.load_artifact("model.zip", lambda path: MoEDQN.load(path, device=device))
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


def _check_env_unchanged(run: RunDir, config: DQNRunConfig) -> None:
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


def _check_model_fits(run: RunDir, config: DQNRunConfig, model: Any, env: Any) -> None:
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

