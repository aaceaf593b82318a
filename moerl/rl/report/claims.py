"""The claims section of ``moerl report``: what the given runs say about each of the paper's four claims.

Every verdict is computed from the runs by the rules below, never written by hand, and printed with the
numbers it rests on. A comparison needs at least ``MIN_SEEDS`` seeds on each side, else it says "not enough
runs to tell". Intervals are 95% stratified bootstrap CIs (rliable, see :mod:`report_stats`).

One comparison of X against Y (IQM(X) - IQM(Y) of the final normalised returns, or a dormant difference):
  *supported* when the CI lies entirely above 0; *not supported* when the CI lies entirely below 0 or the
  point estimate is below 0 (the data favour Y); *mixed* otherwise (the point favours X, the CI includes 0).
  P(X > Y) is printed beside the IQM difference for the reader; the verdict rests on the IQM difference.

Claim 1, "in CRL, MoE (notably big/softmoe) learns better than dense": in each CRL env, ``big/softmoe``
  against ``dense`` when both are present; without big/softmoe, every MoE variant against dense. Verdicts
  of several comparisons combine as: all the same -> that verdict, otherwise *mixed*.
Claim 2, "in MTRL the benefit is partial": in each MTRL env, every MoE variant against dense. *Supported*
  when some comparisons are supported and some are not (a partial benefit); *not supported* when all are
  supported (a full benefit) or none is supported and no point favours MoE (no benefit); *mixed* otherwise.
Claim 3, "MoE keeps fewer dormant neurons than dense": in each env, for every MoE variant, the final tau=0.1
  dormant fraction of dense minus that of the variant (mean over seeds, CI by bootstrap over seeds); the
  per-comparison rule above; combined as for claim 1.
Claim 4, "hard-coded routing sometimes beats learned routing; task order matters in CRL": (a) for every
  (env, arch) with a ``hardcoded`` variant and a learned one (softmoe, topk), IQM(hardcoded) - IQM(learned):
  *supported* when at least one CI lies above 0, *not supported* when no point is above 0, else *mixed*;
  (b) for every pair of CRL variants that differ only in the task order, IQM difference: *supported* when
  one CI excludes 0, *not supported* otherwise; the order is "not testable with these runs" when no such pair
  exists. The claim combines its testable parts as for claim 1.
"""

from __future__ import annotations

from dataclasses import dataclass

from moerl.rl.report import stats as stats
from moerl.rl.report.study import MIN_SEEDS, EnvStudy

SUPPORTED, NOT_SUPPORTED, MIXED, UNTESTED = "supported", "not supported", "mixed", "not enough runs to tell"
CLAIMS = (
    "In CRL, MoE (notably big/softmoe) learns better than the dense baseline.",
    "In MTRL the benefit of MoE is partial.",
    "MoE networks keep fewer dormant neurons than the dense baseline.",
    "Hard-coded task routing sometimes beats learned routing; the order of tasks matters in CRL.",
)


@dataclass
class Claim:
    number: int
    text: str
    verdict: str
    evidence: list[str]


def compare(iv: stats.Interval) -> str:
    """The per-comparison rule of the module docstring."""
    point, lo, hi = iv
    if lo > 0:
        return SUPPORTED
    if hi < 0 or point < 0:
        return NOT_SUPPORTED
    return MIXED


def combine(verdicts: list[str]) -> str:
    tested = [v for v in verdicts if v != UNTESTED]
    if not tested:
        return UNTESTED
    return tested[0] if len(set(tested)) == 1 else MIXED


def _is_moe(study: EnvStudy, label: str) -> bool:
    return study.group(label).first.router is not None


def _vs_dense(study: EnvStudy, labels: list[str], evidence: list[str]) -> list[str]:
    verdicts = []
    for label in labels:
        where = f"{study.title}: {label} vs {study.dense}"
        if label not in study.iqm_diff:
            evidence.append(f"{where}: {UNTESTED} (needs {MIN_SEEDS}+ seeds of each with normalised returns)")
            verdicts.append(UNTESTED)
            continue
        v = compare(study.iqm_diff[label])
        evidence.append(f"{where}: IQM difference {stats.fmt_interval(study.iqm_diff[label])}, "
                        f"P({label} > {study.dense}) {stats.fmt_interval(study.p_improve[label])} -> {v}")
        verdicts.append(v)
    return verdicts


def _no_dense(study: EnvStudy, evidence: list[str]) -> bool:
    if study.dense is None:
        evidence.append(f"{study.title}: no dense runs to compare with -> {UNTESTED}")
        return True
    return False


def claim_crl(studies: list[EnvStudy]) -> Claim:
    evidence: list[str] = []
    verdicts: list[str] = []
    for s in (s for s in studies if s.setting == "crl"):
        if _no_dense(s, evidence):
            verdicts.append(UNTESTED)
            continue
        labels = ["big/softmoe"] if "big/softmoe" in s.scores else [g.label for g in s.groups if _is_moe(s, g.label)]
        if not labels:
            evidence.append(f"{s.title}: no MoE runs -> {UNTESTED}")
            verdicts.append(UNTESTED)
            continue
        verdicts += _vs_dense(s, labels, evidence)
    if not evidence:
        evidence.append("no CRL runs among the given runs")
    return Claim(1, CLAIMS[0], combine(verdicts), evidence)


def claim_mtrl(studies: list[EnvStudy]) -> Claim:
    evidence: list[str] = []
    verdicts: list[str] = []
    for s in (s for s in studies if s.setting == "mtrl"):
        if _no_dense(s, evidence):
            continue
        verdicts += _vs_dense(s, [g.label for g in s.groups if _is_moe(s, g.label)], evidence)
    tested = [v for v in verdicts if v != UNTESTED]
    if not evidence:
        evidence.append("no MTRL runs among the given runs")
    if not tested:
        verdict = UNTESTED
    elif SUPPORTED in tested and any(v != SUPPORTED for v in tested):
        verdict = SUPPORTED
    elif all(v == SUPPORTED for v in tested) or all(v == NOT_SUPPORTED for v in tested):
        verdict = NOT_SUPPORTED
    else:
        verdict = MIXED
    return Claim(2, CLAIMS[1], verdict, evidence)


def claim_dormant(studies: list[EnvStudy]) -> Claim:
    evidence: list[str] = []
    verdicts: list[str] = []
    for s in studies:
        if _no_dense(s, evidence) or s.dense is None:
            continue
        dense = s.dense
        for g in s.groups:
            if not _is_moe(s, g.label):
                continue
            where = f"{s.title}: dormant(dense) - dormant({g.label})"
            if g.label not in s.dormant_diff:
                missing = "no metrics.csv (runs written before it existed)" if not any(
                    r.metric_rows for r in g.runs + s.group(dense).runs) else f"needs {MIN_SEEDS}+ seeds of each"
                evidence.append(f"{where}: {UNTESTED} ({missing})")
                verdicts.append(UNTESTED)
                continue
            v = compare(s.dormant_diff[g.label])
            evidence.append(f"{where} at the end of training: {stats.fmt_interval(s.dormant_diff[g.label])} "
                            f"(dense {s.dormant[dense].mean():.3f}, {g.label} {s.dormant[g.label].mean():.3f}) -> {v}")
            verdicts.append(v)
    return Claim(3, CLAIMS[2], combine(verdicts), evidence or ["no runs to compare"])


def _routing_part(studies: list[EnvStudy], evidence: list[str]) -> str:
    verdicts: list[str] = []
    for s in studies:
        for g in s.groups:
            run = g.first
            if run.router != "hardcoded":
                continue
            for h in s.groups:
                if h.first.arch != run.arch or h.first.router in (None, "hardcoded"):
                    continue
                where = f"{s.title}: IQM({g.label}) - IQM({h.label})"
                if not (s.enough(g.label) and s.enough(h.label)):
                    evidence.append(f"{where}: {UNTESTED}")
                    verdicts.append(UNTESTED)
                    continue
                iv = stats.iqm_difference({"d": (s.scores[g.label], s.scores[h.label])})["d"]
                evidence.append(f"{where}: {stats.fmt_interval(iv)}")
                verdicts.append(SUPPORTED if iv[1] > 0 else NOT_SUPPORTED if iv[0] <= 0 else MIXED)
    tested = [v for v in verdicts if v != UNTESTED]
    if not verdicts:
        evidence.append("hard-coded vs learned routing: not testable with these runs (no hardcoded runs beside "
                        "softmoe or topk runs of the same arch)")
    if not tested:
        return UNTESTED
    if SUPPORTED in tested:
        return SUPPORTED
    return NOT_SUPPORTED if all(v == NOT_SUPPORTED for v in tested) else MIXED


def _order_part(studies: list[EnvStudy], evidence: list[str]) -> str:
    """Each CRL task order is its own study: pair the variants of two CRL studies of one env whose configs
    differ only in ``env_kwargs.order``."""
    import json

    verdicts: list[str] = []
    crl = [s for s in studies if s.setting == "crl"]
    for i, s in enumerate(crl):
        for t in crl[i + 1:]:
            if t.env != s.env:
                continue
            for g in s.groups:
                for h in t.groups:
                    a, b = json.loads(g.key) if g.first.config else {}, json.loads(h.key) if h.first.config else {}
                    differ = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
                    if not differ or not differ <= {"env_kwargs.order"} or g.first.order == h.first.order:
                        continue
                    where = (f"{s.env}, {g.label}: IQM({' > '.join(g.first.order)}) - "
                             f"IQM({' > '.join(h.first.order)})")
                    if not (s.enough(g.label) and t.enough(h.label)):
                        evidence.append(f"{where}: {UNTESTED}")
                        verdicts.append(UNTESTED)
                        continue
                    iv = stats.iqm_difference({"d": (s.scores[g.label], t.scores[h.label])})["d"]
                    v = SUPPORTED if iv[1] > 0 or iv[2] < 0 else NOT_SUPPORTED
                    evidence.append(f"{where}: {stats.fmt_interval(iv)} -> {v}")
                    verdicts.append(v)
    if not verdicts:
        evidence.append("task order: not testable with these runs (no CRL variants that differ only in "
                        "env_kwargs.order)")
    tested = [v for v in verdicts if v != UNTESTED]
    if not tested:
        return UNTESTED
    return SUPPORTED if SUPPORTED in tested else NOT_SUPPORTED


def claim_routing_and_order(studies: list[EnvStudy]) -> Claim:
    evidence: list[str] = []
    parts = [_routing_part(studies, evidence), _order_part(studies, evidence)]
    return Claim(4, CLAIMS[3], combine(parts), evidence)


def claims(studies: list[EnvStudy]) -> list[Claim]:
    return [claim_crl(studies), claim_mtrl(studies), claim_dormant(studies), claim_routing_and_order(studies)]


def markdown(claim_list: list[Claim]) -> str:
    lines = ["## Claims of the paper, checked on these runs", "",
             "Verdicts are computed from the runs by the rules in `moerl/rl/report/claims.py` "
             f"(95% stratified bootstrap CIs, at least {MIN_SEEDS} seeds per side); they are not tuned to agree "
             "with the paper.", ""]
    for c in claim_list:
        lines.append(f"{c.number}. **{c.text}** Verdict: **{c.verdict}**.")
        lines += [f"   - {e}" for e in c.evidence]
    return "\n".join(lines)
