"""Read and write IDX files, the format MNIST and Fashion-MNIST ship in.

An IDX file is a 4-byte magic number ``0x00 0x00 <dtype code> <ndim>``, then
``ndim`` big-endian unsigned 32-bit dimension sizes, then the values in C order,
big-endian.  Files may be gzip-compressed; :func:`read_idx` looks at the first
two bytes rather than the file name to decide.
"""

from __future__ import annotations

import gzip
import io
import logging
import math
import zlib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import NoReturn

import numpy as np
import numpy.typing as npt

from fedlearn.errors import DataError

__all__ = ["IDX_DTYPES", "read_idx", "read_idx_header", "read_idx_rows", "write_idx"]

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
_BUFFER_BYTES = 1 << 20


def read_idx(path: Path) -> npt.NDArray[np.generic]:
    """Read one IDX file (raw or gzip-compressed) into a native-endian array.

    Raises :class:`~fedlearn.errors.DataError` naming the file when it cannot be
    read, is not valid gzip, has a bad magic number or an unknown type code, or
    when its payload is shorter or longer than its dimensions say.

    The file is read as a stream straight into the result, so reading takes the
    result's memory and a small buffer, not the file's bytes besides.
    """
    with _IdxReader(Path(path)) as reader:
        return reader.read_all()


def read_idx_rows(path: Path, rows: npt.ArrayLike) -> npt.NDArray[np.generic]:
    """Rows ``rows`` of one IDX file: the entries at these indices of its first dimension.

    ``rows`` may come in any order and repeat; the result (a fresh native-endian array
    of shape ``[len(rows), *dims[1:]]``) follows it. The file is streamed through a
    buffer of about 1 MiB and only the rows asked for are kept, so one client's share
    of a data set costs that share's memory, not the whole file's. The whole file is
    still read, and checked as :func:`read_idx` checks it; a row outside the first
    dimension raises ``DataError`` too.
    """
    with _IdxReader(Path(path)) as reader:
        return reader.read_rows(rows)


def read_idx_header(path: Path) -> tuple[np.dtype[np.generic], tuple[int, ...]]:
    """The native-endian dtype and the dimensions an IDX file declares (its payload is
    neither read nor checked)."""
    with _IdxReader(Path(path)) as reader:
        return reader.dtype.newbyteorder("="), reader.dims


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


class _IdxReader:
    """One IDX file opened as a stream (decompressed on the fly if it is gzip), its
    header parsed; the payload is then read once, whole or by rows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._file: io.BufferedIOBase = path.open("rb")
        except OSError as exc:
            raise DataError(f"{path}: cannot read IDX file: {exc}") from exc
        self._stream: io.BufferedIOBase = self._file
        self._gzip = False
        try:
            self._gzip = self._read(2) == _GZIP_MAGIC
            self._file.seek(0)
            if self._gzip:
                self._stream = gzip.GzipFile(fileobj=self._file, mode="rb")
            self.dtype, self.dims = self._header()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> _IdxReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._stream is not self._file:
            self._stream.close()
        self._file.close()

    @property
    def row_shape(self) -> tuple[int, ...]:
        return self.dims[1:]

    @property
    def payload_bytes(self) -> int:
        return math.prod(self.dims) * self.dtype.itemsize

    def read_all(self) -> npt.NDArray[np.generic]:
        out = np.empty(self.payload_bytes, dtype=np.uint8)
        for start in range(0, len(out), _BUFFER_BYTES):
            self._fill(out[start : start + _BUFFER_BYTES], done=start)
        self._check_end()
        return _native(out, self.dtype).reshape(self.dims)

    def read_rows(self, rows: npt.ArrayLike) -> npt.NDArray[np.generic]:
        wanted = _check_rows(rows, self.dims[0], self.path)
        order = np.argsort(wanted, kind="stable")
        ordered = wanted[order]
        row_bytes = math.prod(self.row_shape) * self.dtype.itemsize
        out = np.empty((len(wanted), *self.row_shape), dtype=self.dtype)
        per_block = max(1, _BUFFER_BYTES // max(row_bytes, 1))
        buffer = np.empty(per_block * row_bytes, dtype=np.uint8)
        for first in range(0, self.dims[0], per_block):
            count = min(per_block, self.dims[0] - first)
            block = buffer[: count * row_bytes]
            self._fill(block, done=first * row_bytes)
            lo, hi = np.searchsorted(ordered, (first, first + count))
            if hi > lo:  # the wanted rows in this block, in the order asked for
                rows_here = block.view(self.dtype).reshape(count, *self.row_shape)
                out[order[lo:hi]] = rows_here[ordered[lo:hi] - first]
        self._check_end()
        return _native(out.reshape(-1).view(np.uint8), self.dtype).reshape(out.shape)

    def _fill(self, target: npt.NDArray[np.uint8], *, done: int) -> None:
        """Fill ``target`` with the next payload bytes (``done`` of them came before)."""
        view, filled = target.data, 0
        while filled < len(view):
            got = self._readinto(view[filled:])
            if got == 0:
                self._payload_error("truncated", done + filled)
            filled += got

    def _header(self) -> tuple[np.dtype[np.generic], tuple[int, ...]]:
        path = self.path
        magic = self._read(4)
        if len(magic) < 4:
            raise DataError(f"{path}: not an IDX file (only {len(magic)} bytes, no magic number)")
        zero, code, ndim = int.from_bytes(magic[:2], "big"), magic[2], magic[3]
        if zero != 0:
            raise DataError(
                f"{path}: bad IDX magic number 0x{magic.hex()} (must start with 0x0000)"
            )
        if code not in IDX_DTYPES:
            known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
            raise DataError(f"{path}: unknown IDX type code 0x{code:02X} (known: {known})")
        if ndim == 0:
            raise DataError(f"{path}: IDX magic number says 0 dimensions")
        sizes = self._read(4 * ndim)
        if len(sizes) < 4 * ndim:
            raise DataError(
                f"{path}: truncated IDX header ({4 + len(sizes)} bytes, {ndim} dimensions "
                f"need {4 + 4 * ndim})"
            )
        dims = tuple(int.from_bytes(sizes[4 * i : 4 * i + 4], "big") for i in range(ndim))
        return IDX_DTYPES[code], dims

    def _check_end(self) -> None:
        scratch = memoryview(bytearray(1 << 16))
        extra = 0
        while got := self._readinto(scratch):
            extra += got
        if extra:
            self._payload_error("trailing bytes after", self.payload_bytes + extra)
        logger.debug("read %s: shape %s, dtype %s", self.path, self.dims, self.dtype.name)

    def _payload_error(self, what: str, actual: int) -> NoReturn:
        raise DataError(
            f"{self.path}: {what} IDX payload: dimensions {self.dims} of {self.dtype.name} "
            f"need {self.payload_bytes} bytes, file has {actual}"
        )

    def _read(self, size: int) -> bytes:
        data = bytearray(size)
        view = memoryview(data)
        filled = 0
        while filled < size and (got := self._readinto(view[filled:])):
            filled += got
        return bytes(data[:filled])

    def _readinto(self, view: memoryview) -> int:
        try:
            return self._stream.readinto(view)
        except (OSError, EOFError, zlib.error) as exc:
            if self._gzip:
                raise DataError(f"{self.path}: corrupt gzip data: {exc}") from exc
            raise DataError(f"{self.path}: cannot read IDX file: {exc}") from exc


def _check_rows(rows: npt.ArrayLike, count: int, path: Path) -> npt.NDArray[np.intp]:
    wanted = np.asarray(rows)
    if wanted.ndim != 1 or not (wanted.size == 0 or np.issubdtype(wanted.dtype, np.integer)):
        raise DataError(
            f"{path}: rows must be a 1-d array of integers, got {wanted.dtype} {list(wanted.shape)}"
        )
    if wanted.size and (wanted.min() < 0 or wanted.max() >= count):
        raise DataError(
            f"{path}: rows must lie in [0, {count}), got [{wanted.min()}, {wanted.max()}]"
        )
    return wanted.astype(np.intp, copy=False)


def _native(raw: npt.NDArray[np.uint8], dtype: np.dtype[np.generic]) -> npt.NDArray[np.generic]:
    """The bytes ``raw``, values of ``dtype``, as a native-endian array (swapped in place)."""
    values = raw.view(dtype)
    if not dtype.isnative:
        values.byteswap(inplace=True)
    return values.view(dtype.newbyteorder("="))


def _type_code(dtype: np.dtype[np.generic]) -> int | None:
    for code, idx_dtype in IDX_DTYPES.items():
        if dtype.newbyteorder("=") == idx_dtype.newbyteorder("="):
            return code
    return None
