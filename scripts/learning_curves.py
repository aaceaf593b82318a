"""How fast does DQN learn each task alone? A table from single-task runs, to choose CRL block lengths.

    python scripts/learning_curves.py runs/mountaincar-budget [--at 10000,25000,50000,100000]
        [--metric normalized|return|train] [--window 10000]

For every run below the folders with one task (a suite's config pinning ``env_kwargs.fixed_task``, or a plain
Gymnasium env such as ``CartPole-v1``), the greedy
normalised return on *that* task at the given steps (the eval.csv row at the largest evaluated step not
after it), grouped by variant (arch/router; ``(ppo)`` for PPO runs, ``(ppo, shared)`` with one network for actor and critic) and task: median and [min, max] over seeds, and the first evaluated step at which the
median reaches 90% of its best value over the run. A block shorter than that step ends before DQN has
learned the task alone, so what the continual agent "forgets" would be a task it never learned.

``--metric`` picks what is read: ``normalized`` (the default: greedy normalised return, eval.csv), ``return``
(the greedy return itself, eval.csv: what published anchors in a game's own units compare with) or ``train``
(the *training* episodes' return, what MinAtar's and gymnax's published curves plot: the run's TensorBoard
``train/return/<task>`` points, each the mean return of the episodes finished since the previous point, averaged
over the points in the ``--window`` env steps up to the step read; with exploration on, so below the greedy
return when the policy is good).

Why a script and not ``moerl report``: the report aggregates final scores and draws the curves; this table
reads the curves at chosen steps, which only the budget question needs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

LEVEL = 0.9
METRICS = ("normalized", "return", "train")


def train_curve(tb_dir: Path, task: str, window: int) -> dict[int, float]:
    """{step: mean of the ``train/return/<task>`` points in (step - window, step]} at every logged step."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    events = EventAccumulator(str(tb_dir), size_guidance={SCALARS: 0})  # 0: keep every point
    events.Reload()
    from moerl.rl.report.data import plain_task_aliases

    tags = events.Tags()["scalars"]
    # an older run on a plain Gymnasium id tagged its task otherwise (the suite task, or `main`)
    found = [t for t in (f"train/return/{name}" for name in (task, *plain_task_aliases(task))) if t in tags]
    if not found:
        return {}
    tag = found[0]
    points = sorted((e.step, e.value) for e in events.Scalars(tag))
    steps = np.array([p[0] for p in points])
    values = np.array([p[1] for p in points])
    return {int(s): float(values[(steps > s - window) & (steps <= s)].mean()) for s in steps}


def single_task_runs(folders: list[str], metric: str = "normalized",
                     window: int = 10000) -> dict[tuple[str, str], list[dict[int, float]]]:
    """(variant, task name) -> per run, {step: ``metric`` on that task}; variant: ``arch[/router]``.
    Runs are found and read by ``moerl report``'s loader."""
    from moerl.core.errors import ConfigError
    from moerl.rl.report.data import load_runs

    try:
        runs, _ = load_runs(folders)
    except ConfigError:
        return {}
    out: dict[tuple[str, str], list[dict[int, float]]] = {}
    for run in runs:
        fixed = run.fixed_task
        tasks = list(run.results["final_eval"])
        if (fixed is None and len(tasks) != 1) or not run.eval_rows:
            continue
        if fixed is None:  # a plain Gymnasium env: its one task
            task = tasks[0]
        else:
            task = tasks[int(fixed)] if str(fixed).isdigit() else str(fixed)
        if metric == "train":
            curve = train_curve(run.path / "tb", task, window)
        else:
            column = "normalized" if metric == "normalized" else "mean_return"
            curve = {int(r["step"]): float(r[column]) for r in run.eval_rows if r["task"] == task}
        if not curve:
            continue
        variant = run.arch if run.router is None else f"{run.arch}/{run.router}"
        if run.algo != "dqn":
            shared = (run.config.get(run.algo) or {}).get("shared_network")
            variant += f" ({run.algo}{', shared' if shared else ''})"
        out.setdefault((variant, task), []).append(curve)
    return out


def value_at(curve: dict[int, float], step: int) -> float:
    """The curve at the largest step not after ``step`` (NaN when the curve starts later)."""
    before = [s for s in curve if s <= step]
    return curve[max(before)] if before else float("nan")


def table(curves: dict[tuple[str, str], list[dict[int, float]]], at: list[int]) -> str:
    head = ["variant", "task", "seeds", *(f"{s / 1000:g}k steps: median [min, max]" for s in at),
            f"first step with median >= {LEVEL:.0%} of its best"]
    rows = []
    for (variant, task), runs in sorted(curves.items()):
        cells = []
        for step in at:
            v = np.array([value_at(c, step) for c in runs])
            v = v[np.isfinite(v)]
            cells.append(f"{np.median(v):.2f} [{v.min():.2f}, {v.max():.2f}]" if len(v) else "-")
        steps = sorted(set().union(*(set(c) for c in runs)))
        with np.errstate(all="ignore"):
            median = np.array([np.nanmedian([value_at(c, s) for c in runs]) for s in steps])
        best = np.nanmax(median)
        reached = next(s for s, m in zip(steps, median, strict=True) if m >= LEVEL * best)
        rows.append([variant, task, str(len(runs)), *cells, f"{reached:,} (best median {best:.2f})"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+")
    parser.add_argument("--at", default="10000,25000,50000,100000", help="steps to read the curves at")
    parser.add_argument("--metric", default="normalized", choices=METRICS, help="what the table reads (see above)")
    parser.add_argument("--window", type=int, default=10000, help="env steps averaged for --metric train")
    args = parser.parse_args(argv)
    try:
        at = [int(s) for s in args.at.split(",")]
    except ValueError:
        print(f"learning_curves: --at '{args.at}' is not a comma-separated list of steps", file=sys.stderr)
        return 2
    if args.window <= 0:
        print(f"learning_curves: --window must be a positive number of steps, got {args.window}", file=sys.stderr)
        return 2
    curves = single_task_runs(args.folders, args.metric, args.window)
    if not curves:
        print(f"learning_curves: no single-task runs (env_kwargs.fixed_task) below {', '.join(args.folders)}",
              file=sys.stderr)
        return 2
    print(table(curves, at))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
