import numpy as np
import pytest

from fedlearn.client.integrity import check_images_and_labels
from fedlearn.client.trainer import LocalTrainer
from fedlearn.errors import DataError


def _data(n=6):
    return np.zeros((n, 28, 28), np.uint8), np.arange(n, dtype=np.int64) % 10


def test_good_data_passes():
    check_images_and_labels(*_data(), num_classes=10)


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (
            np.zeros((4, 32, 32), np.uint8),
            np.zeros(4, np.int64),
            r"shape \[N, 28, 28\].*\[4, 32, 32\]",
        ),
        (np.zeros((4, 784), np.uint8), np.zeros(4, np.int64), "to fit the model input"),
        (np.zeros((4, 28, 28), np.uint8), np.zeros(3, np.int64), "4 images but 3 labels"),
        (np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.int64), "partition is empty"),
        (
            np.zeros((4, 28, 28), np.uint8),
            np.array([0, 10, 3, -1]),
            r"2 labels outside \[0, 10\) \(first: 10 at index 1\)",
        ),
        (
            np.zeros((4, 28, 28), np.uint8),
            np.zeros((4, 1), np.int64),
            r"labels must have shape \[N\]",
        ),
        (np.zeros((4, 28, 28), np.uint8), np.zeros(4, np.float32), "labels must be integers"),
        (np.zeros((4, 28, 28), np.uint8), [0, 1, 2, 3], "numpy arrays"),
    ],
)
def test_inconsistent_data_is_refused_with_a_clear_message(images, labels, message):
    with pytest.raises(DataError, match=message):
        check_images_and_labels(images, labels, num_classes=10)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_pixels_are_refused(bad):
    images = np.zeros((3, 28, 28), np.float32)
    images[2, 5, 5] = bad

    with pytest.raises(DataError, match=r"1 pixel values are NaN or infinite \(first in image 2\)"):
        check_images_and_labels(images, np.zeros(3, np.int64), num_classes=10)


def test_an_empty_holdout_is_allowed_where_asked():
    images, labels = _data(0)
    check_images_and_labels(images, labels, num_classes=10, allow_empty=True)


def test_trainer_checks_its_data_before_building_anything():
    images, labels = _data()
    labels[0] = 12

    with pytest.raises(DataError, match="training data: 1 labels outside"):
        LocalTrainer("mlp", images, labels)


def test_trainer_checks_its_holdout_too():
    images, labels = _data()

    with pytest.raises(DataError, match="holdout data: 6 images but 2 labels"):
        LocalTrainer("mlp", images, labels, holdout_images=images, holdout_labels=labels[:2])
