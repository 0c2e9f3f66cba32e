from __future__ import annotations

import numpy as np
import pytest
import torch

from fedlearn.errors import DataError
from fedlearn.models.preprocess import (
    MNIST_MEAN,
    MNIST_STD,
    dataset_to_tensors,
    images_to_tensor,
    labels_to_tensor,
)


def test_images_to_tensor_scales_to_unit_range_then_normalises() -> None:
    images = np.zeros((2, 28, 28), dtype=np.uint8)
    images[1] = 255
    images[0, 3, 4] = 51
    tensor = images_to_tensor(images)
    assert tensor.shape == (2, 1, 28, 28)
    assert tensor.dtype == torch.float32
    assert tensor[0, 0, 0, 0].item() == pytest.approx((0.0 - MNIST_MEAN) / MNIST_STD)
    assert tensor[0, 0, 3, 4].item() == pytest.approx((0.2 - MNIST_MEAN) / MNIST_STD)
    assert tensor[1, 0, 5, 5].item() == pytest.approx((1.0 - MNIST_MEAN) / MNIST_STD)


def test_images_to_tensor_does_not_share_memory_with_input() -> None:
    images = np.zeros((1, 28, 28), dtype=np.uint8)
    tensor = images_to_tensor(images)
    images[0, 0, 0] = 255
    assert tensor[0, 0, 0, 0].item() == pytest.approx(-MNIST_MEAN / MNIST_STD)


@pytest.mark.parametrize(
    "images",
    [
        np.zeros((2, 28, 28), dtype=np.float32),
        np.zeros((2, 1, 28, 28), dtype=np.uint8),
        np.zeros((2, 27, 28), dtype=np.uint8),
        [[0] * 28] * 28,
    ],
)
def test_images_to_tensor_rejects_wrong_dtype_or_shape(images: object) -> None:
    with pytest.raises(DataError):
        images_to_tensor(images)  # type: ignore[arg-type]


def test_labels_to_tensor_gives_int64() -> None:
    tensor = labels_to_tensor(np.array([0, 9, 3], dtype=np.uint8))
    assert tensor.dtype == torch.int64
    assert tensor.tolist() == [0, 9, 3]


@pytest.mark.parametrize(
    "labels",
    [
        np.array([0, 10]),
        np.array([-1, 2]),
        np.array([0.0, 1.0]),
        np.zeros((2, 1), dtype=np.int64),
    ],
)
def test_labels_to_tensor_rejects_bad_labels(labels: np.ndarray) -> None:
    with pytest.raises(DataError):
        labels_to_tensor(labels)


def test_dataset_to_tensors_rejects_length_mismatch() -> None:
    with pytest.raises(DataError, match="3 images but 2 labels"):
        dataset_to_tensors(np.zeros((3, 28, 28), dtype=np.uint8), np.array([1, 2]))
