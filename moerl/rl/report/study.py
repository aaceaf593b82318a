"""The numbers of a study report, computed once per env from the grouped runs (figures, tables and claims
all read these, so they cannot disagree).

Per env (its continual or multi-task variants; single-task reference runs only serve forward transfer):

* scores: final normalised return per task, (seeds x tasks) per variant;
* rliable aggregates (IQM, optimality gap, mean) with CIs; P(X > dense) and IQM(X) - IQM(dense) with CIs;
* final dormant fraction (tau 0.1, all hidden neurons, last ``metrics.csv`` value) per seed, and
  dense - X with a CI;
* CRL: average performance, forgetting (end of block) and forward transfer per variant, mean over seeds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from moerl.rl.report import stats as stats
from moerl.rl.report.data import Group, context_key, references_for, relabel

#: A comparison needs at least this many seeds on each side; fewer: "not enough runs to tell".
MIN_SEEDS = 2


@dataclass
class EnvStudy:
    env: str
    setting: str
    groups: list[Group]
    tasks: list[str]
    #: ``k=v, ...``: what sets this study apart from the other studies of the same env and setting (e.g. the
    #: task order); empty when it is the only one.
    context: str = ""
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    aggregates: dict[str, dict[str, stats.Interval]] = field(default_factory=dict)
    dense: str | None = None
    #: label -> P(label > dense) and IQM(label) - IQM(dense), with CIs (variants with enough seeds only).
    p_improve: dict[str, stats.Interval] = field(default_factory=dict)
    iqm_diff: dict[str, stats.Interval] = field(default_factory=dict)
    #: label -> final dormant fraction per seed (runs with metrics.csv); dense - label with a CI.
    dormant: dict[str, np.ndarray] = field(default_factory=dict)
    dormant_diff: dict[str, stats.Interval] = field(default_factory=dict)
    #: label -> {"average performance" | "forgetting" | "forward transfer": values per seed}.
    continual: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        """``env (setting[, context])``: names the study in headings, figure titles and claims."""
        return f"{self.env} ({self.setting}{', ' + self.context if self.context else ''})"

    def group(self, label: str) -> Group:
        return next(g for g in self.groups if g.label == label)

    def enough(self, label: str) -> bool:
        return label in self.scores and self.scores[label].shape[0] >= MIN_SEEDS


def build_studies(groups: list[Group]) -> list[EnvStudy]:
    """One :class:`EnvStudy` per env, setting and context (:func:`context_key`: e.g. each CRL task order is
    its own study with its own dense baseline) of the non-reference groups, in the order first seen."""
    keyed: dict[tuple[str, str, str], list[Group]] = {}
    for g in groups:  # single-task runs of an env that also has continual / multi-task runs are its references
        if g.setting != "single" or not any(h.setting != "single" and h.env == g.env for h in groups):
            keyed.setdefault((g.env, g.setting, context_key(g)), []).append(g)
    studies = []
    for (env, setting, context), members in keyed.items():
        relabel(members)
        rivals = [json.loads(c) for (e, s, c) in keyed if (e, s) == (env, setting) and c != context]
        studies.append(_study(env, setting, members, groups, _context_text(json.loads(context) if context else {},
                                                                            rivals)))
    return studies


def _context_text(mine: dict, rivals: list[dict]) -> str:
    """``k=v, ...`` for the context keys that differ from any rival context (empty without rivals)."""
    keys = sorted({k for r in rivals for k in mine.keys() | r.keys() if mine.get(k) != r.get(k)})
    return ", ".join(f"{k}={mine.get(k, '(default)')}" for k in keys)


def _study(env: str, setting: str, members: list[Group], all_groups: list[Group], context: str = "") -> EnvStudy:
    tasks = list(dict.fromkeys(t for g in members for t in g.tasks))
    study = EnvStudy(env, setting, members, tasks, context)
    for g in members:
        m = stats.score_matrix([r.results["final_eval"] for r in g.runs], tasks)
        if m is None:
            study.notes.append(f"{g.label}: no normalised returns for every task (no return bounds); left out of "
                               "the aggregate scores")
        else:
            study.scores[g.label] = m
        dormant = [d for r in g.runs if (d := r.final_dormant()) is not None]
        if dormant:
            study.dormant[g.label] = np.asarray(dormant)
        if setting == "crl":
            study.continual[g.label] = _continual(g, all_groups)
    dense = [g.label for g in members if g.is_dense]
    study.dense = dense[0] if dense else None
    if not stats.have_rliable():
        return study
    if study.scores:
        study.aggregates = stats.aggregate_estimates(study.scores)
    if study.dense is not None and study.enough(study.dense):
        base = study.scores[study.dense]
        pairs = {g.label: (study.scores[g.label], base) for g in members
                 if g.label != study.dense and study.enough(g.label)}
        study.p_improve = stats.probability_of_improvement(pairs)
        study.iqm_diff = stats.iqm_difference(pairs)
    if study.dense is not None and len(study.dormant.get(study.dense, ())) >= MIN_SEEDS:
        base_d = study.dormant[study.dense][:, None]
        study.dormant_diff = stats.mean_difference(
            {label: (base_d, d[:, None]) for label, d in study.dormant.items()
             if label != study.dense and len(d) >= MIN_SEEDS})
    return study


def _continual(group: Group, all_groups: list[Group]) -> dict[str, list[float]]:
    """Average performance, forgetting and forward transfer per seed (from results.json; forward transfer
    recomputed with reference runs given beside the group when the run did not record it)."""
    from moerl.rl.continual import continual_metrics

    refs = references_for(group, all_groups)
    out: dict[str, list[float]] = {"average performance": [], "forgetting": [], "forward transfer": []}
    for run in group.runs:
        cont = run.results.get("continual") or {}
        if cont.get("average_performance") is not None:
            out["average performance"].append(float(cont["average_performance"]))
        if cont.get("mean_forgetting_end_of_block") is not None:
            out["forgetting"].append(float(cont["mean_forgetting_end_of_block"]))
        transfer = cont.get("mean_forward_transfer")
        if transfer is None and run.seed in refs and run.eval_rows and run.block_steps:
            transfer = continual_metrics(run.eval_rows, run.schedule, int(run.block_steps),
                                         refs[run.seed]).get("mean_forward_transfer")
        if transfer is not None:
            out["forward transfer"].append(float(transfer))
    return out
