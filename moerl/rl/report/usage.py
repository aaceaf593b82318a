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


def matched_order(usage: np.ndarray) -> list[int]:
    """The experts (columns of a tasks x experts ``usage``) reordered so that the i-th serves the i-th
    evaluated task (a row not all NaN) most: greedily, the largest remaining cell assigns its expert to its
    task; experts left over follow by total usage. A router's expert indices are arbitrary per seed (seed 0's expert 2 may do what seed 1's
    expert 0 does), so usage averaged over seeds in index order hides any specialisation; matched first, a
    diagonal shows it. Matching picks each task's largest cell, so the diagonal sits above an even share
    even for a router that ignores the task (seed noise alone): read the heat map for the pattern and
    :func:`task_specialisation` (which no ordering changes) for how strong it is. Greedy rather than an
    optimal assignment: it needs no scipy (see the module
    docstring), and it keeps ``hardcoded``'s one expert per task in its place.
    """
    cells = np.nan_to_num(usage, nan=-1.0)
    order: dict[int, int] = {}  # task row -> expert
    free_tasks = {t for t in range(cells.shape[0]) if np.isfinite(usage[t]).any()}  # the evaluated tasks
    free_experts = set(range(cells.shape[1]))
    while free_tasks and free_experts:
        t, e = max(((t, e) for t in free_tasks for e in free_experts), key=lambda te: (cells[te], -te[0], -te[1]))
        order[t] = e
        free_tasks.discard(t)
        free_experts.discard(e)
    rest = sorted(free_experts, key=lambda e: (-cells[:, e].clip(min=0).sum(), e))
    return [order[t] for t in sorted(order)] + rest


def usage_table(group: Group) -> tuple[list[str], dict[str, np.ndarray]] | None:
    """``(tasks, {layer: tasks x experts})``: mean over seeds of the usage at each run's last evaluation,
    each run's experts first put in :func:`matched_order` (column i: the expert that serves task i most)."""
    per_run = [{layer: m[:, matched_order(m)] for layer, m in last_usage(run, list(group.tasks)).items()}
               for run in group.runs]
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
