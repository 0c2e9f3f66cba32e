"""An update as it arrives: uncompressed named tensors or a compressed flat vector.

Clients send either the ``FLW1`` weights format (:mod:`fedlearn.core.serialization`,
named tensors, no loss) or the ``FLC1`` codec format (:mod:`fedlearn.core.codecs`, one
flat vector in the model's tensor order, possibly lossy). The first four bytes tell
them apart. Both end as the same :class:`ValidatedUpdate`, checked against the model's
tensor specs, so the coordinator's fold and restart paths do not care which was sent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from fedlearn.core.codecs import decode_update, read_header
from fedlearn.core.serialization import decode_weights
from fedlearn.core.types import TensorSpec
from fedlearn.core.validation import ValidatedUpdate, checked_vector, validate_update
from fedlearn.errors import UpdateRejectedError

__all__ = ["UNCOMPRESSED", "DecodedUpdate", "check_codec", "decode_update_payload"]

UNCOMPRESSED = "raw"
"""Codec name recorded for ``FLW1`` payloads."""

_CODEC_MAGIC = b"FLC1"


@dataclass(frozen=True, slots=True)
class DecodedUpdate:
    """A checked update with the codec it came in and its compression ratio.

    ``compression_ratio`` is the update's float32 size over the payload's size.
    """

    update: ValidatedUpdate
    codec: str
    compression_ratio: float


def check_codec(codec: str, *, allowed: str) -> None:
    """Refuse an update in a codec the run did not choose (uncompressed is always fine)."""
    if codec not in (UNCOMPRESSED, allowed):
        raise UpdateRejectedError(
            "codec_not_allowed", f"update encoded with {codec!r}; this run takes {allowed!r} or raw"
        )


def decode_update_payload(payload: bytes, expected: Sequence[TensorSpec]) -> DecodedUpdate:
    """Decode and check an update; ``UpdateRejectedError`` for anything malformed."""
    raw_bytes = 4 * sum(math.prod(spec.shape) for spec in expected)
    if payload[:4] != _CODEC_MAGIC:
        checked = validate_update(decode_weights(payload), expected)
        return DecodedUpdate(checked, UNCOMPRESSED, raw_bytes / max(len(payload), 1))
    wrong = [s.name for s in expected if s.dtype != "float32"]
    if wrong:
        raise UpdateRejectedError(
            "wrong_dtype", f"compressed updates need a float32 model; {wrong} are not"
        )
    header = read_header(payload)
    vector = decode_update(payload, expected_size=raw_bytes // 4, dtype="float32")
    return DecodedUpdate(checked_vector(vector), header.spec.name, raw_bytes / len(payload))
