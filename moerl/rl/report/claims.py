"""The claims section of ``moerl report``: seed 001's claims answered by the rules pre-registered in
``docs/study-verdicts.md`` (written before the full study's runs finished; not tuned afterwards).

Every verdict is computed from the runs, never written by hand, and printed with the numbers it rests on.

**One comparison** X vs Y is IQM(X) - IQM(Y) of the final normalised returns (runs x tasks; rliable, 95%
stratified bootstrap CI) with P(X > Y) beside it as an effect size, or for dormant neurons the mean final
dormant fraction of Y minus that of X (bootstrap CI over seeds). On one set of seeds it is *supported* (the CI
wholly above 0), *contradicted* (wholly below) or *inconclusive*. Each side needs :data:`MIN_SEEDS` seeds, else
"not enough runs to tell".

**How firm.** Where both sides have seeds below :data:`HALF` and seeds from it on (the study's 20-seed
variants: seeds 0-9 and 10-19 from two sweep files), the comparison is also computed on each half, and the
verdict is *supported* only when the all-seeds CI lies above 0, both halves' point estimates are above 0 and
neither half is contradicted; *contradicted* symmetrically; *unsettled* otherwise. Any other comparison is
labelled with its seed count ("10 seeds") beside its one-set verdict: one sample, not an answer.

**Two-sided comparisons** (claim 6, task order: does the order change the result, either way?): *differs*
when the all-seeds CI excludes 0 (and, with halves, both halves' points lie on its side and neither half's CI
lies wholly on the other), else *inconclusive* (*unsettled* with halves). No interval shows the absence of an
effect, so this claim can hold or stay unsettled, never fail.

**A claim's answer per suite** (the env's prefix: ``cartpole`` for ``cartpole-crl`` and ``cartpole-mtrl``)
lists its comparisons; it *holds* when every comparison the claim needs is supported, *fails* when one is
contradicted, and is *unsettled* otherwise. Where some suite answers a claim, every other suite with runs
of the setting the claim needs (CRL for claims 1, 3 and 6, MTRL for claim 2, any for 4 and 5) is named with
"not enough runs to tell", so a half-run suite is never read as agreeing. Where the runs include seeds
10+ (the study's design), a claim that holds or fails only thanks to comparisons without halves (a 10-seed
variant, or one side yet to run both halves) says so with their seed count, "holds (10 seeds)": one sample,
not an answer. Claim 2 ("only Big") needs big/softmoe's comparison supported and
no other placement's (wide, the parameter-count control, has no router and is not a placement); it fails when
big/softmoe's is contradicted or another placement's supported. The rules are per comparison: with dozens of
comparisons across suites, some intervals exclude 0 by chance; no correction for multiple comparisons is
made, and the section says so.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import numpy as np

from moerl.rl.report import stats as stats
from moerl.rl.report.data import Group
from moerl.rl.report.study import MIN_SEEDS, EnvStudy

SUPPORTED, CONTRADICTED, INCONCLUSIVE, UNSETTLED = "supported", "contradicted", "inconclusive", "unsettled"
DIFFERS = "differs"
UNTESTED = "not enough runs to tell"
HOLDS, FAILS = "holds", "fails"
#: The first seed of the second half (the study's seeds 10-19 come from their own sweep files).
HALF = 10
#: Placements of the same router that claim 1 compares big with (``dense`` and ``wide`` have no router).
PLACEMENTS = ("middle", "final", "all")
CLAIMS = (
    "Big beats the other placements in CRL.",
    "Only Big significantly beats the dense baseline in MTRL.",
    "SoftMoE beats TopK under non-stationarity (CRL).",
    "MoE networks keep fewer dormant neurons than the dense baseline.",
    "Hard-coded task routing beats learned routing (big/hardcoded vs big/softmoe and big/topk).",
    "The order of tasks matters in CRL (sequential vs reverse, per variant).",
)

Interval = stats.Interval


@dataclass
class Comparison:
    """One comparison's numbers and verdict; ``line`` is what the report prints."""

    suite: str
    where: str
    what: str
    measure: str
    whole: Interval | None
    halves: tuple[Interval, Interval] | None = None
    p_improve: Interval | None = None
    seeds: int = 0
    verdict: str = UNTESTED

    def line(self) -> str:
        if self.whole is None:
            return f"{self.where}: {self.what}: {UNTESTED} (needs {MIN_SEEDS}+ seeds of each)"
        text = f"{self.where}: {self.what}: {self.measure} {stats.fmt_interval(self.whole)}"
        if self.halves is not None:
            text += (f" (seeds 0-{HALF - 1}: {stats.fmt_interval(self.halves[0])}, seeds {HALF}+: "
                     f"{stats.fmt_interval(self.halves[1])})")
        if self.p_improve is not None:
            text += f", P(X > Y) {stats.fmt_interval(self.p_improve)}"
        label = f"{self.seeds} seeds" + (" in two halves" if self.halves is not None else "")
        return f"{text} [{label}] -> {self.verdict}"


@dataclass
class Claim:
    number: int
    text: str
    verdict: str
    evidence: list[str] = field(default_factory=list)


def one_set(iv: Interval) -> str:
    """The verdict of one comparison on one set of seeds."""
    _, lo, hi = iv
    return SUPPORTED if lo > 0 else CONTRADICTED if hi < 0 else INCONCLUSIVE


def firm(whole: Interval, halves: tuple[Interval, Interval]) -> str:
    """The pre-registered rule over all seeds and the two disjoint halves."""
    sets = [one_set(h) for h in halves]
    if whole[1] > 0 and all(h[0] > 0 for h in halves) and CONTRADICTED not in sets:
        return SUPPORTED
    if whole[2] < 0 and all(h[0] < 0 for h in halves) and SUPPORTED not in sets:
        return CONTRADICTED
    return UNSETTLED


def two_sided(whole: Interval, halves: tuple[Interval, Interval] | None) -> str:
    """Claim 6's rule: does the difference exclude 0, either way (agreeing halves where there are halves)?"""
    sign = 1 if whole[1] > 0 else -1 if whole[2] < 0 else 0
    if halves is None:
        return DIFFERS if sign else INCONCLUSIVE
    if sign and all(np.sign(h[0]) == sign and one_set(h) != (CONTRADICTED if sign > 0 else SUPPORTED)
                    for h in halves):
        return DIFFERS
    return UNSETTLED


def suite_of(env: str) -> str:
    """``cartpole`` for ``cartpole-crl`` / ``cartpole-mtrl``; a Gymnasium id stays whole."""
    head, sep, tail = env.rpartition("-")
    return head if sep and tail in ("crl", "mtrl") else env


def _rows(group: Group, values: Callable[[list[int]], np.ndarray | None], seeds: Iterable[int] | None = None):
    """(seeds, values) of ``group``'s runs restricted to ``seeds`` (None: all)."""
    keep = [i for i, r in enumerate(group.runs) if seeds is None or r.seed in seeds]
    return [group.runs[i].seed for i in keep], values(keep)


class _Comparer:
    """Computes comparisons between groups of ``studies`` (one study; two for the task order), with halves."""

    def __init__(self, *studies: EnvStudy):
        self.matrices = {id(g): s.scores.get(g.label) for s in studies for g in s.groups}
        self.title = studies[0].title
        self.suite = suite_of(studies[0].env)

    def _scores(self, group: Group) -> Callable[[list[int]], np.ndarray | None]:
        matrix = self.matrices.get(id(group))
        return lambda keep: None if matrix is None else matrix[keep]

    def _dormant(self, group: Group) -> Callable[[list[int]], np.ndarray | None]:
        def values(keep: list[int]) -> np.ndarray | None:
            found = [group.runs[i].final_dormant() for i in keep]
            return None if any(v is None for v in found) else np.asarray(found, dtype=float)[:, None]
        return values

    def _subsets(self, x: Group, y: Group) -> list[set[int] | None]:
        """All seeds, then the two halves where both sides have enough seeds in each; without halves, the
        seeds both sides share (a 20-seed variant against a 10-seed one: seeds 0-9 on both sides, so that
        "10 seeds" means ten on each side), or all seeds when they share too few."""
        halves = []
        for part in (lambda s: s < HALF, lambda s: s >= HALF):
            ok = all(sum(part(r.seed) for r in g.runs) >= MIN_SEEDS for g in (x, y))
            halves.append({r.seed for g in (x, y) for r in g.runs if part(r.seed)} if ok else None)
        if all(h is not None for h in halves):
            return [None, *halves]
        shared = {r.seed for r in x.runs} & {r.seed for r in y.runs}
        return [shared if len(shared) >= MIN_SEEDS else None]

    def _intervals(self, x: Group, y: Group, kind: str) -> tuple[list[Interval], Interval | None, int] | None:
        get = self._scores if kind == "iqm" else self._dormant
        pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        seeds = 0
        for i, subset in enumerate(self._subsets(x, y)):
            (sx, vx), (sy, vy) = _rows(x, get(x), subset), _rows(y, get(y), subset)
            if vx is None or vy is None or min(len(sx), len(sy)) < MIN_SEEDS:
                return None
            # dormant: fewer is better, so X's "win" is dormant(Y) - dormant(X)
            pairs[str(i)] = (vx, vy) if kind == "iqm" else (vy, vx)
            if i == 0:
                seeds = min(len(sx), len(sy))
        diff = stats.iqm_difference(pairs) if kind == "iqm" else stats.mean_difference(pairs)
        p = stats.probability_of_improvement({"0": pairs["0"]})["0"] if kind == "iqm" else None
        return [diff[k] for k in sorted(diff)], p, seeds

    def compare(self, x: Group, y: Group, kind: str = "iqm", rule: str = "one-sided",
                where: str | None = None, what: str | None = None) -> Comparison:
        measure = "IQM difference" if kind == "iqm" else "dormant fraction difference"
        what = what or (f"{x.label} vs {y.label}" if kind == "iqm" else f"dormant({y.label}) - dormant({x.label})")
        out = Comparison(self.suite, where or self.title, what, measure, None)
        got = self._intervals(x, y, kind)
        if got is None:
            return out
        ivs, out.p_improve, out.seeds = got
        out.whole = ivs[0]
        out.halves = (ivs[1], ivs[2]) if len(ivs) == 3 else None
        if rule == "two-sided":
            out.verdict = two_sided(out.whole, out.halves)
        else:
            out.verdict = firm(out.whole, out.halves) if out.halves else one_set(out.whole)
        return out


def _find(study: EnvStudy, arch: str, router: str | None) -> Group | None:
    return next((g for g in study.groups if g.first.arch == arch and g.first.router == router), None)


def _dense(study: EnvStudy) -> Group | None:
    return study.group(study.dense) if study.dense is not None else None


def _moe(study: EnvStudy) -> list[Group]:
    return [g for g in study.groups if g.first.router is not None]


def _rule(tested: list[Comparison], needed: Callable[[list[Comparison]], str] | None) -> str:
    if needed is not None:
        return needed(tested)
    verdicts = {c.verdict for c in tested}
    if CONTRADICTED in verdicts:
        return FAILS
    return HOLDS if verdicts == {SUPPORTED} else UNSETTLED


def _answer(comparisons: list[Comparison], needed: Callable[[list[Comparison]], str] | None = None,
            halved: bool = False) -> str:
    """The claim's answer from its comparisons; in a suite with seeds 10+ (``halved``: a study built to settle by
    halves),
    "holds" or "fails" that would not stand without its comparisons that have no halves (a 10-seed variant, or
    one side yet to run its second half) carries their seed count: "holds (10 seeds)", one sample, not an
    answer."""
    tested = [c for c in comparisons if c.whole is not None]
    if not tested:
        return UNTESTED
    verdict = _rule(tested, needed)
    provisional = [c for c in tested if c.halves is None] if halved else []
    if verdict in (HOLDS, FAILS) and provisional:
        unsure = {id(c) for c in provisional}
        settled_only = [replace(c, verdict=UNSETTLED) if id(c) in unsure else c for c in tested]
        if _rule(settled_only, needed) != verdict:
            return f"{verdict} ({min(c.seeds for c in provisional)} seeds)"
    return verdict


def _by_suite(comparisons: list[Comparison], needed: Callable[[list[Comparison]], str] | None = None,
              present: Iterable[str] = (), halved: Iterable[str] = ()) -> str:
    """The claim's answer, per suite when several are ``present`` (suites with runs of the claim's setting)
    or compared."""
    if not comparisons:
        return UNTESTED
    suites = list(dict.fromkeys([*present, *(c.suite for c in comparisons)]))
    answers = [(s, _answer([c for c in comparisons if c.suite == s], needed, s in set(halved))) for s in suites]
    return answers[0][1] if len(answers) == 1 else "; ".join(f"{s}: {a}" for s, a in answers)


def claim_big_in_crl(studies: list[EnvStudy]) -> tuple[list[Comparison], list[str]]:
    out, notes = [], []
    for s in (s for s in studies if s.setting == "crl"):
        cmp = _Comparer(s)
        big = _find(s, "big", "softmoe")
        if big is not None and (dense := _dense(s)) is not None:
            out.append(cmp.compare(big, dense))
        for router in ("softmoe", "topk"):
            big_r = _find(s, "big", router)
            for arch in PLACEMENTS:
                other = _find(s, arch, router)
                if big_r is not None and other is not None:
                    out.append(cmp.compare(big_r, other))
    if not out:
        notes.append("not testable with these runs (no CRL runs of big/softmoe beside dense or of big beside "
                     "another placement of its router)")
    return out, notes


def _only_big(tested: list[Comparison]) -> str:
    """Claim 2: big/softmoe's comparison supported and no other placement's (other big routers are Big too)."""
    big = [c for c in tested if c.what.startswith("big/softmoe vs")]
    others = [c for c in tested if not c.what.startswith("big/")]
    if (big and big[0].verdict == CONTRADICTED) or any(c.verdict == SUPPORTED for c in others):
        return FAILS
    return HOLDS if big and big[0].verdict == SUPPORTED else UNSETTLED


def claim_only_big_in_mtrl(studies: list[EnvStudy]) -> tuple[list[Comparison], list[str]]:
    out = []
    for s in (s for s in studies if s.setting == "mtrl"):
        if (dense := _dense(s)) is not None:
            cmp = _Comparer(s)
            out += [cmp.compare(g, dense) for g in _moe(s)]
    return out, [] if out else ["not testable with these runs (no MTRL runs of an MoE variant beside dense)"]


def claim_softmoe_over_topk(studies: list[EnvStudy]) -> tuple[list[Comparison], list[str]]:
    out = []
    for s in (s for s in studies if s.setting == "crl"):
        cmp = _Comparer(s)
        for arch in (*PLACEMENTS, "big"):
            soft, topk = _find(s, arch, "softmoe"), _find(s, arch, "topk")
            if soft is not None and topk is not None:
                out.append(cmp.compare(soft, topk))
    return out, [] if out else ["not testable with these runs (no CRL runs of softmoe and topk at one placement)"]


def claim_dormant(studies: list[EnvStudy]) -> tuple[list[Comparison], list[str]]:
    out, notes = [], []
    for s in studies:
        if (dense := _dense(s)) is None:
            continue
        cmp = _Comparer(s)
        for g in _moe(s):
            c = cmp.compare(g, dense, kind="dormant")
            if c.whole is None and not any(r.metric_rows for r in g.runs + dense.runs):
                notes.append(f"{s.title}: {c.what}: no metrics.csv (runs written before it existed)")
                continue
            out.append(c)
    if not out and not notes:
        notes.append("not testable with these runs (no MoE runs beside dense)")
    return out, notes


def claim_hardcoded(studies: list[EnvStudy]) -> tuple[list[Comparison], list[str]]:
    out = []
    for s in studies:
        hard = _find(s, "big", "hardcoded")
        if hard is None:
            continue
        cmp = _Comparer(s)
        out += [cmp.compare(hard, learned) for router in ("softmoe", "topk")
                if (learned := _find(s, "big", router)) is not None]
    return out, [] if out else ["not testable with these runs (no big/hardcoded runs beside a learned router)"]


def claim_task_order(studies: list[EnvStudy]) -> tuple[list[Comparison], list[str]]:
    """Each CRL task order is its own study: pair the variants of two CRL studies of one env whose configs
    differ only in ``env_kwargs.order`` (their schedules differ)."""
    out = []
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
                    what = f"IQM({' > '.join(g.first.order)}) - IQM({' > '.join(h.first.order)})"
                    out.append(_Comparer(s, t).compare(g, h, rule="two-sided", where=f"{s.env}, {g.label}",
                                                       what=what))
    return out, [] if out else ["not testable with these runs (no CRL variants that differ only in "
                                "env_kwargs.order)"]


def _order_answer(tested: list[Comparison]) -> str:
    return HOLDS if any(c.verdict == DIFFERS for c in tested) else UNSETTLED


#: Claim number -> (how its comparisons are found, how a suite's answer is made (None: the general rule), the
#: setting its runs need (None: any)).
_RULES: tuple[tuple[Callable[[list[EnvStudy]], tuple[list[Comparison], list[str]]],
                    Callable[[list[Comparison]], str] | None, str | None], ...] = (
    (claim_big_in_crl, None, "crl"), (claim_only_big_in_mtrl, _only_big, "mtrl"),
    (claim_softmoe_over_topk, None, "crl"), (claim_dormant, None, None), (claim_hardcoded, None, None),
    (claim_task_order, _order_answer, "crl"))


def claims(studies: list[EnvStudy]) -> list[Claim]:
    out = []
    halved = {suite_of(s.env) for s in studies for g in s.groups for r in g.runs if r.seed >= HALF}
    for number, ((find, needed, setting), text) in enumerate(zip(_RULES, CLAIMS, strict=True), start=1):
        comparisons, notes = find(studies)
        present = [suite_of(s.env) for s in studies if setting in (None, s.setting)]
        out.append(Claim(number, text, _by_suite(comparisons, needed, present, halved),
                         [c.line() for c in comparisons] + notes))
    return out


def markdown(claim_list: list[Claim]) -> str:
    lines = ["## Claims of the paper, checked on these runs", "",
             "Verdicts follow the rules pre-registered in `docs/study-verdicts.md` (coded in "
             "`moerl/rl/report/claims.py`): 95% stratified bootstrap CIs, at least "
             f"{MIN_SEEDS} seeds per side; where both sides have seeds 0-{HALF - 1} and {HALF}+, a comparison is "
             "settled only when the two halves agree, otherwise it is labelled with its seed count. The rules are "
             "per comparison, not corrected for the many comparisons made. They are not tuned to agree with the "
             "paper.", ""]
    for c in claim_list:
        lines.append(f"{c.number}. **{c.text}** Verdict: **{c.verdict}**.")
        lines += [f"   - {e}" for e in c.evidence]
    return "\n".join(lines)
