"""``moerl report RUN_DIR...``: one markdown table over finished MoE DQN runs.

Per run: arch, router, seed, steps, steps/s, final greedy return per task, and the continual
metrics (average normalised performance, mean forgetting); then one summary row per (env, arch,
router) over its seeds: mean and [min, max] of the run-level metrics, and rliable's interquartile mean
(IQM) of the final normalised returns (runs x tasks) with a 95% stratified bootstrap confidence interval
(Agarwal et al. 2021). rliable is the optional extra ``moerl[stats]`` (in ``dev``); without it the IQM
column says so instead of silently disappearing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moerl.errors import ConfigError
from moerl.experiments.rundir import RESULTS_FILE, RunDir
from moerl.experiments.tables import fmt
from moerl.experiments.tables import markdown_table as table

DORMANT_TAG = "moe/dormant/tau0.1/all"


def last_scalar(tb_dir: Path, tag: str) -> float | None:
    """Last value of ``tag`` in the run's TensorBoard events (None if never logged)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    last: tuple[int, float] | None = None
    # Only this run's own event files: a run started inside another run's folders is not part of it.
    for f in sorted(tb_dir.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0})
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            e = acc.Scalars(tag)[-1]
            if last is None or e.step >= last[0]:
                last = (e.step, e.value)
    return None if last is None else float(last[1])


def load_results(paths: list[str]) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """``(results, skipped)``: results.json of each finished moe-dqn run (plus its final tau=0.1 dormant
    fraction), and ``(path, reason)`` for every path that was skipped: not a finished run, another
    family, a corrupt results file, or the same run given twice (counted once, never as two seeds).
    """
    import json

    out: list[dict[str, Any]] = []
    skipped: list[tuple[str, str]] = []
    seen: set[Path] = set()
    for p in paths:
        key = Path(p).resolve()
        if key in seen:
            skipped.append((p, "the same run was given before (counted once)"))
            continue
        seen.add(key)
        try:
            run = RunDir.open_finished(p)
        except ConfigError as exc:
            skipped.append((p, str(exc)))
            continue
        if run.read_status().get("family") != "moe-dqn":
            skipped.append((p, "not a moe-dqn run ('moerl report' summarises MoE DQN runs)"))
            continue
        try:
            results = run.read_json(RESULTS_FILE)
            results["final_eval"].items()  # noqa: B018  (the field every table reads)
        except (OSError, ValueError, KeyError, AttributeError, TypeError, json.JSONDecodeError) as exc:
            skipped.append((p, f"{RESULTS_FILE} is missing or corrupt ({type(exc).__name__})"))
            continue
        results["final_dormant_tau0.1"] = last_scalar(run.tb_dir, DORMANT_TAG)
        out.append(results)
    if not out:
        raise ConfigError("no finished moe-dqn run among the given paths: "
                          + "; ".join(f"{p}: {why}" for p, why in skipped))
    return out, skipped


def markdown_table(results: list[dict[str, Any]]) -> str:
    tasks: list[str] = []
    for r in results:
        tasks.extend(t for t in r["final_eval"] if t not in tasks)
    head = ["arch", "router", "seed", "steps", "steps/s", *tasks, "avg perf", "forgetting (end of block)",
            "dormant (tau 0.1)"]
    rows = []
    for r in results:
        cont = r.get("continual") or {}
        router = "-" if r["arch"] in ("dense", "wide") else r["router"]
        cells = [r["arch"], router, str(r["seed"]), str(r["timesteps"]), fmt(r.get("steps_per_second"), 0)]
        cells += [fmt(r["final_eval"].get(t, {}).get("mean_return"), 1) for t in tasks]
        cells += [fmt(cont.get("average_performance")), fmt(cont.get("mean_forgetting_end_of_block")),
                  fmt(r.get("final_dormant_tau0.1"))]
        rows.append(cells)
    return table(head, rows)


IQM_REPS = 2000


def iqm_with_ci(scores: dict[str, Any], seed: int = 0) -> dict[str, tuple[float, float, float]] | None:
    """IQM and 95% stratified-bootstrap CI per group of (runs x tasks) scores; None without rliable."""
    try:
        from rliable import library as rly
        from rliable import metrics as rly_metrics
    except ImportError:
        return None
    import numpy as np

    np.random.seed(seed)  # rliable draws its bootstrap samples from numpy's global generator
    point, interval = rly.get_interval_estimates(
        scores, lambda x: np.array([rly_metrics.aggregate_iqm(x)]), reps=IQM_REPS)
    return {k: (float(point[k][0]), float(interval[k][0, 0]), float(interval[k][1, 0])) for k in scores}


def _normalized_scores(runs: list[dict[str, Any]]):
    import numpy as np

    tasks = sorted({t for r in runs for t in r["final_eval"]})
    rows = [[r["final_eval"].get(t, {}).get("normalized") for t in tasks] for r in runs]
    if any(v is None for row in rows for v in row):
        return None
    return np.asarray(rows, dtype=float)


def summary_table(results: list[dict[str, Any]]) -> str:
    """Mean and [min, max] over seeds of average performance and forgetting, per (env, arch, router)."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in results:
        router = "-" if r["arch"] in ("dense", "wide") else r["router"]
        groups.setdefault((r["env"], r["arch"], router), []).append(r)
    head = ["env", "arch", "router", "seeds", "avg perf: mean [min, max]", "forgetting: mean [min, max]",
            "dormant tau 0.1: mean [min, max]", "IQM normalised return [95% CI]"]
    scores = {"/".join(key): m for key, runs in groups.items() if (m := _normalized_scores(runs)) is not None}
    iqm = iqm_with_ci(scores) if scores else {}
    rows = []
    for (env, arch, router), runs in groups.items():
        cells = [env, arch, router, str(len(runs))]
        for key in ("average_performance", "mean_forgetting_end_of_block", "final_dormant_tau0.1"):
            raw = [(r.get("continual") or {}).get(key, r.get(key)) for r in runs]
            vals = [float(v) for v in raw if v is not None]
            cells.append(f"{sum(vals) / len(vals):.2f} [{min(vals):.2f}, {max(vals):.2f}]" if vals else "-")
        key = "/".join((env, arch, router))
        if iqm is None:
            cells.append("needs rliable (pip install 'moerl[stats]')")
        elif key in iqm:
            p, lo, hi = iqm[key]
            cells.append(f"{p:.2f} [{lo:.2f}, {hi:.2f}]")
        else:
            cells.append("- (no return bounds)")
        rows.append(cells)
    return table(head, rows)


def check_output_path(out: str | Path) -> Path:
    """An output file for a report or an evaluation: never a directory, never a run's own file."""
    from moerl.experiments.rundir import STATUS_FILE

    path = Path(out)
    if path.is_dir():
        raise ConfigError(f"output '{out}' is a directory; give a file name (e.g. {Path(out) / 'report.md'})")
    if (path.parent / STATUS_FILE).is_file() and path.exists():
        raise ConfigError(f"output '{out}' is a file of the run directory '{path.parent}'; refusing to overwrite it")
    if not path.parent.is_dir():
        raise ConfigError(f"output directory '{path.parent}' does not exist")
    return path


def report(paths: list[str], out: str | None = None) -> tuple[str, list[tuple[str, str]]]:
    """The Markdown report over ``paths`` and the skipped paths with their reasons; ``out``: also write it."""
    target = check_output_path(out) if out else None
    results, skipped = load_results(paths)
    text = markdown_table(results) + "\n\n" + summary_table(results)
    if target is not None:
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(text + "\n")
        tmp.replace(target)
    return text, skipped
