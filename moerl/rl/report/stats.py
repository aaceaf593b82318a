"""The statistics of ``moerl report``: rliable's aggregate metrics with stratified bootstrap CIs.

Scores are the final normalised greedy returns per task, a (runs x tasks) matrix per variant, as rliable
expects (Agarwal et al. 2021). Every bootstrap first seeds numpy's global generator with :data:`SEED`
(rliable draws from it), so a report is the same every time it is made from the same runs; nothing else
is seeded or restored. rliable is the optional extra ``moerl[stats]``: :func:`have_rliable` says whether it
is installed, and the report says so instead of leaving sections out silently.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from moerl.runs.seed_intervals import mean_ci_over_seeds  # noqa: F401  (the report's name for it)

#: Bootstrap replications for every interval in a report.
REPS = 2000
#: Seed of numpy's global generator before each bootstrap (deterministic reports).
SEED = 0
#: The aggregate metrics, in the order of :func:`aggregate_estimates`' arrays.
AGGREGATES = ("IQM", "Optimality gap", "Mean")
#: Thresholds of the performance profiles (normalised scores lie in [0, 1]).
TAUS = np.linspace(0.0, 1.0, 41)

Interval = tuple[float, float, float]  # point estimate, CI low, CI high


def have_rliable() -> bool:
    try:
        import rliable  # noqa: F401
    except ImportError:
        return False
    return True


def score_matrix(finals: list[dict[str, dict]], tasks: list[str]) -> np.ndarray | None:
    """(runs x tasks) final normalised returns from results.json ``final_eval``; None if one is missing."""
    rows = [[f.get(t, {}).get("normalized") for t in tasks] for f in finals]
    if not rows or any(v is None for row in rows for v in row):
        return None
    return np.asarray(rows, dtype=float)


def _aggregates(scores: np.ndarray) -> np.ndarray:
    from rliable import metrics

    return np.array([metrics.aggregate_iqm(scores), metrics.aggregate_optimality_gap(scores),
                     metrics.aggregate_mean(scores)])


def aggregate_estimates(scores: Mapping[str, np.ndarray]) -> dict[str, dict[str, Interval]]:
    """Per variant, IQM, optimality gap and mean with 95% stratified bootstrap CIs."""
    from rliable import library as rly

    np.random.seed(SEED)
    point, interval = rly.get_interval_estimates(dict(scores), _aggregates, reps=REPS)
    return {k: {m: (float(point[k][i]), float(interval[k][0, i]), float(interval[k][1, i]))
                for i, m in enumerate(AGGREGATES)} for k in scores}


def _pairwise(pairs: Mapping[str, tuple[np.ndarray, np.ndarray]],
              func: Callable[[np.ndarray, np.ndarray], float]) -> dict[str, Interval]:
    from rliable import library as rly

    out: dict[str, Interval] = {}
    for name, pair in pairs.items():  # seeded per pair: a pair's CI never depends on which others are computed
        np.random.seed(SEED)
        point, interval = rly.get_interval_estimates({name: pair}, lambda x, y: np.array([func(x, y)]), reps=REPS)
        out[name] = (float(point[name][0]), float(interval[name][0, 0]), float(interval[name][1, 0]))
    return out


def prob_improvement(scores_x: np.ndarray, scores_y: np.ndarray) -> float:
    """rliable's ``metrics.probability_of_improvement`` computed without a Mann-Whitney call per task.

    The same number (the U statistic of X over Y, ties counted half, over n_x * n_y, averaged over tasks; a
    test checks equality with rliable's), vectorised: rliable's own is ~9 ms per call, and a bootstrap calls
    it ``REPS`` times per pair, which made a ten-variant report take minutes.
    """
    x, y = scores_x[:, None, :], scores_y[None, :, :]
    per_task = (x > y).mean(axis=(0, 1)) + 0.5 * (x == y).mean(axis=(0, 1))
    return float(np.mean(per_task))


def probability_of_improvement(pairs: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, Interval]:
    """P(X > Y) with its CI for each ``name: (scores_x, scores_y)`` (rliable's average over tasks)."""
    return _pairwise(pairs, prob_improvement)


def iqm_difference(pairs: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, Interval]:
    """IQM(X) - IQM(Y) with its CI for each ``name: (scores_x, scores_y)`` (X and Y resampled independently)."""
    from rliable import metrics

    return _pairwise(pairs, lambda x, y: float(metrics.aggregate_iqm(x) - metrics.aggregate_iqm(y)))


def mean_difference(pairs: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, Interval]:
    """mean(X) - mean(Y) with its CI (e.g. final dormant fractions, one column per run)."""
    return _pairwise(pairs, lambda x, y: float(np.mean(x) - np.mean(y)))


def performance_profiles(scores: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """rliable score distributions over :data:`TAUS` and their CIs."""
    from rliable import library as rly

    np.random.seed(SEED)
    return rly.create_performance_profile(dict(scores), TAUS, reps=REPS)


def fmt_interval(iv: Interval | None, digits: int = 3) -> str:
    if iv is None:
        return "-"
    p, lo, hi = iv
    return f"{p:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
