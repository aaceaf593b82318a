"""The numbers behind ``moerl report``'s per-task evaluation curves: each task's greedy normalised return in
windows of env steps, mean over seeds, for the CRL and MTRL runs of one variant.

    python scripts/task_curves.py FOLDER [FOLDER ...] --variant big/hardcoded [--env mountaincar-crl]
        [--window 10000] [--from 0]

One table per env and setting (a CRL task order is a setting of its own) among the runs of ``--variant``
(``dense``, ``wide`` or ``arch/router``) below the folders; single-task runs are left out. A cell is the mean
over seeds of each seed's mean ``normalized`` over its evaluations in ``[start, start + window)``, so a change
smaller than the evaluation noise of one window (a few episodes per evaluation) reads as a change too: read
the column's trend, with the figure beside it.

Why a script: the report draws these curves; when a task's score moves (during its block, after it, when its
samples leave the replay) is a question about their numbers, which a figure does not print.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict

import numpy as np

from moerl.core.errors import ConfigError
from moerl.rl.report.data import Run, load_runs


def variant_of(run: Run) -> str:
    return run.arch if run.router is None else f"{run.arch}/{run.router}"


def setting_of(run: Run) -> str:
    """``crl, order: a > b > ...`` or ``mtrl``: runs of one table."""
    return f"crl, order: {' > '.join(run.order)}" if run.setting == "crl" else run.setting


def windows(runs: list[Run], tasks: list[str], window: int, start: int) -> list[tuple[int, list[float | None]]]:
    """``[(window start, [mean over seeds per task])]``; a task without evaluations in a window is None."""
    per_seed: dict[tuple[int, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    last = 0
    for i, run in enumerate(runs):
        for row in run.eval_rows or []:
            step = int(row["step"])
            if step >= start and row["task"] in tasks and row.get("normalized") is not None:
                per_seed[(step - start) // window, row["task"]][i].append(float(row["normalized"]))
                last = max(last, step)
    out = []
    for w in range((last - start) // window + 1):
        cells = []
        for task in tasks:
            seeds = per_seed.get((w, task), {})
            cells.append(float(np.mean([np.mean(v) for v in seeds.values()])) if seeds else None)
        out.append((start + w * window, cells))
    return out


def tables(runs: list[Run], variant: str, env: str | None, window: int, start: int) -> list[str]:
    """Markdown lines: per env and setting, a heading and the windows' table."""
    chosen = [r for r in runs if variant_of(r) == variant and (env is None or r.env == env)
              and r.setting != "single"]
    groups: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for run in chosen:
        groups[run.env, setting_of(run)].append(run)
    lines: list[str] = []
    for (run_env, setting), members in sorted(groups.items()):
        tasks = list(members[0].order) if members[0].setting == "crl" else sorted(members[0].results["final_eval"])
        seeds = sorted(r.seed for r in members)
        lines += [f"{run_env} ({setting}), {variant}: {len(members)} seeds ({', '.join(map(str, seeds))}); "
                  f"mean normalised greedy return in {window:,}-step windows", "",
                  "| steps | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
        for begin, cells in windows(members, tasks, window, start):
            text = ["-" if c is None else f"{c:.2f}" for c in cells]
            lines.append(f"| {begin:,}-{begin + window:,} | " + " | ".join(text) + " |")
        lines.append("")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="run folders or folders holding runs")
    parser.add_argument("--variant", required=True, help="dense, wide or arch/router, as the report names them")
    parser.add_argument("--env", help="only this env (e.g. mountaincar-crl)")
    parser.add_argument("--window", type=int, default=10000, help="env steps per window")
    parser.add_argument("--from", dest="start", type=int, default=0, help="first window's start")
    args = parser.parse_args(argv)
    if args.window <= 0 or args.start < 0:
        print(f"task_curves: --window must be positive and --from not negative (got {args.window}, {args.start})",
              file=sys.stderr)
        return 2
    try:
        runs, _ = load_runs(args.folders)
    except ConfigError as e:
        print(f"task_curves: {e}", file=sys.stderr)
        return 2
    lines = tables(runs, args.variant, args.env, args.window, args.start)
    if not lines:
        found = sorted({variant_of(r) for r in runs if args.env is None or r.env == args.env})
        print(f"task_curves: no CRL or MTRL runs of variant '{args.variant}'"
              f"{'' if args.env is None else f' on {args.env}'} (found: {', '.join(found) or 'none'})",
              file=sys.stderr)
        return 2
    print("\n".join(lines).rstrip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
