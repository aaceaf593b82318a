"""Multi-task dataset builders: recipe sizes, class balance, train/test separation, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from moerl.core.errors import DataNotFoundError
from moerl.routing.data import FASHION_GROUPS, build_digits_mtl, build_one_vs_rest_from_images, one_vs_rest


def test_one_vs_rest_recipe_sizes_and_balance():
    labels = np.repeat(np.arange(10), 50)
    test_labels = np.repeat(np.arange(10), 30)
    train, test = one_vs_rest(labels, test_labels, train_per_class=40, test_per_class=20, seed=0)
    assert len(train) == 10 * 10 * 40 and len(test) == 10 * 200
    for c in range(10):
        rows = train.task == c
        assert (train.label[rows] == 1).sum() == 40  # positives
        assert (train.label[rows] == 0).sum() == 9 * 40  # 40 of each other class
        assert np.array_equal(np.unique(labels[train.index[rows & (train.label == 1)]]), [c])
        assert np.bincount(test_labels[test.index[test.task == c]], minlength=10).tolist() == [20] * 10


def test_digits_mtl_holds_out_test_images_and_is_deterministic():
    ds = build_digits_mtl(seed=0)
    assert ds.n_tasks == 10 and ds.n_classes == 2 and ds.image_shape == (8, 8)
    assert set(ds.train.index.tolist()).isdisjoint(ds.test.index.tolist())
    assert ds.test.task_counts(10).tolist() == [200] * 10
    again = build_digits_mtl(seed=0)
    assert np.array_equal(again.train.index, ds.train.index) and np.array_equal(again.images, ds.images)
    assert not np.array_equal(build_digits_mtl(seed=1).train.index, ds.train.index)


def test_scaled_recipe_when_few_images():
    images = np.zeros((10 * 30, 4, 4), np.uint8)
    labels = np.repeat(np.arange(10), 30)
    ds = build_one_vs_rest_from_images(images, labels, name="t", test_pool_per_class=10, train_per_class=1000,
                                       test_per_class=20, seed=0)
    assert ds.info["train_per_class_per_task"] == 20 and ds.info["test_per_class_per_task"] == 10
    assert len(ds.train) == 10 * 10 * 20 and len(ds.test) == 10 * 100


def _fashion_or_skip(builder):
    try:
        return builder()
    except DataNotFoundError as exc:
        pytest.skip(f"Fashion-MNIST not installed (apt-get install dataset-fashion-mnist): {exc}")


def test_fashion_5way_labels_are_indices_within_group():
    from moerl.data import sources
    from moerl.routing.data import build_fashion_5way_mtl

    ds = _fashion_or_skip(lambda: build_fashion_5way_mtl(train_per_class=100))
    src = np.concatenate([sources.load_fashion_mnist("train").labels, sources.load_fashion_mnist("test").labels])
    for split in (ds.train, ds.test):
        for t, (_, classes) in enumerate(FASHION_GROUPS):
            rows = split.task == t
            orig = src[split.index[rows]]
            assert np.array_equal(np.asarray(classes)[split.label[rows]], orig)  # no `% 5` collisions
    assert ds.train.task_counts(2).tolist() == [500, 500] and ds.test.task_counts(2).tolist() == [5000, 5000]


def test_fashion_mtl_full_scale_recipe():
    from moerl.routing.data import build_fashion_mtl

    ds = _fashion_or_skip(build_fashion_mtl)
    assert len(ds.train) == 100_000 and len(ds.test) == 2000
    assert (ds.train.label == 1).sum() == 10_000
    assert ds.train.index.max() < 60_000 <= ds.test.index.min()
