"""Turn raw MNIST arrays into the tensors the models take."""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt
import torch

from fedlearn.errors import DataError

__all__ = [
    "MNIST_MEAN",
    "MNIST_STD",
    "NUM_CLASSES",
    "dataset_to_tensors",
    "images_to_tensor",
    "labels_to_tensor",
]

logger = logging.getLogger(__name__)

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
NUM_CLASSES = 10
_SIDE = 28


def images_to_tensor(images: npt.NDArray[np.uint8]) -> torch.Tensor:
    """``uint8 [N, 28, 28]`` pixels to a normalised ``float32 [N, 1, 28, 28]`` tensor.

    Pixels are scaled to ``[0, 1]`` and then normalised with the MNIST mean (0.1307) and
    standard deviation (0.3081). The result does not share memory with ``images``.
    """
    if not isinstance(images, np.ndarray):
        raise DataError(f"images must be a numpy array, got {type(images).__name__}")
    if images.dtype != np.uint8:
        raise DataError(f"images must have dtype uint8, got {images.dtype}")
    if images.ndim != 3 or images.shape[1:] != (_SIDE, _SIDE):
        raise DataError(f"images must have shape [N, 28, 28], got {list(images.shape)}")
    tensor = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32)
    tensor.div_(255.0).sub_(MNIST_MEAN).div_(MNIST_STD)
    return tensor.unsqueeze(1)


def labels_to_tensor(
    labels: npt.NDArray[np.integer], *, num_classes: int = NUM_CLASSES
) -> torch.Tensor:
    """Integer class labels ``[N]`` to an ``int64 [N]`` tensor (a copy).

    Raises :class:`DataError` for a non-integer dtype, a wrong shape or a label outside
    ``[0, num_classes)``.
    """
    if not isinstance(labels, np.ndarray):
        raise DataError(f"labels must be a numpy array, got {type(labels).__name__}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"labels must have an integer dtype, got {labels.dtype}")
    if labels.ndim != 1:
        raise DataError(f"labels must have shape [N], got {list(labels.shape)}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"labels must lie in [0, {num_classes}), got range [{labels.min()}, {labels.max()}]"
        )
    return torch.from_numpy(labels.astype(np.int64, copy=True))


def dataset_to_tensors(
    images: npt.NDArray[np.uint8], labels: npt.NDArray[np.integer]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both conversions at once; :class:`DataError` unless there is one label per image."""
    image_tensor = images_to_tensor(images)
    label_tensor = labels_to_tensor(labels)
    if image_tensor.shape[0] != label_tensor.shape[0]:
        raise DataError(f"{image_tensor.shape[0]} images but {label_tensor.shape[0]} labels")
    return image_tensor, label_tensor
