"""Scaled sign quantisation: one bit per value plus one scale per block.

Alone (``sign``) this is the compressor of EF-signSGD: every value becomes
``+s`` or ``-s`` with ``s`` the mean magnitude of its block. After top-k
(``topk:0.01+sign``) it is the ternary code of sparse ternary compression (STC,
Sattler et al. 2019): the vector becomes ``{-s, 0, +s}``, with the positions of the
non-zeros index-coded. Both are meant to run with error feedback, which keeps
what the sign dropped and sends it later.
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

__all__ = ["SignValues"]


@dataclass(frozen=True, slots=True)
class SignValues(ValueCodec):
    """``sign(x) * mean|x|`` per block of ``block`` values (0: per vector); zero counts as +."""

    name: ClassVar[str] = "sign"
    block: int = 0

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> SignValues:
        return cls(block=block_param("sign", params, frozenset({"block"})))

    def params(self) -> dict[str, str]:
        return {"block": str(self.block)} if self.block else {}

    def encoded_nbytes(self, count: int, dtype: np.dtype[np.floating]) -> int:
        return block_count(count, self.block) * scale_dtype(dtype).itemsize + (count + 7) // 8

    def encode(self, values: FloatVector, *, rng: np.random.Generator | None) -> bytes:
        sdt = scale_dtype(values.dtype)
        scales = reduce_blocks(np.abs(values).astype(sdt, copy=False), self.block, np.mean)
        bits = np.packbits(values < 0, bitorder="little")
        return scales.astype(sdt).tobytes() + bits.tobytes()

    def decode(self, data: memoryview, *, count: int, dtype: np.dtype[np.floating]) -> FloatVector:
        sdt = scale_dtype(dtype)
        blocks = block_count(count, self.block)
        scales = np.frombuffer(data, dtype=sdt, count=blocks)
        if not (np.isfinite(scales).all() and (scales >= 0).all()):
            raise reject("sign scales must be finite and >= 0", reason="non_finite")
        packed = np.frombuffer(data, dtype=np.uint8, offset=blocks * sdt.itemsize)
        if count % 8 and int(packed[-1]) >> (count % 8):
            raise reject("sign bits past the last value must be zero")
        negative = np.unpackbits(packed, count=count, bitorder="little")
        signs = 1 - 2 * negative.astype(np.int8)
        with np.errstate(over="ignore"):  # a float16 overflow is caught below
            out = scale_blocks(signs, scales.astype(sdt.newbyteorder("=")), self.block)
            out = out.astype(dtype, copy=False)
        check_finite(out, "sign values")
        return out
