"""The self-describing byte format of a compressed update.

Layout (all integers little-endian)::

    offset  size  field
         0     4  magic b"FLC1"
         4     1  format version (1)
         5     1  dtype of the vector: 1 float16, 2 float32, 3 float64
         6     2  length L of the codec name (1..256)
         8     8  n, the length of the vector
        16     8  k, the number of values stored (n unless sparse or factored)
        24     8  length of the structure section (0 unless sparse or factored)
        32     L  codec name, ASCII (for example "topk:0.01+int8:block=256")
      32+L        structure section: top-k indices (zlib-deflated varint gaps, see
                  ``sparse``) or the low-rank layout (see ``lowrank``)
                  value section (exactly ``values.encoded_nbytes(k, dtype)`` bytes)

The header fixes the size of every section, so :func:`decode_update` checks the
payload's exact length before it decodes or allocates anything.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedlearn.core.codecs.base import (
    DTYPE_CODES,
    MAX_ELEMENTS,
    FloatVector,
    check_finite,
    reject,
)
from fedlearn.core.codecs.lowrank import Segment, decode_layout, encode_layout
from fedlearn.core.codecs.sparse import decode_indices, encode_indices, topk_indices
from fedlearn.core.codecs.spec import CodecSpec, parse_codec
from fedlearn.errors import ConfigError

__all__ = [
    "CodecHeader",
    "basis_of_payload",
    "compression_ratio",
    "decode_update",
    "encode_update",
    "read_header",
]

_MAGIC = b"FLC1"
_VERSION = 1
_HEAD = struct.Struct("<4sBBHQQQ")
_NAMES_BY_CODE = {code: name for name, code in DTYPE_CODES.items()}


@dataclass(frozen=True, slots=True)
class CodecHeader:
    """What a payload says about itself, checked for consistency."""

    spec: CodecSpec
    dtype: np.dtype[np.floating]
    size: int
    stored: int
    index_nbytes: int
    body_offset: int
    segments: tuple[Segment, ...] = ()
    """The low-rank layout (empty unless the codec factorizes)."""

    @property
    def raw_nbytes(self) -> int:
        """Bytes of the uncompressed vector in its own dtype."""
        return self.size * self.dtype.itemsize


def _as_spec(spec: CodecSpec | str) -> CodecSpec:
    return spec if isinstance(spec, CodecSpec) else parse_codec(spec)


def encode_update(
    vector: FloatVector,
    spec: CodecSpec | str,
    *,
    rng: np.random.Generator | None = None,
    shapes: Sequence[tuple[int, ...]] | None = None,
    basis: FloatVector | None = None,
) -> bytes:
    """Compress a flat float vector into a payload that :func:`decode_update` reads.

    ``rng`` is required by stochastic codecs (``int8:round=stochastic``, and
    ``lowrank`` for its first start) and unused otherwise. ``lowrank`` also needs
    the ``shapes`` of the tensors that make up the vector, in order, and starts
    from ``basis`` (:func:`basis_of_payload` of the previous payload) when given.
    Raise ``ValueError`` for a vector that is not 1-D, not float16/32/64, longer
    than ``MAX_ELEMENTS`` or not finite; ``ConfigError`` for a bad codec name.
    """
    spec = _as_spec(spec)
    if vector.ndim != 1 or vector.dtype.name not in DTYPE_CODES:
        raise ValueError(f"need a 1-D float16/32/64 vector, got {vector.dtype} {vector.shape}")
    if vector.size > MAX_ELEMENTS:
        raise ValueError(f"vector of {vector.size} values exceeds {MAX_ELEMENTS}")
    if not np.isfinite(vector).all():
        raise ValueError("cannot encode a vector with NaN or infinite values")
    if (spec.values.needs_rng() or spec.factorize is not None) and rng is None:
        raise ValueError(f"codec {spec.name!r} draws random numbers and needs an rng")
    vector = vector.astype(vector.dtype.newbyteorder("="), copy=False)
    structure = b""
    values = vector
    if spec.sparsify is not None:
        indices = topk_indices(vector, spec.sparsify.count(vector.size))
        structure = encode_indices(indices)
        values = vector[indices]
    elif spec.factorize is not None:
        assert rng is not None
        if shapes is None or sum(math.prod(s) for s in shapes) != vector.size:
            raise ValueError(f"codec {spec.name!r} needs the shapes of the vector's tensors")
        segments = spec.factorize.layout(shapes)
        structure = encode_layout(segments)
        values = spec.factorize.factorize(vector, segments, basis=basis, rng=rng)
    name = spec.name.encode("ascii")
    head = _HEAD.pack(
        _MAGIC,
        _VERSION,
        DTYPE_CODES[vector.dtype.name],
        len(name),
        vector.size,
        values.size,
        len(structure),
    )
    return b"".join((head, name, structure, spec.values.encode(values, rng=rng)))


def _parse_spec(view: memoryview, length: int) -> CodecSpec:
    if not 1 <= length <= 256 or _HEAD.size + length > len(view):
        raise reject(f"codec name length {length} does not fit the payload")
    try:
        return parse_codec(bytes(view[_HEAD.size : _HEAD.size + length]).decode("ascii"))
    except UnicodeDecodeError as exc:
        raise reject("codec name is not ASCII") from exc
    except ConfigError as exc:
        raise reject(str(exc), reason="unknown_codec") from exc


def _structure(
    spec: CodecSpec, view: memoryview, offset: int, nbytes: int, size: int
) -> tuple[tuple[Segment, ...], int]:
    """The low-rank layout (empty for other codecs) and the values the payload must store."""
    if spec.factorize is None:
        return (), size if spec.sparsify is None else spec.sparsify.count(size)
    if offset + nbytes > len(view):
        raise reject("structure section runs past the end of the payload")
    layout = view[offset : offset + nbytes]
    segments = decode_layout(layout, size=size, max_rank=spec.factorize.rank)
    return segments, sum(segment.stored for segment in segments)


def read_header(payload: bytes | memoryview) -> CodecHeader:
    """Parse and check a payload's header and total length, without decoding the body."""
    view = memoryview(payload).cast("B")
    if len(view) < _HEAD.size:
        raise reject(f"payload of {len(view)} bytes is too short for a codec header")
    magic, version, dtype_code, name_len, size, stored, index_nbytes = _HEAD.unpack_from(view)
    if magic != _MAGIC:
        raise reject("payload does not start with the FLC1 codec magic")
    if version != _VERSION:
        raise reject(f"codec format version {version} is not supported (only {_VERSION})")
    if dtype_code not in _NAMES_BY_CODE:
        raise reject(f"unknown dtype code {dtype_code}")
    spec = _parse_spec(view, name_len)
    if size > MAX_ELEMENTS:
        raise reject(f"vector length {size} exceeds {MAX_ELEMENTS}")
    if not spec.structured and index_nbytes:
        raise reject("a dense codec has no index section")
    body_offset = _HEAD.size + name_len
    segments, expected_stored = _structure(spec, view, body_offset, index_nbytes, size)
    if stored != expected_stored:
        raise reject(
            f"{spec.name!r} stores {expected_stored} of {size} values, header says {stored}"
        )
    dtype = np.dtype(_NAMES_BY_CODE[dtype_code])
    total = body_offset + index_nbytes + spec.values.encoded_nbytes(stored, dtype)
    if total != len(view):
        what = "truncated" if total > len(view) else f"{len(view) - total} trailing bytes"
        raise reject(f"payload of {len(view)} bytes should be {total} ({what})")
    return CodecHeader(spec, dtype, size, stored, index_nbytes, body_offset, segments)


def decode_update(
    payload: bytes | memoryview, *, expected_size: int, dtype: str | None = None
) -> FloatVector:
    """Decode a payload into a finite vector of exactly ``expected_size`` values.

    Raise :class:`~fedlearn.errors.UpdateRejectedError` before decoding when the
    header disagrees with ``expected_size`` (reason ``wrong_shape``) or ``dtype``
    (``wrong_dtype``), names an unknown codec (``unknown_codec``) or does not match
    the payload's length, and while decoding for anything no encoder writes:
    out-of-range indices, broken varints, NaN scales (``non_finite``) ...
    (``malformed_payload`` unless said otherwise).
    """
    header = read_header(payload)
    if header.size != expected_size:
        raise reject(
            f"update has {header.size} values, the model has {expected_size}",
            reason="wrong_shape",
        )
    if dtype is not None and header.dtype != np.dtype(dtype):
        raise reject(f"update dtype is {header.dtype}, expected {dtype}", reason="wrong_dtype")
    view = memoryview(payload).cast("B")
    start = header.body_offset + header.index_nbytes
    values = header.spec.values.decode(view[start:], count=header.stored, dtype=header.dtype)
    if header.spec.factorize is not None:
        product = header.spec.factorize.expand(values, header.segments, size=header.size)
        check_finite(product, "low-rank product")
        return product
    if header.spec.sparsify is None:
        return values
    indices = decode_indices(
        view[header.body_offset : start], count=header.stored, size=header.size
    )
    out: FloatVector = np.zeros(header.size, dtype=header.dtype)
    out[indices] = values
    return out


def basis_of_payload(payload: bytes | memoryview) -> FloatVector | None:
    """The ``Q`` factors of a low-rank payload (the start of the sender's next
    one), or ``None`` for any other codec."""
    header = read_header(payload)
    if header.spec.factorize is None:
        return None
    view = memoryview(payload).cast("B")
    start = header.body_offset + header.index_nbytes
    values = header.spec.values.decode(view[start:], count=header.stored, dtype=header.dtype)
    return header.spec.factorize.basis_of(values, header.segments)


def compression_ratio(payload: bytes | memoryview) -> float:
    """Raw bytes of the vector over bytes on the wire (``> 1`` means smaller)."""
    header = read_header(payload)
    return header.raw_nbytes / len(memoryview(payload).cast("B"))
