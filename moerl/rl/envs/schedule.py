"""Task schedules: which task runs when, for multi-task (MTRL) and continual (CRL) suites.

Kept apart from the environment so that the rules can be read, tested and reused (e.g. by
``default_timesteps``) without stepping any physics.

* MTRL draws a task per episode from a declared distribution (:func:`check_task_probs`).
* CRL runs blocks of ``block_steps`` environment steps, one task per block, ``cycles`` times through an
  order (:func:`cycle_orders`); :class:`Block` rows make up the schedule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from moerl.core.errors import ConfigError, check_positive, choice_error

ORDERS = ("sequential", "reverse", "random")
"""Named CRL orders; an explicit list of task names or indices is also accepted."""


@dataclass(frozen=True)
class Block:
    """One CRL block: ``block`` is its index in the schedule, ``start_step`` its nominal first step."""

    block: int
    cycle: int
    task_id: int
    task_name: str
    start_step: int

    def as_dict(self) -> dict[str, int | str]:
        return asdict(self)


def task_index(task: int | str, task_names: Sequence[str], what: str = "task") -> int:
    """Index of ``task`` (an index or a name) in ``task_names``, or :class:`ConfigError`."""
    if isinstance(task, (int, np.integer)) and not isinstance(task, bool):
        if not 0 <= int(task) < len(task_names):
            raise ConfigError(
                f"{what} index {task} is out of range; valid: 0..{len(task_names) - 1} "
                f"or a name ({', '.join(task_names)})"
            )
        return int(task)
    if isinstance(task, str) and task in task_names:
        return list(task_names).index(task)
    raise choice_error(what, task, task_names)


def check_task_probs(task_probs: Sequence[float] | None, num_tasks: int) -> np.ndarray:
    """Validate MTRL task probabilities; ``None`` means uniform. Returns a float64 array summing to 1."""
    if task_probs is None:
        return np.full(num_tasks, 1.0 / num_tasks)
    probs = np.asarray(task_probs, dtype=np.float64)
    if probs.shape != (num_tasks,):
        raise ConfigError(f"task_probs {list(task_probs)} must give one probability per task ({num_tasks})")
    if not np.all(np.isfinite(probs)) or np.any(probs < 0):
        raise ConfigError(f"task_probs {list(task_probs)} must be non-negative numbers")
    if not math.isclose(float(probs.sum()), 1.0, abs_tol=1e-6):
        raise ConfigError(f"task_probs {list(task_probs)} must sum to 1, got {probs.sum():.6g}")
    return probs / probs.sum()


def check_order(order: str | Sequence[int | str], task_names: Sequence[str]) -> str | tuple[int, ...]:
    """Validate a CRL order: a name in :data:`ORDERS` or a non-empty list of task names or indices."""
    if isinstance(order, str):
        if order not in ORDERS:
            raise choice_error("order", order, [*ORDERS, "<list of task names>"])
        return order
    explicit = tuple(task_index(t, task_names, what="task in order") for t in order)
    if not explicit:
        raise ConfigError(f"order is an empty list; give one of {', '.join(ORDERS)} or task names")
    return explicit


def cycle_orders(
    order: str | tuple[int, ...], num_tasks: int, cycles: int, rng: np.random.Generator | None = None
) -> list[tuple[int, ...]]:
    """Task ids per cycle. ``"random"`` draws a fresh permutation per cycle from ``rng``."""
    if order == "sequential":
        return [tuple(range(num_tasks))] * cycles
    if order == "reverse":
        return [tuple(reversed(range(num_tasks)))] * cycles
    if order == "random":
        if rng is None:
            raise ValueError("order 'random' needs a random generator")
        return [tuple(int(i) for i in rng.permutation(num_tasks)) for _ in range(cycles)]
    if isinstance(order, str):  # not a name in ORDERS (check_order was bypassed)
        raise choice_error("order", order, [*ORDERS, "<list of task names>"])
    return [tuple(order)] * cycles


def build_schedule(
    order: str | tuple[int, ...],
    task_names: Sequence[str],
    block_steps: int,
    cycles: int,
    rng: np.random.Generator | None = None,
) -> list[Block]:
    """The CRL schedule: one :class:`Block` per (cycle, position in that cycle's order)."""
    check_positive("block_steps", block_steps)
    check_positive("cycles", cycles)
    blocks: list[Block] = []
    for cycle, ids in enumerate(cycle_orders(order, len(task_names), cycles, rng)):
        for task_id in ids:
            index = len(blocks)
            blocks.append(Block(index, cycle, task_id, task_names[task_id], index * block_steps))
    return blocks
