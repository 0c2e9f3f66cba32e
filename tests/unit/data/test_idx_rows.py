"""read_idx_rows / read_idx_header: some rows of an IDX file, without reading it whole."""

from __future__ import annotations

import gzip
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedlearn.data import idx
from fedlearn.data.idx import read_idx, read_idx_header, read_idx_rows, write_idx
from fedlearn.errors import DataError

IDX_DTYPES = ["u1", "i1", ">i2", "<i2", ">i4", "<f4", ">f8"]


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 64-byte buffer: every file of these tests is read in many blocks."""
    monkeypatch.setattr(idx, "_BUFFER_BYTES", 64)


@settings(max_examples=60, deadline=None)
@given(
    array=st.sampled_from(IDX_DTYPES).flatmap(
        lambda dt: hnp.arrays(
            np.dtype(dt), hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=9)
        )
    ),
    compress=st.booleans(),
    data=st.data(),
)
def test_read_idx_rows_equals_indexing_the_whole_array(
    array: np.ndarray, compress: bool, data: st.DataObject
) -> None:
    rows = data.draw(st.lists(st.integers(0, len(array) - 1), max_size=12), label="rows")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "a.idx"
        write_idx(path, array, compress=compress)
        for buffer in (7, 1 << 20):  # rows split across blocks, and all in one block
            idx._BUFFER_BYTES = buffer
            try:
                got = read_idx_rows(path, np.array(rows, dtype=np.int64))
            finally:
                idx._BUFFER_BYTES = 1 << 20
            expected = read_idx(path)[rows]
            assert got.dtype == expected.dtype and got.dtype.isnative
            assert got.shape == (len(rows), *array.shape[1:])
            np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("compress", [False, True])
def test_rows_come_in_the_order_asked_for_repeats_included(
    tmp_path: Path, compress: bool, small_blocks: None
) -> None:
    array = np.arange(50 * 28 * 28, dtype=np.uint32).astype(">i4").reshape(50, 28, 28)
    write_idx(tmp_path / "a", array, compress=compress)
    rows = [49, 0, 7, 7, 31, 0]

    got = read_idx_rows(tmp_path / "a", rows)

    np.testing.assert_array_equal(got, array[rows])
    assert got.flags.writeable and got.flags.c_contiguous
    assert read_idx_rows(tmp_path / "a", []).shape == (0, 28, 28)


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_reads_in_blocks_and_gives_the_same_array(
    tmp_path: Path, compress: bool, small_blocks: None
) -> None:
    array = np.random.default_rng(0).integers(0, 256, size=(30, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "a", array, compress=compress)

    np.testing.assert_array_equal(read_idx(tmp_path / "a"), array)


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_rows_keeps_only_the_rows_in_memory(tmp_path: Path, compress: bool) -> None:
    images = np.random.default_rng(1).integers(0, 256, size=(12_000, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "images", images, compress=compress)
    rows = np.arange(0, 12_000, 120)  # 100 rows: 78 KB of a 9.4 MB payload

    tracemalloc.start()
    try:
        got = read_idx_rows(tmp_path / "images", rows)
        _, rows_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        whole = read_idx(tmp_path / "images")
        _, whole_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    np.testing.assert_array_equal(got, whole[rows])
    assert whole_peak >= images.nbytes  # the control: reading it all holds it all
    assert rows_peak < images.nbytes / 4  # the rows and a 1 MiB buffer, not the payload


@pytest.mark.parametrize("rows", [[5], [-1], [0, 5]])
def test_read_idx_rows_rejects_rows_outside_the_first_dimension(tmp_path: Path, rows) -> None:
    write_idx(tmp_path / "a", np.zeros((5, 3), dtype=np.uint8))
    with pytest.raises(DataError, match=r"rows must lie in \[0, 5\)"):
        read_idx_rows(tmp_path / "a", rows)


@pytest.mark.parametrize("rows", [np.zeros((2, 2), dtype=int), np.array([0.0, 1.0])])
def test_read_idx_rows_rejects_rows_that_are_not_a_1d_integer_array(tmp_path: Path, rows) -> None:
    write_idx(tmp_path / "a", np.zeros((5, 3), dtype=np.uint8))
    with pytest.raises(DataError, match="1-d array of integers"):
        read_idx_rows(tmp_path / "a", rows)


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_rows_checks_the_whole_payload_even_for_early_rows(
    tmp_path: Path, compress: bool
) -> None:
    header = bytes([0, 0, 0x08, 3]) + b"".join(d.to_bytes(4, "big") for d in (2, 28, 28))
    payload = bytes(2 * 28 * 28)
    short, long = tmp_path / "short", tmp_path / "long"
    for path, data in ((short, header + payload[:-1]), (long, header + payload + b"\x00")):
        path.write_bytes(gzip.compress(data) if compress else data)

    with pytest.raises(DataError, match=r"truncated IDX payload.*need 1568 bytes, file has 1567"):
        read_idx_rows(short, [0])
    with pytest.raises(DataError, match=r"trailing bytes.*file has 1569"):
        read_idx_rows(long, [0])


def test_read_idx_rows_reports_corrupt_gzip(tmp_path: Path) -> None:
    good = gzip.compress(bytes([0, 0, 0x08, 1]) + (100).to_bytes(4, "big") + bytes(100))
    (tmp_path / "cut.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="corrupt gzip"):
        read_idx_rows(tmp_path / "cut.gz", [0])


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_header_gives_dtype_and_dims_without_reading_the_payload(
    tmp_path: Path, compress: bool
) -> None:
    header = bytes([0, 0, 0x0C, 2]) + (3).to_bytes(4, "big") + (4).to_bytes(4, "big")
    data = header + bytes(5)  # far too short a payload: the header alone is read
    (tmp_path / "a").write_bytes(gzip.compress(data) if compress else data)

    dtype, dims = read_idx_header(tmp_path / "a")

    assert dtype == np.dtype("=i4") and dtype.isnative
    assert dims == (3, 4)
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "a")


def test_read_idx_header_rejects_a_bad_magic_number(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"\x12\x34\x08\x01" + bytes(4))
    with pytest.raises(DataError, match="bad IDX magic"):
        read_idx_header(tmp_path / "a")
