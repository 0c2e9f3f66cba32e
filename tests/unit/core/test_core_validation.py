import numpy as np
import pytest

from fedlearn.core.serialization import decode_weights, encode_weights, spec_of
from fedlearn.core.validation import validate_metrics, validate_update
from fedlearn.errors import UpdateRejectedError

MODEL = {"conv.weight": np.zeros((2, 3), np.float32), "conv.bias": np.zeros(2, np.float32)}
SPECS = spec_of(MODEL)


def _check(weights):
    return validate_update(decode_weights(encode_weights(weights)), SPECS)


def test_valid_update_yields_its_flat_vector_and_norm():
    checked = _check(
        {"conv.weight": np.full((2, 3), 1.0, np.float32), "conv.bias": np.zeros(2, np.float32)}
    )
    assert checked.vector.shape == (8,)
    assert checked.norm == pytest.approx(np.sqrt(6.0))


def test_huge_but_finite_update_is_accepted_with_its_exact_norm():
    # float32 squares of 1e30 overflow; the norm must still come out right
    weight = np.full((2, 3), 1e30, np.float32)
    checked = _check({"conv.weight": weight, "conv.bias": np.zeros(2, np.float32)})
    assert checked.norm == pytest.approx(float(np.float32(1e30)) * np.sqrt(6.0), rel=1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_one_non_finite_value_among_many_is_found_and_counted(bad):
    weight = np.full((2, 3), 0.5, np.float32)
    weight[1, 2] = bad
    with pytest.raises(UpdateRejectedError, match="holds 1 NaN or infinite") as info:
        _check({"conv.weight": weight, "conv.bias": np.zeros(2, np.float32)})
    assert info.value.reason == "non_finite"


@pytest.mark.parametrize(
    ("weights", "reason"),
    [
        (
            {"conv.weight": np.zeros((3, 2), np.float32), "conv.bias": np.zeros(2, np.float32)},
            "wrong_shape",
        ),
        (
            {"conv.weight": np.zeros((2, 3), np.float64), "conv.bias": np.zeros(2, np.float32)},
            "wrong_dtype",
        ),
        ({"conv.weight": np.zeros((2, 3), np.float32)}, "wrong_tensors"),
        (
            {"conv.bias": np.zeros(2, np.float32), "conv.weight": np.zeros((2, 3), np.float32)},
            "wrong_tensors",
        ),
        (
            {
                "conv.weight": np.full((2, 3), np.nan, np.float32),
                "conv.bias": np.zeros(2, np.float32),
            },
            "non_finite",
        ),
        (
            {
                "conv.weight": np.zeros((2, 3), np.float32),
                "conv.bias": np.array([np.inf, 0], np.float32),
            },
            "non_finite",
        ),
    ],
    ids=["shape", "dtype", "missing", "order", "nan", "inf"],
)
def test_submit_rejects_update_that_does_not_fit_the_model(weights, reason):
    with pytest.raises(UpdateRejectedError) as info:
        _check(weights)
    assert info.value.reason == reason


@pytest.mark.parametrize(("samples", "loss"), [(0, 0.1), (-3, 0.1), (5, float("nan"))])
def test_metrics_must_be_usable(samples, loss):
    with pytest.raises(UpdateRejectedError):
        validate_metrics(num_samples=samples, training_loss=loss)


@pytest.mark.parametrize("value", ["", "x" * 65, "../etc", ".hidden", "a/b", "a b", "é"])
def test_identifiers_that_could_break_keys_or_paths_are_refused(value):
    from fedlearn.core.validation import validate_identifier
    from fedlearn.errors import ConfigError

    with pytest.raises(ConfigError):
        validate_identifier("client id", value)


def test_capabilities_with_nan_privacy_are_refused():
    from fedlearn.core.types import ClientCapabilities, PrivacyConfig
    from fedlearn.core.validation import validate_capabilities
    from fedlearn.errors import ConfigError

    with pytest.raises(ConfigError):
        validate_capabilities(ClientCapabilities(privacy=PrivacyConfig(epsilon=float("nan"))))
    validate_capabilities(ClientCapabilities(privacy=PrivacyConfig(epsilon=3.0, delta=1e-5)))
