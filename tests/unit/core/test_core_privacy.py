"""Update-level DP (clip + Gaussian noise) and the pure RDP accountant.

The accountant is checked against Opacus's ``RDPAccountant`` (scipy-based) on the same
history (the reference only: ``core`` itself imports neither opacus nor scipy); the noise
tests estimate a standard deviation from 200,000+ draws, whose
relative standard error is about 0.16%, against a 2% tolerance (over 12 standard
errors): they cannot flake, and they are seeded where the source allows it.
"""

import math
import warnings

import numpy as np
import pytest
from opacus.accountants import RDPAccountant

from fedlearn.core.privacy import (
    RdpAccountant,
    apply_differential_privacy,
    clip_update,
    gaussian_noise_std,
)
from fedlearn.core.rdp import DEFAULT_ORDERS, epsilon_spent, rdp_sampled_gaussian

STD_TOLERANCE = 0.02


def _opacus_epsilon(history, delta):
    accountant = RDPAccountant()
    accountant.history = list(history)
    with warnings.catch_warnings():  # "optimal order is the largest alpha"
        warnings.simplefilter("ignore", UserWarning)
        return accountant.get_epsilon(delta)


@pytest.mark.parametrize(
    ("noise_multiplier", "sample_rate", "steps", "delta"),
    [
        (1.1, 0.01, 1000, 1e-5),  # the DP-SGD MNIST setting of Abadi et al.
        (0.8, 0.004, 5000, 1e-5),
        (2.0, 1.0, 10, 1e-5),  # no subsampling: the plain Gaussian mechanism
        (0.5, 0.1, 50, 1e-6),  # large epsilon, fractional orders matter
        (1.0, 0.256, 300, 1e-5),
        (5.0, 0.001, 100_000, 1e-3),
    ],
)
def test_rdp_epsilon_matches_opacus_rdp_accountant(noise_multiplier, sample_rate, steps, delta):
    history = [(noise_multiplier, sample_rate, steps)]

    ours = epsilon_spent(history, delta=delta)
    theirs = _opacus_epsilon(history, delta)

    assert ours == pytest.approx(theirs, rel=1e-8)


def test_composed_history_matches_opacus_and_grows_with_steps():
    history = [(1.0, 0.02, 200), (1.5, 0.05, 100), (1.0, 0.02, 50)]

    assert epsilon_spent(history, delta=1e-5) == pytest.approx(
        _opacus_epsilon(history, 1e-5), rel=1e-8
    )
    assert epsilon_spent(history[:1], delta=1e-5) < epsilon_spent(history[:2], delta=1e-5)


def test_plain_gaussian_rdp_is_alpha_over_twice_sigma_squared():
    rdp = rdp_sampled_gaussian(sample_rate=1.0, noise_multiplier=2.0)

    assert rdp == pytest.approx(np.array(DEFAULT_ORDERS) / 8.0)


def test_nothing_spent_without_steps_and_everything_without_noise():
    assert epsilon_spent([], delta=1e-5) == 0.0
    assert epsilon_spent([(1.0, 0.1, 0)], delta=1e-5) == 0.0
    assert epsilon_spent([(0.0, 0.1, 1)], delta=1e-5) == math.inf


def test_accountant_merges_equal_steps_and_round_trips_its_state():
    accountant = RdpAccountant()
    for _ in range(3):
        accountant.step(noise_multiplier=1.2, sample_rate=0.1)
    accountant.step(noise_multiplier=1.2, sample_rate=0.2, steps=5)

    restored = RdpAccountant()
    restored.load_state_dict(accountant.state_dict())

    assert accountant.history == [(1.2, 0.1, 3), (1.2, 0.2, 5)]
    assert restored.history == accountant.history
    assert restored.epsilon(1e-5) == accountant.epsilon(1e-5) > 0


def test_accountant_refuses_a_foreign_state():
    with pytest.raises(ValueError, match="not an RDP"):
        RdpAccountant().load_state_dict({"mechanism": "prv", "history": []})


@pytest.mark.parametrize("scale", [0.1, 1.0, 3.0, 1e6])
def test_clip_update_bounds_the_norm_and_reports_the_original(scale):
    vector = np.random.default_rng(0).standard_normal(1000).astype(np.float32) * scale
    original = float(np.linalg.norm(vector.astype(np.float64)))

    clipped, norm = clip_update(vector, 5.0)

    assert norm == pytest.approx(original)
    assert np.linalg.norm(clipped) <= 5.0 * (1 + 1e-12)
    if original <= 5.0:
        np.testing.assert_array_equal(clipped, vector.astype(np.float64))
    else:  # same direction, on the bound
        assert np.linalg.norm(clipped) == pytest.approx(5.0)
        np.testing.assert_allclose(clipped * (original / 5.0), vector, rtol=1e-6)


def test_clip_update_rejects_a_bad_bound_or_non_finite_input():
    with pytest.raises(ValueError):
        clip_update(np.ones(3), 0.0)
    with pytest.raises(ValueError):
        clip_update(np.array([1.0, np.nan]), 1.0)


def test_update_level_dp_clips_the_whole_update_across_tensors():
    update = {"a": np.full((10, 10), 3.0, np.float32), "b": np.full(5, -4.0, np.float32)}

    private = apply_differential_privacy(
        update, clip_norm=2.0, noise_multiplier=0.0, rng=np.random.default_rng(1)
    )

    flat = np.concatenate([private["a"].ravel(), private["b"].ravel()])
    assert {k: v.shape for k, v in private.items()} == {"a": (10, 10), "b": (5,)}
    assert private["a"].dtype == np.float32
    assert np.linalg.norm(flat) == pytest.approx(2.0, rel=1e-6)
    assert private["a"][0, 0] / private["b"][0] == pytest.approx(-0.75)


def test_update_level_noise_std_is_noise_multiplier_times_clip_norm():
    update = {"w": np.zeros((400, 500), np.float32), "b": np.zeros(500, np.float32)}

    private = apply_differential_privacy(
        update, clip_norm=0.5, noise_multiplier=1.3, rng=np.random.default_rng(7)
    )

    noise = np.concatenate([v.ravel() for v in private.values()]).astype(np.float64)
    expected = gaussian_noise_std(noise_multiplier=1.3, clip_norm=0.5)
    assert expected == pytest.approx(0.65)
    assert noise.std() == pytest.approx(expected, rel=STD_TOLERANCE)
    assert abs(noise.mean()) < 10 * expected / math.sqrt(noise.size)
