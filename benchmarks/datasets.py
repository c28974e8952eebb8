"""Offline datasets for the synthetic nonstationary benchmarks.

Nothing here downloads anything. Data comes from one of three places:

* files the user already has, in the formats the datasets are distributed in
  (MNIST / Fashion-MNIST IDX files, gzipped or not; the CIFAR-10 / CIFAR-100
  "python version" pickles), found under a ``data_dir``;
* data that ships with an installed package: scikit-learn's 8x8 ``digits``
  (always available) and ``mnist1d`` (generated offline when the optional
  ``mnist1d`` package is installed);
* an optional TensorFlow Datasets install whose data is already prepared
  (``source="tfds"``).

Every loader returns a :class:`Dataset` of NumPy arrays: images float32 in [0, 1],
channels-last ``(N, H, W, C)``; labels int32. A request for data that is not there
raises :class:`DatasetNotFoundError` with a one-line message naming the expected
files, the places searched and the flag to set.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import pickle
import zlib
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

DATA_DIR_FLAGS = "--data_dir"  # every command that trains on dataset files takes it


def fingerprint(dataset: Dataset) -> dict[str, Any]:
    """What identifies a dataset given to a trainer in Python, which no config field names: its
    name, sizes, input shape, classes and a SHA-256 of its arrays (a relaunch on other data,
    even of the same shapes, then differs in the recorded config)."""
    digest = hashlib.sha256()
    for array in (dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test):
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.reshape(-1).view(np.uint8) if array.size else b"")
    return {
        "name": str(dataset.name),
        "train_examples": int(len(dataset.y_train)),
        "test_examples": int(len(dataset.y_test)),
        "input_shape": [int(n) for n in np.shape(dataset.x_train)[1:]],
        "num_classes": int(dataset.num_classes),
        "sha256": digest.hexdigest()[:16],
    }


class DatasetNotFoundError(ValueError):
    """Raised when the files of a requested dataset cannot be found or read."""


class Dataset(NamedTuple):
    """A classification dataset held in host memory.

    Attributes:
      x_train: float32 inputs in [0, 1], shape ``(N, H, W, C)`` (or ``(N, D)`` once
        flattened, ``(N, L, 1)`` for 1-D signals).
      y_train: int32 labels, shape ``(N,)``.
      x_test: float32 inputs, same trailing shape as ``x_train`` (may hold 0 rows).
      y_test: int32 labels, shape ``(M,)``.
      num_classes: number of classes; labels lie in ``[0, num_classes)``.
      name: canonical dataset name, e.g. ``"cifar10"``.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input example (without the batch axis)."""
        return tuple(self.x_train.shape[1:])


# ---------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------

_ALIASES = {
    "mnist": "mnist",
    "fashion_mnist": "fashion_mnist",
    "fashionmnist": "fashion_mnist",
    "fmnist": "fashion_mnist",
    "cifar10": "cifar10",
    "cifar_10": "cifar10",
    "cifar100": "cifar100",
    "cifar_100": "cifar100",
    "digits": "digits",
    "mnist1d": "mnist1d",
    "mnist_1d": "mnist1d",
}

FILELESS_DATASETS = ("digits", "mnist1d")  # shipped or generated: no data_dir, no source

KNOWN_DATASETS: tuple[str, ...] = (
    "mnist",
    "fashion_mnist",
    "cifar10",
    "cifar100",
    "digits",
    "mnist1d",
)
FILE_DATASETS: tuple[str, ...] = ("mnist", "fashion_mnist", "cifar10", "cifar100")
TFDS_DATASETS: tuple[str, ...] = FILE_DATASETS


def canonical_name(name: str) -> str:
    """Returns the canonical dataset name for ``name`` (case and '-'/'_' insensitive)."""
    key = str(name).strip().lower().replace("-", "_")
    if key not in _ALIASES:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(KNOWN_DATASETS)}")
    return _ALIASES[key]


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------


def _as_dataset(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    num_classes: int,
    name: str,
) -> Dataset:
    """Builds a Dataset with the project's dtypes (float32 inputs, int32 labels)."""
    return Dataset(
        x_train=np.ascontiguousarray(x_train, dtype=np.float32),
        y_train=np.ascontiguousarray(y_train, dtype=np.int32).reshape(-1),
        x_test=np.ascontiguousarray(x_test, dtype=np.float32),
        y_test=np.ascontiguousarray(y_test, dtype=np.int32).reshape(-1),
        num_classes=int(num_classes),
        name=name,
    )


def _uint8_images_to_unit(images: np.ndarray) -> np.ndarray:
    """Scales uint8 pixel values to float32 in [0, 1]."""
    return images.astype(np.float32) / np.float32(255.0)


def _search_dirs(data_dir: str | os.PathLike, subdirs: Sequence[str]) -> list[Path]:
    """The directory itself, then each known sub-directory of it, in that order."""
    root = Path(data_dir).expanduser()
    return [root] + [root / sub for sub in subdirs]


def _not_found(
    name: str, expected: str, looked_in: Sequence[Path] | None, hint: str = ""
) -> DatasetNotFoundError:
    """A one-line error naming the expected files, where we looked and the flag to set."""
    if looked_in is None:
        where = "no data_dir was given"
    else:
        where = "looked in " + ", ".join(str(p) for p in looked_in)
    message = (
        f"dataset {name!r} not found: expected {expected}; {where}; "
        f"set {DATA_DIR_FLAGS} to the directory holding them"
    )
    if hint:
        message += f" ({hint})"
    message += "; the digits need no files (a claim's cpu scale, or --config.data.name=digits)"
    return DatasetNotFoundError(message)


# ---------------------------------------------------------------------------
# IDX files (MNIST, Fashion-MNIST)
# ---------------------------------------------------------------------------

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def parse_idx(raw: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decodes the bytes of an IDX file (the MNIST distribution format) into an array.

    Layout: two zero bytes, a dtype code, the number of dimensions, one big-endian
    uint32 per dimension, then the data in C order.
    """
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DatasetNotFoundError(f"{source} is not an IDX file (bad magic number)")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header_end = 4 + 4 * ndim
    if len(raw) < header_end:
        raise DatasetNotFoundError(f"{source} is truncated (IDX header)")
    shape = tuple(int(d) for d in np.frombuffer(raw[4:header_end], dtype=">u4"))
    count = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header_end != count * dtype.itemsize:
        raise DatasetNotFoundError(
            f"{source} holds {len(raw) - header_end} data bytes, header says shape {shape}"
        )
    return np.frombuffer(raw, dtype=dtype, count=count, offset=header_end).reshape(shape)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file, gzipped (``.gz``) or raw."""
    path = Path(path)
    if path.suffix != ".gz":
        return parse_idx(path.read_bytes(), str(path))
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:  # not the disk: the file's bytes
        raise DatasetNotFoundError(
            f"{path} is not a whole gzip file ({error}); extract it again"
        ) from None
    return parse_idx(raw, str(path))


_IDX_STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

_IDX_SUBDIRS = {
    "mnist": ("mnist", "MNIST", "MNIST/raw", "mnist/raw"),
    "fashion_mnist": (
        "fashion_mnist",
        "fashion-mnist",
        "FashionMNIST",
        "FashionMNIST/raw",
        "fashion_mnist/raw",
        "fashion-mnist/raw",
    ),
}


def _idx_candidates(stem: str) -> list[str]:
    """File names an IDX file is commonly stored under (gzip or not, '-' or '.')."""
    dotted = stem.replace("-idx", ".idx")
    return [stem + ".gz", stem, dotted + ".gz", dotted]


def _find_idx_dir(data_dir: Path | str, name: str) -> tuple[Path | None, list[Path]]:
    """First searched directory holding all four IDX files, and the list searched."""
    searched = _search_dirs(data_dir, _IDX_SUBDIRS[name])
    for directory in searched:
        if all(
            any((directory / c).is_file() for c in _idx_candidates(s)) for s in _IDX_STEMS.values()
        ):
            return directory, searched
    return None, searched


def load_idx_dataset(data_dir: str | os.PathLike | None, name: str = "mnist") -> Dataset:
    """Loads MNIST or Fashion-MNIST from the four IDX files (gzipped or raw).

    ``data_dir`` may be the directory holding the files or its parent (sub-directories
    such as ``mnist/``, ``MNIST/raw/`` or ``fashion_mnist/`` are searched too).
    """
    name = canonical_name(name)
    if name not in _IDX_SUBDIRS:
        raise ValueError(f"{name!r} is not an IDX dataset; IDX datasets: {', '.join(_IDX_SUBDIRS)}")
    expected = ", ".join(s + "[.gz]" for s in _IDX_STEMS.values())
    if data_dir is None:
        raise _not_found(name, expected, None)
    directory, searched = _find_idx_dir(data_dir, name)
    if directory is None:
        raise _not_found(name, expected, searched)
    arrays = {}
    for key, stem in _IDX_STEMS.items():
        path = next(directory / c for c in _idx_candidates(stem) if (directory / c).is_file())
        arrays[key] = read_idx(path)
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DatasetNotFoundError(
                f"{name} {split} IDX files in {directory} disagree: images {images.shape}, "
                f"labels {labels.shape}"
            )
    return _as_dataset(
        _uint8_images_to_unit(arrays["train_images"])[..., None],
        arrays["train_labels"],
        _uint8_images_to_unit(arrays["test_images"])[..., None],
        arrays["test_labels"],
        num_classes=10,
        name=name,
    )


# ---------------------------------------------------------------------------
# CIFAR pickles
# ---------------------------------------------------------------------------

# The CIFAR python pickles hold only dicts, lists, bytes and NumPy arrays. Only the
# globals needed to rebuild NumPy arrays are allowed, so a tampered file cannot run code.
_CIFAR_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler restricted to the globals a CIFAR batch file needs."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _CIFAR_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: not part of a CIFAR batch file"
            )
        return super().find_class(module, name)


def read_cifar_batch(path: str | os.PathLike) -> dict[bytes, Any]:
    """Reads one CIFAR python batch file (a pickled dict with bytes keys)."""
    with open(path, "rb") as f:
        try:
            batch = _CifarUnpickler(f, encoding="bytes").load()
        except OSError:
            raise  # the disk, not the file's bytes
        except Exception as error:  # noqa: BLE001 - a damaged pickle fails in any of many ways
            reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
            raise DatasetNotFoundError(f"{path} is not a CIFAR batch file: {reason}") from None
    if not isinstance(batch, dict) or b"data" not in batch:
        raise DatasetNotFoundError(f"{path} is not a CIFAR batch file (no b'data' entry)")
    return batch


def _cifar_images(data: Any, source: Path) -> np.ndarray:
    """(N, 3072) uint8 rows, channel-major (R plane, G plane, B plane) -> (N, 32, 32, 3) in [0, 1]."""
    try:
        data = np.asarray(data, dtype=np.uint8)
    except (TypeError, ValueError):
        raise DatasetNotFoundError(
            f"{source}: b'data' is {type(data).__name__}, not an (N, 3072) uint8 array"
        ) from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetNotFoundError(f"{source}: b'data' has shape {data.shape}, expected (N, 3072)")
    return _uint8_images_to_unit(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def _cifar_labels(batch: dict[bytes, Any], key: bytes, source: Path) -> np.ndarray:
    """The label list stored under ``key`` as an int32 array."""
    if key not in batch:
        raise DatasetNotFoundError(f"{source} has no {key!r} entry")
    try:
        labels = np.asarray(batch[key], dtype=np.int32)
    except (TypeError, ValueError):
        labels = None
    if labels is None or labels.ndim != 1:
        raise DatasetNotFoundError(f"{source}: {key!r} is not a list of integer labels")
    return labels


def _read_cifar_split(path: Path, key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of one CIFAR batch file, as many of each (one-line error if not)."""
    batch = read_cifar_batch(path)
    images, labels = _cifar_images(batch[b"data"], path), _cifar_labels(batch, key, path)
    if len(images) != len(labels):
        raise DatasetNotFoundError(
            f"{path} holds {len(images)} images and {len(labels)} labels; extract it again"
        )
    return images, labels


def _find_file_set(
    data_dir: Path | str, subdir: str, files: Sequence[str]
) -> tuple[Path | None, list[Path]]:
    """First of (data_dir, data_dir/subdir) holding every file in ``files``."""
    searched = _search_dirs(data_dir, (subdir,))
    for directory in searched:
        if all((directory / f).is_file() for f in files):
            return directory, searched
    return None, searched


def load_cifar10(data_dir: str | os.PathLike | None) -> Dataset:
    """Loads CIFAR-10 from ``cifar-10-batches-py/`` (``data_batch_1..5``, ``test_batch``).

    ``data_dir`` may be ``cifar-10-batches-py`` itself or its parent.
    """
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    expected = "cifar-10-batches-py/{data_batch_1..5,test_batch}"
    if data_dir is None:
        raise _not_found("cifar10", expected, None)
    directory, searched = _find_file_set(data_dir, "cifar-10-batches-py", files)
    if directory is None:
        raise _not_found(
            "cifar10", expected, searched, hint="the 'CIFAR-10 python version' archive, extracted"
        )
    train = [_read_cifar_split(directory / name, b"labels") for name in files[:5]]
    x_train, y_train = (np.concatenate(arrays) for arrays in zip(*train))
    x_test, y_test = _read_cifar_split(directory / files[5], b"labels")
    return _as_dataset(x_train, y_train, x_test, y_test, num_classes=10, name="cifar10")


def load_cifar100(data_dir: str | os.PathLike | None, label_mode: str = "fine") -> Dataset:
    """Loads CIFAR-100 from ``cifar-100-python/`` (``train``, ``test``).

    ``label_mode``: ``"fine"`` (100 classes, ``b'fine_labels'``) or ``"coarse"``
    (20 super-classes, ``b'coarse_labels'``). ``data_dir`` may be ``cifar-100-python``
    itself or its parent.
    """
    if label_mode not in ("fine", "coarse"):
        raise ValueError(f"cifar100 label_mode must be 'fine' or 'coarse', got {label_mode!r}")
    expected = "cifar-100-python/{train,test}"
    if data_dir is None:
        raise _not_found("cifar100", expected, None)
    directory, searched = _find_file_set(data_dir, "cifar-100-python", ("train", "test"))
    if directory is None:
        raise _not_found(
            "cifar100", expected, searched, hint="the 'CIFAR-100 python version' archive, extracted"
        )
    key = b"fine_labels" if label_mode == "fine" else b"coarse_labels"
    arrays = [
        *_read_cifar_split(directory / "train", key),
        *_read_cifar_split(directory / "test", key),
    ]
    num_classes = 100 if label_mode == "fine" else 20
    return _as_dataset(*arrays, num_classes=num_classes, name="cifar100")


# ---------------------------------------------------------------------------
# Built-in offline data
# ---------------------------------------------------------------------------

DIGITS_SPLIT_SEED = 0


# Where scikit-learn keeps the digits (one row per image: 64 pixels, then the label).
DIGITS_FILE = ("datasets", "data", "digits.csv.gz")


def digits_file() -> Path | None:
    """The digits file inside the installed scikit-learn, found without importing it (importing
    scikit-learn takes about a second); None when it is not there."""
    spec = importlib.util.find_spec("sklearn")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder).joinpath(*DIGITS_FILE)
        if path.is_file():
            return path
    return None


def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits as (pixels (N, 64) integers 0..16, labels (N,)), in scikit-learn's order:
    read from its file, or through ``sklearn.datasets.load_digits`` where the file has moved."""
    path = digits_file()
    if path is None:
        from sklearn.datasets import load_digits  # noqa: PLC0415 - slow to import

        bunch = load_digits()
        return bunch.data, bunch.target
    table = np.loadtxt(path, delimiter=",")
    return table[:, :-1], table[:, -1].astype(np.int64)


def load_digits_dataset(test_fraction: float = 0.0) -> Dataset:
    """scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), offline.

    Pixels (integers 0..16) are divided by 16 to lie in [0, 1]; shape (N, 8, 8, 1).
    With ``test_fraction == 0`` (the default, as in random-label memorization) every
    image is a training image and the test arrays hold 0 rows. Otherwise a fixed
    permutation (NumPy ``default_rng(DIGITS_SPLIT_SEED)``) puts the last
    ``round(test_fraction * 1797)`` images of it in the test set, the rest (kept in
    their original order) in the training set: the split never changes between runs.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"digits test_fraction must be in [0, 1), got {test_fraction}")
    pixels, labels = read_digits()
    images = (pixels.reshape(-1, 8, 8) / 16.0).astype(np.float32)[..., None]
    labels = labels.astype(np.int32)
    num_test = int(round(test_fraction * len(labels)))
    order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(labels))
    test_idx = np.sort(order[len(labels) - num_test :])
    train_idx = np.sort(order[: len(labels) - num_test])
    return _as_dataset(
        images[train_idx],
        labels[train_idx],
        images[test_idx],
        labels[test_idx],
        num_classes=10,
        name="digits",
    )


def load_mnist1d() -> Dataset:
    """MNIST-1D generated offline by the optional ``mnist1d`` package (4,000 / 1,000).

    Signals of length 40 are returned as ``(N, 40, 1)`` and min-max scaled to [0, 1]
    with the training set's minimum and maximum (test values may fall slightly outside).
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset  # type: ignore
    except ImportError as error:
        raise DatasetNotFoundError(
            "dataset 'mnist1d' needs the optional package mnist1d, which is not installed "
            "(pip install mnist1d); for data that needs nothing extra use 'digits'"
        ) from error
    data = make_dataset(get_dataset_args())
    x_train, x_test = (np.asarray(data[k], dtype=np.float32) for k in ("x", "x_test"))
    low, high = float(x_train.min()), float(x_train.max())
    scale = np.float32(1.0 / max(high - low, 1e-12))
    return _as_dataset(
        (x_train - low)[..., None] * scale,
        data["y"],
        (x_test - low)[..., None] * scale,
        data["y_test"],
        num_classes=10,
        name="mnist1d",
    )


# ---------------------------------------------------------------------------
# TensorFlow Datasets (optional)
# ---------------------------------------------------------------------------


def load_tfds(
    name: str, data_dir: str | os.PathLike | None, cifar100_label_mode: str = "fine"
) -> Dataset:
    """Loads a dataset that TensorFlow Datasets has already prepared (never downloads)."""
    name = canonical_name(name)
    if name not in TFDS_DATASETS:
        raise ValueError(f"source='tfds' supports {', '.join(TFDS_DATASETS)}, not {name!r}")
    try:
        import tensorflow_datasets as tfds  # type: ignore
    except ImportError as error:
        raise DatasetNotFoundError(
            "source='tfds' needs the optional package tensorflow-datasets, which is not "
            "installed; use source='files' with the original files instead"
        ) from error
    label_key = (
        "coarse_label" if (name == "cifar100" and cifar100_label_mode == "coarse") else "label"
    )
    try:
        splits = tfds.as_numpy(
            tfds.load(
                name,
                split=["train", "test"],
                data_dir=None if data_dir is None else str(data_dir),
                download=False,
                batch_size=-1,
            )
        )
    except Exception as error:  # tfds raises several error types for unprepared data
        first_line = (
            str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        )
        raise DatasetNotFoundError(
            f"tfds dataset {name!r} is not prepared in {data_dir or 'the default tfds data_dir'} "
            f"({first_line}); prepare it with tfds or set {DATA_DIR_FLAGS}"
        ) from error
    (train, test) = splits
    num_classes = {
        "mnist": 10,
        "fashion_mnist": 10,
        "cifar10": 10,
        "cifar100": 100 if label_key == "label" else 20,
    }[name]
    return _as_dataset(
        _uint8_images_to_unit(train["image"]),
        train[label_key],
        _uint8_images_to_unit(test["image"]),
        test[label_key],
        num_classes=num_classes,
        name=name,
    )


# ---------------------------------------------------------------------------
# Transformations
# ---------------------------------------------------------------------------


def flatten_inputs(x: np.ndarray) -> np.ndarray:
    """Reshapes inputs ``(N, ...)`` to ``(N, D)`` (also when N is 0)."""
    return np.reshape(x, (x.shape[0], int(np.prod(x.shape[1:], dtype=np.int64))))


def flatten_dataset(dataset: Dataset) -> Dataset:
    """The same dataset with every input flattened to a vector ``(N, D)``."""
    return dataset._replace(
        x_train=flatten_inputs(dataset.x_train), x_test=flatten_inputs(dataset.x_test)
    )


def subset_dataset(
    dataset: Dataset,
    max_train_examples: int | None = None,
    max_test_examples: int | None = None,
    seed: int | None = None,
) -> Dataset:
    """Keeps at most ``max_*_examples`` examples of each split.

    With ``seed=None`` the first examples are kept (deterministic, original order);
    with a seed a random subset of that size is drawn (sorted, so order is kept).
    """
    rng = None if seed is None else np.random.default_rng(seed)

    def take(x: np.ndarray, y: np.ndarray, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
        if limit is None or limit >= len(y):
            return x, y
        if limit < 0:
            raise ValueError(f"max examples must be >= 0, got {limit}")
        idx = np.arange(limit) if rng is None else np.sort(rng.choice(len(y), limit, replace=False))
        return x[idx], y[idx]

    x_train, y_train = take(dataset.x_train, dataset.y_train, max_train_examples)
    x_test, y_test = take(dataset.x_test, dataset.y_test, max_test_examples)
    return dataset._replace(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


# ---------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------

SOURCES = ("files", "tfds")


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    source: str = "files",
    max_train_examples: int | None = None,
    max_test_examples: int | None = None,
    subset_seed: int | None = None,
    flatten: bool = False,
    cifar100_label_mode: str = "fine",
    digits_test_fraction: float = 0.0,
) -> Dataset:
    """Loads a dataset by name, offline.

    Args:
      name: one of ``KNOWN_DATASETS`` (aliases such as ``"fashion-mnist"`` or
        ``"CIFAR-10"`` are accepted).
      data_dir: directory holding the files for ``mnist``, ``fashion_mnist``,
        ``cifar10`` and ``cifar100`` (the format's own directory or its parent);
        ignored for ``digits`` and ``mnist1d``; for ``source="tfds"`` the tfds data_dir.
      source: ``"files"`` (the standard distribution files) or ``"tfds"`` (an already
        prepared TensorFlow Datasets install). ``digits`` and ``mnist1d`` ignore it.
      max_train_examples, max_test_examples, subset_seed: optional subsetting, see
        :func:`subset_dataset`.
      flatten: reshape inputs to ``(N, D)``.
      cifar100_label_mode: ``"fine"`` (100 classes) or ``"coarse"`` (20).
      digits_test_fraction: share of ``digits`` held out, see :func:`load_digits_dataset`.

    Raises:
      DatasetNotFoundError: the data is not where it was looked for.
      ValueError: unknown name or source, or a bad option.
    """
    name = canonical_name(name)
    if source not in SOURCES:
        raise ValueError(f"unknown dataset source {source!r}; known sources: {', '.join(SOURCES)}")
    if name == "digits":
        dataset = load_digits_dataset(digits_test_fraction)
    elif name == "mnist1d":
        dataset = load_mnist1d()
    elif source == "tfds":
        dataset = load_tfds(name, data_dir, cifar100_label_mode)
    elif name in ("mnist", "fashion_mnist"):
        dataset = load_idx_dataset(data_dir, name)
    elif name == "cifar10":
        dataset = load_cifar10(data_dir)
    else:
        dataset = load_cifar100(data_dir, cifar100_label_mode)
    dataset = subset_dataset(dataset, max_train_examples, max_test_examples, subset_seed)
    return flatten_dataset(dataset) if flatten else dataset
