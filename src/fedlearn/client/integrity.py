"""Checks of a client's local data before any training, each failure a ``DataError``.

A bad partition should stop a client with a message that says what is wrong, not
with a shape error from deep inside PyTorch or a model quietly trained on NaNs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from fedlearn.errors import DataError

__all__ = ["IMAGE_SHAPE", "check_images_and_labels"]

IMAGE_SHAPE = (28, 28)
"""What the models take per sample (one channel, added in preprocessing)."""


def check_images_and_labels(
    images: npt.NDArray[Any],
    labels: npt.NDArray[Any],
    *,
    num_classes: int,
    what: str = "training data",
    allow_empty: bool = False,
) -> None:
    """Raise :class:`DataError` unless ``images`` and ``labels`` can be trained on.

    ``images`` must be ``[N, 28, 28]`` with finite values, ``labels`` ``[N]`` integers
    in ``[0, num_classes)``, and ``N > 0`` unless ``allow_empty``.
    """
    if not isinstance(images, np.ndarray) or not isinstance(labels, np.ndarray):
        raise DataError(f"{what}: images and labels must be numpy arrays")
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise DataError(
            f"{what}: images must have shape [N, {IMAGE_SHAPE[0]}, {IMAGE_SHAPE[1]}] to fit "
            f"the model input, got {list(images.shape)}"
        )
    if labels.ndim != 1:
        raise DataError(f"{what}: labels must have shape [N], got {list(labels.shape)}")
    if len(images) != len(labels):
        raise DataError(f"{what}: {len(images)} images but {len(labels)} labels")
    if len(labels) == 0 and not allow_empty:
        raise DataError(f"{what}: the partition is empty (no samples to train on)")
    _check_pixels(images, what)
    _check_labels(labels, num_classes, what)


def _check_pixels(images: npt.NDArray[Any], what: str) -> None:
    if np.issubdtype(images.dtype, np.floating):
        bad = ~np.isfinite(images)
        if bad.any():
            first = int(np.argwhere(bad)[0][0])
            raise DataError(
                f"{what}: {int(bad.sum())} pixel values are NaN or infinite "
                f"(first in image {first})"
            )
    elif not np.issubdtype(images.dtype, np.integer):
        raise DataError(f"{what}: pixel values must be numbers, got dtype {images.dtype}")


def _check_labels(labels: npt.NDArray[Any], num_classes: int, what: str) -> None:
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{what}: labels must be integers, got dtype {labels.dtype}")
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        first = int(np.argmax(bad))
        raise DataError(
            f"{what}: {int(bad.sum())} labels outside [0, {num_classes}) "
            f"(first: {labels[first]} at index {first})"
        )
