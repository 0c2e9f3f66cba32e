from __future__ import annotations

import fedlearn.models


def test_models_public_api_is_pinned() -> None:
    assert sorted(fedlearn.models.__all__) == [
        "DpCNN",
        "MNIST_MEAN",
        "MNIST_STD",
        "MODEL_NAMES",
        "MnistCNN",
        "MnistMLP",
        "ModelFile",
        "NUM_CLASSES",
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
    for name in fedlearn.models.__all__:
        assert hasattr(fedlearn.models, name), name
