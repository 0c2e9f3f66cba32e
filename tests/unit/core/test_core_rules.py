import numpy as np
import pytest

from fedlearn.core.metrics import convergence_metrics
from fedlearn.core.retry import RetryPolicy, backoff_delays, busy_delays
from fedlearn.core.sampling import round_rng, sample_clients, sample_size
from fedlearn.core.strategy import FedAvg, FedAvgM, make_strategy
from fedlearn.errors import ConfigError


def test_fedavg_adds_the_mean_delta():
    step = FedAvg().step(np.ones(3, np.float32), np.array([0.5, -1.0, 0.0]), None)
    np.testing.assert_allclose(step.weights, [1.5, 0.0, 1.0])
    assert step.state is None and step.weights.dtype == np.float32


def test_fedavgm_accumulates_server_momentum():
    strategy = FedAvgM(momentum=0.5)
    w = np.zeros(2, np.float32)
    first = strategy.step(w, np.array([1.0, 2.0]), None)
    np.testing.assert_allclose(first.weights, [1.0, 2.0])
    second = strategy.step(first.weights, np.array([1.0, 0.0]), first.state)
    np.testing.assert_allclose(second.state, [1.5, 1.0])
    np.testing.assert_allclose(second.weights, [2.5, 3.0])


def test_strategies_do_not_mutate_their_inputs():
    w = np.ones(2, np.float32)
    state = np.ones(2, np.float32)
    FedAvgM(momentum=0.9).step(w, np.ones(2), state)
    np.testing.assert_array_equal(w, 1.0)
    np.testing.assert_array_equal(state, 1.0)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("nope", {}), ("fedavgm", {"momentum": 1.0}), ("fedavg", {"server_lr": 0.0})],
)
def test_make_strategy_rejects_bad_settings(name, kwargs):
    with pytest.raises(ConfigError):
        make_strategy(name, **kwargs)


def test_sampling_is_deterministic_per_seed_and_round():
    ids = [f"c{i}" for i in range(20)]
    a = sample_clients(ids, 5, rng=round_rng(7, 3))
    b = sample_clients(list(reversed(ids)), 5, rng=round_rng(7, 3))
    c = sample_clients(ids, 5, rng=round_rng(7, 4))
    assert a == b and len(set(a)) == 5 and a != c


@pytest.mark.parametrize(
    ("available", "kwargs", "expected"),
    [
        (10, {"clients_per_round": None, "fraction": None}, 10),
        (10, {"clients_per_round": 4, "fraction": None}, 4),
        (10, {"clients_per_round": 40, "fraction": None}, 10),
        (10, {"clients_per_round": None, "fraction": 0.25}, 3),
        (10, {"clients_per_round": 1, "fraction": None}, 2),
    ],
)
def test_sample_size_respects_min_clients(available, kwargs, expected):
    assert sample_size(available, min_clients=2, **kwargs) == expected


def test_backoff_delays_grow_are_capped_and_stop_at_the_budget():
    policy = RetryPolicy(initial_s=0.1, multiplier=2.0, max_delay_s=1.0, total_s=5.0)
    delays = list(backoff_delays(policy, rng=np.random.default_rng(0)))
    assert sum(delays) <= 5.0
    assert all(d <= 1.0 for d in delays)
    assert delays[0] <= 0.1 and max(delays) > 0.5


def test_busy_delays_start_at_the_servers_hint_and_last_the_busy_budget():
    policy = RetryPolicy(max_delay_s=4.0, total_s=1.0, busy_total_s=60.0)
    delays = list(busy_delays(policy, rng=np.random.default_rng(0), first_s=0.5))
    assert 0.25 <= delays[0] <= 0.5
    assert 2.0 <= delays[3] <= 4.0 and max(delays) <= 4.0
    assert 56.0 <= sum(delays) <= 60.0  # far past total_s, the unreachable budget


def test_busy_delays_with_no_budget_give_none():
    policy = RetryPolicy(busy_total_s=0.0)
    assert list(busy_delays(policy, rng=np.random.default_rng(0), first_s=0.5)) == []


def test_a_negative_busy_budget_is_refused():
    with pytest.raises(ConfigError):
        RetryPolicy(busy_total_s=-1.0)


def test_convergence_metrics():
    m = convergence_metrics(np.array([3.0, 4.0]), np.array([3.0, 4.0 + 0.5]), np.array([0.0, 1.0]))
    assert m.update_norm == pytest.approx(1.0)
    assert m.model_delta_norm == pytest.approx(0.5)
    assert m.convergence_score == pytest.approx(0.1)


def test_round_config_learning_rate_decays_geometrically():
    from fedlearn.core.schedule import round_config_for
    from fedlearn.core.types import RoundConfig

    base = RoundConfig(local_epochs=2, batch_size=32, learning_rate=0.1)
    assert round_config_for(base, 1, lr_decay=0.5) == base
    third = round_config_for(base, 3, lr_decay=0.5)
    assert third.learning_rate == pytest.approx(0.025)
    assert (third.local_epochs, third.batch_size) == (2, 32)
    with pytest.raises(ConfigError):
        round_config_for(base, 1, lr_decay=0.0)
