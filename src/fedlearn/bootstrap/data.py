"""Where a process finds its images: the settings and the loading of a whole data set."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedlearn.data import load_dataset
from fedlearn.data.datasets import Dataset

__all__ = ["DataSettings", "load_data"]


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
