"""read_idx / write_idx: round trips, byte layout and the errors for bad files."""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedlearn.data.idx import read_idx, write_idx
from fedlearn.errors import DataError

IDX_DTYPES = ["u1", "i1", ">i2", "<i2", ">i4", "<i4", ">f4", "<f4", ">f8", "<f8"]


@settings(max_examples=60, deadline=None)
@given(
    array=st.sampled_from(IDX_DTYPES).flatmap(
        lambda dt: hnp.arrays(
            np.dtype(dt), hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=6)
        )
    ),
    compress=st.booleans(),
)
def test_write_then_read_idx_gives_back_the_same_array(array: np.ndarray, compress: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.idx"
        write_idx(path, array, compress=compress)
        result = read_idx(path)
    assert result.shape == array.shape
    assert result.dtype == array.dtype.newbyteorder("=")
    assert result.dtype.isnative
    assert result.tobytes() == array.astype(result.dtype).tobytes()


def test_read_idx_decodes_big_endian_header_and_values(tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(
        bytes([0, 0, 0x0B, 2])
        + (1).to_bytes(4, "big")
        + (2).to_bytes(4, "big")
        + b"\x01\x02\xff\xfe"
    )
    result = read_idx(path)
    assert result.tolist() == [[258, -2]]
    assert result.dtype == np.int16


def test_read_idx_returns_a_writable_array(tmp_path: Path) -> None:
    write_idx(tmp_path / "x", np.arange(6, dtype=np.uint8).reshape(2, 3))
    result = read_idx(tmp_path / "x")
    result[0, 0] = 9
    assert result[0, 0] == 9


def test_write_idx_compressed_output_is_gzip_and_reproducible(tmp_path: Path) -> None:
    array = np.arange(100, dtype=np.uint8).reshape(4, 25)
    write_idx(tmp_path / "a.gz", array, compress=True)
    write_idx(tmp_path / "b.gz", array, compress=True)
    assert (tmp_path / "a.gz").read_bytes()[:2] == b"\x1f\x8b"
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()


def test_read_idx_detects_gzip_by_magic_bytes_not_file_name(tmp_path: Path) -> None:
    array = np.arange(12, dtype=np.int32).reshape(3, 4)
    write_idx(tmp_path / "gzipped-without-suffix", array, compress=True)
    write_idx(tmp_path / "raw-with-suffix.gz", array, compress=False)
    np.testing.assert_array_equal(read_idx(tmp_path / "gzipped-without-suffix"), array)
    np.testing.assert_array_equal(read_idx(tmp_path / "raw-with-suffix.gz"), array)


def _write(path: Path, data: bytes, *, compress: bool) -> Path:
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_rejects_bad_magic(tmp_path: Path, compress: bool) -> None:
    path = _write(tmp_path / "bad", b"\x12\x34\x08\x01" + (0).to_bytes(4, "big"), compress=compress)
    with pytest.raises(DataError, match=r"bad IDX magic number 0x12340801") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_rejects_unknown_type_code(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad", bytes([0, 0, 0x0A, 1]) + (0).to_bytes(4, "big"), compress=False)
    with pytest.raises(DataError, match=r"unknown IDX type code 0x0A"):
        read_idx(path)


def test_read_idx_rejects_zero_dimensions(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad", bytes([0, 0, 0x08, 0]) + b"\x01", compress=False)
    with pytest.raises(DataError, match="0 dimensions"):
        read_idx(path)


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_rejects_truncated_payload(tmp_path: Path, compress: bool) -> None:
    header = bytes([0, 0, 0x08, 3]) + b"".join(d.to_bytes(4, "big") for d in (2, 28, 28))
    path = _write(tmp_path / "short", header + bytes(2 * 28 * 28 - 1), compress=compress)
    with pytest.raises(DataError, match=r"truncated IDX payload.*need 1568 bytes, file has 1567"):
        read_idx(path)


def test_read_idx_rejects_trailing_bytes(tmp_path: Path) -> None:
    header = bytes([0, 0, 0x0C, 1]) + (2).to_bytes(4, "big")
    path = _write(tmp_path / "long", header + bytes(9), compress=False)
    with pytest.raises(DataError, match="trailing bytes"):
        read_idx(path)


@pytest.mark.parametrize("data", [b"", b"\x00\x00", bytes([0, 0, 0x08, 3, 0, 0, 0, 1])])
def test_read_idx_rejects_truncated_header(tmp_path: Path, data: bytes) -> None:
    path = _write(tmp_path / "tiny", data, compress=False)
    with pytest.raises(DataError, match=str(path)):
        read_idx(path)


def test_read_idx_rejects_corrupt_gzip(tmp_path: Path) -> None:
    good = gzip.compress(bytes([0, 0, 0x08, 1]) + (100).to_bytes(4, "big") + bytes(100))
    path = _write(tmp_path / "cut.gz", good[: len(good) // 2], compress=False)
    with pytest.raises(DataError, match="corrupt gzip"):
        read_idx(path)


def test_read_idx_reports_a_missing_file_as_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read IDX file"):
        read_idx(tmp_path / "nope")


@pytest.mark.parametrize("dtype", [np.uint16, np.int64, np.bool_, np.float16])
def test_write_idx_rejects_dtypes_idx_cannot_hold(tmp_path: Path, dtype: type) -> None:
    with pytest.raises(DataError, match="cannot be stored"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=dtype))


def test_write_idx_rejects_a_scalar(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="dimensions"):
        write_idx(tmp_path / "x", np.uint8(3))
