"""SB3 callbacks for the MoE study: per-task training returns, task switches, per-task evaluation, and the
plain files beside TensorBoard (``eval.csv``, ``eval_usage.csv``, ``metrics.csv``) that ``moerl report`` reads.

Every file is rewritten whole from the rows held in memory, to a temporary name and renamed, so a crash
leaves the previous complete file; the rows are part of the checkpoint, so a resumed run rewrites each file
to the checkpoint's rows and never duplicates one. Nothing here draws random numbers or changes training.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from moerl.rl.envs.attributes import normalized_return
from moerl.rl.evaluation import evaluate_tasks
from moerl.rl.record import (
    EVAL_FIELDS,
    METRIC_FIELDS,
    USAGE_FIELDS,
    eval_row,
    eval_scalars,
    train_return_tag,
    usage_rows,
    usage_scalars,
    write_csv_atomic,
)
from moerl.rl.tb_layout import TaskSchedule, layout, tensorboard_writer, usage_layers, write_schedule


class TaskEpisodeCallback(BaseCallback):
    """Log each finished training episode's return under its task, and the CRL schedule position.

    TensorBoard tags: ``train/return/<task>`` (mean over the episodes since the last dump),
    ``schedule/task_id``, ``schedule/block``, ``schedule/cycle`` (named so that they sort after ``eval/``:
    the default scalars page shows tag groups alphabetically, and its first cards should be the returns).
    Task switches seen in training are kept in :attr:`switches` as ``(step, task_id, task_name, block,
    cycle)`` rows.

    ``untasked``: the task name of an env whose infos carry no task (a plain Gymnasium env): its id, as the
    evaluation names its one task (runs written before used ``main``; a checkpoint of one resumes under it).
    """

    def __init__(self, verbose: int = 0, untasked: str = "main"):
        super().__init__(verbose)
        self.untasked = untasked
        self.switches: list[tuple[int, int, str, int, int]] = []
        self._episode_returns: dict[str, list[float]] = {}

    def state_dict(self) -> dict:
        return {"switches": list(self.switches), "episode_returns": {k: list(v) for k, v in self._episode_returns.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.switches = [(int(a), int(b), str(c), int(d), int(e)) for a, b, c, d, e in state["switches"]]
        self._episode_returns = {(self.untasked if k == "main" else k): list(v)
                                 for k, v in state["episode_returns"].items()}

    def recent_returns(self, n: int) -> dict[str, float]:
        """Per task, the mean return of its last ``n`` finished training episodes (for the console)."""
        return {task: float(np.mean(r[-n:])) for task, r in self._episode_returns.items() if r}

    def _on_step(self) -> bool:
        for info, done in zip(self.locals["infos"], self.locals["dones"], strict=True):
            if "task_id" in info:
                task_id, name = int(info["task_id"]), str(info.get("task_name", info["task_id"]))
                block, cycle = int(info.get("block", 0)), int(info.get("cycle", 0))
                if not self.switches or self.switches[-1][1] != task_id or self.switches[-1][3] != block:
                    self.switches.append((self.num_timesteps, task_id, name, block, cycle))
                self.logger.record("schedule/task_id", task_id)
                if "block" in info:
                    self.logger.record("schedule/block", block)
                    self.logger.record("schedule/cycle", cycle)
            else:
                name = self.untasked
            episode = info.get("episode")
            if done and episode is not None:
                self.logger.record_mean(train_return_tag(name), float(episode["r"]))
                self._episode_returns.setdefault(name, []).append(float(episode["r"]))
        return True


class PerTaskEvalCallback(BaseCallback):
    """Every ``eval_freq`` env steps, greedy returns on every task and per-task router usage.

    TensorBoard tags: ``eval/return/<task>``, ``eval/normalized/<task>`` (when return bounds are
    known), ``eval/normalized_mean``, ``eval_usage/<task>/<layer>/expert<e>``, the task-schedule series
    when ``schedule`` is given, and at the first evaluation the custom-scalars layout
    (:mod:`moerl.rl.tb_layout`). Each evaluation also appends rows to ``csv_path`` (:data:`EVAL_FIELDS`)
    and, for networks with a router, to ``usage_path`` (:data:`USAGE_FIELDS`; default: ``eval_usage.csv``
    beside ``csv_path``).
    """

    FIELDS = EVAL_FIELDS

    def __init__(
        self,
        factories: dict[str, Callable[[], gym.Env]],
        eval_freq: int,
        n_episodes: int,
        csv_path: str | Path,
        return_bounds: dict[str, tuple[float, float]] | None = None,
        seed: int = 0,
        verbose: int = 0,
        usage_path: str | Path | None = None,
        schedule: TaskSchedule | None = None,
    ):
        super().__init__(verbose)
        self.schedule = schedule
        self.factories = factories
        self.eval_freq = eval_freq
        self.n_episodes = n_episodes
        self.csv_path = Path(csv_path)
        self.return_bounds = return_bounds or {}
        self.seed = seed
        self.usage_path = Path(usage_path) if usage_path is not None else self.csv_path.with_name("eval_usage.csv")
        self.rows: list[dict] = []
        self.usage: list[dict[str, Any]] = []
        self._last_eval = -1
        #: The step through which the task-schedule series is written (evaluations and checkpoints write it).
        self._schedule_done = -1

    def _on_training_start(self) -> None:
        # ``learn`` may be called in chunks (checkpoints): only the run's first start evaluates.
        if self._last_eval < 0:
            self._write_csv()
            self.evaluate()

    def _on_step(self) -> bool:
        if self.eval_freq > 0 and self.num_timesteps - self._last_eval >= self.eval_freq:
            self.evaluate()
        return True

    def finish(self) -> None:
        """The run's last evaluation (unless one just happened); called once, after the last chunk."""
        if self._last_eval != self.num_timesteps:
            self.evaluate()

    def before_checkpoint(self) -> None:
        """Write the task-schedule jumps up to now, before a checkpoint is taken here (see
        :func:`moerl.rl.tb_layout.write_schedule`)."""
        writer = tensorboard_writer(self.logger)
        if writer is not None and self.schedule is not None:
            write_schedule(writer, self.schedule, self._schedule_done, self.num_timesteps, end=False)
            writer.flush()
        self._schedule_done = self.num_timesteps

    def state_dict(self) -> dict:
        return {"rows": [dict(r) for r in self.rows], "last_eval": self._last_eval,
                "usage": [dict(r) for r in self.usage], "schedule_done": self._schedule_done}

    def load_state_dict(self, state: dict) -> None:
        """Restore the evaluations up to a checkpoint and rewrite the CSVs to them (later rows are dropped).

        A checkpoint written before ``eval_usage.csv`` existed has no usage rows: the file then starts anew.
        """
        self.rows = [dict(r) for r in state["rows"]]
        self.usage = [dict(r) for r in state.get("usage", [])]
        self._last_eval = int(state["last_eval"])
        self._schedule_done = int(state.get("schedule_done", self._last_eval))  # older checkpoints: at evaluations
        self._write_csv()

    def _write_csv(self) -> None:
        """The whole CSVs from :attr:`rows` and :attr:`usage`, written atomically."""
        write_csv_atomic(self.csv_path, EVAL_FIELDS, self.rows)
        if self.usage or self.usage_path.exists():
            write_csv_atomic(self.usage_path, USAGE_FIELDS, self.usage)

    def normalize(self, task: str, value: float) -> float | None:
        if task not in self.return_bounds:
            return None
        return normalized_return(value, self.return_bounds[task])

    def evaluate(self) -> list[dict]:
        """Evaluate now, log and append to the CSV; returns this evaluation's rows."""
        previous, self._last_eval = self._last_eval, self.num_timesteps
        results = evaluate_tasks(self.model, self.factories, self.n_episodes, self.seed + self.num_timesteps)
        rows = [eval_row(self.num_timesteps, res.task, res.mean_return, res.std_return,
                         self.normalize(res.task, res.mean_return), len(res.returns)) for res in results]
        usage = [u for res in results if hasattr(self.model, "moe_metrics") and len(res.observations)
                 for u in usage_rows(self.num_timesteps, res.task, self.model.moe_metrics(res.observations))]
        self.usage.extend(usage)
        usage_tags = [tag for tag, _ in usage_scalars(usage)]
        for tag, value in [*eval_scalars(rows), *usage_scalars(usage)]:
            self.logger.record(tag, value)
        writer = tensorboard_writer(self.logger)
        if writer is not None:  # the layout once, at the run's first evaluation; the schedule at every one
            if previous < 0:
                writer.add_custom_scalars(layout(list(self.factories), usage_layers(usage_tags),
                                                 bool(self.return_bounds)))
            if self.schedule is not None:
                write_schedule(writer, self.schedule, self._schedule_done, self.num_timesteps)
        self._schedule_done = self.num_timesteps
        self.logger.dump(self.num_timesteps)
        self.rows.extend(rows)
        self._write_csv()
        return rows


class MetricsFileCallback(BaseCallback):
    """``metrics.csv`` (:data:`METRIC_FIELDS`): the ``moe/*`` metrics the model measured, in a plain file.

    The model (:meth:`MoEDQN.pop_metrics`) keeps what it sent to TensorBoard; this callback takes it after
    every env step and at the end of each ``learn`` chunk (so a checkpoint, taken between chunks, holds every
    row so far) and rewrites the file when rows arrived. Models without ``pop_metrics`` write nothing.
    """

    def __init__(self, csv_path: str | Path, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.csv_path = Path(csv_path)
        self.rows: list[dict[str, Any]] = []

    def state_dict(self) -> dict:
        return {"rows": [dict(r) for r in self.rows]}

    def load_state_dict(self, state: dict) -> None:
        """Restore the rows up to a checkpoint and rewrite the file to them (later rows are dropped)."""
        self.rows = [dict(r) for r in state["rows"]]
        write_csv_atomic(self.csv_path, METRIC_FIELDS, self.rows)

    def _take(self) -> None:
        pop = getattr(self.model, "pop_metrics", None)
        new = pop() if pop is not None else []
        if new:
            self.rows.extend({"step": step, "key": key, "value": value} for step, key, value in new)
            write_csv_atomic(self.csv_path, METRIC_FIELDS, self.rows)

    def _on_step(self) -> bool:
        self._take()
        return True

    def _on_training_end(self) -> None:
        self._take()

