"""PyTorch models for MNIST: building by name, preprocessing, weights, files, evaluation."""

from fedlearn.models.checkpoint import (
    ModelFile,
    load_model_file,
    read_model_file,
    save_model_file,
)
from fedlearn.models.evaluate import TorchEvaluator, evaluate_model
from fedlearn.models.preprocess import (
    MNIST_MEAN,
    MNIST_STD,
    NUM_CLASSES,
    dataset_to_tensors,
    images_to_tensor,
    labels_to_tensor,
)
from fedlearn.models.registry import (
    MODEL_NAMES,
    DpCNN,
    MnistCNN,
    MnistMLP,
    build_model,
    count_parameters,
    model_specs,
)
from fedlearn.models.weights import (
    check_compatible,
    compute_delta,
    load_weights,
    model_to_weights,
)

__all__ = [
    "MNIST_MEAN",
    "MNIST_STD",
    "MODEL_NAMES",
    "NUM_CLASSES",
    "DpCNN",
    "MnistCNN",
    "MnistMLP",
    "ModelFile",
    "TorchEvaluator",
    "build_model",
    "check_compatible",
    "compute_delta",
    "count_parameters",
    "dataset_to_tensors",
    "evaluate_model",
    "images_to_tensor",
    "labels_to_tensor",
    "load_model_file",
    "load_weights",
    "model_specs",
    "model_to_weights",
    "read_model_file",
    "save_model_file",
]
