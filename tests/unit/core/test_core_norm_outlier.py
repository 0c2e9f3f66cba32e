import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedlearn.core.validation import check_norm_outlier
from fedlearn.errors import UpdateRejectedError

norms = st.floats(min_value=0.0, max_value=1e6, allow_nan=False)


def _is_outlier_reference(norm, accepted, max_ratio, min_accepted):
    """Obviously-correct reference: sort, take the middle, compare."""
    if max_ratio is None or len(accepted) < max(min_accepted, 1):
        return False
    ordered = sorted(accepted)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return norm > max_ratio * median


def test_norm_far_above_the_median_is_rejected_as_norm_outlier():
    with pytest.raises(UpdateRejectedError) as info:
        check_norm_outlier(100.0, [1.0, 2.0, 3.0], max_ratio=10.0)
    assert info.value.reason == "norm_outlier"
    assert "median" in str(info.value)


def test_norm_at_the_limit_is_accepted():
    check_norm_outlier(20.0, [1.0, 2.0, 3.0], max_ratio=10.0)


def test_nothing_is_checked_without_a_ratio():
    check_norm_outlier(1e30, [1.0, 1.0, 1.0, 1.0], max_ratio=None)


def test_nothing_is_checked_before_min_accepted_updates():
    check_norm_outlier(1e6, [1.0, 1.0], max_ratio=2.0)
    check_norm_outlier(1e6, [1.0, 1.0], max_ratio=2.0, min_accepted=3)
    with pytest.raises(UpdateRejectedError):
        check_norm_outlier(1e6, [1.0, 1.0], max_ratio=2.0, min_accepted=2)


def test_min_accepted_of_zero_still_needs_one_norm_for_a_median():
    check_norm_outlier(1e6, [], max_ratio=2.0, min_accepted=0)


@given(
    norm=norms,
    accepted=st.lists(norms, max_size=12),
    max_ratio=st.none() | st.floats(min_value=0.1, max_value=100.0),
    min_accepted=st.integers(min_value=0, max_value=6),
)
def test_check_norm_outlier_agrees_with_a_sorted_median_reference(
    norm, accepted, max_ratio, min_accepted
):
    expected = _is_outlier_reference(norm, accepted, max_ratio, min_accepted)
    try:
        check_norm_outlier(norm, accepted, max_ratio=max_ratio, min_accepted=min_accepted)
    except UpdateRejectedError as exc:
        assert expected, "rejected although the reference accepts"
        assert exc.reason == "norm_outlier"
    else:
        assert not expected, "accepted although the reference rejects"


@given(accepted=st.lists(norms, min_size=3, max_size=12))
def test_the_median_itself_is_never_an_outlier_for_ratio_one(accepted):
    check_norm_outlier(statistics.median(accepted), accepted, max_ratio=1.0)
