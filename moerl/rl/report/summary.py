"""``moerl report RUN_DIR...``: one markdown table over finished MoE DQN runs.

Per run: arch, router, seed, steps, steps/s, final greedy return per task, and the continual
metrics (average normalised performance, mean forgetting); then one summary row per variant (the runs
whose configs differ in the seed alone) over its seeds: mean and [min, max] of the run-level metrics, and
rliable's interquartile mean (IQM) of the final normalised returns (runs x tasks) with a 95% stratified bootstrap confidence interval
(Agarwal et al. 2021). rliable is the optional extra ``moerl[stats]`` (in ``dev``); without it the IQM
column says so instead of silently disappearing.

:mod:`moerl.report` puts these tables together with the other lines' (routing and masked-expert runs are
summarised by :mod:`moerl.runs.supervised_report`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from moerl.rl.report.data import Group, Run
from moerl.runs.tables import fmt
from moerl.runs.tables import markdown_table as table

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


def with_dormant(run: Run) -> dict[str, Any]:
    """The run's results plus ``final_dormant_tau0.1``: from metrics.csv, or (runs written before it
    existed) from the run's TensorBoard events, so the per-run table keeps its column for older runs."""
    results = dict(run.results)
    dormant = run.final_dormant()
    results["final_dormant_tau0.1"] = dormant if run.metric_rows is not None else last_scalar(run.path / "tb",
                                                                                              DORMANT_TAG)
    return results


def arch_cell(r: dict[str, Any]) -> str:
    """The arch column of a run's ``results.json``: ``big``, or ``big (ppo)`` for an algorithm other than DQN
    (DQN's results name none), so a report over both algorithms tells their rows apart."""
    return f"{r['arch']} ({r['algo']})" if r.get("algo") else str(r["arch"])


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
        cells = [arch_cell(r), router, str(r["seed"]), str(r["timesteps"]), fmt(r.get("steps_per_second"), 0)]
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


def summary_table(groups: list[Group], results: dict[Path, dict[str, Any]]) -> str:
    """Mean and [min, max] over seeds of average performance, forgetting and dormant fraction, and the IQM of
    the final normalised returns, per variant: the groups of :func:`~moerl.rl.report.data.group_runs` (runs
    whose configs differ in the seed alone), named by their labels, so that runs of one arch and router
    under different settings (an algorithm's option, an engine, a budget) are never pooled into one row.
    ``results``: each run's results (:func:`with_dormant`) by its path."""
    head = ["env", "variant", "seeds", "avg perf: mean [min, max]", "forgetting: mean [min, max]",
            "dormant tau 0.1: mean [min, max]", "IQM normalised return [95% CI]"]
    by_group = {f"{g.env}/{g.label}": [results[run.path] for run in g.runs] for g in groups}
    scores = {key: m for key, runs in by_group.items() if (m := _normalized_scores(runs)) is not None}
    iqm = iqm_with_ci(scores) if scores else {}
    rows = []
    for g in groups:
        key = f"{g.env}/{g.label}"
        runs = by_group[key]
        cells = [g.env, g.label, str(len(runs))]
        for metric in ("average_performance", "mean_forgetting_end_of_block", "final_dormant_tau0.1"):
            raw = [(r.get("continual") or {}).get(metric, r.get(metric)) for r in runs]
            vals = [float(v) for v in raw if v is not None]
            cells.append(f"{sum(vals) / len(vals):.2f} [{min(vals):.2f}, {max(vals):.2f}]" if vals else "-")
        if iqm is None:
            cells.append("needs rliable (pip install 'moerl[stats]')")
        elif key in iqm:
            p, lo, hi = iqm[key]
            cells.append(f"{p:.2f} [{lo:.2f}, {hi:.2f}]")
        else:
            cells.append("- (no return bounds)")
        rows.append(cells)
    return table(head, rows)


def _image(files: dict[str, str | None], kind: str, alt: str, missing: str) -> str:
    name = files.get(kind)
    return f"![{alt}]({name})" if name else f"_{missing}_"


def study_markdown(studies: list[Any], figures_dir: Path | None, curves: list[str] | None = None) -> str:
    """The study sections (per env: aggregates, curves, dormant neurons, expert usage, CRL metrics) and the
    claims; figures go to ``figures_dir`` (None: no figures, the text says how to get them); ``curves``: the
    variants the evaluation curves draw (None: all)."""
    from moerl.rl.report import claims as report_claims
    from moerl.rl.report import figures as report_figures
    from moerl.rl.report import stats as stats

    lines = ["# Study report", ""]
    if figures_dir is None:
        lines += ["_Figures: pass `--out DIR` to write `DIR/report.md` with its PNG figures._", ""]
    if not stats.have_rliable():
        lines += ["_Aggregate scores, probabilities of improvement, profiles and claims need rliable "
                  "(pip install 'moerl[stats]')._", ""]
    for study in studies:
        files = report_figures.write_all(study, figures_dir, curves) if figures_dir is not None else {}
        lines += _env_section(study, files, figures_dir is not None)
    if stats.have_rliable():
        lines.append(report_claims.markdown(report_claims.claims(studies)))
    return "\n".join(lines).rstrip()


def _env_section(study: Any, files: dict[str, str | None], figures: bool) -> list[str]:
    from moerl.rl.report import stats as stats
    from moerl.rl.report.study import MIN_SEEDS

    def image(kind: str, alt: str, missing: str) -> list[str]:
        return [_image(files, kind, alt, missing), ""] if figures else []

    lines = [f"## {study.title}", ""]
    lines += [f"- {n}" for n in study.notes]
    variants = [[g.label, str(len(g.runs)), ", ".join(str(r.seed) for r in g.runs),
                 ", ".join(sorted({str(r.results.get("engine", "sb3")) for r in g.runs})),
                 fmt(np.mean([r.results.get("timesteps") or 0 for r in g.runs]), 0)] for g in study.groups]
    lines += [table(["variant", "seeds", "seed values", "engine", "steps"], variants), ""]
    lines += ["### Aggregate scores", "",
              "Final normalised greedy return per task (runs x tasks); rliable's IQM, optimality gap and mean with "
              f"95% stratified bootstrap CIs ({stats.REPS} resamples); P(X > {study.dense or 'dense'}) over tasks.",
              ""]
    if study.aggregates:
        rows = []
        for label, agg in study.aggregates.items():
            p = ("(baseline)" if label == study.dense else stats.fmt_interval(study.p_improve.get(label))
                 if label in study.p_improve else f"- (needs {MIN_SEEDS}+ seeds and dense runs)")
            rows.append([label, str(study.scores[label].shape[0]), *(stats.fmt_interval(agg[m]) for m in stats.AGGREGATES),
                         p])
        lines += [table(["variant", "seeds", *(f"{m} [95% CI]" for m in stats.AGGREGATES),
                         f"P(X > {study.dense or 'dense'}) [95% CI]"], rows), ""]
    else:
        lines += ["_no aggregate scores (needs rliable and normalised returns)_", ""]
    lines += image("aggregates", f"{study.title} aggregate scores", "no aggregate figure")
    lines += image("improvement", f"{study.title} probability of improvement",
                   "no probability-of-improvement figure (needs dense runs and 2+ seeds per variant)")
    lines += image("profiles", f"{study.title} performance profiles", "no performance profiles")
    lines += ["### Evaluation curves", ""]
    lines += image("eval curves", f"{study.title} evaluation curves",
                   "no evaluation curves (no eval.csv in these runs, or none of the variants --curves names)")
    lines += ["### Dormant neurons", ""]
    if study.dormant:
        rows = []
        for g in study.groups:
            d = study.dormant.get(g.label)
            if d is None:
                rows.append([g.label, "-", "-", "- (no metrics.csv)"])
                continue
            mean, lo, hi = stats.mean_ci_over_seeds(d[:, None])
            diff = ("(baseline)" if g.label == study.dense else stats.fmt_interval(study.dormant_diff.get(g.label)))
            rows.append([g.label, str(len(d)), f"{mean[0]:.3f} [{lo[0]:.3f}, {hi[0]:.3f}]", diff])
        lines += [table(["variant", "seeds", "final dormant fraction, tau 0.1 [95% CI]",
                         "dense - X [95% bootstrap CI]"], rows), ""]
    else:
        lines += ["_no metrics.csv in these runs (written by moerl since the study report; older runs have the "
                  "dormant fraction only in TensorBoard): dormant neurons cannot be shown_", ""]
    lines += image("dormant", f"{study.title} dormant fraction", "no dormant-neuron figure")
    routed = [g for g in study.groups if g.first.router is not None]
    if routed:
        lines += ["### Expert usage per task", ""]
        lines += _specialisation_table(routed)
        for g in routed:
            if figures:
                lines += [_image(files, f"usage {g.label}", f"{g.label} expert usage",
                                 f"{g.label}: no eval_usage.csv in these runs (older runs)"), ""]
            elif not any(r.usage_rows for r in g.runs):
                lines += [f"_{g.label}: no eval_usage.csv in these runs (older runs)_", ""]
    if study.setting == "crl":
        lines += ["### Continual metrics", "",
                  "Mean [min, max] over seeds. Average performance: mean final normalised return; forgetting: value "
                  "at the end of a task's last block minus its final value; forward transfer: versus single-task "
                  "reference runs (given beside these runs with `env_kwargs.fixed_task`, or named in "
                  "`eval.reference_runs`), '-' without them.", ""]
        rows = []
        for g in study.groups:
            vals = study.continual.get(g.label, {})
            rows.append([g.label, *(_mean_range(vals.get(k, [])) for k in
                                    ("average performance", "forgetting", "forward transfer"))])
        lines += [table(["variant", "average performance", "forgetting (end of block)", "forward transfer"], rows), ""]
    return lines


def _specialisation_table(groups: list[Any]) -> list[str]:
    """Per routed variant and MoE layer: how task-specific the experts' usage is at the last evaluation
    (:func:`~moerl.rl.report.usage.task_specialisation`), mean [min, max] over seeds."""
    from moerl.rl.report.usage import last_usage, task_specialisation

    rows = []
    for g in groups:
        per_layer: dict[str, list[float]] = {}
        for run in g.runs:
            for layer, usage in last_usage(run, list(g.tasks)).items():
                value = task_specialisation(usage)
                if value is not None:
                    per_layer.setdefault(layer, []).append(value)
        rows += [[g.label, layer, str(len(values)), _mean_range(values)] for layer, values in sorted(per_layer.items())]
    if not rows:
        return []
    return ["Task specialisation of the experts at the last evaluation: the mutual information between the "
            "evaluated task and the expert its inputs are routed to, over its maximum log(min(tasks, experts)); "
            "1 = each task has experts of its own (hardcoded, by construction, with one expert per task), "
            "0 = every task uses the experts alike. Mean [min, max] over seeds.", "",
            table(["variant", "layer", "seeds", "task specialisation"], rows), ""]


def _mean_range(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{np.mean(values):.3f} [{min(values):.3f}, {max(values):.3f}]"
