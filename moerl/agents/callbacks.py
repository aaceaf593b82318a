"""SB3 callbacks for the MoE study: per-task training returns, task switches, per-task evaluation."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from moerl.agents.evaluation import evaluate_tasks
from moerl.envs.attributes import normalized_return


class TaskEpisodeCallback(BaseCallback):
    """Log each finished training episode's return under its task, and the CRL schedule position.

    TensorBoard tags: ``train/return/<task>`` (mean over the episodes since the last dump),
    ``crl/task_id``, ``crl/block``, ``crl/cycle``. Task switches seen in training are kept in
    :attr:`switches` as ``(step, task_id, task_name, block, cycle)`` rows.
    """

    def __init__(self, verbose: int = 0):
        super().__init__(verbose)
        self.switches: list[tuple[int, int, str, int, int]] = []
        self._episode_returns: dict[str, list[float]] = {}

    def state_dict(self) -> dict:
        return {"switches": list(self.switches), "episode_returns": {k: list(v) for k, v in self._episode_returns.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.switches = [(int(a), int(b), str(c), int(d), int(e)) for a, b, c, d, e in state["switches"]]
        self._episode_returns = {k: list(v) for k, v in state["episode_returns"].items()}

    def _on_step(self) -> bool:
        for info, done in zip(self.locals["infos"], self.locals["dones"], strict=True):
            if "task_id" in info:
                task_id, name = int(info["task_id"]), str(info.get("task_name", info["task_id"]))
                block, cycle = int(info.get("block", 0)), int(info.get("cycle", 0))
                if not self.switches or self.switches[-1][1] != task_id or self.switches[-1][3] != block:
                    self.switches.append((self.num_timesteps, task_id, name, block, cycle))
                self.logger.record("crl/task_id", task_id)
                if "block" in info:
                    self.logger.record("crl/block", block)
                    self.logger.record("crl/cycle", cycle)
            else:
                name = "main"
            episode = info.get("episode")
            if done and episode is not None:
                self.logger.record_mean(f"train/return/{name}", float(episode["r"]))
                self._episode_returns.setdefault(name, []).append(float(episode["r"]))
        return True


class PerTaskEvalCallback(BaseCallback):
    """Every ``eval_freq`` env steps, greedy returns on every task and per-task router usage.

    TensorBoard tags: ``eval/return/<task>``, ``eval/normalized/<task>`` (when return bounds are
    known), ``eval/normalized_mean``, ``eval_usage/<task>/<layer>/expert<e>``. Each evaluation also
    appends rows to ``csv_path``: step, task, mean_return, std_return, normalized, episodes.
    """

    FIELDS = ("step", "task", "mean_return", "std_return", "normalized", "episodes")

    def __init__(
        self,
        factories: dict[str, Callable[[], gym.Env]],
        eval_freq: int,
        n_episodes: int,
        csv_path: str | Path,
        return_bounds: dict[str, tuple[float, float]] | None = None,
        seed: int = 0,
        verbose: int = 0,
    ):
        super().__init__(verbose)
        self.factories = factories
        self.eval_freq = eval_freq
        self.n_episodes = n_episodes
        self.csv_path = Path(csv_path)
        self.return_bounds = return_bounds or {}
        self.seed = seed
        self.rows: list[dict] = []
        self._last_eval = -1

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

    def state_dict(self) -> dict:
        return {"rows": [dict(r) for r in self.rows], "last_eval": self._last_eval}

    def load_state_dict(self, state: dict) -> None:
        """Restore the evaluations up to a checkpoint and rewrite the CSV to them (later rows are dropped)."""
        self.rows = [dict(r) for r in state["rows"]]
        self._last_eval = int(state["last_eval"])
        self._write_csv()

    def _write_csv(self) -> None:
        """The whole CSV from :attr:`rows`, written atomically."""
        tmp = self.csv_path.with_name(f".{self.csv_path.name}.tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.FIELDS)
            writer.writeheader()
            for row in self.rows:
                writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
        tmp.replace(self.csv_path)

    def normalize(self, task: str, value: float) -> float | None:
        if task not in self.return_bounds:
            return None
        return normalized_return(value, self.return_bounds[task])

    def evaluate(self) -> list[dict]:
        """Evaluate now, log and append to the CSV; returns this evaluation's rows."""
        self._last_eval = self.num_timesteps
        results = evaluate_tasks(self.model, self.factories, self.n_episodes, self.seed + self.num_timesteps)
        rows: list[dict[str, Any]] = []
        for res in results:
            norm = self.normalize(res.task, res.mean_return)
            row = {"step": self.num_timesteps, "task": res.task, "mean_return": res.mean_return,
                   "std_return": res.std_return, "normalized": norm, "episodes": len(res.returns)}
            rows.append(row)
            self.logger.record(f"eval/return/{res.task}", res.mean_return)
            if norm is not None:
                self.logger.record(f"eval/normalized/{res.task}", norm)
            if hasattr(self.model, "moe_metrics") and len(res.observations):
                for key, value in self.model.moe_metrics(res.observations).items():
                    if key.startswith("router/") and "/usage_expert" in key:
                        layer, expert = key[len("router/"):].split("/usage_")
                        self.logger.record(f"eval_usage/{res.task}/{layer}/{expert}", value)
        norms = [r["normalized"] for r in rows if r["normalized"] is not None]
        if norms:
            self.logger.record("eval/normalized_mean", float(np.mean(norms)))
        self.logger.dump(self.num_timesteps)
        self.rows.extend(rows)
        self._write_csv()
        return rows


class RunProgressBar(BaseCallback):
    """One progress bar for a whole run, across ``learn`` chunks and resumes (SB3's restarts per ``learn``)."""

    def __init__(self, total: int) -> None:
        super().__init__()
        self.total = total
        self._bar = None

    def _on_training_start(self) -> None:
        if self._bar is None:
            from tqdm.auto import tqdm  # type: ignore[import-untyped]

            self._bar = tqdm(total=self.total, initial=self.num_timesteps, unit="step", dynamic_ncols=True)

    def _on_step(self) -> bool:
        if self._bar is not None:
            self._bar.update(self.num_timesteps - self._bar.n)
        return True

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
