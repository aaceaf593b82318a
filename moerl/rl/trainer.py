"""The training loop of one RL run on the SB3 reference engine, for every algorithm (MoE DQN, MoE PPO).

What differs between algorithms reaches it as arguments: the model, the env steps between checkpoints (a
multiple of DQN's ``train_freq`` or of PPO's rollout, so no update straddles two chunks), the network's
parameter count and the suite's description. Everything else (chunks and checkpoints, the evaluation and
metrics callbacks, clean stops on signals, TensorBoard's purge on resume, the final evaluation and
``results.json``) is one code path, so a PPO run directory is a DQN run directory with other numbers in it.
"""

from __future__ import annotations

import time
from typing import Any

from stable_baselines3.common.logger import TensorBoardOutputFormat

from moerl.core.config import to_dict
from moerl.rl.config import FAMILY_NAME, RLRunConfig, engine_device, reference_rows, resolve_env
from moerl.rl.console import ProgressCallback, last_eval_returns, summary_lines
from moerl.rl.envs.attributes import SuiteInfo
from moerl.rl.record import export_model, final_eval_entry, run_results, schedule_record
from moerl.runs.console import Console
from moerl.runs.rundir import RunDir, running, stop_on_signals

__all__ = ["Trainer", "chunk_steps", "drop_checkpoints"]


class Trainer:
    """The training loop of one run: ``learn`` in chunks of ``checkpoint.every`` env steps, a checkpoint
    after each, evaluation callbacks, and a clean stop on SIGINT / SIGTERM.

    Chunks do not change what is trained: the schedules follow the whole run
    (the model's ``schedule_timesteps``), the callbacks evaluate on the run's clock, and values the logger
    holds between dumps are carried across checkpoints, so a run cut in chunks, or killed and resumed,
    gives the same weights, evaluations and TensorBoard curves as one uninterrupted ``learn`` (tested).
    """

    def __init__(self, run: RunDir, config: RLRunConfig, model: Any, console: Console, *, chunk: int,
                 parameters: int, info: SuiteInfo, resume: Any = None) -> None:
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
        self.chunk, self.parameters = chunk, parameters
        self.schedule, self.block_steps = list(info.schedule), info.block_steps
        self.env_id = resolve_env(config.env)
        eval_kwargs = {k: v for k, v in config.env_kwargs.items() if k != "fixed_task"}
        self.factories = task_env_factories(self.env_id, eval_kwargs, info.task_names)
        self.bounds = info.return_bounds
        self.episodes_cb = TaskEpisodeCallback(untasked=self.env_id)
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
        every = self.chunk
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

        model, config, run = self.model, self.config, self.run_dir
        export_model(run, model)
        final = evaluate_tasks(model, self.factories, config.eval.final_episodes, config.seed + 20_000)
        run.write_json("schedule.json", schedule_record(self.schedule, self.block_steps, self.episodes_cb.switches))
        reference = reference_rows(config.eval.reference_runs)
        return run_results(
            config, self.env_id, config.seed, engine="sb3", seeds_in_batch=1, seconds=self.seconds,
            env_steps=self.total, parameters=self.parameters,
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


def chunk_steps(every: int, total: int, unit: int) -> int:
    """Env steps between checkpoints: ``every`` (0: none, one chunk of ``total``) rounded down to a multiple of
    ``unit`` (DQN's ``train_freq``, PPO's rollout ``n_envs x n_steps``), so an update never straddles two chunks."""
    every = every or total or 1
    return max(unit, (every // unit) * unit)


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


def drop_checkpoints(run: RunDir) -> None:
    """Once a run is marked finished, its checkpoint is dead weight (a replay buffer per run in a study)."""
    from moerl.rl.sb3.checkpoint import remove_checkpoints

    remove_checkpoints(run.path)


def train_in(run: RunDir, config: RLRunConfig, make_trainer: Any) -> tuple[Trainer, dict[str, Any]]:
    """A new run's life in its directory, for every algorithm: marked running, its resolved config written,
    ``make_trainer(run)`` trained, ``results.json`` written; returns the trainer and the results."""
    with running(run, FAMILY_NAME, config.seed, str(engine_device(config))):
        run.write_config(to_dict(config))
        trainer = make_trainer(run)
        results = trainer.run()
        run.write_json("results.json", results)
    return trainer, results
