"""Route collisions: which tasks of a routing network share a whole route, and what it costs them.

Why a module of its own: the learner (:mod:`moerl.routing.trainer`), the run directory
(:mod:`moerl.routing.experiment`) and ``moerl report`` (:mod:`moerl.runs.supervised_report`) all
report the same measures, and they are pure numpy, testable on routes written by hand.

Why it matters: the routed network receives the task only through the route. Two tasks whose samples
take the same blocks at every depth get the same function, so the network cannot tell "digit 3 vs rest"
from "digit 5 vs rest" for them; the blocks on that route are trained towards both labellings at once.
Under the paper's printed WPL form (Algorithm 3) a committed route barely moves on bad news, so such a
collision, once formed early in training, tends to stay (issue 12: two tasks locked on one route, both
near 90%, in 2 of 4 runs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["collision_groups", "route_collisions", "task_routes"]


def task_routes(routes: np.ndarray, task: np.ndarray, n_tasks: int) -> np.ndarray:
    """(n_tasks, n_depths): each task's most frequent full route among ``routes`` (N, n_depths).

    Ties go to the smallest route (lexicographic); a task with no sample gets -1 everywhere.
    """
    out = np.full((n_tasks, routes.shape[1]), -1, dtype=np.int64)
    for t in range(n_tasks):
        rows = routes[task == t]
        if len(rows):
            uniq, cnt = np.unique(rows, axis=0, return_counts=True)
            out[t] = uniq[cnt.argmax()]
    return out


def collision_groups(routes: np.ndarray) -> list[list[int]]:
    """Groups (of two or more tasks, ascending) whose routes (n_tasks, n_depths) are identical.

    Ordered by their first task. A task with no route (-1 everywhere, see :func:`task_routes`) is never
    counted as colliding.
    """
    by_route: dict[tuple[int, ...], list[int]] = {}
    for t, r in enumerate(np.asarray(routes).tolist()):
        if any(a >= 0 for a in r):
            by_route.setdefault(tuple(r), []).append(t)
    return sorted((g for g in by_route.values() if len(g) > 1), key=lambda g: g[0])


def route_collisions(routes: np.ndarray, per_task_accuracy: Sequence[float] | None = None) -> dict[str, Any]:
    """How often tasks share a whole route, from per-task routes (n_tasks, n_depths).

    * ``collision_fraction``: the fraction of task pairs whose routes are identical (0 = every task has
      its own route; 1 = all tasks share one);
    * ``distinct_routes``: the number of different full routes (a task without samples, route -1
      everywhere, counts in neither measure);
    * ``collision_groups``: the groups of tasks sharing a route (:func:`collision_groups`);
    * ``collided_tasks``: how many tasks are in a group.

    With ``per_task_accuracy`` (one value per task), what the collisions cost:
    ``collided_accuracy`` / ``free_accuracy`` = mean accuracy of the tasks in a group / of the others
    (``None`` where there is no such task).
    """
    n = len(routes)
    pairs = n * (n - 1) // 2
    groups = collision_groups(routes)
    same = sum(len(g) * (len(g) - 1) // 2 for g in groups)
    collided = sorted(t for g in groups for t in g)
    valid = {tuple(r) for r in np.asarray(routes).tolist() if any(a >= 0 for a in r)}
    out: dict[str, Any] = {"collision_fraction": same / pairs if pairs else 0.0,
                           "distinct_routes": float(len(valid)),
                           "collision_groups": groups, "collided_tasks": len(collided)}
    if per_task_accuracy is not None:
        acc = np.asarray(per_task_accuracy, dtype=np.float64)
        free = np.setdiff1d(np.arange(n), collided)
        out["collided_accuracy"] = float(acc[collided].mean()) if collided else None
        out["free_accuracy"] = float(acc[free].mean()) if len(free) else None
    return out
