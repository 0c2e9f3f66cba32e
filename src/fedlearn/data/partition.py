"""Split a data set's examples among clients, reproducibly.

Every partitioner takes the labels and the number of clients and returns one
sorted ``int64`` index array per client; the arrays are disjoint and together
cover every example.  Randomness comes only from the ``rng`` passed in, so the
same seed always gives the same partition.
"""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt

from fedlearn.errors import ConfigError, DataError

__all__ = [
    "PARTITION_SCHEMES",
    "make_partitions",
    "partition_dirichlet",
    "partition_iid",
    "partition_label_shards",
    "split_holdout",
]

logger = logging.getLogger(__name__)

PARTITION_SCHEMES = ("iid", "shards", "dirichlet")
DIRICHLET_MAX_TRIES = 100

Indices = npt.NDArray[np.int64]


def partition_iid(
    labels: npt.ArrayLike, num_clients: int, *, rng: np.random.Generator
) -> list[Indices]:
    """Shuffle all examples and deal them into ``num_clients`` near-equal parts."""
    n = _check(labels, num_clients)
    parts = np.array_split(rng.permutation(n), num_clients)
    return [_sorted(part) for part in parts]


def partition_label_shards(
    labels: npt.ArrayLike,
    num_clients: int,
    *,
    rng: np.random.Generator,
    shards_per_client: int = 2,
) -> list[Indices]:
    """The FedAvg paper's pathological non-IID split (McMahan et al., 2017).

    Sort the examples by label (stable), cut them into
    ``num_clients * shards_per_client`` equal shards and give each client
    ``shards_per_client`` shards chosen at random, so most clients see only a
    few labels.
    """
    n = _check(labels, num_clients)
    if shards_per_client < 1:
        raise ConfigError(f"shards_per_client must be at least 1, got {shards_per_client}")
    num_shards = num_clients * shards_per_client
    if num_shards > n:
        raise ConfigError(
            f"{num_clients} clients x {shards_per_client} shards = {num_shards} shards "
            f"for only {n} examples"
        )
    order = np.argsort(np.asarray(labels), kind="stable")
    shards = np.array_split(order, num_shards)
    owners = rng.permutation(num_shards).reshape(num_clients, shards_per_client)
    return [_sorted(np.concatenate([shards[s] for s in row])) for row in owners]


def partition_dirichlet(
    labels: npt.ArrayLike,
    num_clients: int,
    *,
    rng: np.random.Generator,
    alpha: float,
) -> list[Indices]:
    """Split each class among the clients in Dirichlet(``alpha``) proportions.

    Small ``alpha`` (say 0.1) gives each client a few dominant classes; large
    ``alpha`` approaches an IID split.  Draws again, up to
    :data:`DIRICHLET_MAX_TRIES` times, while some client gets no example, then
    raises ``DataError``.
    """
    n = _check(labels, num_clients)
    if not alpha > 0:
        raise ConfigError(f"alpha must be positive, got {alpha}")
    label_array = np.asarray(labels)
    classes = [np.flatnonzero(label_array == c) for c in np.unique(label_array)]
    for attempt in range(1, DIRICHLET_MAX_TRIES + 1):
        parts = _dirichlet_draw(classes, num_clients, rng=rng, alpha=alpha)
        if all(len(part) for part in parts):
            logger.debug("dirichlet partition of %d examples found on try %d", n, attempt)
            return [_sorted(part) for part in parts]
    raise DataError(
        f"Dirichlet(alpha={alpha}) left some of {num_clients} clients without examples "
        f"in {DIRICHLET_MAX_TRIES} tries over {n} examples; use fewer clients or a larger alpha"
    )


def make_partitions(
    labels: npt.ArrayLike,
    num_clients: int,
    *,
    scheme: str,
    seed: int,
    alpha: float = 0.5,
) -> list[Indices]:
    """Partition with ``scheme`` (one of :data:`PARTITION_SCHEMES`), seeded by ``seed``."""
    if scheme not in PARTITION_SCHEMES:
        raise ConfigError(
            f"unknown partition scheme {scheme!r}; expected one of {PARTITION_SCHEMES}"
        )
    _check(labels, num_clients)
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        parts = partition_iid(labels, num_clients, rng=rng)
    elif scheme == "shards":
        parts = partition_label_shards(labels, num_clients, rng=rng)
    else:
        parts = partition_dirichlet(labels, num_clients, rng=rng, alpha=alpha)
    logger.debug("%s partition (seed %d): client sizes %s", scheme, seed, [len(p) for p in parts])
    return parts


def split_holdout(
    indices: npt.ArrayLike, fraction: float, *, rng: np.random.Generator
) -> tuple[Indices, Indices]:
    """Split a client's ``indices`` into ``(train, holdout)``, both sorted.

    The holdout gets ``floor(len(indices) * fraction)`` random indices, so
    ``fraction`` 0 gives an empty holdout; ``fraction`` must be in ``[0, 1)``.
    """
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"holdout fraction must be in [0, 1), got {fraction}")
    index_array = np.asarray(indices, dtype=np.int64).reshape(-1)
    num_holdout = int(len(index_array) * fraction)
    shuffled = rng.permutation(index_array)
    return _sorted(shuffled[num_holdout:]), _sorted(shuffled[:num_holdout])


def _dirichlet_draw(
    classes: list[npt.NDArray[np.intp]],
    num_clients: int,
    *,
    rng: np.random.Generator,
    alpha: float,
) -> list[npt.NDArray[np.intp]]:
    buckets: list[list[npt.NDArray[np.intp]]] = [[] for _ in range(num_clients)]
    for members in classes:
        shuffled = rng.permutation(members)
        proportions = rng.dirichlet(np.full(num_clients, alpha))
        counts = rng.multinomial(len(shuffled), proportions)
        cuts = np.cumsum(counts)[:-1]
        for bucket, piece in zip(buckets, np.split(shuffled, cuts), strict=True):
            bucket.append(piece)
    return [np.concatenate(bucket) for bucket in buckets]


def _check(labels: npt.ArrayLike, num_clients: int) -> int:
    """Validate the common arguments; return the number of examples."""
    shape = np.shape(labels)
    if len(shape) != 1:
        raise DataError(f"labels must be 1-d, got shape {shape}")
    n = shape[0]
    if num_clients < 1:
        raise ConfigError(f"num_clients must be at least 1, got {num_clients}")
    if num_clients > n:
        raise ConfigError(f"num_clients ({num_clients}) exceeds the number of examples ({n})")
    return int(n)


def _sorted(part: npt.NDArray[np.integer]) -> Indices:
    return np.sort(part.astype(np.int64))
