"""MoE DQN on the console (both engines): what the progress view shows and the closing summary table.

Why a module of its own: the SB3 engine (:mod:`moerl.rl.experiment`) and the batched engine
(:mod:`moerl.rl.batched_runs`) must show the same quantities under the same names, computed the
same way, and their results.json files have the same layout, so one summary serves both. The
:class:`~moerl.runs.console.Console` decides how it is shown (live bar or plain lines).

Quantities (each says how it is computed, in the bar and in the summary's notes):

* ``task``: the task being trained (CRL schedules);
* ``return(last N)``: per task, the mean return of its last :data:`RECENT` finished training episodes
  (exploration on); the batched engine shows the median of that over its seeds;
* ``eval@STEP``: per task, the mean greedy return of the latest periodic evaluation (``eval.episodes``
  episodes, the rows of ``eval.csv``); batched: the median over seeds.

The summary's ``avg perf`` is the continual metric of :mod:`moerl.rl.continual`: the mean of the
*last periodic evaluation's* normalised returns, so the table prints that column beside it (its mean is the
printed avg perf), and the final evaluation (``eval.final_episodes`` episodes, ``final_eval`` in
results.json) in columns of its own, labelled as such.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from moerl.runs.console import Console, duration, number, text_table

#: Training episodes per task behind the ``return`` quantity.
RECENT = 10


def short_names(names: Sequence[str]) -> dict[str, str]:
    """Task names without the prefix they all share up to a dash (``cartpole-default`` -> ``default``)."""
    names = list(names)
    if len(names) < 2:
        return {n: n for n in names}
    prefix = names[0]
    for n in names[1:]:
        while not n.startswith(prefix):
            prefix = prefix[:-1]
    cut = prefix.rfind("-") + 1
    return {n: (n[cut:] or n) for n in names}


def per_task(values: Mapping[str, float], short: Mapping[str, str], digits: int = 1) -> str:
    """``default 23.1 longheavy 12.0`` (``short``: the names to show)."""
    return " ".join(f"{short.get(k, k)} {v:.{digits}f}" for k, v in values.items())


def progress_fields(task: str | None, recent: Mapping[str, float], evaluation: tuple[int, Mapping[str, float]] | None,
                    seeds: int = 1) -> dict[str, str]:
    """The progress view's quantities (see the module docstring), in order."""
    how = "" if seeds == 1 else f", median of {seeds} seeds"
    fields: dict[str, str] = {}
    names = list(dict.fromkeys([*(evaluation[1] if evaluation else ()), *recent, *([task] if task else [])]))
    short = short_names(names)
    if task is not None and len(names) > 1:
        fields["task"] = short[task]
    if recent:
        fields[f"return(last {RECENT}{how})"] = per_task(recent, short)
    if evaluation is not None:
        step, returns = evaluation
        fields[f"eval@{step:,}"] = per_task(returns, short)
    return fields


def eval_line(step: int, returns: Mapping[str, float], normalized: Mapping[str, float | None], seeds: int = 1) -> str:
    """The ``--verbose`` line of one evaluation: per task greedy return (and normalised return)."""
    parts = []
    for task, value in returns.items():
        norm = normalized.get(task)
        parts.append(f"{task} {value:.2f}" + (f" (norm {norm:.3f})" if norm is not None else ""))
    norms = [v for v in normalized.values() if v is not None]
    mean = f" | mean norm {float(np.mean(norms)):.3f}" if norms else ""
    who = "" if seeds == 1 else f" (median of {seeds} seeds)"
    return f"eval @ step {step:,}{who}: " + " | ".join(parts) + mean


def metrics_line(step: int, metrics: Mapping[str, float]) -> str | None:
    """The ``--verbose`` line of MoE metrics: dormant-neuron fractions over all layers and router entropies."""
    keep = {k: v for k, v in metrics.items()
            if (k.startswith("moe/dormant/") and k.endswith("/all")) or k.endswith("/entropy")}
    if not keep:
        return None
    return f"moe @ step {step:,}: " + " | ".join(f"{k[len('moe/'):]} {v:.3f}" for k, v in sorted(keep.items()))


class ProgressCallback(BaseCallback):
    """SB3 engine: feeds the console from the run's own callbacks (it computes nothing the run keeps).

    Reads :class:`~moerl.rl.sb3.callbacks.TaskEpisodeCallback` (training returns, task switches),
    :class:`~moerl.rl.sb3.callbacks.PerTaskEvalCallback` (evaluation rows) and
    :class:`~moerl.rl.sb3.callbacks.MetricsFileCallback` (``moe/*`` rows); must come after them in the
    callback list. One view for the whole run, across ``learn`` chunks and resumes.
    """

    #: Env steps between two recomputations of the shown quantities (the position moves every step).
    EVERY = 100

    def __init__(self, console: Console, total: int, label: str, episodes_cb: Any, eval_cb: Any,
                 metrics_cb: Any) -> None:
        super().__init__()
        self.console, self.total, self.label = console, total, label
        self.episodes_cb, self.eval_cb, self.metrics_cb = episodes_cb, eval_cb, metrics_cb
        self._started = False
        self._evals_seen = 0
        self._metrics_seen = 0
        self._fields: dict[str, str] = {}

    def _on_training_start(self) -> None:
        if not self._started:
            self._started = True
            self.console.start(self.label, self.total, "step", initial=self.num_timesteps)
            self._evals_seen = len(self.eval_cb.rows) if self.num_timesteps else 0
            self._metrics_seen = len(self.metrics_cb.rows)
        self._refresh()

    def _on_step(self) -> bool:
        if len(self.eval_cb.rows) > self._evals_seen or self.num_timesteps % self.EVERY == 0:
            self._refresh()
        else:
            self.console.update(self.num_timesteps)
        return True

    def _refresh(self) -> None:
        evaluation = self.report_evaluations()
        switches = self.episodes_cb.switches
        task = switches[-1][2] if switches else None
        self._fields = progress_fields(task, self.episodes_cb.recent_returns(RECENT), evaluation)
        self.console.update(self.num_timesteps, self._fields)

    def report_evaluations(self) -> tuple[int, dict[str, float]] | None:
        """The ``--verbose`` lines of evaluations not yet reported; returns the latest evaluation."""
        rows = self.eval_cb.rows
        if not rows:
            return None
        step = int(rows[-1]["step"])
        last = [r for r in rows if int(r["step"]) == step]
        evaluation = (step, {r["task"]: float(r["mean_return"]) for r in last})
        if len(rows) > self._evals_seen:
            self._evals_seen = len(rows)
            self.console.detail(eval_line(step, evaluation[1], {r["task"]: r["normalized"] for r in last}))
            self._metrics_detail()
        return evaluation

    def _metrics_detail(self) -> None:
        rows = self.metrics_cb.rows[self._metrics_seen:]
        self._metrics_seen = len(self.metrics_cb.rows)
        if rows:
            step = int(rows[-1]["step"])
            line = metrics_line(step, {r["key"]: float(r["value"]) for r in rows if int(r["step"]) == step})
            if line:
                self.console.detail(line)


class BatchProgress:
    """Batched engine: the same quantities, each the median over the batch's seeds.

    :meth:`episodes` reads the engine's episode log (``BatchedDQN.log.episodes``) after each ``learn``
    chunk, before an evaluation pops it; :meth:`evaluated` takes each evaluation's (S, episodes) returns.
    """

    def __init__(self, console: Console, total: int, label: str, task_names: Sequence[str], seeds: int,
                 schedule: Sequence[Mapping[str, Any]], block_steps: int) -> None:
        self.console, self.total, self.names, self.seeds = console, total, list(task_names), seeds
        self.schedule, self.block_steps = list(schedule), block_steps
        self.label = label
        self.recent: dict[str, list[deque[float]]] = {n: [deque(maxlen=RECENT) for _ in range(seeds)]
                                                       for n in self.names}
        self._seen = 0
        self.evaluation: tuple[int, dict[str, float]] | None = None

    def episodes(self, log_episodes: Sequence[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> None:
        for _, done, task, ret, _length in log_episodes[self._seen:]:
            for at in map(tuple, np.argwhere(done)):  # (seed,) or, with environments per seed, (seed, env)
                self.recent[self.names[int(task[at])]][at[0]].append(float(ret[at]))
        self._seen = len(log_episodes)

    def popped(self) -> None:
        """The engine's episode log was emptied (an evaluation took it)."""
        self._seen = 0

    def keep(self, members: Sequence[int]) -> None:
        """Only ``members`` (indices, in this order) go on: the others reached their budgets and left the
        batch (the engine keeps its log for those that go on, so what was seen of it stays seen)."""
        self.recent = {name: [per_seed[i] for i in members] for name, per_seed in self.recent.items()}
        self.seeds = len(members)

    def evaluated(self, step: int, returns: Mapping[str, np.ndarray], bounds: Mapping[str, tuple[float, float]],
                  metrics: Sequence[tuple[int, Mapping[str, np.ndarray]]]) -> None:
        from moerl.rl.envs.attributes import normalized_return

        medians = {name: float(np.median(r.mean(axis=1))) for name, r in returns.items()}
        self.evaluation = (step, medians)
        norms = {name: (float(np.median([normalized_return(float(m), bounds[name]) for m in r.mean(axis=1)]))
                        if name in bounds else None) for name, r in returns.items()}
        self.console.detail(eval_line(step, medians, norms, self.seeds))
        if metrics:
            at, values = metrics[-1]
            line = metrics_line(at, {f"moe/{k}": float(np.median(v)) for k, v in values.items()})
            if line:
                self.console.detail(line)

    def show(self, step: int) -> None:
        recent = {}
        for name, per_seed in self.recent.items():
            means = [float(np.mean(d)) for d in per_seed if d]
            if means:
                recent[name] = float(np.median(means))
        task = None
        if self.schedule and self.block_steps:
            block = min(step // self.block_steps, len(self.schedule) - 1)
            task = str(self.schedule[block]["task_name"])
        self.console.update(step, progress_fields(task, recent, self.evaluation, self.seeds))


# -- the closing summary --------------------------------------------------------------------------------
def _last_eval(results: Mapping[str, Any]) -> dict[str, float]:
    cont = results.get("continual") or {}
    return dict(cont.get("final_normalized") or {})


def summary_lines(results: Sequence[Mapping[str, Any]], last_returns: Sequence[Mapping[str, float]],
                  last_step: int, eval_episodes: int) -> list[str]:
    """The closing table of one run (``results`` of one seed) or of a batch (one results.json per seed).

    ``last_returns``: per seed, the last periodic evaluation's mean return per task (the eval.csv rows at
    ``last_step``) — the evaluation that ``avg perf`` and forgetting are computed from.
    """
    first = results[0]
    n = len(results)
    router = f"/{first['router']}" if first.get("router") else ""
    seconds = float(first.get("train_seconds") or 0.0)
    sps = first.get("steps_per_second")
    head = (f"{first['env']} {first['arch']}{router}, " + (f"seed {first['seed']}" if n == 1 else
            f"{n} seeds ({', '.join(str(r['seed']) for r in results[:8])}{', ...' if n > 8 else ''}), batched") +
            f": {int(first['timesteps']):,} steps in {duration(seconds)}"
            + (f" ({number(float(sps), 0)} env steps/s{' over all seeds' if n > 1 else ''})" if sps else "")
            + f", {int(first['parameters']):,} parameters")
    lines = ["", f"== summary: {head}"]
    tasks = list(first["final_eval"])
    final_eps = next(iter(first["final_eval"].values()))["episodes"] if tasks else 0
    agg = (lambda xs: xs[0]) if n == 1 else (lambda xs: float(np.median(xs)))
    has_norm = bool(_last_eval(first))
    head_row = ["task", f"final return ({final_eps} ep)", "final norm"]
    if has_norm or last_returns:
        head_row += [f"last eval return ({eval_episodes} ep @{last_step:,})", "last eval norm"]
    rows = []
    for task in tasks:
        finals = [float(r["final_eval"][task]["mean_return"]) for r in results]
        fnorms = [r["final_eval"][task].get("normalized") for r in results]
        row: list[Any] = [task, agg(finals), agg(fnorms) if None not in fnorms else None]
        if len(head_row) > 3:
            lrets = [float(lr[task]) for lr in last_returns if task in lr]
            lnorms = [_last_eval(r).get(task) for r in results]
            row += [agg(lrets) if lrets else None, agg(lnorms) if None not in lnorms else None]
        rows.append(row)
    # normalised columns to 3 places (returns to 2): the printed avg perf is the mean of the printed column
    lines += text_table(head_row, [[c if not isinstance(c, float) or i in (1, 3) else f"{c:.3f}"
                                   for i, c in enumerate(row)] for row in rows])
    cont = [r.get("continual") for r in results]
    if all(c is not None for c in cont):
        lines += _continual_lines(results, n)
    else:
        lines.append("continual metrics: none (this env declares no return bounds to normalise with)")
    lines += [
        "how:" + (" the task rows are medians over seeds of each seed's value;" if n > 1 else ""),
        "  final = greedy returns after training, eval.final_episodes episodes per task (results.json final_eval)",
        "  last eval = the last periodic greedy evaluation, eval.episodes episodes per task (eval.csv)",
        "  norm = (return - low) / (high - low), the task's declared return bounds",
    ]
    if all(c is not None for c in cont):
        lines += [
            "  avg perf = mean over tasks of 'last eval norm'" + (" (of one seed: its row above)" if n > 1 else ""),
            "  forgetting = a task's 'last eval norm' subtracted from its norm at the end of its last training",
            "    block (end) or from its best (best), mean over the tasks not trained last",
            "  forward transfer = mean gap to single-task reference curves (eval.reference_runs)",
        ]
    return lines


def _continual_lines(results: Sequence[Mapping[str, Any]], n: int) -> list[str]:
    keys = [("avg perf", "average_performance"), ("forgetting (end)", "mean_forgetting_end_of_block"),
            ("forgetting (best)", "mean_forgetting_best"), ("forward transfer", "mean_forward_transfer")]
    parts = []
    for label, key in keys:
        values = [r["continual"].get(key) for r in results]
        if all(v is None for v in values):
            if key == "mean_forward_transfer":
                parts.append(f"{label} - (no reference runs)")
            continue
        got = [float(v) for v in values if v is not None]
        if n == 1:
            parts.append(f"{label} {got[0]:.3f}")
        else:
            parts.append(f"{label} {float(np.median(got)):.3f} [{min(got):.3f}, {max(got):.3f}]")
    where = "" if n == 1 else " (median [min, max] over seeds)"
    lines = [f"continual{where}: " + " | ".join(parts)]
    if n > 1:  # per seed, the columns its avg perf is the mean of
        tasks = list(results[0]["continual"]["final_normalized"])
        short = short_names(tasks)
        rows = [[str(r["seed"]), *(r["continual"]["final_normalized"].get(t) for t in tasks),
                 *(r["continual"].get(k) for _, k in keys[:3])] for r in results[:10]]
        lines += text_table(["seed", *(f"{short[t]} last norm" for t in tasks), "avg perf", "forgetting (end)",
                             "forgetting (best)"],
                            [[c if not isinstance(c, float) else f"{c:.3f}" for c in row] for row in rows])
        if n > 10:
            lines.append(f"... {n - 10} more seeds in their results.json")
    return lines


def last_eval_returns(rows: Sequence[Mapping[str, Any]]) -> tuple[int, dict[str, float]]:
    """The last periodic evaluation in eval.csv rows: its step and mean return per task."""
    if not rows:
        return 0, {}
    step = max(int(r["step"]) for r in rows)
    return step, {str(r["task"]): float(r["mean_return"]) for r in rows if int(r["step"]) == step}
