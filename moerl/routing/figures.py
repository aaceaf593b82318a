"""Figures of ``moerl report --out DIR`` for routing runs: learning curves over seeds, routing maps, policies.

* One learning-curve figure per dataset (``routing-<env>-accuracy.png``): mean test accuracy after each
  epoch per variant, with its 95% Student-t band over seeds (the paper's Figs. 4-8 as curves; the same
  numbers as the report's Table 2 layout).
* For each router variant, the first seed's own ``routing_map.png`` (the paper's Fig. 11: the greedy block
  per task and depth) and ``policy_evolution.png`` (Figs. 9-10: how each agent's choice frequencies move,
  epoch by epoch) copied beside the report, so the report folder is self-contained and the maps sit next
  to the numbers they explain. The run makes these plots itself; copying them keeps one way to draw them.

Why not per-seed maps: a map is one seed's routes, and seeds route differently (a route is an arbitrary
block id); the report's tables give what is comparable over seeds (distinct routes, collision fraction).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from moerl.runs.seed_intervals import mean_ci_over_seeds
from moerl.runs.tables import slug

RUN_PLOTS = (("routing_map.png", "routing map (greedy block per task and depth)"),
             ("policy_evolution.png", "policy evolution (block choice frequency per epoch)"))


def routing_figures(variants: list[Any], out: Path) -> list[str]:
    """Write the routing figures of ``variants`` (``report_supervised.Variant``) into ``out``; return the
    Markdown that shows them (empty when no variant has per-epoch accuracies)."""
    routing = [v for v in variants if v.family == "routing"]
    lines: list[str] = []
    for env in sorted({str(v.runs[0].config.get("env")) for v in routing}):
        mine = [v for v in routing if str(v.runs[0].config.get("env")) == env]
        name = _accuracy_curves(env, mine, out)
        if name:
            lines += [f"### Test accuracy per epoch on {env}", "", f"![{env}: accuracy per epoch]({name})", ""]
    for v in routing:
        first = v.runs[0]
        shown = []
        for plot, what in RUN_PLOTS:
            source = first.path / plot
            if source.is_file():
                target = f"{slug(v.label)}-s{first.seed}-{plot}"
                shutil.copyfile(source, out / target)
                shown.append(f"![{v.label}, seed {first.seed}: {what}]({target})")
        if shown:
            lines += [f"### {v.label}: seed {first.seed}", "", *shown, ""]
    return lines


def _accuracy_curves(env: str, variants: list[Any], out: Path) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    fig, ax = plt.subplots(figsize=(7, 3.6 + 0.22 * len(variants)))
    drawn = False
    for v in variants:
        per_seed = [{int(k): float(a) for k, a in (r.results.get("accuracy_by_epoch") or {}).items()} for r in v.runs]
        epochs = sorted({e for s in per_seed for e in s})
        if not epochs:
            continue
        values = np.array([[s.get(e, np.nan) for e in epochs] for s in per_seed])
        mean, lo, hi = mean_ci_over_seeds(values)
        line, = ax.plot(epochs, mean, label=f"{v.label} ({len(v.runs)} seeds)")
        ax.fill_between(epochs, lo, hi, color=line.get_color(), alpha=0.2)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean test accuracy over tasks")
    ax.set_title(f"{env}: mean and 95% t-interval over seeds", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)  # below: never on a curve
    fig.tight_layout()
    name = f"routing-{slug(env)}-accuracy.png"
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name
