"""load_train_split: the training labels, and images read only by row."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from fedlearn.data import (
    BUNDLED_SOURCE,
    FASHION_MNIST_DIR,
    TrainSplit,
    load_dataset,
    load_train_split,
    make_partitions,
)
from fedlearn.data.idx import write_idx
from fedlearn.errors import ConfigError, DataError


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("name", ["mnist", "fashion"])
def test_train_split_gives_the_labels_and_rows_load_dataset_gives(
    tmp_path: Path, write_folder, name: str, compress: bool
) -> None:
    write_folder(tmp_path, compress=compress)
    whole = load_dataset(name, data_dir=tmp_path)
    split = load_train_split(name, data_dir=tmp_path)

    assert split.name == name and split.source == whole.source == str(tmp_path)
    assert split.labels.dtype == np.int64
    np.testing.assert_array_equal(split.labels, whole.train_labels)
    rows = np.array([29, 3, 3, 0, 17])
    images = split.images(rows)
    assert images.dtype == np.uint8 and images.shape == (5, 28, 28)
    np.testing.assert_array_equal(images, whole.train_images[rows])
    np.testing.assert_array_equal(split.images(np.arange(30)), whole.train_images)


def test_train_split_of_the_mnist_cache_reads_the_cached_archives(
    tmp_path: Path, write_folder, fake_mnist
) -> None:
    write_folder(tmp_path, compress=True)
    kwargs = {"cache_dir": tmp_path, "allow_download": False, "checksums": fake_mnist.checksums}
    whole = load_dataset("mnist", **kwargs)
    split = load_train_split("mnist", **kwargs)

    assert split.images_file == tmp_path / "train-images-idx3-ubyte.gz"
    np.testing.assert_array_equal(split.labels, whole.train_labels)
    np.testing.assert_array_equal(split.images([4, 1]), whole.train_images[[4, 1]])


@pytest.mark.filterwarnings("ignore")
def test_train_split_of_the_bundled_digits_matches_load_dataset(tmp_path: Path) -> None:
    whole = load_dataset("mnist", cache_dir=tmp_path, allow_download=False)
    split = load_train_split("mnist", cache_dir=tmp_path, allow_download=False)

    assert split.source == whole.source == BUNDLED_SOURCE
    np.testing.assert_array_equal(split.labels, whole.train_labels)
    rows = make_partitions(split.labels, 50, scheme="shards", seed=0)[7]
    np.testing.assert_array_equal(split.images(rows), whole.train_images[rows])


@pytest.mark.skipif(
    not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists(),
    reason="Debian package dataset-fashion-mnist not installed",
)
def test_a_fashion_partition_reads_its_rows_only() -> None:
    """The 60,000 training images are 47 MB as uint8 (188 MB as float32): a client of 50
    reads its 1,200 rows with about that much memory and a buffer of 1 MiB."""
    tracemalloc.start()
    try:
        split = load_train_split("fashion")
        rows = make_partitions(split.labels, 50, scheme="shards", seed=0)[3]
        images = split.images(rows)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert len(split.labels) == 60_000 and images.shape == (1200, 28, 28)
    assert peak < 8 << 20  # labels 0.5 MB, rows 0.9 MB, buffers; the images are 47 MB


def test_train_split_reports_missing_files_as_load_dataset_does(tmp_path: Path, write_folder):
    write_folder(tmp_path, keys=("train_images", "train_labels", "test_images"))
    with pytest.raises(DataError, match=r"lacks t10k-labels-idx1-ubyte \(raw or \.gz\)"):
        load_train_split("mnist", data_dir=tmp_path)


def test_train_split_checks_labels_against_the_images_header(tmp_path: Path, write_folder):
    write_folder(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(29, dtype=np.uint8))
    with pytest.raises(DataError, match="29 labels for 30 images"):
        load_train_split("mnist", data_dir=tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((29, 28, 27), dtype=np.uint8))
    with pytest.raises(DataError, match=r"shape \[N, 28, 28\]"):
        load_train_split("mnist", data_dir=tmp_path)


def test_train_split_images_rejects_rows_outside_the_split(tmp_path: Path, write_folder):
    write_folder(tmp_path)
    split = load_train_split("mnist", data_dir=tmp_path)
    in_memory = TrainSplit("x", split.labels, "mem", images_array=split.images(np.arange(30)))
    for each in (split, in_memory):
        with pytest.raises(DataError, match=r"rows must lie in \[0, 30\)"):
            each.images([0, 30])
        with pytest.raises(DataError, match="1-d array of integers"):
            each.images([[1]])


def test_train_split_takes_a_file_or_an_array_not_both(tmp_path: Path) -> None:
    labels = np.zeros(2, dtype=np.int64)
    images = np.zeros((2, 28, 28), dtype=np.uint8)
    with pytest.raises(ConfigError):
        TrainSplit("x", labels, "s")
    with pytest.raises(ConfigError):
        TrainSplit("x", labels, "s", images_file=tmp_path / "f", images_array=images)
    with pytest.raises(DataError, match="2 labels for 1 images"):
        TrainSplit("x", labels, "s", images_array=images[:1])
