"""The dp_accuracy benchmark's arithmetic and its choice of runs."""

from benchmarks.dp_accuracy import (
    ANCHOR_EPSILON,
    EPSILONS,
    dp_overhead,
    epsilon_label,
    gap_points,
    settings,
)


def test_gap_points_is_accuracy_minus_anchor_in_percentage_points() -> None:
    assert gap_points(0.84, 0.86) == -2.0
    assert gap_points(0.9, 0.86) == 4.0
    assert gap_points(None, 0.86) is None


def test_dp_overhead_is_ratio_of_round_times_and_none_when_unknown() -> None:
    assert dp_overhead(3.0, 2.0) == 1.5
    assert dp_overhead(None, 2.0) is None
    assert dp_overhead(3.0, None) is None
    assert dp_overhead(3.0, 0.0) is None


def test_epsilon_label_names_the_run_without_dp_none() -> None:
    assert epsilon_label(None) == "none"
    assert epsilon_label(3.0) == "3"


def test_full_mode_runs_every_epsilon_on_both_data_sets_with_the_baseline_first() -> None:
    full = settings(quick=False)
    for dataset in ("mnist", "fashion"):
        mine = [s.epsilon for s in full if s.dataset == dataset]
        assert mine[0] is None
        assert sorted(mine, key=str) == sorted(EPSILONS, key=str)


def test_quick_mode_runs_mnist_at_the_anchor_epsilon_and_without_dp() -> None:
    quick = settings(quick=True)
    assert {(s.dataset, s.epsilon) for s in quick} == {("mnist", None), ("mnist", ANCHOR_EPSILON)}
    assert len({s.hyper.rounds for s in quick}) == 1
