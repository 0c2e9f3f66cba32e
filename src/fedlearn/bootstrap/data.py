"""Where a process finds its images: the settings, and the loading of a whole data set
(the coordinator's test split) or of a training split whose images are read by row (a
client's partition)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedlearn.data import TrainSplit, load_dataset, load_train_split
from fedlearn.data.datasets import Dataset

__all__ = ["DataSettings", "load_data", "load_train_data"]


@dataclass(frozen=True, slots=True)
class DataSettings:
    """Where a process finds its images."""

    dataset: str = "mnist"
    data_dir: Path | None = None
    cache_dir: Path | None = None
    allow_download: bool = True


def load_data(settings: DataSettings) -> Dataset:
    return load_dataset(
        settings.dataset,
        data_dir=settings.data_dir,
        cache_dir=settings.cache_dir,
        allow_download=settings.allow_download,
    )


def load_train_data(settings: DataSettings) -> TrainSplit:
    return load_train_split(
        settings.dataset,
        data_dir=settings.data_dir,
        cache_dir=settings.cache_dir,
        allow_download=settings.allow_download,
    )
