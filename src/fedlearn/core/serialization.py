"""A compact, zero-copy wire format for model weights.

Layout (all integers little-endian)::

    b"FLW1" | u32 header length | JSON header | zero padding to 8 bytes | tensor data

The header lists ``[name, dtype, shape]`` for each tensor in model order; the
tensor data follows back to back, each tensor C-contiguous and little-endian.
Decoding returns read-only numpy views into the payload, so a 6.6 MB update is
never copied on its way to the aggregator.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedlearn.core.types import TensorSpec, Weights
from fedlearn.errors import UpdateRejectedError

__all__ = ["DecodedWeights", "decode_weights", "encode_weights", "spec_of"]

_MAGIC = b"FLW1"
_PREFIX = struct.Struct("<4sI")
_MAX_HEADER = 1 << 20
_ALLOWED_DTYPES = frozenset({"float16", "float32", "float64", "int64", "int32", "uint8"})


@dataclass(frozen=True, slots=True)
class DecodedWeights:
    """Tensors decoded from a payload, plus the flat view of the data section."""

    specs: tuple[TensorSpec, ...]
    tensors: dict[str, npt.NDArray[np.generic]]
    data: memoryview

    def flat(self, dtype: str = "float32") -> npt.NDArray[np.generic]:
        """All tensors as one vector; valid only when every tensor has ``dtype``."""
        return np.frombuffer(self.data, dtype=np.dtype(dtype).newbyteorder("<"))


def spec_of(weights: Weights) -> tuple[TensorSpec, ...]:
    return tuple(
        TensorSpec(name=name, shape=tuple(int(d) for d in arr.shape), dtype=arr.dtype.name)
        for name, arr in weights.items()
    )


def encode_weights(weights: Weights) -> bytes:
    """Serialize ``weights`` (any mapping of numpy arrays) into one payload."""
    header = json.dumps(
        [[s.name, s.dtype, list(s.shape)] for s in spec_of(weights)], separators=(",", ":")
    ).encode()
    head = _PREFIX.pack(_MAGIC, len(header)) + header
    head += b"\0" * (-len(head) % 8)
    # Byte views of the (little-endian, C-contiguous) tensors, joined: one copy of the
    # data where ``tobytes`` per tensor and then the join made two.
    parts: list[bytes | memoryview] = [head]
    for arr in weights.values():
        little = np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("<"), copy=False))
        parts.append(little.reshape(-1).view(np.uint8).data)
    return b"".join(parts)


def _reject(message: str) -> UpdateRejectedError:
    return UpdateRejectedError("malformed_payload", message)


def _parse_header(payload: memoryview) -> tuple[tuple[TensorSpec, ...], int]:
    if len(payload) < _PREFIX.size:
        raise _reject(f"payload of {len(payload)} bytes is too short for a weights header")
    magic, header_len = _PREFIX.unpack_from(payload)
    if magic != _MAGIC:
        raise _reject("payload does not start with the FLW1 weights magic")
    if header_len > _MAX_HEADER or _PREFIX.size + header_len > len(payload):
        raise _reject(f"weights header length {header_len} exceeds the payload")
    try:
        raw = json.loads(bytes(payload[_PREFIX.size : _PREFIX.size + header_len]))
        specs = tuple(
            TensorSpec(name=str(name), shape=tuple(int(d) for d in shape), dtype=str(dtype))
            for name, dtype, shape in raw
        )
    except (ValueError, TypeError) as exc:
        raise _reject(f"weights header is not valid: {exc}") from exc
    start = _PREFIX.size + header_len
    return specs, start + (-start % 8)


def _check_specs(specs: Sequence[TensorSpec]) -> None:
    for spec in specs:
        if spec.dtype not in _ALLOWED_DTYPES:
            raise _reject(f"tensor {spec.name!r} has unsupported dtype {spec.dtype!r}")
        if any(d < 0 for d in spec.shape):
            raise _reject(f"tensor {spec.name!r} has a negative dimension {spec.shape}")


def decode_weights(payload: bytes | memoryview) -> DecodedWeights:
    """Parse a payload written by :func:`encode_weights`; raise on any inconsistency."""
    view = memoryview(payload).cast("B")
    specs, offset = _parse_header(view)
    _check_specs(specs)
    data_start = offset
    tensors: dict[str, npt.NDArray[np.generic]] = {}
    for spec in specs:
        dtype = np.dtype(spec.dtype).newbyteorder("<")
        count = int(np.prod(spec.shape, dtype=np.int64))
        nbytes = count * dtype.itemsize
        if offset + nbytes > len(view):
            raise _reject(f"payload is truncated inside tensor {spec.name!r}")
        if spec.name in tensors:
            raise _reject(f"tensor {spec.name!r} appears twice")
        arr = np.frombuffer(view, dtype=dtype, count=count, offset=offset)
        tensors[spec.name] = arr.reshape(spec.shape)
        offset += nbytes
    if offset != len(view):
        raise _reject(f"payload has {len(view) - offset} unexpected trailing bytes")
    return DecodedWeights(specs=specs, tensors=tensors, data=view[data_start:])
