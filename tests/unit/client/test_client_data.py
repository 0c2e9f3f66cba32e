"""A client's data: the same partition, examples and order as from the whole data set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedlearn.bootstrap import ClientSettings, DataSettings
from fedlearn.bootstrap.client import load_client_data
from fedlearn.data import load_dataset, make_partitions, split_holdout
from fedlearn.data.idx import write_idx
from fedlearn.errors import ConfigError


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Fashion-MNIST-like folder: 600 training images (gzip), 10 labels, unbalanced."""
    path = tmp_path_factory.mktemp("idx")
    rng = np.random.default_rng(3)
    labels = rng.choice(10, size=600, p=np.linspace(1, 3, 10) / np.linspace(1, 3, 10).sum())
    for stem, array in (
        ("train-images-idx3-ubyte", rng.integers(0, 256, size=(600, 28, 28), dtype=np.uint8)),
        ("train-labels-idx1-ubyte", labels.astype(np.uint8)),
        ("t10k-images-idx3-ubyte", rng.integers(0, 256, size=(20, 28, 28), dtype=np.uint8)),
        ("t10k-labels-idx1-ubyte", (np.arange(20) % 10).astype(np.uint8)),
    ):
        write_idx(path / f"{stem}.gz", array, compress=True)
    return path


def _whole_set_shard(settings: ClientSettings):
    """How clients cut their data before they read only their rows: the whole set, then
    the partition, the holdout split and fancy indexing."""
    data = load_dataset(settings.data.dataset, data_dir=settings.data.data_dir)
    indices = np.arange(len(data.train_labels))
    if settings.partition is not None:
        indices = make_partitions(
            data.train_labels,
            settings.num_partitions,
            scheme=settings.partitioner,
            seed=settings.seed,
            alpha=settings.dirichlet_alpha,
        )[settings.partition]
    rng = np.random.default_rng([settings.seed, settings.partition or 0, 7])
    train_idx, holdout_idx = split_holdout(indices, settings.holdout_fraction, rng=rng)
    return (
        data.train_images[train_idx],
        data.train_labels[train_idx],
        data.train_images[holdout_idx],
        data.train_labels[holdout_idx],
    )


@pytest.mark.parametrize(
    ("partitioner", "partition", "holdout", "seed"),
    [
        ("iid", 0, 0.1, 0),
        ("iid", 9, 0.0, 4),
        ("shards", 3, 0.1, 0),
        ("shards", 7, 0.2, 1),
        ("dirichlet", 5, 0.1, 2),
        ("iid", None, 0.1, 0),
    ],
)
def test_a_client_gets_the_rows_the_whole_set_would_give_it(
    folder: Path, partitioner: str, partition: int | None, holdout: float, seed: int
) -> None:
    settings = ClientSettings(
        data=DataSettings("fashion", data_dir=folder),
        partition=partition,
        num_partitions=10,
        partitioner=partitioner,
        seed=seed,
        holdout_fraction=holdout,
    )
    data = load_client_data(settings)
    expected = _whole_set_shard(settings)

    got = (data.train_images, data.train_labels, data.holdout_images, data.holdout_labels)
    for mine, theirs in zip(got, expected, strict=True):
        assert mine.dtype == theirs.dtype and mine.shape == theirs.shape
        np.testing.assert_array_equal(mine, theirs)
    assert data.source == str(folder)
    assert len(data.train_labels) > 0


def test_the_comparison_tells_another_partition_apart(folder: Path) -> None:
    """The control: a neighbour's shard is not equal, so equality above means something."""
    base = {"data": DataSettings("fashion", data_dir=folder), "num_partitions": 10}
    mine = load_client_data(ClientSettings(partition=3, partitioner="shards", **base))
    other = _whole_set_shard(ClientSettings(partition=4, partitioner="shards", **base))

    assert not np.array_equal(mine.train_labels, other[1])


def test_a_partition_outside_the_range_is_a_config_error(folder: Path) -> None:
    settings = ClientSettings(
        data=DataSettings("fashion", data_dir=folder), partition=10, num_partitions=10
    )
    with pytest.raises(ConfigError, match=r"outside 0\.\.9"):
        load_client_data(settings)
