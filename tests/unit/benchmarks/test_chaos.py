"""The chaos benchmark's bookkeeping: the fault schedule, ack parsing, the lost/double
tally, recovery times and the round check."""

import itertools

import numpy as np
import pytest

from benchmarks.chaos import (
    CUT_S,
    KILL_S,
    RoundRow,
    StoredUpdate,
    fault_schedule,
    parse_acks,
    recovery_times,
    rounds_are_clean,
    tally,
)

ROUNDS = [
    RoundRow(0, "completed", 0),
    RoundRow(1, "completed", 2),
    RoundRow(2, "failed", 1, failure_reason="deadline passed with 1 of 2 required updates"),
    RoundRow(3, "completed", 2),
]
STORED = [
    StoredUpdate("c0", 1, "a1", 10.0),
    StoredUpdate("c1", 1, "b1", 11.0),
    StoredUpdate("c0", 2, "a2", 20.0),
    StoredUpdate("c0", 3, "a3", 30.0),
    StoredUpdate("c1", 3, "b3", 31.0),
]
ACKED = {"c0": {(1, "a1"), (2, "a2"), (3, "a3")}, "c1": {(1, "b1"), (3, "b3")}}


def test_fault_schedule_is_seeded_and_faults_never_overlap():
    first = fault_schedule(np.random.default_rng(3), clients=4, duration_s=300)
    again = fault_schedule(np.random.default_rng(3), clients=4, duration_s=300)
    other = fault_schedule(np.random.default_rng(4), clients=4, duration_s=300)

    assert first == again != other
    assert {f.kind for f in first} == {"kill", "cut"}
    assert {f.client for f in first} == {0, 1, 2, 3}
    assert all(f.at_s < 300 for f in first)
    for before, after in itertools.pairwise(first):
        assert before.at_s + before.length_s < after.at_s
    for fault in first:
        low, high = KILL_S if fault.kind == "kill" else CUT_S
        assert low <= fault.length_s <= high


def test_fault_schedule_refuses_gaps_shorter_than_a_fault():
    with pytest.raises(ValueError, match="gaps"):
        fault_schedule(np.random.default_rng(0), clients=2, duration_s=60, gap_s=(1.0, 2.0))


def test_parse_acks_reads_accepted_and_already_stored_lines_only():
    log = "\n".join(
        [
            "2026-01-01 10:00:00,000 INFO fedlearn.client.runtime: round 1: update ab12 "
            "accepted (1/4 updates in)",
            "... INFO fedlearn.client.runtime: round 2: update cd34 was already stored "
            "(0/4 updates in)",
            "... INFO fedlearn.client.runtime: round 3: loss 0.5 on 100 samples in 1.00 s",
            "... WARNING fedlearn.client.runtime: round 3 update not taken: round 3 is not open",
            "... INFO fedlearn.client.runtime: re-sending the pending update ef56 for round 3",
        ]
    )

    assert parse_acks(log) == {(1, "ab12"), (2, "cd34")}


def test_tally_counts_acknowledged_updates_of_failed_rounds_apart_and_nothing_lost():
    counts = tally(ACKED, STORED, ROUNDS)

    assert (counts.acknowledged, counts.stored, counts.counted) == (5, 5, 4)
    assert (counts.in_failed_rounds, counts.lost, counts.double) == (1, 0, 0)


def test_tally_reports_an_acknowledged_update_that_was_never_stored_as_lost():
    acked = {**ACKED, "c1": {*ACKED["c1"], (3, "b3-bis")}}

    counts = tally(acked, STORED, ROUNDS)

    assert (counts.lost, counts.lost_ids) == (1, ("b3-bis",))


def test_tally_reports_an_acknowledged_update_stored_under_another_round_as_lost():
    acked = {"c0": {(1, "a1"), (2, "a2"), (2, "a3")}, "c1": ACKED["c1"]}

    assert tally(acked, STORED, ROUNDS).lost_ids == ("a3",)


def test_tally_reports_a_round_counting_more_updates_than_it_stored_as_double():
    rounds = [*ROUNDS[:3], RoundRow(3, "completed", 3)]

    counts = tally(ACKED, STORED, rounds)

    assert (counts.double, counts.lost) == (1, 0)


def test_tally_reports_two_counted_updates_of_one_client_in_one_round_as_double():
    stored = [*STORED, StoredUpdate("c1", 3, "b3-again", 32.0)]
    rounds = [*ROUNDS[:3], RoundRow(3, "completed", 3)]

    assert tally(ACKED, stored, rounds).double == 1


def test_tally_reports_a_stored_update_its_round_left_out_as_lost():
    rounds = [*ROUNDS[:3], RoundRow(3, "completed", 1)]

    counts = tally(ACKED, STORED, rounds)

    assert (counts.lost, counts.double) == (1, 0)


def test_recovery_time_runs_to_the_clients_next_accepted_update():
    faults = [("c0", 12.0), ("c1", 5.0), ("c1", 40.0), ("c2", 1.0)]

    assert recovery_times(faults, STORED) == [8.0, 6.0, None, None]


def test_rounds_are_clean_when_completed_or_failed_with_a_reason():
    assert rounds_are_clean(ROUNDS) == (True, [])
    unclean = [*ROUNDS, RoundRow(4, "open", 0), RoundRow(5, "failed", 0)]

    assert rounds_are_clean(unclean) == (
        False,
        ["round 4 is open", "round 5 failed without a reason"],
    )
