"""Dense value codecs: raw, float16 and int8 linear quantisation.

``int8`` is symmetric: each block of ``block`` values (0: the whole vector) gets one
scale ``s = max|x| / 127`` (rounded up, so no value is clipped) and every value becomes
``q = round(x / s)`` in ``[-127, 127]``. With nearest rounding the error is at most
``s / 2``; with ``round=stochastic`` it is below ``s`` and unbiased.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from fedlearn.core.codecs.base import (
    FloatVector,
    ValueCodec,
    block_count,
    block_param,
    check_finite,
    reduce_blocks,
    reject,
    scale_blocks,
    scale_dtype,
)
from fedlearn.errors import ConfigError

__all__ = ["Float16Values", "Int8Values", "RawValues"]

_FLOAT16_MAX = float(np.finfo(np.float16).max)
_LEVELS = 127


def _little(dtype: np.dtype[np.floating]) -> np.dtype[np.floating]:
    return dtype.newbyteorder("<")


@dataclass(frozen=True, slots=True)
class RawValues(ValueCodec):
    """Values as they are, in the vector's own dtype (lossless)."""

    name: ClassVar[str] = "raw"

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> RawValues:
        if params:
            raise ConfigError(f"codec 'raw' takes no parameters, got {sorted(params)}")
        return cls()

    def encoded_nbytes(self, count: int, dtype: np.dtype[np.floating]) -> int:
        return count * dtype.itemsize

    def encode(self, values: FloatVector, *, rng: np.random.Generator | None) -> bytes:
        return values.astype(_little(values.dtype), copy=False).tobytes()

    def decode(self, data: memoryview, *, count: int, dtype: np.dtype[np.floating]) -> FloatVector:
        out = np.frombuffer(data, dtype=_little(dtype), count=count).astype(dtype)
        check_finite(out, "raw values")
        return out


@dataclass(frozen=True, slots=True)
class Float16Values(ValueCodec):
    """Values rounded to float16; magnitudes above 65504 saturate instead of overflowing."""

    name: ClassVar[str] = "float16"

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> Float16Values:
        if params:
            raise ConfigError(f"codec 'float16' takes no parameters, got {sorted(params)}")
        return cls()

    def encoded_nbytes(self, count: int, dtype: np.dtype[np.floating]) -> int:
        return 2 * count

    def encode(self, values: FloatVector, *, rng: np.random.Generator | None) -> bytes:
        clipped = np.clip(values, -_FLOAT16_MAX, _FLOAT16_MAX)
        return clipped.astype("<f2").tobytes()

    def decode(self, data: memoryview, *, count: int, dtype: np.dtype[np.floating]) -> FloatVector:
        out = np.frombuffer(data, dtype="<f2", count=count).astype(dtype)
        check_finite(out, "float16 values")  # after widening: a float16 inf stays inf
        return out


def _int8_scales(values: FloatVector, block: int) -> FloatVector:
    """``max|x| / 127`` per block in the scale dtype, rounded up where rounding lost."""
    sdt = scale_dtype(values.dtype)
    peak = reduce_blocks(np.abs(values).astype(sdt, copy=False), block, np.max)
    if peak.size and float(peak.max()) > float(np.finfo(values.dtype).max) / 2:
        raise ValueError("int8 cannot quantise values above half the dtype's maximum")
    scales = (peak / _LEVELS).astype(sdt)
    short = scales * _LEVELS < peak
    scales[short] = np.nextafter(scales[short], np.inf)
    return scales


@dataclass(frozen=True, slots=True)
class Int8Values(ValueCodec):
    """Symmetric int8 codes with one scale per block (``block=0``: per vector)."""

    name: ClassVar[str] = "int8"
    block: int = 0
    stochastic: bool = False

    def needs_rng(self) -> bool:
        return self.stochastic

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> Int8Values:
        block = block_param("int8", params, frozenset({"block", "round"}))
        rounding = params.get("round", "nearest")
        if rounding not in {"nearest", "stochastic"}:
            raise ConfigError(f"int8 round must be 'nearest' or 'stochastic', got {rounding!r}")
        return cls(block=block, stochastic=rounding == "stochastic")

    def params(self) -> dict[str, str]:
        out = {"block": str(self.block)} if self.block else {}
        if self.stochastic:
            out["round"] = "stochastic"
        return out

    def encoded_nbytes(self, count: int, dtype: np.dtype[np.floating]) -> int:
        return block_count(count, self.block) * scale_dtype(dtype).itemsize + count

    def encode(self, values: FloatVector, *, rng: np.random.Generator | None) -> bytes:
        scales = _int8_scales(values, self.block)
        divisors = np.where(scales > 0, scales, 1).astype(scales.dtype)
        ratio = scale_blocks(values, divisors, self.block, divide=True)
        if self.stochastic:
            if rng is None:
                raise ValueError("int8 with round=stochastic needs an rng")
            ratio += rng.random(ratio.size, dtype=ratio.dtype)
            np.floor(ratio, out=ratio)
        else:
            np.rint(ratio, out=ratio)
        np.clip(ratio, -_LEVELS, _LEVELS, out=ratio)
        return scales.tobytes() + ratio.astype(np.int8).tobytes()

    def decode(self, data: memoryview, *, count: int, dtype: np.dtype[np.floating]) -> FloatVector:
        sdt = scale_dtype(dtype)
        blocks = block_count(count, self.block)
        scales = np.frombuffer(data, dtype=sdt, count=blocks)
        if not (np.isfinite(scales).all() and (scales >= 0).all()):
            raise reject("int8 scales must be finite and >= 0", reason="non_finite")
        codes = np.frombuffer(data, dtype=np.int8, count=count, offset=blocks * sdt.itemsize)
        if count and int(codes.min()) < -_LEVELS:
            raise reject("int8 codes must lie in [-127, 127]")
        with np.errstate(over="ignore"):  # an overflow is caught as non-finite below
            out = scale_blocks(codes, scales.astype(sdt.newbyteorder("=")), self.block)
            out = out.astype(dtype, copy=False)
        check_finite(out, "int8 values")
        return out
