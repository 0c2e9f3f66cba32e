"""Central DP (DP-FedAvg, user-level) on the coordinator: clipped updates, an aggregate
noised for the clients that reported, selection from the noise source, user-level
epsilon charged per round, persisted, and a run that ends before passing its target."""

import math
from dataclasses import replace

import numpy as np
import pytest
from service_world import INITIAL, World, delta, submission

from fedlearn.core.central_dp import CentralDpConfig
from fedlearn.core.rdp import epsilon_spent
from fedlearn.core.types import ClientCapabilities, RoundStatus
from fedlearn.errors import ConfigError
from fedlearn.service.messages import RunState, TaskKind

SIZE = 8  # INITIAL has 6 + 2 parameters
DP = CentralDpConfig(clip_norm=1.0, noise_multiplier=0.5, delta=1e-5)


class OnesNoise:
    """Every normal is 1, so the noise added equals its std; uniforms ascend (or
    descend), so the selection is the first (or last) clients by id."""

    def __init__(self, *, descending: bool = False) -> None:
        self.descending = descending
        self.draws = 0

    def standard_normal(self, size):
        self.draws += 1
        return np.ones(size)

    def random(self, size):
        keys = np.arange(size) / size
        return keys[::-1].copy() if self.descending else keys


class Crash(BaseException):
    """A process death (not an ``Exception``, so nothing on the way catches it)."""


def _world(dp: CentralDpConfig = DP, noise=None, **config) -> World:
    return World(central_dp=dp, noise=noise or OnesNoise(), **config)


def _round(world: World, number: int, *clients: str, value: float = 0.1) -> None:
    for client in clients:
        world.coordinator.submit_update(submission(client, number, delta(value)))


def _global(world: World) -> np.ndarray:
    weights = world.coordinator.global_weights()
    return np.concatenate([weights["w"].ravel(), weights["b"].ravel()])


def _initial() -> np.ndarray:
    return np.concatenate([INITIAL["w"].ravel(), INITIAL["b"].ravel()])


def _epsilon(*rates: float, z: float = DP.noise_multiplier, delta: float = DP.delta) -> float:
    return epsilon_spent([(z, q, 1) for q in rates], delta=delta)


def test_updates_are_clipped_unweighted_and_the_mean_gets_noise_for_the_reporters():
    world = _world()
    world.register("a", "b")
    world.coordinator.submit_update(submission("a", 1, delta(10.0), samples=1000))  # clipped
    world.coordinator.submit_update(submission("b", 1, delta(0.1), samples=1))  # kept

    clipped_a = 1.0 / math.sqrt(SIZE)  # each entry once the norm is 1
    mean = (clipped_a + 0.1) / 2
    noise = DP.noise_multiplier * DP.clip_norm / 2
    np.testing.assert_allclose(_global(world), _initial() + mean + noise, rtol=1e-6)


def test_noise_is_calibrated_to_the_clients_that_reported_not_those_selected():
    world = _world()
    world.register("a", "b")
    world.register("c")  # joins round 2
    _round(world, 1, "a", "b")
    after_one = _global(world)
    assert world.runs.get_round("r", 2).selected_clients == ("a", "b", "c")
    _round(world, 2, "a", "b")  # c never reports
    world.clock.t += 120
    world.coordinator.tick()

    assert world.runs.get_round("r", 2).status is RoundStatus.COMPLETED
    noise = DP.noise_multiplier * DP.clip_norm / 2  # 2 reported, not 3 selected
    np.testing.assert_allclose(_global(world), after_one + 0.1 + noise, rtol=1e-6)


def test_each_round_is_charged_at_selected_over_eligible_clients():
    world = _world(clients_per_round=2)
    world.register("a", "b")  # round 1: 2 of 2
    world.register("c", "d")
    _round(world, 1, "a", "b")
    assert world.runs.get_round("r", 2).selected_clients == ("a", "b")  # 2 of 4
    _round(world, 2, "a", "b")

    central = world.coordinator.status().central_privacy
    assert central is not None and central.rounds_charged == 2
    assert central.epsilon_spent == pytest.approx(_epsilon(1.0, 0.5), rel=1e-12)
    assert central.epsilon_spent < _epsilon(1.0, 1.0)
    stored = world.runs.get_central_privacy("r")
    assert stored.last_round == 2 and stored.accountant["history"] == [[0.5, 1.0, 1], [0.5, 0.5, 1]]


def test_selection_under_central_dp_comes_from_the_noise_source_not_the_seed():
    chosen = []
    for noise in (OnesNoise(), OnesNoise(descending=True)):
        world = _world(noise=noise, clients_per_round=2, seed=7)
        world.register("a", "b")
        world.register("c", "d")
        _round(world, 1, "a", "b")
        chosen.append(world.runs.get_round("r", 2).selected_clients)

    assert chosen == [("a", "b"), ("c", "d")]


def test_the_run_finishes_instead_of_opening_a_round_past_the_target():
    target = _epsilon(1.0, 1.0)  # exactly two rounds at q = 1
    world = _world(
        CentralDpConfig(clip_norm=1.0, noise_multiplier=0.5, delta=1e-5, target_epsilon=target),
        num_rounds=5,
    )
    world.register("a", "b")
    _round(world, 1, "a", "b")
    _round(world, 2, "a", "b")
    world.coordinator.wait_for_evaluations(5.0)

    status = world.coordinator.status()
    assert status.state is RunState.FINISHED and status.completed_rounds == 2
    assert status.central_privacy.exhausted and status.central_privacy.target_epsilon == target
    assert status.central_privacy.epsilon_spent <= target
    assert world.runs.get_round("r", 3) is None
    assert world.coordinator.poll_task("a").kind is TaskKind.FINISHED
    world.restart()  # the target still holds after a restart
    assert world.coordinator.status().state is RunState.FINISHED
    assert world.runs.get_round("r", 3) is None


def test_the_spent_epsilon_survives_a_restart_and_keeps_growing():
    world = _world()
    world.register("a", "b")
    _round(world, 1, "a", "b")
    before = world.coordinator.status().central_privacy

    world.restart()
    after = world.coordinator.status().central_privacy
    assert (after.epsilon_spent, after.rounds_charged) == (before.epsilon_spent, 1)
    _round(world, 2, "a", "b")
    assert world.coordinator.status().central_privacy.epsilon_spent == pytest.approx(
        _epsilon(1.0, 1.0), rel=1e-12
    )


def test_a_close_redone_after_a_crash_is_charged_once():
    noise = OnesNoise()
    world = _world(noise=noise)
    world.register("a", "b")
    save_round = world.runs.save_round

    def crash_on_completion(record):
        if record.status is RoundStatus.COMPLETED:
            raise Crash
        save_round(record)

    world.runs.save_round = crash_on_completion
    world.coordinator.submit_update(submission("a", 1, delta(0.1)))
    with pytest.raises(Crash):
        world.coordinator.submit_update(submission("b", 1, delta(0.1)))
    assert world.runs.get_central_privacy("r").last_round == 1  # charged before publishing
    assert world.runs.get_round("r", 1).status is RoundStatus.OPEN

    world.runs.save_round = save_round
    world.restart()  # the catch-up redoes the close

    assert world.runs.get_round("r", 1).status is RoundStatus.COMPLETED
    assert noise.draws == 2  # noise drawn twice, only the second model published
    central = world.coordinator.status().central_privacy
    assert central.rounds_charged == 1
    assert central.epsilon_spent == pytest.approx(_epsilon(1.0), rel=1e-12)


def test_a_restarted_open_round_still_clips_its_stored_updates():
    world = _world()
    world.register("a", "b")
    world.coordinator.submit_update(submission("a", 1, delta(10.0)))
    world.restart()
    world.coordinator.submit_update(submission("b", 1, delta(0.1)))

    expected = (1.0 / math.sqrt(SIZE) + 0.1) / 2 + DP.noise_multiplier * DP.clip_norm / 2
    np.testing.assert_allclose(_global(world), _initial() + expected, rtol=1e-6)


def test_a_rolled_back_round_is_not_refunded():
    world = _world(num_rounds=5)
    world.register("a", "b")
    _round(world, 1, "a", "b")
    _round(world, 2, "a", "b")
    world.coordinator.wait_for_evaluations(5.0)
    spent = world.coordinator.status().central_privacy.epsilon_spent

    world.coordinator.rollback(1, reason="test")

    assert world.runs.get_round("r", 2).status is RoundStatus.ROLLED_BACK
    central = world.coordinator.status().central_privacy
    assert (central.epsilon_spent, central.rounds_charged) == (spent, 2)


def test_central_dp_without_a_noise_source_is_a_config_error():
    with pytest.raises(ConfigError, match="noise source"):
        World(central_dp=DP)


def test_without_central_dp_updates_are_weighted_and_status_has_no_central_line():
    world = World()
    world.coordinator.register_client("a", ClientCapabilities(available_samples=10))
    world.register("b")
    world.coordinator.submit_update(submission("a", 1, delta(10.0), samples=30))
    world.coordinator.submit_update(submission("b", 1, delta(2.0), samples=10))

    np.testing.assert_allclose(_global(world), _initial() + 8.0, rtol=1e-6)
    assert world.coordinator.status().central_privacy is None
    assert world.runs.get_central_privacy("r") is None


def test_a_round_open_at_a_restart_is_charged_at_the_sample_rate_it_opened_with():
    world = _world(clients_per_round=2)
    world.register("a", "b")
    world.register("c", "d")
    _round(world, 1, "a", "b")  # round 2 opens: 2 of 4
    world.restart()
    _round(world, 2, "a", "b")

    central = world.coordinator.status().central_privacy
    assert central.epsilon_spent == pytest.approx(_epsilon(1.0, 0.5), rel=1e-12)


def test_a_run_started_with_central_dp_cannot_be_resumed_without_it():
    world = _world()
    world.register("a", "b")
    _round(world, 1, "a", "b")
    world.config = replace(world.config, central_dp=None)

    with pytest.raises(ConfigError, match="started with central DP"):
        world.restart()
