"""Central DP (DP-FedAvg, user-level): clipping at fold time, noise calibrated to the
clients that reported, sampling from the noise source, and user-level accounting
checked against Opacus's ``RDPAccountant``.

The noise-std test estimates a standard deviation from 400,000 draws (relative
standard error about 0.11%) against a 2% tolerance, with a seeded generator.
"""

import math
import warnings

import numpy as np
import pytest
from opacus.accountants import RDPAccountant

from fedlearn.core.aggregation import StreamingFedAvg
from fedlearn.core.central_dp import (
    CentralDpConfig,
    DpFedAvg,
    aggregate_noise_std,
    noise_multiplier_for,
    projected_epsilon,
    sample_rate,
    secret_sample,
    user_level_epsilon,
)
from fedlearn.core.privacy import RdpAccountant
from fedlearn.core.rdp import epsilon_spent
from fedlearn.errors import ConfigError


class Recording:
    """An inner aggregator that keeps what it was given."""

    def __init__(self) -> None:
        self.added: list[tuple[np.ndarray, float]] = []

    @property
    def count(self) -> int:
        return len(self.added)

    def add(self, vector, weight):
        self.added.append((np.array(vector), weight))

    def mean(self):
        return np.mean([v for v, _ in self.added], axis=0)


class ZeroNoise:
    def standard_normal(self, size):
        return np.zeros(size)

    def random(self, size):
        return np.linspace(0, 1, size, endpoint=False)


def _opacus_epsilon(steps: list[tuple[float, float]], delta: float) -> float:
    accountant = RDPAccountant()
    for z, q in steps:
        accountant.step(noise_multiplier=z, sample_rate=q)
    with warnings.catch_warnings():  # "optimal order is the largest alpha"
        warnings.simplefilter("ignore", UserWarning)
        return accountant.get_epsilon(delta)


def test_every_folded_update_is_clipped_to_the_clip_norm_with_weight_one():
    rng = np.random.default_rng(3)
    inner = Recording()
    dp = DpFedAvg(inner, clip_norm=1.5, noise_multiplier=1.0, noise=ZeroNoise())
    vectors = [rng.normal(size=50).astype(np.float32) * s for s in (0.01, 0.2, 1.0, 30.0)]
    for vector, samples in zip(vectors, (10, 500, 3, 99), strict=True):
        dp.add(vector, float(samples))

    norms = [float(np.linalg.norm(v)) for v, _ in inner.added]
    assert all(n <= 1.5 * (1 + 1e-12) for n in norms)
    assert [w for _, w in inner.added] == [1.0] * 4
    long = [float(np.linalg.norm(v)) > 1.5 for v in vectors]
    assert dp.clipped == sum(long) >= 2
    for (clipped, _), original, was_long in zip(inner.added, vectors, long, strict=True):
        if was_long:  # same direction, length C
            assert math.isclose(float(np.linalg.norm(clipped)), 1.5, rel_tol=1e-12)
            np.testing.assert_allclose(clipped / 1.5, original / np.linalg.norm(original))
        else:
            np.testing.assert_array_equal(clipped, original.astype(np.float64))


def test_without_noise_the_aggregate_is_the_unweighted_mean_of_clipped_updates():
    dp = DpFedAvg(StreamingFedAvg(4), clip_norm=1.0, noise_multiplier=2.0, noise=ZeroNoise())
    dp.add(np.array([3.0, 4.0, 0.0, 0.0], np.float32), 1000.0)  # norm 5 -> 1
    dp.add(np.array([0.0, 0.0, 0.5, 0.0], np.float32), 1.0)  # within the bound

    np.testing.assert_allclose(dp.mean(), [0.3, 0.4, 0.25, 0.0])


@pytest.mark.parametrize(("z", "clip", "reported"), [(1.0, 1.0, 1), (1.1, 0.5, 4), (0.7, 2.0, 9)])
def test_noise_std_of_the_mean_is_z_times_clip_over_the_clients_that_reported(z, clip, reported):
    size = 400_000
    dp = DpFedAvg(
        StreamingFedAvg(size),
        clip_norm=clip,
        noise_multiplier=z,
        noise=np.random.default_rng(11),
    )
    for _ in range(reported):
        dp.add(np.zeros(size, np.float32), 1.0)

    noised = dp.mean()

    expected = z * clip / reported
    assert aggregate_noise_std(clip_norm=clip, noise_multiplier=z, reported=reported) == expected
    assert float(np.std(noised)) == pytest.approx(expected, rel=0.02)
    assert abs(float(np.mean(noised))) < 5 * expected / math.sqrt(size)


def test_each_mean_draws_fresh_noise():
    dp = DpFedAvg(
        StreamingFedAvg(8), clip_norm=1.0, noise_multiplier=1.0, noise=np.random.default_rng(0)
    )
    dp.add(np.ones(8, np.float32), 1.0)
    assert not np.array_equal(dp.mean(), dp.mean())


@pytest.mark.parametrize(
    ("z", "rounds"),
    [
        ([1.0, 1.0, 1.0], [(4, 4), (2, 4), (2, 4)]),
        ([0.8] * 5, [(10, 100)] * 5),
        ([1.2, 1.2, 1.5], [(3, 1000), (3, 1000), (50, 1000)]),
    ],
)
def test_user_level_epsilon_matches_opacus_rdp_accountant(z, rounds):
    delta = 1e-5
    accountant = RdpAccountant()
    steps = []
    for zi, (selected, eligible) in zip(z, rounds, strict=True):
        q = sample_rate(selected, eligible)
        accountant.step(noise_multiplier=zi, sample_rate=q)
        steps.append((zi, q))

    assert accountant.epsilon(delta) == pytest.approx(_opacus_epsilon(steps, delta), rel=1e-8)


def test_user_level_epsilon_is_the_rdp_modules_epsilon():
    history = [(1.0, 1.0, 1), (1.0, 0.5, 4), (1.3, 0.05, 20), (1.0, 0.5, 2)]

    assert user_level_epsilon(history, delta=1e-6) == epsilon_spent(history, delta=1e-6)
    assert user_level_epsilon([], delta=1e-6) == 0.0


def test_projected_epsilon_is_the_epsilon_after_one_more_round():
    history = [(1.0, 0.5, 3)]
    after = projected_epsilon(history, noise_multiplier=1.0, sample_rate=0.25, delta=1e-5)

    assert after == pytest.approx(_opacus_epsilon([(1.0, 0.5)] * 3 + [(1.0, 0.25)], 1e-5))
    assert after > epsilon_spent(history, delta=1e-5)


@pytest.mark.parametrize(
    ("target", "rounds", "q"), [(4.0, 10, 1.0), (1.0, 100, 0.1), (8.0, 3, 0.5)]
)
def test_derived_noise_multiplier_is_the_smallest_that_meets_the_target(target, rounds, q):
    z = noise_multiplier_for(target_epsilon=target, delta=1e-5, rounds=rounds, sample_rate=q)

    assert epsilon_spent([(z, q, rounds)], delta=1e-5) <= target
    assert epsilon_spent([(z - 2e-3, q, rounds)], delta=1e-5) > target


def test_a_target_no_noise_can_reach_is_a_config_error():
    with pytest.raises(ConfigError, match="no noise multiplier"):
        noise_multiplier_for(target_epsilon=1e-12, delta=1e-5, rounds=1000, sample_rate=1.0)


def test_secret_sample_picks_k_distinct_clients_uniformly_from_the_source():
    candidates = [f"c{i}" for i in range(10)]
    rng = np.random.default_rng(5)
    counts = dict.fromkeys(candidates, 0)
    draws = 20_000
    for _ in range(draws):
        chosen = secret_sample(candidates, 3, source=rng)
        assert len(set(chosen)) == 3 and list(chosen) == sorted(chosen)
        for c in chosen:
            counts[c] += 1
    # each client is in a round with probability 3/10; binomial sd ~ 65 of 6000
    assert all(abs(n - 0.3 * draws) < 400 for n in counts.values())


def test_secret_sample_takes_the_clients_with_the_smallest_uniforms():
    class Fixed(ZeroNoise):
        def random(self, size):
            return np.array([0.9, 0.1, 0.8, 0.2])

    assert secret_sample(["d", "c", "b", "a"], 2, source=Fixed()) == ("b", "d")


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"clip_norm": 0.0, "noise_multiplier": 1.0}, "clip norm"),
        ({"clip_norm": math.inf, "noise_multiplier": 1.0}, "clip norm"),
        ({"clip_norm": 1.0, "noise_multiplier": 0.0}, "noise multiplier"),
        ({"clip_norm": 1.0, "noise_multiplier": 1.0, "delta": 1.0}, "delta"),
        ({"clip_norm": 1.0, "noise_multiplier": 1.0, "target_epsilon": -1.0}, "target epsilon"),
    ],
)
def test_central_dp_config_refuses_values_without_a_guarantee(fields, match):
    with pytest.raises(ConfigError, match=match):
        CentralDpConfig(**fields)


def test_sample_rate_needs_a_selection_within_the_eligible_clients():
    assert sample_rate(2, 8) == 0.25
    with pytest.raises(ValueError):
        sample_rate(3, 2)
