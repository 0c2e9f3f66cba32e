"""A client process: its share of the data, a PyTorch trainer and a gRPC connection.

A client reads only its partition's images (see :func:`load_client_data`), and imports
nothing of the coordinator's side (SQL, Redis, the gRPC server) and nothing of
Opacus unless DP-SGD is asked for: each of these costs a client process memory, and a
machine runs many clients.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from fedlearn.bootstrap.data import DataSettings, load_train_data
from fedlearn.client.privacy import DpOptions, PrivacyLedger
from fedlearn.client.runtime import ClientOptions, ClientRuntime
from fedlearn.client.slot_server import ServedSlots
from fedlearn.client.slots import TrainingSlots
from fedlearn.client.trainer import LocalTrainer
from fedlearn.core.codecs import available_codecs
from fedlearn.core.retry import RetryPolicy
from fedlearn.core.types import ClientCapabilities
from fedlearn.data import make_partitions, split_holdout
from fedlearn.errors import ConfigError
from fedlearn.models.registry import MODEL_NAMES
from fedlearn.transport.client import GrpcCoordinatorClient

__all__ = ["ClientData", "ClientSettings", "build_client", "load_client_data"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ClientSettings:
    coordinator: str = "127.0.0.1:50051"
    client_id: str | None = None
    data: DataSettings = field(default_factory=DataSettings)
    partition: int | None = None
    num_partitions: int = 1
    partitioner: str = "iid"
    dirichlet_alpha: float = 0.5
    seed: int = 0
    holdout_fraction: float = 0.1
    threads: int | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    poll_wait_s: float = 5.0
    dp: DpOptions | None = None
    """Example-level DP-SGD (with its budget); ``None``: plain SGD."""
    slot_dir: Path | None = None
    """Folder of training slots shared with the other clients of this machine; ``None``:
    train whenever asked."""
    slot_count: int = 1
    """How many of the clients sharing ``slot_dir`` may train at once."""
    slot_server: Path | None = None
    """Socket of a :class:`~fedlearn.client.slot_server.SlotServer` to take a training
    slot from (``fedlearn run`` serves one); ``None``: ``slot_dir``, if set."""
    release_heap: bool = False
    """Hand free heap pages back after each round (see ``ClientOptions.release_heap``)."""


@dataclass(frozen=True, slots=True)
class ClientData:
    """The images a client trains on and holds out, and where they came from."""

    train_images: npt.NDArray[np.uint8]
    train_labels: npt.NDArray[np.int64]
    holdout_images: npt.NDArray[np.uint8]
    holdout_labels: npt.NDArray[np.int64]
    source: str


def load_client_data(settings: ClientSettings) -> ClientData:
    """The client's partition of the training split, cut into training and holdout.

    The partition comes from every training label; of the images, only the partition's
    rows are read, in one pass over the file, so a client's memory holds its share and
    never the whole data set.
    """
    split = load_train_data(settings.data)
    indices = np.arange(len(split.labels))
    if settings.partition is not None:
        if not 0 <= settings.partition < settings.num_partitions:
            raise ConfigError(
                f"partition {settings.partition} is outside 0..{settings.num_partitions - 1}"
            )
        parts = make_partitions(
            split.labels,
            settings.num_partitions,
            scheme=settings.partitioner,
            seed=settings.seed,
            alpha=settings.dirichlet_alpha,
        )
        indices = parts[settings.partition]
    rng = np.random.default_rng([settings.seed, settings.partition or 0, 7])
    train_idx, holdout_idx = split_holdout(indices, settings.holdout_fraction, rng=rng)
    images = split.images(np.concatenate([train_idx, holdout_idx]))
    cut = len(train_idx)
    return ClientData(
        images[:cut], split.labels[train_idx], images[cut:], split.labels[holdout_idx], split.source
    )


def build_client(settings: ClientSettings) -> ClientRuntime:
    """A client process's runtime: its data, a trainer and a gRPC connection."""
    if settings.threads:
        torch.set_num_threads(settings.threads)
    data = load_client_data(settings)
    logger.info(
        "client data: %d training and %d held-out images from %s",
        len(data.train_labels),
        len(data.holdout_labels),
        data.source,
    )

    ledger = PrivacyLedger(settings.dp) if settings.dp is not None else None

    def make_trainer(model_name: str) -> LocalTrainer:
        return LocalTrainer(
            model_name,
            data.train_images,
            data.train_labels,
            holdout_images=data.holdout_images,
            holdout_labels=data.holdout_labels,
            seed=settings.seed * 1000 + (settings.partition or 0),
            privacy=ledger,
        )

    caps = ClientCapabilities(
        available_samples=len(data.train_labels),
        supported_models=tuple(MODEL_NAMES),
        codecs=available_codecs(),
    )
    if settings.dp is not None:
        caps = replace(caps, privacy=settings.dp.config)
    options = ClientOptions(
        client_id=settings.client_id,
        capabilities=caps,
        poll_wait_s=settings.poll_wait_s,
        release_heap=settings.release_heap,
    )
    if settings.slot_server is not None and settings.slot_dir is not None:
        raise ConfigError("give a slot server or a slot folder, not both")
    if settings.slot_server is not None:
        options = replace(options, compute_slot=ServedSlots(settings.slot_server).hold)
    elif settings.slot_dir is not None:
        # partition k queues on slot k % count: the machine's clients spread evenly
        slots = TrainingSlots(settings.slot_dir, settings.slot_count, queue=settings.partition)
        options = replace(options, compute_slot=slots.hold)
    api = GrpcCoordinatorClient(settings.coordinator, retry=settings.retry, seed=settings.seed)
    return ClientRuntime(api, make_trainer, options)
