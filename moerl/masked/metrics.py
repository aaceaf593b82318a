"""Routing and continual-learning metrics for the masked-expert vision runs.

Routing: from a dataset x expert count matrix (rows: datasets, columns: experts) we report purity
(each expert credited with its majority dataset), best-matched routing accuracy (the best one-to-one
assignment of datasets to experts), per-expert utilisation and the gate entropy.
Continual: from an accuracy matrix ``R[i][j]`` = accuracy on dataset j after training phase i we report
average accuracy, backward transfer (BWT, Lopez-Paz and Ranzato 2017) and forgetting (Chaudhry et al. 2018).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np


def routing_purity(counts: np.ndarray) -> float:
    """Fraction of samples whose expert's majority dataset is their own dataset."""
    counts = np.asarray(counts, dtype=float)
    total = counts.sum()
    return float(counts.max(axis=0).sum() / total) if total else float("nan")


def best_matched_routing(counts: np.ndarray) -> tuple[float, list[int]]:
    """Best one-to-one map dataset -> expert (distinct experts when E >= D); (accuracy, assignment)."""
    counts = np.asarray(counts, dtype=float)
    d, e = counts.shape
    total = counts.sum()
    if e < d:  # not enough experts for a one-to-one map: each dataset takes its most used expert
        assign = [int(i) for i in counts.argmax(axis=1)]
        return float(sum(counts[i, assign[i]] for i in range(d)) / total), assign
    best, best_assign = -1.0, list(range(d))
    for perm in itertools.permutations(range(e), d):
        s = sum(counts[i, perm[i]] for i in range(d))
        if s > best:
            best, best_assign = s, list(perm)
    return float(best / total), best_assign


def utilisation(counts: np.ndarray) -> list[float]:
    counts = np.asarray(counts, dtype=float)
    return (counts.sum(axis=0) / max(counts.sum(), 1)).tolist()


def accuracy_matrix_summary(rows: list[list[float]]) -> dict[str, Any]:
    """Ragged rows (after dataset i: accuracy on datasets 0..i) -> padded T x T matrix and its metrics."""
    t = len(rows)
    acc = np.full((t, t), np.nan)
    for i, row in enumerate(rows):
        acc[i, : len(row)] = row
    return {"accuracy_matrix": acc.tolist(), **continual_metrics(acc)}


def continual_metrics(acc: np.ndarray) -> dict[str, float]:
    """Average accuracy, backward transfer and forgetting from a T x T accuracy matrix."""
    acc = np.asarray(acc, dtype=float)
    t = acc.shape[0]
    out = {"average_accuracy": float(acc[-1].mean())}
    if t > 1:
        out["backward_transfer"] = float(np.mean([acc[-1, j] - acc[j, j] for j in range(t - 1)]))
        out["forgetting"] = float(np.mean([np.nanmax(acc[:-1, j]) - acc[-1, j] for j in range(t - 1)]))
    return out
