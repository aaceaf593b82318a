"""One writer of an RL run's files, for every engine.

What a run directory holds is the contract between training and everything after it (``moerl eval``,
``moerl report``, resume): ``eval.csv`` (:data:`EVAL_FIELDS`), ``eval_usage.csv`` (:data:`USAGE_FIELDS`),
``metrics.csv`` (:data:`METRIC_FIELDS`), ``schedule.json``, ``results.json`` and ``model.zip``. The SB3
reference engine (:mod:`moerl.rl.experiment`, its callbacks) and the batched engine
(:mod:`moerl.rl.batched_runs`) gather the same numbers their own way and hand them to the functions here,
so the files have one layout whichever engine trained the run.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Columns of ``eval.csv``: one row per evaluation and task.
EVAL_FIELDS = ("step", "task", "mean_return", "std_return", "normalized", "episodes")
#: Columns of ``eval_usage.csv``: mean router usage of each expert on the observations of one task's greedy
#: evaluation episodes (mean combine weight for softmoe, selection frequency for topk).
USAGE_FIELDS = ("step", "task", "layer", "expert", "usage")
#: Columns of ``metrics.csv``: the ``moe/*`` TensorBoard scalars (dormant neurons, router usage, entropy) at
#: the env step they were measured on a training minibatch.
METRIC_FIELDS = ("step", "key", "value")


#: TensorBoard tags of training, the same on both engines (and in :mod:`moerl.rl.tb_layout`'s layout).
LOSS_TAG = "train/loss"
AUX_LOSS_TAG = "train/aux_loss"


def train_return_tag(task: str) -> str:
    """Mean return of the training episodes of ``task`` that ended since the last point."""
    return f"train/return/{task}"


def moe_tag(key: str) -> str:
    """A MoE metric of :func:`moerl.nn.metrics.forward_metrics` / the batched record (``dormant/...``,
    ``router/...``) as a TensorBoard tag and a ``metrics.csv`` key."""
    return f"moe/{key}"


def csv_text(fields: tuple[str, ...], rows: Sequence[Mapping[str, Any]]) -> str:
    """The CSV of ``rows`` under ``fields`` (None as an empty cell)."""
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=fields)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return table.getvalue()


def write_csv_atomic(path: Path, fields: tuple[str, ...], rows: Sequence[Mapping[str, Any]]) -> None:
    """The whole CSV, written to a temporary name, flushed to disk and renamed: never half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w", newline="") as f:
        f.write(csv_text(fields, rows))
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def write_tables(folder: Path, eval_rows: Sequence[Mapping[str, Any]], usage: Sequence[Mapping[str, Any]],
                 metrics: Sequence[Mapping[str, Any]]) -> None:
    """``eval.csv``, and ``eval_usage.csv`` / ``metrics.csv`` when there are such rows (networks with a
    router; a run that measured MoE metrics) or the file exists (a resumed run rewrites it from its rows)."""
    write_csv_atomic(folder / "eval.csv", EVAL_FIELDS, eval_rows)
    for name, fields, rows in (("eval_usage.csv", USAGE_FIELDS, usage), ("metrics.csv", METRIC_FIELDS, metrics)):
        if rows or (folder / name).exists():
            write_csv_atomic(folder / name, fields, rows)


def usage_rows(step: int, task: str, metrics: Mapping[str, float]) -> list[dict[str, Any]]:
    """``eval_usage.csv`` rows from :func:`moerl.nn.metrics.forward_metrics` keys ``router/<layer>/usage_expert<e>``.

    An actor-critic's keys carry their head first (``actor/router/<layer>/...``, MoE PPO): the row's layer is
    then ``<head>.<layer>`` (``actor.big``), one name without a slash, as TensorBoard's layout and the report
    read layers."""
    rows = []
    for key, value in metrics.items():
        head, _, rest = key.rpartition("router/")
        if rest and "/usage_expert" in rest and head in ("", "actor/", "critic/", "shared/"):
            layer, expert = rest.split("/usage_expert")
            layer = f"{head[:-1]}.{layer}" if head else layer
            rows.append({"step": step, "task": task, "layer": layer, "expert": int(expert), "usage": float(value)})
    return rows


def eval_row(step: int, task: str, mean: float, std: float, normalized: float | None,
             episodes: int) -> dict[str, Any]:
    """One ``eval.csv`` row: a task's greedy evaluation at env step ``step``."""
    return {"step": step, "task": task, "mean_return": mean, "std_return": std, "normalized": normalized,
            "episodes": episodes}


def eval_scalars(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, float]]:
    """The TensorBoard scalars of one evaluation (its ``eval.csv`` rows): ``eval/return/<task>``,
    ``eval/normalized/<task>`` where return bounds are known, and their mean ``eval/normalized_mean``."""
    out: list[tuple[str, float]] = []
    for row in rows:
        out.append((f"eval/return/{row['task']}", row["mean_return"]))
        if row["normalized"] is not None:
            out.append((f"eval/normalized/{row['task']}", row["normalized"]))
    norms = [row["normalized"] for row in rows if row["normalized"] is not None]
    if norms:
        out.append(("eval/normalized_mean", float(np.mean(norms))))
    return out


def usage_scalars(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, float]]:
    """The TensorBoard scalars of ``eval_usage.csv`` rows: ``eval_usage/<task>/<layer>/expert<e>``."""
    return [(f"eval_usage/{r['task']}/{r['layer']}/expert{r['expert']}", r["usage"]) for r in rows]


def final_eval_entry(mean: float, std: float, normalized: float | None, episodes: int) -> dict[str, Any]:
    """One task's entry of ``results.json``'s ``final_eval``."""
    return {"mean_return": mean, "std_return": std, "normalized": normalized, "episodes": episodes}


def schedule_record(schedule: Sequence[Mapping[str, Any]], block_steps: int,
                    switches_seen: Sequence[Any] | None = None) -> dict[str, Any]:
    """``schedule.json``: the CRL schedule and block length; ``switches_seen``, the task switches the
    reference engine's training env reported (the batched suite follows the schedule by construction)."""
    record: dict[str, Any] = {"schedule": list(schedule), "block_steps": block_steps}
    if switches_seen is not None:
        record["switches_seen"] = list(switches_seen)
    return record


def run_results(config: Any, env_id: str, seed: int, *, engine: str, seeds_in_batch: int, seconds: float,
                env_steps: int, parameters: int, final_eval: dict[str, Any],
                continual: dict[str, Any] | None) -> dict[str, Any]:
    """``results.json`` of a finished run: what ran, how long, the final evaluation and continual metrics.

    ``env_steps``: the env steps the process took in ``seconds`` (all members of a batch), for the speed.
    A config that names its algorithm (``algo: ppo``) has it recorded as ``algo``; DQN's results stay as
    they were (no key: DQN).
    """
    algo = {"algo": config.algo} if getattr(config, "algo", None) else {}
    return {**algo,
        "env": config.env, "env_id": env_id, "arch": config.network.arch,
        "router": config.network.router if config.network.uses_moe else None, "seed": seed,
        "timesteps": config.timesteps, "engine": engine, "seeds_in_batch": seeds_in_batch,
        "train_seconds": round(seconds, 2),
        "steps_per_second": round(env_steps / seconds, 1) if seconds > 0 else None,
        "parameters": parameters,
        "final_eval": final_eval,
        "continual": continual,
    }


def export_model(run: Any, model: Any) -> None:
    """``model.zip``: the SB3 ``MoEDQN`` zip that ``MoEDQN.load``, ``moerl eval`` and SB3's tools read."""
    run.save_atomic("model.zip", model.save)
