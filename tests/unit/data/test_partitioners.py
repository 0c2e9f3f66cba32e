"""Partitioners: disjoint, complete, reproducible, and as skewed as each scheme promises."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedlearn.data.partition import (
    PARTITION_SCHEMES,
    make_partitions,
    partition_dirichlet,
    partition_label_shards,
    split_holdout,
)
from fedlearn.errors import ConfigError, DataError


def balanced_labels(per_class: int = 60, classes: int = 10) -> np.ndarray:
    """Labels 0..classes-1, ``per_class`` each, in a shuffled order."""
    labels = np.repeat(np.arange(classes), per_class)
    return np.random.default_rng(123).permutation(labels)


def assert_is_partition(parts: list[np.ndarray], n: int, num_clients: int) -> None:
    assert len(parts) == num_clients
    for part in parts:
        assert part.dtype == np.int64
        assert np.all(np.diff(part) > 0), "indices must be sorted and unique"
    joined = np.concatenate(parts)
    assert len(joined) == n, "clients must be disjoint"
    np.testing.assert_array_equal(np.sort(joined), np.arange(n))


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(min_value=20, max_value=400),
    num_clients=st.integers(min_value=1, max_value=10),
    scheme=st.sampled_from(PARTITION_SCHEMES),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_every_scheme_splits_all_indices_disjointly(
    n: int, num_clients: int, scheme: str, seed: int
) -> None:
    labels = np.random.default_rng(seed).integers(0, 10, size=n)
    parts = make_partitions(labels, num_clients, scheme=scheme, seed=seed, alpha=5.0)
    assert_is_partition(parts, n, num_clients)
    assert all(len(part) > 0 for part in parts)


@pytest.mark.parametrize("scheme", PARTITION_SCHEMES)
def test_same_seed_gives_same_partition(scheme: str) -> None:
    labels = balanced_labels()
    first = make_partitions(labels, 7, scheme=scheme, seed=42)
    second = make_partitions(labels, 7, scheme=scheme, seed=42)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


@pytest.mark.parametrize("scheme", PARTITION_SCHEMES)
def test_other_seed_gives_other_partition(scheme: str) -> None:
    labels = balanced_labels()
    first = make_partitions(labels, 7, scheme=scheme, seed=42)
    second = make_partitions(labels, 7, scheme=scheme, seed=43)
    assert not all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def test_iid_partition_gives_near_equal_sizes() -> None:
    parts = make_partitions(balanced_labels(), 7, scheme="iid", seed=0)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_label_shards_give_each_client_at_most_two_labels() -> None:
    labels = balanced_labels(per_class=60)
    parts = make_partitions(labels, 10, scheme="shards", seed=3)
    assert_is_partition(parts, len(labels), 10)
    assert all(len(np.unique(labels[p])) <= 2 for p in parts)
    assert all(len(p) == 60 for p in parts)


def test_label_shards_with_ragged_shards_stay_near_two_labels() -> None:
    labels = balanced_labels(per_class=57)
    parts = partition_label_shards(labels, 9, rng=np.random.default_rng(0), shards_per_client=2)
    assert_is_partition(parts, len(labels), 9)
    assert max(len(np.unique(labels[p])) for p in parts) <= 4


def test_label_shards_reject_more_shards_than_examples() -> None:
    with pytest.raises(ConfigError, match="shards"):
        partition_label_shards(np.zeros(5), 3, rng=np.random.default_rng(0))


def _mean_top_class_share(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    return float(np.mean([np.bincount(labels[p]).max() / len(p) for p in parts]))


def test_dirichlet_with_small_alpha_is_skewed_and_leaves_no_client_empty() -> None:
    labels = balanced_labels(per_class=100)
    skewed = make_partitions(labels, 20, scheme="dirichlet", seed=1, alpha=0.1)
    iid = make_partitions(labels, 20, scheme="iid", seed=1)
    assert_is_partition(skewed, len(labels), 20)
    assert all(len(p) > 0 for p in skewed)
    assert _mean_top_class_share(labels, skewed) > 0.5
    assert _mean_top_class_share(labels, iid) < 0.35


def test_dirichlet_raises_when_it_cannot_fill_every_client() -> None:
    labels = np.zeros(10, dtype=np.int64)
    with pytest.raises(DataError, match="without examples"):
        partition_dirichlet(labels, 10, rng=np.random.default_rng(0), alpha=0.001)


def test_dirichlet_rejects_non_positive_alpha() -> None:
    with pytest.raises(ConfigError, match="alpha"):
        make_partitions(balanced_labels(), 3, scheme="dirichlet", seed=0, alpha=0.0)


@pytest.mark.parametrize("num_clients", [0, -1, 601])
def test_make_partitions_rejects_impossible_client_counts(num_clients: int) -> None:
    with pytest.raises(ConfigError, match="num_clients"):
        make_partitions(balanced_labels(), num_clients, scheme="iid", seed=0)


def test_make_partitions_rejects_unknown_scheme() -> None:
    with pytest.raises(ConfigError, match="unknown partition scheme"):
        make_partitions(balanced_labels(), 3, scheme="random", seed=0)


def test_make_partitions_allows_one_example_per_client() -> None:
    parts = make_partitions(np.arange(5) % 2, 5, scheme="iid", seed=0)
    assert [len(p) for p in parts] == [1] * 5


def test_split_holdout_with_zero_fraction_holds_nothing_out() -> None:
    indices = np.array([3, 9, 27], dtype=np.int64)
    train, holdout = split_holdout(indices, 0.0, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(train, indices)
    assert holdout.dtype == np.int64
    assert len(holdout) == 0


def test_split_holdout_is_disjoint_complete_and_reproducible() -> None:
    indices = np.arange(100, 150, dtype=np.int64)
    train, holdout = split_holdout(indices, 0.2, rng=np.random.default_rng(5))
    again = split_holdout(indices, 0.2, rng=np.random.default_rng(5))
    assert len(holdout) == 10
    assert not set(train) & set(holdout)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, holdout])), indices)
    np.testing.assert_array_equal(train, again[0])
    np.testing.assert_array_equal(holdout, again[1])
    assert np.all(np.diff(train) > 0)
    assert np.all(np.diff(holdout) > 0)


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_split_holdout_rejects_fraction_outside_zero_to_one(fraction: float) -> None:
    with pytest.raises(ConfigError, match="fraction"):
        split_holdout(np.arange(10), fraction, rng=np.random.default_rng(0))
