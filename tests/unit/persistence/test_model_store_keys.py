"""``normalize_key``: every key it accepts stays inside the store."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedlearn.errors import StorageError
from fedlearn.persistence.model_store import normalize_key

parts = st.sampled_from(["a", "b", ".", "..", "", "rounds", "0001", "x.flw", "\\", "..."])
keys = st.lists(parts, max_size=6).map("/".join) | st.text(max_size=20)


@given(keys)
def test_accepted_keys_are_clean_relative_paths(key: str) -> None:
    try:
        normalized = normalize_key(key)
    except StorageError:
        return
    path = PurePosixPath(normalized)
    assert not path.is_absolute()
    assert ".." not in path.parts
    assert path.parts
    assert normalize_key(normalized) == normalized


@pytest.mark.parametrize(
    ("key", "expected"),
    [("a/b.flw", "a/b.flw"), ("a//b.flw", "a/b.flw"), ("./a/./b.flw", "a/b.flw"), ("...", "...")],
)
def test_harmless_spellings_are_normalized(key: str, expected: str) -> None:
    assert normalize_key(key) == expected
