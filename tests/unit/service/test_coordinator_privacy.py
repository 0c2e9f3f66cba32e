"""The privacy ledger: claims checked against budgets, kept across restarts, and
clients out of budget no longer selected."""

import math
from dataclasses import replace

import pytest
from service_world import World, delta, submission

from fedlearn.core.types import ClientCapabilities, PrivacyConfig, RoundStatus
from fedlearn.errors import UpdateRejectedError


def _caps(epsilon: float = 3.0, *, exhausted: bool = False) -> ClientCapabilities:
    return ClientCapabilities(
        available_samples=10,
        privacy=PrivacyConfig(epsilon=epsilon, delta=1e-5, max_grad_norm=1.0),
        budget_exhausted=exhausted,
    )


def _world(**config) -> World:
    world = World(**config)
    for name in ("a", "b"):
        world.coordinator.register_client(name, _caps())
    return world


def _claiming(client: str, round_number: int, epsilon: float, **kw):
    return replace(submission(client, round_number, delta(0.5), **kw), privacy_budget_used=epsilon)


@pytest.mark.parametrize(
    ("epsilon", "reason"),
    [(3.5, "over_budget"), (math.nan, "bad_privacy_claim"), (-1.0, "bad_privacy_claim")],
)
def test_a_claim_over_the_budget_or_malformed_is_refused_and_recorded(epsilon, reason):
    world = _world()
    with pytest.raises(UpdateRejectedError) as refused:
        world.coordinator.submit_update(_claiming("a", 1, epsilon))
    assert refused.value.reason == reason
    assert world.coordinator.status().rejections == {reason: 1}
    assert world.runs.list_updates("r", 1) == []


def test_accepted_claims_are_kept_in_the_ledger_across_a_restart():
    world = _world()
    world.coordinator.submit_update(_claiming("a", 1, 0.8))
    world.coordinator.submit_update(_claiming("b", 1, 0.7))
    world.coordinator.submit_update(_claiming("a", 2, 1.6))
    world.restart()
    ledger = {p.client_id: p for p in world.coordinator.status().privacy}
    assert (ledger["a"].epsilon_spent, ledger["a"].epsilon_budget) == (1.6, 3.0)
    assert ledger["b"].epsilon_spent == 0.7 and ledger["b"].delta == 1e-5
    with pytest.raises(UpdateRejectedError) as refused:  # lower than what a already spent
        world.coordinator.submit_update(_claiming("b", 2, 0.5))
    assert refused.value.reason == "privacy_claim_decreased"


def test_a_run_that_requires_dp_refuses_updates_without_a_budget_or_a_claim():
    world = World(require_dp=True)
    world.coordinator.register_client("a", _caps())
    world.register("b")  # no DP budget
    with pytest.raises(UpdateRejectedError) as no_claim:
        world.coordinator.submit_update(_claiming("a", 1, 0.0))
    with pytest.raises(UpdateRejectedError) as no_budget:
        world.coordinator.submit_update(_claiming("b", 1, 0.5))
    assert (no_claim.value.reason, no_budget.value.reason) == (
        "no_privacy_claim",
        "no_privacy_budget",
    )
    world.coordinator.submit_update(_claiming("a", 1, 0.5))  # a valid claim is taken


def test_a_client_out_of_budget_leaves_the_open_round_and_is_not_selected_again():
    world = _world()  # round 1 opens with a and b
    world.coordinator.register_client("c", _caps())
    world.coordinator.submit_update(_claiming("a", 1, 1.0))
    world.coordinator.submit_update(_claiming("b", 1, 1.0))
    assert world.runs.get_round("r", 2).selected_clients == ("a", "b", "c")

    world.coordinator.submit_update(_claiming("a", 2, 2.0))
    world.coordinator.submit_update(_claiming("b", 2, 2.0))
    world.coordinator.register_client("c", _caps(exhausted=True))  # c cannot train round 2

    assert world.runs.get_round("r", 2).status is RoundStatus.COMPLETED
    assert world.runs.get_round("r", 3).selected_clients == ("a", "b")
    ledger = {p.client_id: p for p in world.coordinator.status().privacy}
    assert ledger["c"].exhausted and not ledger["a"].exhausted
    assert world.runs.count_rejections("r") == {}  # declining is not missing a deadline
