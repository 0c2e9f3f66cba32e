from __future__ import annotations

import numpy as np
import pytest
import torch

from fedlearn.errors import ConfigError
from fedlearn.models.registry import MODEL_NAMES, build_model
from fedlearn.models.weights import compute_delta, load_weights, model_to_weights


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_to_weights_gives_float32_contiguous_copies_in_state_dict_order(
    name: str,
) -> None:
    model = build_model(name, seed=0)
    weights = model_to_weights(model)
    assert list(weights) == list(model.state_dict())
    for key, array in weights.items():
        assert array.dtype == np.float32
        assert array.flags.c_contiguous
        np.testing.assert_array_equal(array, model.state_dict()[key].numpy())
    weights["fc2.bias"][:] = 99.0
    assert not torch.any(model.state_dict()["fc2.bias"] == 99.0)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_weights_round_trip_into_another_model(name: str) -> None:
    source = build_model(name, seed=1)
    target = build_model(name, seed=2)
    load_weights(target, model_to_weights(source))
    for key, tensor in source.state_dict().items():
        assert torch.equal(tensor, target.state_dict()[key]), key
    batch = torch.randn(2, 1, 28, 28)
    assert torch.equal(source(batch), target(batch))


def test_load_weights_accepts_float64_arrays() -> None:
    model = build_model("mlp", seed=0)
    weights = {k: v.astype(np.float64) + 1.0 for k, v in model_to_weights(model).items()}
    load_weights(model, weights)
    np.testing.assert_allclose(model_to_weights(model)["fc3.bias"], weights["fc3.bias"])


def _untouched(model: torch.nn.Module, before: dict[str, np.ndarray]) -> bool:
    after = model_to_weights(model)
    return all(np.array_equal(after[k], before[k]) for k in before)


def test_load_weights_rejects_wrong_shape_and_leaves_model_untouched() -> None:
    model = build_model("mlp", seed=0)
    before = model_to_weights(model)
    weights = dict(before)
    weights["fc1.weight"] = np.zeros((200, 785), dtype=np.float32)
    with pytest.raises(ConfigError, match=r"fc1\.weight"):
        load_weights(model, weights)
    assert _untouched(model, before)


def test_load_weights_rejects_missing_name() -> None:
    model = build_model("mlp", seed=0)
    weights = model_to_weights(model)
    del weights["fc3.bias"]
    with pytest.raises(ConfigError, match="missing"):
        load_weights(model, weights)


def test_load_weights_rejects_unexpected_name() -> None:
    model = build_model("mlp", seed=0)
    weights = model_to_weights(model)
    weights["fc4.bias"] = np.zeros(10, dtype=np.float32)
    with pytest.raises(ConfigError, match=r"fc4\.bias"):
        load_weights(model, weights)


def test_load_weights_rejects_weights_of_the_other_model() -> None:
    with pytest.raises(ConfigError):
        load_weights(build_model("cnn", seed=0), model_to_weights(build_model("mlp", seed=0)))


def test_compute_delta_subtracts_base_from_new() -> None:
    base: dict[str, np.ndarray] = {
        "a": np.array([1.0, 2.0], dtype=np.float32),
        "b": np.ones((2, 2)),
    }
    new: dict[str, np.ndarray] = {
        "a": np.array([1.5, 0.0], dtype=np.float32),
        "b": np.full((2, 2), 3.0),
    }
    delta = compute_delta(new, base)
    assert list(delta) == ["a", "b"]
    assert delta["b"].dtype == np.float32
    np.testing.assert_array_equal(delta["a"], [0.5, -2.0])
    np.testing.assert_array_equal(delta["b"], np.full((2, 2), 2.0))


def test_compute_delta_rejects_mismatched_names_or_shapes() -> None:
    base = {"a": np.zeros(2, dtype=np.float32)}
    with pytest.raises(ConfigError):
        compute_delta({"b": np.zeros(2, dtype=np.float32)}, base)
    with pytest.raises(ConfigError):
        compute_delta({"a": np.zeros(3, dtype=np.float32)}, base)
