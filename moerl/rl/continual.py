"""Continual-learning metrics on normalised per-task evaluation curves.

Inputs are the per-task evaluation rows of a run (``eval.csv``: step, task, normalized) and the
CRL schedule (which task trained in which step range). Normalised returns lie in [0, 1] using each
task's documented return bounds (``TaskSuiteEnv.return_bounds``).

* average performance: mean over tasks of the final normalised return;
* forgetting of a task: (its value at the end of its last training block, and its best value over
  the run) minus its final value; averaged over tasks that are not trained last;
* forward transfer (when single-task reference curves are given): the mean, over each task's first
  block, of (normalised return of the continual run - normalised return of a fresh single-task run
  after the same number of steps on that task), i.e. the area between the curves per step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def _curve(rows: Sequence[dict], task: str) -> tuple[np.ndarray, np.ndarray]:
    pts = sorted((int(r["step"]), float(r["normalized"])) for r in rows
                 if r["task"] == task and r.get("normalized") not in (None, ""))
    if not pts:
        return np.zeros(0), np.zeros(0)
    steps, vals = zip(*pts, strict=True)
    return np.asarray(steps), np.asarray(vals)


def _value_at(steps: np.ndarray, vals: np.ndarray, step: int) -> float:
    """Value of the last evaluation at or before ``step`` (the curve is piecewise constant)."""
    idx = np.searchsorted(steps, step, side="right") - 1
    return float(vals[max(idx, 0)])


def continual_metrics(
    rows: Sequence[dict],
    schedule: Sequence[dict],
    block_steps: int,
    reference: Mapping[str, Sequence[dict]] | None = None,
) -> dict[str, object]:
    """Average performance, forgetting and (optional) forward transfer; see the module docstring.

    ``schedule``: rows with ``block``, ``task_name`` and ``start_step`` (nominal block starts);
    ``reference``: per task, the eval rows of a single-task run of that task.
    """
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    final = {t: float(_curve(rows, t)[1][-1]) for t in tasks if len(_curve(rows, t)[0])}
    out: dict[str, object] = {
        "final_normalized": final,
        "average_performance": float(np.mean(list(final.values()))) if final else None,
    }
    if not schedule:
        return out
    last_block_end: dict[str, int] = {}
    first_block_start: dict[str, int] = {}
    for block in schedule:
        name = str(block["task_name"])
        last_block_end[name] = int(block["start_step"]) + block_steps
        first_block_start.setdefault(name, int(block["start_step"]))
    final_trained = str(schedule[-1]["task_name"])
    forgetting_end, forgetting_best = {}, {}
    for task in tasks:
        steps, vals = _curve(rows, task)
        if not len(steps) or task not in last_block_end or task == final_trained:
            continue
        forgetting_end[task] = _value_at(steps, vals, last_block_end[task]) - final[task]
        forgetting_best[task] = float(vals.max()) - final[task]
    out["forgetting_end_of_block"] = forgetting_end
    out["forgetting_best"] = forgetting_best
    out["mean_forgetting_end_of_block"] = float(np.mean(list(forgetting_end.values()))) if forgetting_end else None
    out["mean_forgetting_best"] = float(np.mean(list(forgetting_best.values()))) if forgetting_best else None
    if reference:
        transfer = {}
        for task, ref_rows in reference.items():
            if task not in first_block_start:
                continue
            steps, vals = _curve(rows, task)
            rsteps, rvals = _curve(ref_rows, task)
            if not len(steps) or not len(rsteps):
                continue
            start = first_block_start[task]
            grid = np.linspace(0, block_steps, 21)
            ours = [_value_at(steps, vals, start + g) for g in grid]
            theirs = [_value_at(rsteps, rvals, g) for g in grid]
            transfer[task] = float(np.mean(np.subtract(ours, theirs)))
        out["forward_transfer"] = transfer
        out["mean_forward_transfer"] = float(np.mean(list(transfer.values()))) if transfer else None
    return out
