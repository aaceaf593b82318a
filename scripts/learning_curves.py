"""How fast does DQN learn each task alone? A table from single-task runs, to choose CRL block lengths.

    python scripts/learning_curves.py runs/mountaincar-budget [--at 10000,25000,50000,100000]

For every run below the folders whose config pins one task (``env_kwargs.fixed_task``), the greedy
normalised return on *that* task at the given steps (the eval.csv row at the largest evaluated step not
after it), grouped by variant (arch/router) and task: median and [min, max] over seeds, and the first evaluated step at which the
median reaches 90% of its best value over the run. A block shorter than that step ends before DQN has
learned the task alone, so what the continual agent "forgets" would be a task it never learned.

Why a script and not ``moerl report``: the report aggregates final scores and draws the curves; this table
reads the curves at chosen steps, which only the budget question needs.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

LEVEL = 0.9


def single_task_runs(folders: list[str]) -> dict[tuple[str, str], list[dict[int, float]]]:
    """(variant, task name) -> per run, {step: normalised return on that task}; variant: ``arch[/router]``.
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
        if fixed is None or not run.eval_rows:
            continue
        tasks = list(run.results["final_eval"])
        task = tasks[int(fixed)] if str(fixed).isdigit() else str(fixed)
        curve = {int(r["step"]): float(r["normalized"]) for r in run.eval_rows if r["task"] == task}
        variant = run.arch if run.router is None else f"{run.arch}/{run.router}"
        out.setdefault((variant, task), []).append(curve)
    return out


def value_at(curve: dict[int, float], step: int) -> float:
    return curve[max(s for s in curve if s <= step)]


def table(curves: dict[tuple[str, str], list[dict[int, float]]], at: list[int]) -> str:
    head = ["variant", "task", "seeds", *(f"{s / 1000:g}k steps: median [min, max]" for s in at),
            f"first step with median >= {LEVEL:.0%} of its best"]
    rows = []
    for (variant, task), runs in sorted(curves.items()):
        cells = []
        for step in at:
            v = np.array([value_at(c, step) for c in runs])
            cells.append(f"{np.median(v):.2f} [{v.min():.2f}, {v.max():.2f}]")
        steps = sorted(set.intersection(*(set(c) for c in runs)))
        median = np.array([np.median([c[s] for c in runs]) for s in steps])
        reached = next(s for s, m in zip(steps, median, strict=True) if m >= LEVEL * median.max())
        rows.append([variant, task, str(len(runs)), *cells, f"{reached:,} (best median {median.max():.2f})"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+")
    parser.add_argument("--at", default="10000,25000,50000,100000", help="steps to read the curves at")
    args = parser.parse_args(argv)
    try:
        at = [int(s) for s in args.at.split(",")]
    except ValueError:
        print(f"learning_curves: --at '{args.at}' is not a comma-separated list of steps", file=sys.stderr)
        return 2
    curves = single_task_runs(args.folders)
    if not curves:
        print(f"learning_curves: no single-task runs (env_kwargs.fixed_task) below {', '.join(args.folders)}",
              file=sys.stderr)
        return 2
    print(table(curves, at))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
