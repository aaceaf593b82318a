"""What a finished run's ``results.json`` must hold for ``moerl runs`` and ``moerl report`` to read it.

Why one definition: the listing and the report read the same file. A run whose file the report would skip
(or crash on) must not be listed as ``finished``, and both commands must give the same reason, e.g.
``results.json has no 'final_eval'`` for a file emptied to ``{}``. Only the fields these commands read are
checked, each with the type they use; everything else a family writes is left alone.
"""

from __future__ import annotations

import json
from typing import Any

from moerl.runs.supervised_report import FAMILIES as SUPERVISED_FAMILIES
from moerl.runs.supervised_report import metrics_problem

#: MoE DQN: the top-level fields the report's tables index, and whether ``None`` is a valid value.
RL_FIELDS: dict[str, tuple[type | tuple[type, ...], bool]] = {
    "final_eval": (dict, False), "env": (str, False), "arch": (str, False), "router": (str, True),
    "seed": (int, False), "timesteps": (int, False), "continual": (dict, True),
}
#: MoE DQN: the numbers read from each task of ``final_eval`` (``mean_return`` must be there).
RL_TASK_NUMBERS = ("mean_return", "normalized")
#: MoE DQN: the numbers read from ``continual`` (continual suites only).
RL_CONTINUAL_NUMBERS = ("average_performance", "mean_forgetting_end_of_block")


def is_number(value: Any) -> bool:
    """A JSON number (``true`` is not one, though Python calls it an int)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _shown(value: Any) -> str:
    return json.dumps(value, default=str)[:40]


def results_problem(family: str, results: Any) -> str | None:
    """None when ``results`` (a finished ``family`` run's parsed ``results.json``) holds what the listing
    and the report read; else what is wrong, worded to follow the file's name (``has no 'final_eval'``)."""
    if not isinstance(results, dict):
        return f"is not a JSON object (a {type(results).__name__})"
    if family == "moe-dqn":
        return _rl_problem(results)
    if family in SUPERVISED_FAMILIES:
        return metrics_problem(family, results)
    return None


def _rl_problem(results: dict[str, Any]) -> str | None:
    for key, (kind, nullable) in RL_FIELDS.items():
        if key not in results:
            return f"has no '{key}'"
        value = results[key]
        if (value is None and not nullable) or (value is not None and (
                not isinstance(value, kind) or isinstance(value, bool))):
            return f"has a '{key}' of the wrong type ({_shown(value)})"
    if not results["final_eval"]:
        return "has an empty 'final_eval' (no task was evaluated)"
    for task, numbers in results["final_eval"].items():
        if not isinstance(numbers, dict) or not is_number(numbers.get("mean_return")):
            return f"has no number for 'final_eval.{task}.mean_return'"
        for key in RL_TASK_NUMBERS:
            if numbers.get(key) is not None and not is_number(numbers[key]):
                return f"has a 'final_eval.{task}.{key}' that is not a number ({_shown(numbers[key])})"
    for key in RL_CONTINUAL_NUMBERS:
        value = (results["continual"] or {}).get(key)
        if value is not None and not is_number(value):
            return f"has a 'continual.{key}' that is not a number ({_shown(value)})"
    return None
