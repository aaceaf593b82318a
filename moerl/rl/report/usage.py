"""Expert usage per task, from a run's ``eval_usage.csv``, and how task-specific it is.

The question it answers (issue 24): does a learned router (softmoe, topk) give tasks experts of their own, as
``hardcoded`` does by construction? A heat map shows the usage; :func:`task_specialisation` puts one number on
it, per run, so that seeds can be compared.

The measure is the mutual information between the task and the expert under the usage a run records,
normalised by its maximum; written with numpy (three lines of entropies) because the report must run without
the optional ``stats`` extra that brings scipy.
"""

from __future__ import annotations

import math

import numpy as np

from moerl.rl.report.data import Group, Run


def last_usage(run: Run, tasks: list[str]) -> dict[str, np.ndarray]:
    """``{layer: tasks x experts}`` usage at the run's last evaluation (NaN for a task it did not evaluate);
    empty without ``eval_usage.csv`` rows."""
    rows = run.usage_rows or []
    if not rows:
        return {}
    last = max(int(r["step"]) for r in rows)
    cells: dict[str, dict[tuple[str, int], float]] = {}
    for r in rows:
        if int(r["step"]) == last:
            cells.setdefault(r["layer"], {})[(r["task"], int(r["expert"]))] = float(r["usage"])
    out = {}
    for layer, values in cells.items():
        experts = 1 + max(e for _, e in values)
        out[layer] = np.array([[values.get((t, e), np.nan) for e in range(experts)] for t in tasks])
    return out


def usage_table(group: Group) -> tuple[list[str], dict[str, np.ndarray]] | None:
    """``(tasks, {layer: tasks x experts})``: mean over seeds of the usage at each run's last evaluation."""
    per_run = [last_usage(run, list(group.tasks)) for run in group.runs]
    layers = sorted({layer for usage in per_run for layer in usage})
    if not layers:
        return None
    out = {}
    for layer in layers:
        stacked = [u[layer] for u in per_run if layer in u]
        width = max(m.shape[1] for m in stacked)
        padded = [np.pad(m, ((0, 0), (0, width - m.shape[1])), constant_values=np.nan) for m in stacked]
        with np.errstate(all="ignore"):
            out[layer] = np.nanmean(np.stack(padded), axis=0)
    keep = [i for i, _ in enumerate(group.tasks) if any(np.isfinite(m[i]).any() for m in out.values())]
    return [group.tasks[i] for i in keep], {layer: m[keep] for layer, m in out.items()}


def _entropy(p: np.ndarray) -> float:
    """Shannon entropy (nats) of the distribution ``p`` (zeros contribute nothing)."""
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def task_specialisation(usage: np.ndarray) -> float | None:
    """How much a layer's expert choice depends on the task, in [0, 1]: the mutual information between the
    task (uniform over the evaluated tasks) and the expert (each task's usage row, normalised to a
    distribution), divided by ``log(min(tasks, experts))``, its largest possible value.

    1: every task uses experts no other task uses (``hardcoded`` with one expert per task); 0: every task
    uses the experts in the same proportions. None with fewer than two evaluated tasks or experts.
    """
    rows = usage[np.isfinite(usage).all(axis=1)]
    rows = rows[rows.sum(axis=1) > 0]
    if rows.shape[0] < 2 or rows.shape[1] < 2:
        return None
    given_task = rows / rows.sum(axis=1, keepdims=True)
    marginal = given_task.mean(axis=0)
    info = _entropy(marginal) - float(np.mean([_entropy(row) for row in given_task]))
    return max(0.0, info) / math.log(min(rows.shape))
