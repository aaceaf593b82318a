"""``moerl report RUN_DIR...``: one markdown table over finished MoE DQN runs.

Per run: arch, router, seed, steps, steps/s, final greedy return per task, and the continual
metrics (average normalised performance, mean forgetting); then one summary row per (env, arch,
router) over its seeds: mean and [min, max] of the run-level metrics, and rliable's interquartile mean
(IQM) of the final normalised returns (runs x tasks) with a 95% stratified bootstrap confidence interval
(Agarwal et al. 2021). rliable is the optional extra ``moerl[stats]`` (in ``dev``); without it the IQM
column says so instead of silently disappearing.

Routing and masked-expert runs among the paths are summarised per family by
:mod:`moerl.experiments.report_supervised` (mean and 95% t-interval over seeds per variant).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from moerl.errors import ConfigError
from moerl.experiments.report_data import Run, load_runs
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


def _with_dormant(run: Run) -> dict[str, Any]:
    """The run's results plus ``final_dormant_tau0.1``: from metrics.csv, or (runs written before it
    existed) from the run's TensorBoard events, so the per-run table keeps its column for older runs."""
    results = dict(run.results)
    dormant = run.final_dormant()
    results["final_dormant_tau0.1"] = dormant if run.metric_rows is not None else last_scalar(run.path / "tb",
                                                                                              DORMANT_TAG)
    return results


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


REPORT_FILE = "report.md"


def check_output_dir(out: str | Path) -> Path:
    """A report directory: new, or a report written before (replaced whole); never a run or other folder."""
    from moerl.experiments.rundir import STATUS_FILE

    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"output '{out}' is a file; give a directory for the report and its figures")
    if (path.parent / STATUS_FILE).is_file() or (path / STATUS_FILE).is_file():
        raise ConfigError(f"output '{out}' is inside a run directory; refusing to write there")
    if path.is_dir():
        files = list(path.iterdir())
        if files and not ((path / REPORT_FILE).is_file()
                          and all(f.is_file() and (f.name == REPORT_FILE or f.suffix == ".png") for f in files)):
            raise ConfigError(f"output '{out}' is a directory with other files (not a report written by "
                              f"'moerl report'); give a new directory, e.g. {path / 'report'}")
    if not path.parent.is_dir():
        raise ConfigError(f"output directory '{path.parent}' does not exist")
    return path


def _is_file_target(out: str) -> bool:
    """``--out FILE.md`` (or an existing file) writes the Markdown alone, as before figures existed."""
    path = Path(out)
    return path.suffix.lower() == ".md" or path.is_file()


def report(paths: list[str], out: str | None = None) -> tuple[str, list[tuple[str, str]]]:
    """The Markdown report over ``paths`` and the skipped paths with their reasons.

    ``out``: ``DIR`` writes ``DIR/report.md`` and the figures (``DIR/*.png``), built in a temporary folder
    beside it and renamed, so a failure leaves nothing half-written; ``FILE.md`` writes the Markdown alone.
    Without ``out`` (or with ``FILE.md``) the report has no figures, and says how to get them.
    """
    from moerl.experiments.report_data import group_runs
    from moerl.experiments.report_study import build_studies

    file_target = check_output_path(out) if out and _is_file_target(out) else None
    dir_target = check_output_dir(out) if out and file_target is None else None
    from moerl.experiments import report_supervised
    from moerl.experiments.provenance import stacks_markdown

    supervised, sup_skipped = report_supervised.load_supervised(paths)
    runs, skipped = load_runs(paths, required=not supervised)
    taken = {str(r.path.resolve()) for r in supervised}
    skipped = [(p, why) for p, why in skipped if str(Path(p).resolve()) not in taken] + sup_skipped
    stacks, warning = stacks_markdown([run.path for run in runs] + [run.path for run in supervised])
    if not runs:  # masked-expert and routing runs only
        text = (warning + "\n\n" if warning else "") + report_supervised.markdown(supervised) + "\n\n" + stacks
        if dir_target is not None:
            _write_dir([], dir_target, text, studies_section=False, supervised=supervised)
        elif file_target is not None:
            _write_file(file_target, text)
        return text, skipped
    results = [_with_dormant(run) for run in runs]
    text = (warning + "\n\n" if warning else "") + markdown_table(results) + "\n\n" + summary_table(results)
    if supervised:
        text += "\n\n" + report_supervised.markdown(supervised)
    text += "\n\n" + stacks
    studies = build_studies(group_runs(runs))
    if dir_target is None:
        text += "\n\n" + study_markdown(studies, None)
        if file_target is not None:
            _write_file(file_target, text)
        return text, skipped
    text += "\n\n" + _write_dir(studies, dir_target, text, supervised=supervised)
    return text, skipped


def _write_file(target: Path, text: str) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text + "\n")
    tmp.replace(target)


def _write_dir(studies: list[Any], target: Path, head: str, studies_section: bool = True,
               supervised: list[Any] | None = None) -> str:
    """``target/report.md`` and its figures: the MoE DQN studies' and, for routing runs among
    ``supervised``, the learning curves and routing maps (:mod:`moerl.experiments.report_supervised_figures`)."""
    import os
    import shutil

    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        body = study_markdown(studies, tmp) if studies_section else ""
        if supervised:
            from moerl.experiments.report_supervised import group_variants
            from moerl.experiments.report_supervised_figures import routing_figures

            figures = routing_figures(group_variants(supervised), tmp)
            if figures:
                body += "\n\n## Routing figures\n\n" + "\n".join(figures)
        (tmp / REPORT_FILE).write_text((head + "\n\n" + body).rstrip() + "\n")
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        if target.exists():
            target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return body


def _image(files: dict[str, str | None], kind: str, alt: str, missing: str) -> str:
    name = files.get(kind)
    return f"![{alt}]({name})" if name else f"_{missing}_"


def study_markdown(studies: list[Any], figures_dir: Path | None) -> str:
    """The study sections (per env: aggregates, curves, dormant neurons, expert usage, CRL metrics) and the
    claims; figures go to ``figures_dir`` (None: no figures, the text says how to get them)."""
    from moerl.experiments import report_claims, report_figures
    from moerl.experiments import report_stats as stats

    lines = ["# Study report", ""]
    if figures_dir is None:
        lines += ["_Figures: pass `--out DIR` to write `DIR/report.md` with its PNG figures._", ""]
    if not stats.have_rliable():
        lines += ["_Aggregate scores, probabilities of improvement, profiles and claims need rliable "
                  "(pip install 'moerl[stats]')._", ""]
    for study in studies:
        files = report_figures.write_all(study, figures_dir) if figures_dir is not None else {}
        lines += _env_section(study, files, figures_dir is not None)
    if stats.have_rliable():
        lines.append(report_claims.markdown(report_claims.claims(studies)))
    return "\n".join(lines).rstrip()


def _env_section(study: Any, files: dict[str, str | None], figures: bool) -> list[str]:
    from moerl.experiments import report_stats as stats
    from moerl.experiments.report_study import MIN_SEEDS

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
    lines += image("eval curves", f"{study.title} evaluation curves", "no eval.csv in these runs")
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


def _mean_range(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{np.mean(values):.3f} [{min(values):.3f}, {max(values):.3f}]"
