"""Find and load the MNIST-style IDX file pairs in a folder.

A folder holds a split as two files named after the official MNIST archives,
each either raw or with a ``.gz`` suffix::

    train-images-idx3-ubyte[.gz]   train-labels-idx1-ubyte[.gz]
    t10k-images-idx3-ubyte[.gz]    t10k-labels-idx1-ubyte[.gz]

Images must be ``uint8`` ``[N, 28, 28]``; labels are returned as ``int64`` ``[N]``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from fedlearn.data.idx import read_idx, read_idx_header
from fedlearn.errors import ConfigError, DataError

__all__ = [
    "IMAGE_SHAPE",
    "SPLITS",
    "SPLIT_FILES",
    "Split",
    "find_idx_split",
    "idx_file_names",
    "load_idx_labels",
    "load_test_split",
    "load_idx_pair",
    "locate_idx_file",
    "locate_idx_split",
    "missing_idx_files",
]

logger = logging.getLogger(__name__)

SPLITS = ("train", "t10k")
SPLIT_FILES: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        "t10k": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }
)
"""Split -> (images file stem, labels file stem); each stem may carry ``.gz``."""

IMAGE_SHAPE = (28, 28)

Split = tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]
"""``(images uint8 [N, 28, 28], labels int64 [N])``."""


def idx_file_names() -> tuple[str, ...]:
    """The four IDX file stems, train first (without ``.gz``)."""
    return SPLIT_FILES["train"] + SPLIT_FILES["t10k"]


def locate_idx_file(folder: Path, stem: str) -> Path | None:
    """The path of ``stem`` or ``stem.gz`` in ``folder`` (raw preferred), or None."""
    for name in (stem, f"{stem}.gz"):
        candidate = Path(folder) / name
        if candidate.is_file():
            return candidate
    return None


def missing_idx_files(folder: Path, split: str) -> list[str]:
    """Stems of ``split``'s files found in ``folder`` neither raw nor gzipped."""
    return [stem for stem in _stems(split) if locate_idx_file(folder, stem) is None]


def locate_idx_split(folder: Path, split: str) -> tuple[Path, Path] | None:
    """The images and labels files of ``split`` in ``folder`` (not read); None if one is
    missing."""
    images_stem, labels_stem = _stems(split)
    images_path = locate_idx_file(folder, images_stem)
    labels_path = locate_idx_file(folder, labels_stem)
    if images_path is None or labels_path is None:
        return None
    return images_path, labels_path


def find_idx_split(folder: Path, split: str) -> Split | None:
    """Load ``split`` ("train" or "t10k") from ``folder``; None if a file is missing.

    Files that exist but are corrupt, or images and labels that do not fit
    together, raise :class:`~fedlearn.errors.DataError`.
    """
    paths = locate_idx_split(folder, split)
    if paths is None:
        return None
    checked = load_idx_pair(*paths)
    logger.debug("loaded %s split from %s: %d examples", split, folder, len(checked[1]))
    return checked


def load_idx_pair(images_path: Path, labels_path: Path) -> Split:
    """Read an images file and a labels file and check that they fit together."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    _check_fit(images.dtype, images.shape, labels, images_path=images_path, labels_path=labels_path)
    return images.astype(np.uint8, copy=False), labels.astype(np.int64)


def load_idx_labels(images_path: Path, labels_path: Path) -> npt.NDArray[np.int64]:
    """The ``int64`` labels of an images and labels pair, checked against the images
    file's header as :func:`load_idx_pair` checks them against its images; the pixels
    are not read (see :func:`~fedlearn.data.idx.read_idx_rows` for that)."""
    dtype, dims = read_idx_header(images_path)
    labels = read_idx(labels_path)
    _check_fit(dtype, dims, labels, images_path=images_path, labels_path=labels_path)
    return labels.astype(np.int64)


def load_test_split(folder: Path) -> Split:
    """Load the t10k (test) split from ``folder``, raising DataError if files are missing."""
    found = find_idx_split(folder, "t10k")
    if found is None:
        missing = missing_idx_files(folder, "t10k")
        raise DataError(
            f"{folder}: test split not found; missing {', '.join(missing)} (raw or .gz)"
        )
    return found


def _stems(split: str) -> tuple[str, str]:
    if split not in SPLIT_FILES:
        raise ConfigError(f"unknown split {split!r}; expected one of {SPLITS}")
    return SPLIT_FILES[split]


def _check_fit(
    images_dtype: np.dtype[np.generic],
    images_shape: tuple[int, ...],
    labels: npt.NDArray[np.generic],
    *,
    images_path: Path,
    labels_path: Path,
) -> None:
    if images_dtype != np.uint8 or len(images_shape) != 3 or images_shape[1:] != IMAGE_SHAPE:
        raise DataError(
            f"{images_path}: expected uint8 images of shape [N, 28, 28], "
            f"got {images_dtype} {list(images_shape)}"
        )
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{labels_path}: expected 1-d integer labels, got {labels.dtype} {list(labels.shape)}"
        )
    if len(labels) != images_shape[0]:
        raise DataError(
            f"{labels_path}: {len(labels)} labels for {images_shape[0]} images in {images_path}"
        )
    if len(labels) == 0:
        raise DataError(f"{images_path}: the split is empty")
