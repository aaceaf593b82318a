"""Mean and 95% Student-t interval over a few seeds: shared by every report (MoE DQN curves, the supervised
families' tables), so every "mean [CI]" over seeds in moerl means the same interval.

Why Student-t and not a bootstrap: studies here have 3-10 seeds; a bootstrap over n values can only resample
those n, so with 3 seeds its interval is far too narrow, while the t-interval widens as the seeds get fewer.
"""

from __future__ import annotations

import warnings

import numpy as np


def mean_ci_over_seeds(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and 95% Student-t CI over axis 0 (seeds) of ``values`` (seeds x points); NaN-aware.

    For learning curves: a few seeds make a bootstrap CI too narrow; with one seed the band is the line.
    """
    from scipy import stats  # type: ignore[import-untyped]

    with warnings.catch_warnings():  # a point seen by one seed only: no spread, the band is the line
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(values, axis=0)
        n = np.sum(~np.isnan(values), axis=0)
        sd = np.nanstd(values, axis=0, ddof=1) if values.shape[0] > 1 else np.zeros_like(mean)
        half = np.where(n > 1, stats.t.ppf(0.975, np.maximum(n - 1, 1)) * sd / np.sqrt(np.maximum(n, 1)), 0.0)
    half = np.nan_to_num(half)
    return mean, mean - half, mean + half
