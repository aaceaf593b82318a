"""The PNG figures of ``moerl report --out DIR`` (matplotlib, Agg backend: no display needed).

One set per env (see :class:`~moerl.rl.report.study.EnvStudy`): evaluation curves per task (mean and
95% CI over seeds, CRL task switches as dashed lines), rliable's aggregate intervals, probability of
improvement over dense and performance profiles, the dormant fraction over training, and a heat map of
expert usage per task for each variant with a router. Each function writes one file and returns its name, or
None when the runs lack the data (the report then says so); titles name the env and variants, axes are
labelled, legends sit outside the data.
"""

from __future__ import annotations

from itertools import cycle
from pathlib import Path
from typing import Any

import numpy as np

from moerl.rl.report import stats as stats
from moerl.rl.report.data import Group
from moerl.rl.report.study import EnvStudy
from moerl.rl.report.usage import usage_table
from moerl.runs.tables import slug

DPI = 110


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


#: tab20 entries of the seed-001 variants, fixed so that a variant has one colour in every figure of every
#: suite and report, whichever other variants share the figure: one hue per placement (dark for softmoe,
#: light for topk), hardcoded red, the routerless networks grey.
VARIANT_COLORS = {"big/softmoe": 0, "big/topk": 1, "middle/softmoe": 2, "middle/topk": 3, "final/softmoe": 4,
                  "final/topk": 5, "big/hardcoded": 6, "all/softmoe": 8, "all/topk": 9, "dense": 14, "wide": 15}
#: The other tab20 entries, for labels without a fixed colour, in order of appearance.
SPARE_COLORS = tuple(i for i in range(20) if i not in VARIANT_COLORS.values())


def _colors(labels: list[str]) -> dict[str, Any]:
    """A colour per label: the variant's fixed colour (:data:`VARIANT_COLORS`, by the label before any
    ``" [...]"`` or ``" (algo)"`` suffix) for the first label of each variant, spare colours for the rest."""
    cmap = _plt().get_cmap("tab20")
    spare = cycle(SPARE_COLORS)
    taken: set[int] = set()
    colors = {}
    for label in labels:
        fixed = VARIANT_COLORS.get(label.split(" ")[0])
        index = fixed if fixed is not None and fixed not in taken else next(spare)
        taken.add(index)
        colors[label] = cmap(index)
    return colors


def _save(fig: Any, out: Path, name: str) -> str:
    plt = _plt()
    fig.savefig(out / name, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return name


def _schedule_note(study: EnvStudy, plotted: list[Group]) -> str:
    """Whose task switches the dashed lines show, when the plotted variants do not share one schedule."""
    if not plotted or len({tuple((b["task_name"], int(b["start_step"])) for b in g.first.schedule)
                           for g in plotted}) == 1:
        return ""
    return f"; switches of {plotted[0].label}"


def _switches(ax: Any, group: Group, label_tasks: bool) -> None:
    """Dashed vertical lines at the CRL block starts of ``group``'s schedule, named by the task that starts."""
    run = group.first
    for block in run.schedule[1:]:
        ax.axvline(int(block["start_step"]), color="0.45", linestyle="--", linewidth=0.9, zorder=0)
    if label_tasks:
        for block in run.schedule:
            ax.annotate(str(block["task_name"]), xy=(int(block["start_step"]), 1.0), xycoords=("data", "axes fraction"),
                        xytext=(2, -10), textcoords="offset points", fontsize=7, color="0.35", rotation=0)


def _curves(group: Group, task: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps, seeds x steps) normalised (or raw, without bounds) eval returns of ``task``; NaN where missing."""
    per_run = []
    for run in group.runs:
        rows = [r for r in (run.eval_rows or []) if r["task"] == task]
        if rows:
            key = "normalized" if all(r.get("normalized") not in (None, "") for r in rows) else "mean_return"
            per_run.append({int(r["step"]): float(r[key]) for r in rows})
    if not per_run:
        return None
    steps = np.array(sorted({s for d in per_run for s in d}))
    values = np.array([[d.get(int(s), np.nan) for s in steps] for d in per_run])
    return steps, values


def eval_curves(study: EnvStudy, out: Path, curves: list[str] | None = None) -> str | None:
    """Per task, the greedy evaluation over training of each variant (``curves``: of those labels only, in
    the study's order), mean and 95% CI over seeds, with the CRL task switches."""
    chosen = [g for g in study.groups if curves is None or g.label in curves]
    if not any(r.eval_rows for g in chosen for r in g.runs):
        return None
    plt = _plt()
    colors = _colors([g.label for g in study.groups])
    n = len(study.tasks)
    cols = min(n, 2)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 3.4 * rows), squeeze=False, sharey=True)
    normalised = all(g.label in study.scores for g in study.groups)
    plotted = [g for g in chosen if any(r.eval_rows for r in g.runs)]
    for ax, task in zip(axes.flat, study.tasks, strict=False):
        for g in plotted:
            c = _curves(g, task)
            if c is None:
                continue
            steps, values = c
            mean, lo, hi = stats.mean_ci_over_seeds(values)
            ax.plot(steps, mean, color=colors[g.label], label=f"{g.label} (n={values.shape[0]})", linewidth=1.6)
            ax.fill_between(steps, lo, hi, color=colors[g.label], alpha=0.2, linewidth=0)
        if study.setting == "crl":
            _switches(ax, plotted[0], label_tasks=True)
        ax.set_title(f"task: {task}", fontsize=10)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("normalised return" if normalised else "return")
        if normalised:  # a two-seed t band can reach far outside [0, 1]; the scores cannot
            ax.set_ylim(-0.05, 1.08)
        ax.grid(alpha=0.25)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(4, len(labels)),
               frameon=False, fontsize=9)
    extra = f" (dashed: task switches{_schedule_note(study, plotted)})" if study.setting == "crl" else ""
    fig.suptitle(f"{study.title}: greedy evaluation per task, mean and 95% CI over seeds{extra}",
                 fontsize=11)
    fig.tight_layout()
    return _save(fig, out, f"{slug(study.title)}-eval-curves.png")


def aggregates(study: EnvStudy, out: Path) -> str | None:
    if not study.aggregates:
        return None
    from rliable import plot_utils

    labels = list(study.aggregates)
    point = {k: np.array([study.aggregates[k][m][0] for m in stats.AGGREGATES]) for k in labels}
    interval = {k: np.array([[study.aggregates[k][m][1] for m in stats.AGGREGATES],
                             [study.aggregates[k][m][2] for m in stats.AGGREGATES]]) for k in labels}
    fig, _ = plot_utils.plot_interval_estimates(point, interval, metric_names=list(stats.AGGREGATES),
                                                algorithms=labels, colors=_colors(labels), xlabel="",
                                                subfigure_width=3.6, row_height=0.45)
    # rliable sizes the figure to the rows alone: make room above for the title and below for the x label.
    height = 0.45 * len(labels) + 1.6
    fig.set_figheight(height)
    fig.subplots_adjust(top=1 - 0.85 / height, bottom=0.75 / height)
    fig.supxlabel("normalised score (final greedy return per task)", y=0.02, fontsize=11)
    fig.suptitle(f"{study.title}: aggregate scores over runs x tasks, 95% stratified "
                 "bootstrap CIs", y=0.99, fontsize=11)
    return _save(fig, out, f"{slug(study.title)}-aggregates.png")


def improvement(study: EnvStudy, out: Path) -> str | None:
    if not study.p_improve or study.dense is None:
        return None
    from rliable import plot_utils

    keys = {f"{k}\t{study.dense}": v for k, v in study.p_improve.items()}
    point = {k: v[0] for k, v in keys.items()}
    interval = {k: np.array([[v[1]], [v[2]]]) for k, v in keys.items()}
    plt = _plt()
    colors = _colors([g.label for g in study.groups])
    fig, ax = plt.subplots(figsize=(6.0, 0.9 + 0.45 * len(keys)))
    plot_utils.plot_probability_of_improvement(point, interval, pair_separator="\t", ax=ax,
                                               colors=[colors[k.split("\t")[0]] for k in keys],
                                               xlabel=f"P(X > {study.dense})",
                                               left_ylabel="variant X", right_ylabel="baseline")
    ax.axvline(0.5, color="0.3", linestyle=":", linewidth=1.0)
    ax.set_xlim(0.0, 1.0)
    ax.set_title(f"{study.title}: probability of improvement over {study.dense}\n"
                 "(95% CIs; dotted: 0.5, no difference)", fontsize=10, pad=22)
    return _save(fig, out, f"{slug(study.title)}-improvement.png")


def profiles(study: EnvStudy, out: Path) -> str | None:
    if not study.scores:
        return None
    from rliable import plot_utils

    prof, cis = stats.performance_profiles(study.scores)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    plot_utils.plot_performance_profiles(prof, stats.TAUS, performance_profile_cis=cis, colors=_colors(list(prof)),
                                         xlabel=r"normalised score $\tau$", ax=ax, labelsize="medium",
                                         ticklabelsize="small")
    ax.set_ylabel(r"fraction of runs with score > $\tau$", fontsize="medium")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(f"{study.title}: performance profiles (95% CIs)", fontsize=10)
    return _save(fig, out, f"{slug(study.title)}-profiles.png")


def dormant(study: EnvStudy, out: Path) -> str | None:
    if not any(r.metric_rows for g in study.groups for r in g.runs):
        return None
    plt = _plt()
    colors = _colors([g.label for g in study.groups])
    fig, ax = plt.subplots(figsize=(7.0, 3.8))
    plotted = []
    for g in study.groups:
        series = [dict(r.metric_series(r.dormant_key)) for r in g.runs if r.metric_rows]
        if not series or not any(series):
            continue
        plotted.append(g)
        steps = np.array(sorted({s for d in series for s in d}))
        values = np.array([[d.get(int(s), np.nan) for s in steps] for d in series])
        mean, lo, hi = stats.mean_ci_over_seeds(values)
        ax.plot(steps, mean, color=colors[g.label], label=f"{g.label} (n={len(series)})", linewidth=1.6)
        ax.fill_between(steps, lo, hi, color=colors[g.label], alpha=0.2, linewidth=0)
    if study.setting == "crl" and plotted:
        _switches(ax, plotted[0], label_tasks=True)
    ax.set_xlabel("environment steps")
    ax.set_ylabel(r"dormant fraction ($\tau$ = 0.1, all hidden neurons)")
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlim(left=0)  # the first block starts at 0; metrics start after learning_starts
    note = f"\n(dashed: task switches{_schedule_note(study, plotted)})" if study.setting == "crl" else ""
    ax.set_title(f"{study.title}: dormant neurons over training, mean and 95% CI over seeds{note}",
                 fontsize=10)
    ax.grid(alpha=0.25)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return _save(fig, out, f"{slug(study.title)}-dormant.png")


def usage_heatmap(study: EnvStudy, group: Group, out: Path) -> str | None:
    table = usage_table(group)
    if table is None:
        return None
    tasks, layers = table
    plt = _plt()
    fig, axes = plt.subplots(1, len(layers), figsize=(1.2 + 1.1 * max(m.shape[1] for m in layers.values()) * len(layers)
                                                      + 1.5, 0.9 + 0.55 * len(tasks)), squeeze=False)
    for ax, (layer, m) in zip(axes[0], layers.items(), strict=True):
        im = ax.imshow(m, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
        ax.set_xticks(range(m.shape[1]), [f"of {tasks[e]}" if e < len(tasks) else "other"
                                          for e in range(m.shape[1])], fontsize=8, rotation=30, ha="right")
        ax.set_yticks(range(len(tasks)), tasks, fontsize=8)
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v < 0.6 else "black")
        ax.set_title(f"layer {layer}", fontsize=9)
        ax.set_xlabel("expert, matched per seed to the task it serves most")
        fig.colorbar(im, ax=ax, fraction=0.05, label="mean router usage")
    axes[0][0].set_ylabel("evaluated task")
    fig.suptitle(f"{study.title}, {group.label}: expert usage per task at the last evaluation\n"
                 f"(mean over {len(group.runs)} seeds of each seed's experts matched to tasks; a diagonal: experts "
                 "of their own)", fontsize=10)
    fig.tight_layout()
    return _save(fig, out, f"{slug(study.title)}-usage-{slug(group.label)}.png")


def write_all(study: EnvStudy, out: Path, curves: list[str] | None = None) -> dict[str, str | None]:
    """Every figure of ``study`` into ``out``: name of the figure kind -> file name (None: no data);
    ``curves``: the variants the evaluation curves draw (None: all)."""
    files: dict[str, str | None] = {
        "eval curves": eval_curves(study, out, curves),
        "aggregates": aggregates(study, out),
        "improvement": improvement(study, out),
        "profiles": profiles(study, out),
        "dormant": dormant(study, out),
    }
    for g in study.groups:
        if g.first.router is not None:
            files[f"usage {g.label}"] = usage_heatmap(study, g, out)
    return files
