from __future__ import annotations

import pytest
import torch

from fedlearn.errors import ConfigError
from fedlearn.models.registry import MODEL_NAMES, build_model, count_parameters, model_specs


def test_model_names_are_cnn_and_mlp() -> None:
    assert MODEL_NAMES == ("cnn", "mlp")


def test_cnn_has_exactly_1663370_parameters() -> None:
    assert count_parameters(build_model("cnn")) == 1_663_370


def test_mlp_has_exactly_199210_parameters() -> None:
    assert count_parameters(build_model("mlp")) == 199_210


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_maps_image_batch_to_ten_logits(name: str) -> None:
    model = build_model(name, seed=0)
    logits = model(torch.zeros(3, 1, 28, 28))
    assert logits.shape == (3, 10)
    assert logits.dtype == torch.float32


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_build_model_with_same_seed_gives_identical_parameters(name: str) -> None:
    first = build_model(name, seed=42).state_dict()
    second = build_model(name, seed=42).state_dict()
    assert list(first) == list(second)
    for key in first:
        assert torch.equal(first[key], second[key]), key


def test_build_model_with_different_seeds_differs() -> None:
    first = build_model("mlp", seed=1).state_dict()
    second = build_model("mlp", seed=2).state_dict()
    assert not torch.equal(first["fc1.weight"], second["fc1.weight"])


def test_build_model_with_seed_leaves_global_rng_untouched() -> None:
    torch.manual_seed(123)
    expected = torch.rand(5)
    torch.manual_seed(123)
    build_model("cnn", seed=7)
    assert torch.equal(torch.rand(5), expected)


def test_build_model_rejects_unknown_name() -> None:
    with pytest.raises(ConfigError, match="resnet"):
        build_model("resnet")


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_specs_match_built_model_state_dict(name: str) -> None:
    state = build_model(name).state_dict()
    specs = model_specs(name)
    assert [spec.name for spec in specs] == list(state)
    for spec in specs:
        assert spec.shape == tuple(state[spec.name].shape)
        assert spec.dtype == "float32"


def test_model_specs_rejects_unknown_name() -> None:
    with pytest.raises(ConfigError):
        model_specs("nope")
