"""Read and write IDX files, the format MNIST and Fashion-MNIST ship in.

An IDX file is a 4-byte magic number ``0x00 0x00 <dtype code> <ndim>``, then
``ndim`` big-endian unsigned 32-bit dimension sizes, then the values in C order,
big-endian.  Files may be gzip-compressed; :func:`read_idx` looks at the first
two bytes rather than the file name to decide.
"""

from __future__ import annotations

import gzip
import logging
import math
import zlib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from fedlearn.errors import DataError

__all__ = ["IDX_DTYPES", "read_idx", "write_idx"]

logger = logging.getLogger(__name__)

IDX_DTYPES: Mapping[int, np.dtype[np.generic]] = MappingProxyType(
    {
        0x08: np.dtype(">u1"),
        0x09: np.dtype(">i1"),
        0x0B: np.dtype(">i2"),
        0x0C: np.dtype(">i4"),
        0x0D: np.dtype(">f4"),
        0x0E: np.dtype(">f8"),
    }
)
"""IDX type code -> the big-endian numpy dtype stored on disk."""

_GZIP_MAGIC = b"\x1f\x8b"
_MAX_DIM = 2**32 - 1


def read_idx(path: Path) -> npt.NDArray[np.generic]:
    """Read one IDX file (raw or gzip-compressed) into a native-endian array.

    Raises :class:`~fedlearn.errors.DataError` naming the file when it cannot be
    read, is not valid gzip, has a bad magic number or an unknown type code, or
    when its payload is shorter or longer than its dimensions say.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(f"{path}: not an IDX file (only {len(data)} bytes, no magic number)")
    zero, code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0:
        raise DataError(f"{path}: bad IDX magic number 0x{data[:4].hex()} (must start with 0x0000)")
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise DataError(f"{path}: unknown IDX type code 0x{code:02X} (known: {known})")
    if ndim == 0:
        raise DataError(f"{path}: IDX magic number says 0 dimensions")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(
            f"{path}: truncated IDX header ({len(data)} bytes, {ndim} dimensions need {header_len})"
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = IDX_DTYPES[code]
    expected = math.prod(dims) * dtype.itemsize
    actual = len(data) - header_len
    if actual != expected:
        what = "truncated" if actual < expected else "trailing bytes after"
        raise DataError(
            f"{path}: {what} IDX payload: dimensions {dims} of {dtype.name} need "
            f"{expected} bytes, file has {actual}"
        )
    values = np.frombuffer(data, dtype=dtype, offset=header_len)
    logger.debug("read %s: shape %s, dtype %s", path, dims, dtype.name)
    return values.astype(dtype.newbyteorder("="), copy=True).reshape(dims)


def write_idx(path: Path, array: npt.ArrayLike, *, compress: bool = False) -> None:
    """Write ``array`` to ``path`` as an IDX file, gzip-compressed if ``compress``.

    The array's dtype must be one IDX can hold (uint8, int8, int16, int32, float32
    or float64, either byte order); anything else raises ``DataError``.  Compressed
    output carries no timestamp, so the same array always gives the same bytes.
    """
    path = Path(path)
    arr = np.asarray(array)
    code = _type_code(arr.dtype)
    if code is None:
        raise DataError(f"{path}: dtype {arr.dtype} cannot be stored in an IDX file")
    if not 1 <= arr.ndim <= 255:
        raise DataError(f"{path}: IDX needs 1 to 255 dimensions, array has {arr.ndim}")
    if any(d > _MAX_DIM for d in arr.shape):
        raise DataError(f"{path}: dimension larger than {_MAX_DIM} in shape {arr.shape}")
    header = bytes([0, 0, code, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    payload = np.ascontiguousarray(arr, dtype=IDX_DTYPES[code]).tobytes()
    data = header + payload
    if compress:
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read IDX file: {exc}") from exc
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: corrupt gzip data: {exc}") from exc


def _type_code(dtype: np.dtype[np.generic]) -> int | None:
    for code, idx_dtype in IDX_DTYPES.items():
        if dtype.newbyteorder("=") == idx_dtype.newbyteorder("="):
            return code
    return None
