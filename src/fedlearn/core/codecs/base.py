"""Shared pieces of the update codecs: the value-codec contract, dtypes, block helpers.

A *value codec* turns a run of float values (the whole update, or the values that a
sparsifier kept) into bytes and back. Its encoded size must follow from the number of
values alone (:meth:`ValueCodec.encoded_nbytes`), so that a decoder can check a
payload's length before it allocates anything.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from fedlearn.errors import ConfigError, UpdateRejectedError

__all__ = [
    "DTYPE_CODES",
    "MAX_ELEMENTS",
    "FloatVector",
    "ValueCodec",
    "block_count",
    "block_param",
    "leb128",
    "check_finite",
    "reduce_blocks",
    "reject",
    "scale_blocks",
    "scale_dtype",
]

FloatVector = npt.NDArray[np.floating]

MAX_ELEMENTS = (1 << 31) - 1
"""The longest vector a payload may describe (keeps every index sum inside int64)."""

DTYPE_CODES: Mapping[str, int] = {"float16": 1, "float32": 2, "float64": 3}
"""Wire codes of the vector dtypes a payload may carry."""


def reject(message: str, *, reason: str = "malformed_payload") -> UpdateRejectedError:
    """The error every decoder raises for a payload it cannot trust."""
    return UpdateRejectedError(reason, message)


def block_param(codec: str, params: Mapping[str, str], allowed: frozenset[str]) -> int:
    """Check ``params`` keys against ``allowed`` and read ``block`` (default 0)."""
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ConfigError(f"codec {codec!r} has no parameter(s) {unknown}")
    text = params.get("block", "0")
    if not text.isascii() or not text.isdigit() or len(text) > 10:
        raise ConfigError(f"{codec} block must be a whole number, got {text!r}")
    block = int(text)
    if block > MAX_ELEMENTS:
        raise ConfigError(f"{codec} block must be at most {MAX_ELEMENTS}, got {block}")
    return block


def check_finite(values: FloatVector, what: str) -> None:
    """Reject decoded ``values`` that hold a NaN or an infinity."""
    if not np.isfinite(values).all():
        raise reject(f"{what} holds NaN or infinite values", reason="non_finite")


def scale_dtype(dtype: np.dtype[np.floating]) -> np.dtype[np.floating]:
    """Scales travel as float64 for float64 vectors and as float32 otherwise."""
    return np.dtype("<f8") if dtype == np.float64 else np.dtype("<f4")


def block_count(count: int, block: int) -> int:
    """Blocks of ``block`` values (0: one block for everything) covering ``count``."""
    if count == 0:
        return 0
    return 1 if block == 0 else -(-count // block)


def reduce_blocks(
    values: FloatVector, block: int, reducer: Callable[..., FloatVector]
) -> FloatVector:
    """``reducer(values_of_block, axis=-1)`` for every block, as one vector."""
    n = values.size
    if n == 0:
        return values[:0]
    b = block or n
    full = (n // b) * b
    parts = [reducer(values[:full].reshape(-1, b), axis=-1)] if full else []
    if full < n:
        parts.append(reducer(values[full:].reshape(1, -1), axis=-1))
    return np.concatenate(parts)


def scale_blocks(
    values: npt.NDArray[np.generic],
    factors: FloatVector,
    block: int,
    *,
    divide: bool = False,
) -> FloatVector:
    """Each value times (or divided by) its block's factor, in the factors' dtype."""
    n = values.size
    out: FloatVector = np.empty(n, dtype=factors.dtype)
    if n == 0:
        return out
    op = np.divide if divide else np.multiply
    b = block or n
    full = (n // b) * b
    if full:
        op(values[:full].reshape(-1, b), factors[: full // b, None], out=out[:full].reshape(-1, b))
    if full < n:
        op(values[full:], factors[-1], out=out[full:])
    return out


class ValueCodec(ABC):
    """Turns ``count`` float values into exactly :meth:`encoded_nbytes` bytes and back.

    Implementations are frozen dataclasses whose fields are their parameters;
    :meth:`params` lists the ones that differ from the defaults, in the order they
    are written in a codec name (``int8:block=256,round=stochastic``).
    """

    __slots__ = ()

    name: ClassVar[str]

    @classmethod
    @abstractmethod
    def from_params(cls, params: Mapping[str, str]) -> ValueCodec:
        """Build the codec from ``key=value`` text; raise ``ConfigError`` if invalid."""

    def params(self) -> dict[str, str]:
        """Parameters that differ from the defaults, as text."""
        return {}

    def needs_rng(self) -> bool:
        """Whether :meth:`encode` draws random numbers (stochastic rounding)."""
        return False

    @abstractmethod
    def encoded_nbytes(self, count: int, dtype: np.dtype[np.floating]) -> int:
        """Exact size of the encoding of ``count`` values of ``dtype``."""

    @abstractmethod
    def encode(self, values: FloatVector, *, rng: np.random.Generator | None) -> bytes:
        """Encode finite ``values``; ``rng`` is given when :meth:`needs_rng`."""

    @abstractmethod
    def decode(self, data: memoryview, *, count: int, dtype: np.dtype[np.floating]) -> FloatVector:
        """Decode ``count`` values from exactly ``encoded_nbytes(count, dtype)`` bytes.

        Raise :class:`~fedlearn.errors.UpdateRejectedError` for content that no
        encoder writes (a NaN scale, an out-of-range code, set padding bits).
        """


def leb128(value: int) -> bytes:
    """``value`` (>= 0) as an unsigned LEB128 varint, as protobuf writes lengths."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
