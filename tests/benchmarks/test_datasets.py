"""Tests of the offline dataset loaders on small files written in the standard formats."""

from __future__ import annotations

import gzip
import importlib.util
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from benchmarks import datasets
from benchmarks.datasets import DatasetNotFoundError


# ---------------------------------------------------------------------------
# Writers of the distribution formats (independent of the loaders under test)
# ---------------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: 0, 0, 0x08, ndim, big-endian dims, data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(">" + "I" * array.ndim, *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx_set(
    directory: Path, images: dict[str, np.ndarray], labels: dict[str, np.ndarray], gzipped: bool
) -> None:
    """Writes the four MNIST-style files into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    names = {"train": "train", "test": "t10k"}
    for split, prefix in names.items():
        for kind, array, dims in (("images", images[split], 3), ("labels", labels[split], 1)):
            name = f"{prefix}-{kind}-idx{dims}-ubyte"
            raw = idx_bytes(array)
            if gzipped:
                with gzip.open(directory / (name + ".gz"), "wb") as f:
                    f.write(raw)
            else:
                (directory / name).write_bytes(raw)


def random_idx_arrays(rng: np.random.Generator, num_train: int = 7, num_test: int = 3):
    images = {
        s: rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        for s, n in (("train", num_train), ("test", num_test))
    }
    labels = {
        s: rng.integers(0, 10, n, dtype=np.uint8)
        for s, n in (("train", num_train), ("test", num_test))
    }
    return images, labels


def write_cifar_batch(
    path: Path,
    data: np.ndarray,
    labels: dict[bytes, list[int]],
    protocol: int = 2,
    legacy_numpy_names: bool = False,
) -> None:
    """A CIFAR python batch: dict with bytes keys, b'data' (N, 3072) uint8."""
    batch = {
        b"batch_label": b"test batch",
        b"data": data,
        b"filenames": [f"img_{i}.png".encode() for i in range(len(data))],
        **labels,
    }
    raw = pickle.dumps(batch, protocol=protocol)
    if legacy_numpy_names:  # the real files were written by Python 2 / NumPy 1
        assert protocol == 2
        raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        assert b"numpy.core.multiarray" in raw
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)


def write_cifar10(
    root: Path, rng: np.random.Generator, per_batch: int = 3, legacy_numpy_names: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Writes cifar-10-batches-py under ``root``; returns the raw train/test data and labels."""
    directory = root / "cifar-10-batches-py"
    datas, labels = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        label = rng.integers(0, 10, per_batch).tolist()
        write_cifar_batch(
            directory / name, data, {b"labels": label}, legacy_numpy_names=legacy_numpy_names
        )
        datas.append(data)
        labels.append(np.asarray(label))
    return (np.concatenate(datas[:5]), np.concatenate(labels[:5]), datas[5], labels[5])


# ---------------------------------------------------------------------------
# IDX: MNIST and Fashion-MNIST
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("gzipped", [True, False])
@pytest.mark.parametrize("name,subdir", [("mnist", "mnist"), ("fashion_mnist", "fashion_mnist")])
def test_idx_loader_reads_directory_or_parent(tmp_path, gzipped, name, subdir):
    images, labels = random_idx_arrays(np.random.default_rng(0))
    write_idx_set(tmp_path / subdir, images, labels, gzipped)
    for data_dir in (tmp_path, tmp_path / subdir):
        ds = datasets.load_dataset(name, str(data_dir))
        assert ds.name == name and ds.num_classes == 10
        assert ds.x_train.shape == (7, 28, 28, 1) and ds.x_test.shape == (3, 28, 28, 1)
        assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
        np.testing.assert_allclose(ds.x_train[..., 0], images["train"] / 255.0, rtol=0, atol=1e-7)
        np.testing.assert_allclose(ds.x_test[..., 0], images["test"] / 255.0, rtol=0, atol=1e-7)
        np.testing.assert_array_equal(ds.y_train, labels["train"])
        np.testing.assert_array_equal(ds.y_test, labels["test"])
        assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0


def test_idx_torchvision_layout_and_aliases(tmp_path):
    images, labels = random_idx_arrays(np.random.default_rng(1))
    write_idx_set(tmp_path / "FashionMNIST" / "raw", images, labels, gzipped=False)
    ds = datasets.load_dataset("Fashion-MNIST", tmp_path)
    np.testing.assert_array_equal(ds.y_train, labels["train"])


def test_parse_idx_rejects_bad_magic_and_truncation():
    good = idx_bytes(np.zeros((2, 3), np.uint8))
    assert datasets.parse_idx(good).shape == (2, 3)
    with pytest.raises(DatasetNotFoundError, match="bad magic"):
        datasets.parse_idx(b"\x01" + good[1:])
    with pytest.raises(DatasetNotFoundError, match="data bytes"):
        datasets.parse_idx(good[:-1])


# ---------------------------------------------------------------------------
# CIFAR pickles
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("legacy_numpy_names", [False, True])
def test_cifar10_loader_layout_and_values(tmp_path, legacy_numpy_names):
    x_train, y_train, x_test, y_test = write_cifar10(
        tmp_path, np.random.default_rng(2), legacy_numpy_names=legacy_numpy_names
    )
    for data_dir in (tmp_path, tmp_path / "cifar-10-batches-py"):
        ds = datasets.load_dataset("cifar10", data_dir)
        assert ds.x_train.shape == (15, 32, 32, 3) and ds.x_test.shape == (3, 32, 32, 3)
        assert ds.num_classes == 10 and ds.name == "cifar10"
        np.testing.assert_array_equal(ds.y_train, y_train)
        np.testing.assert_array_equal(ds.y_test, y_test)
        # Row layout: 1024 red values, 1024 green, 1024 blue, each row-major 32x32.
        n, i, j = 4, 5, 17
        for c in range(3):
            assert ds.x_train[n, i, j, c] == pytest.approx(
                x_train[n, c * 1024 + i * 32 + j] / 255.0
            )
        expected = x_test.reshape(3, 3, 32, 32).transpose(0, 2, 3, 1) / 255.0
        np.testing.assert_allclose(ds.x_test, expected, atol=1e-7)


@pytest.mark.parametrize(
    "label_mode,num_classes,key", [("fine", 100, b"fine_labels"), ("coarse", 20, b"coarse_labels")]
)
def test_cifar100_loader_fine_and_coarse(tmp_path, label_mode, num_classes, key):
    rng = np.random.default_rng(3)
    written = {}
    for split, n in (("train", 5), ("test", 2)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = {
            b"fine_labels": rng.integers(0, 100, n).tolist(),
            b"coarse_labels": rng.integers(0, 20, n).tolist(),
        }
        write_cifar_batch(tmp_path / "cifar-100-python" / split, data, labels, protocol=5)
        written[split] = (data, labels)
    ds = datasets.load_dataset("cifar100", tmp_path, cifar100_label_mode=label_mode)
    assert ds.num_classes == num_classes
    assert ds.x_train.shape == (5, 32, 32, 3) and ds.x_test.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(ds.y_train, written["train"][1][key])
    np.testing.assert_array_equal(ds.y_test, written["test"][1][key])
    with pytest.raises(ValueError, match="label_mode"):
        datasets.load_dataset("cifar100", tmp_path, cifar100_label_mode="medium")


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_cifar_pickle_with_foreign_globals_is_refused(tmp_path):
    write_cifar10(tmp_path, np.random.default_rng(4))
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(
        pickle.dumps({b"data": _Evil(), b"labels": [0]}, protocol=2)
    )
    with pytest.raises(DatasetNotFoundError, match=r"refusing to load \w+\.print"):
        datasets.load_dataset("cifar10", tmp_path)


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


def assert_one_line(error: BaseException) -> str:
    message = str(error)
    assert "\n" not in message and message
    return message


def test_missing_mnist_names_files_places_and_flag(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        datasets.load_dataset("mnist", tmp_path)
    message = assert_one_line(info.value)
    for expected in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
        str(tmp_path),
        str(tmp_path / "mnist"),
        "--data_dir",
        "the digits need no files",
    ):
        assert expected in message
    assert isinstance(info.value, ValueError)


def test_partly_missing_cifar10_is_not_found(tmp_path):
    write_cifar10(tmp_path, np.random.default_rng(5))
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetNotFoundError) as info:
        datasets.load_dataset("cifar10", tmp_path)
    message = assert_one_line(info.value)
    assert "data_batch_1..5" in message and "test_batch" in message
    assert str(tmp_path / "cifar-10-batches-py") in message and "--data_dir" in message


def test_a_damaged_gzip_file_is_one_line(tmp_path):
    """A '.gz' holding raw bytes, and one cut in half, are one-line errors (they were tracebacks
    of gzip's own exceptions)."""
    images, labels = random_idx_arrays(np.random.default_rng(6))
    write_idx_set(tmp_path, images, labels, gzipped=True)
    target = tmp_path / "train-images-idx3-ubyte.gz"
    whole = target.read_bytes()
    for damaged in (idx_bytes(images["train"]), whole[: len(whole) // 2]):
        target.write_bytes(damaged)
        with pytest.raises(DatasetNotFoundError) as info:
            datasets.load_dataset("mnist", tmp_path)
        message = assert_one_line(info.value)
        assert str(target) in message and "not a whole gzip file" in message


def test_a_cifar_batch_damaged_anywhere_is_one_line(tmp_path):
    """One changed byte in a pickle can fail in many ways (here a TypeError inside the
    unpickler); every one is the file's one-line error."""
    write_cifar10(tmp_path, np.random.default_rng(8))
    target = tmp_path / "cifar-10-batches-py" / "test_batch"
    target.write_bytes(b"J" + target.read_bytes()[1:])
    with pytest.raises(DatasetNotFoundError) as info:
        datasets.load_dataset("cifar10", tmp_path)
    assert assert_one_line(info.value).startswith(f"{target} is not a CIFAR batch file: ")


def test_a_cifar_batch_without_an_image_array_or_with_other_counts_is_one_line(tmp_path):
    write_cifar10(tmp_path, np.random.default_rng(7))
    target = tmp_path / "cifar-10-batches-py" / "test_batch"
    data = np.zeros((3, 3072), np.uint8)
    for batch, expected in (
        ((None, [0, 1, 2]), "b'data' is NoneType, not an (N, 3072) uint8 array"),
        ((data, [0, 1]), "holds 3 images and 2 labels"),
        ((data, [[0], [1, 2], []]), "'labels' is not a list of integer labels"),
    ):
        target.write_bytes(pickle.dumps({b"data": batch[0], b"labels": batch[1]}, protocol=2))
        with pytest.raises(DatasetNotFoundError) as info:
            datasets.load_dataset("cifar10", tmp_path)
        assert expected in assert_one_line(info.value) and str(target) in str(info.value)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "cifar100"])
def test_no_data_dir_is_not_found(name):
    with pytest.raises(DatasetNotFoundError) as info:
        datasets.load_dataset(name, None)
    message = assert_one_line(info.value)
    assert "no data_dir was given" in message and "--data_dir" in message


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError) as info:
        datasets.load_dataset("imagenet", None)
    message = assert_one_line(info.value)
    assert not isinstance(info.value, DatasetNotFoundError)
    for known in datasets.KNOWN_DATASETS:
        assert known in message


def test_unknown_source_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="known sources: files, tfds"):
        datasets.load_dataset("mnist", tmp_path, source="internet")


@pytest.mark.skipif(importlib.util.find_spec("mnist1d") is not None, reason="mnist1d is installed")
def test_mnist1d_without_package_is_a_clear_error():
    with pytest.raises(DatasetNotFoundError, match="mnist1d") as info:
        datasets.load_dataset("mnist1d")
    assert_one_line(info.value)


@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow_datasets") is not None,
    reason="tensorflow_datasets is installed",
)
def test_tfds_without_package_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="tensorflow-datasets") as info:
        datasets.load_dataset("cifar10", tmp_path, source="tfds")
    assert_one_line(info.value)


# ---------------------------------------------------------------------------
# Built-in digits, subsetting, flattening
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> datasets.Dataset:
    return datasets.load_dataset("digits")


def test_digits_loads_offline_all_train(digits):
    assert digits.x_train.shape == (1797, 8, 8, 1) and digits.y_train.shape == (1797,)
    assert digits.x_test.shape == (0, 8, 8, 1) and digits.y_test.shape == (0,)
    assert digits.x_train.dtype == np.float32 and digits.y_train.dtype == np.int32
    assert digits.x_train.min() == 0.0 and digits.x_train.max() == 1.0
    assert set(np.unique(digits.y_train)) == set(range(10)) and digits.num_classes == 10
    assert digits.input_shape == (8, 8, 1)


def test_digits_read_from_scikit_learns_file_equal_its_loader(digits, monkeypatch):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    assert datasets.digits_file() is not None  # else every launch pays scikit-learn's import
    pixels, labels = datasets.read_digits()
    np.testing.assert_array_equal(pixels, bunch.data)
    np.testing.assert_array_equal(labels, bunch.target)
    np.testing.assert_array_equal(digits.x_train[..., 0] * 16, bunch.images)
    np.testing.assert_array_equal(digits.y_train, bunch.target)
    # Where the file has moved, the loader goes through scikit-learn and gives the same data.
    monkeypatch.setattr(datasets, "DIGITS_FILE", ("no", "such", "file.csv.gz"))
    assert datasets.digits_file() is None
    moved = datasets.load_dataset("digits")
    np.testing.assert_array_equal(moved.x_train, digits.x_train)
    np.testing.assert_array_equal(moved.y_train, digits.y_train)


def test_digits_split_is_deterministic_and_disjoint(digits):
    a = datasets.load_dataset("digits", digits_test_fraction=0.2)
    b = datasets.load_dataset("digits", digits_test_fraction=0.2)
    assert len(a.y_test) == round(0.2 * 1797) and len(a.y_train) + len(a.y_test) == 1797
    np.testing.assert_array_equal(a.x_test, b.x_test)
    all_rows = {row.tobytes() for row in digits.x_train.reshape(1797, -1)}
    train_rows = [row.tobytes() for row in a.x_train.reshape(len(a.x_train), -1)]
    test_rows = [row.tobytes() for row in a.x_test.reshape(len(a.x_test), -1)]
    assert set(train_rows) | set(test_rows) == all_rows
    with pytest.raises(ValueError, match="test_fraction"):
        datasets.load_dataset("digits", digits_test_fraction=1.0)


def test_subset_and_flatten(digits):
    small = datasets.load_dataset("digits", max_train_examples=100, flatten=True)
    assert small.x_train.shape == (100, 64)
    np.testing.assert_array_equal(small.x_train, digits.x_train[:100].reshape(100, 64))
    drawn = datasets.subset_dataset(digits, 50, seed=0)
    again = datasets.subset_dataset(digits, 50, seed=0)
    np.testing.assert_array_equal(drawn.y_train, again.y_train)
    assert drawn.x_train.shape == (50, 8, 8, 1)
    assert not np.array_equal(drawn.x_train, digits.x_train[:50])
    assert datasets.flatten_dataset(digits).x_test.shape == (0, 64)
