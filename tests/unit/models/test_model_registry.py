from __future__ import annotations

import pytest
import torch
from opacus import GradSampleModule
from opacus.validators import ModuleValidator

from fedlearn.errors import ConfigError
from fedlearn.models.registry import MODEL_NAMES, build_model, count_parameters, model_specs


def test_model_names_are_cnn_dpcnn_and_mlp() -> None:
    assert MODEL_NAMES == ("cnn", "dpcnn", "mlp")


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


def test_dpcnn_has_exactly_26010_parameters() -> None:
    assert count_parameters(build_model("dpcnn")) == 26_010


def test_dpcnn_has_no_batchnorm_and_opacus_computes_per_example_gradients() -> None:
    model = build_model("dpcnn", seed=0)
    assert (
        ModuleValidator.validate(model, strict=False) == []
    )  # no BatchNorm, nothing Opacus refuses
    wrapped = GradSampleModule(model, loss_reduction="sum")
    images = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 3])
    torch.nn.functional.cross_entropy(wrapped(images), labels, reduction="sum").backward()
    for name, p in model.named_parameters():
        assert p.grad_sample is not None, name
        assert p.grad_sample.shape == (4, *p.shape), name
        # the per-example gradients sum to the batch gradient
        torch.testing.assert_close(p.grad_sample.sum(0), p.grad, rtol=1e-4, atol=1e-5)
