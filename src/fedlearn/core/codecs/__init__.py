"""Update compression codecs: pure functions from a flat float vector to bytes and back.

Pick a codec by name (see :mod:`fedlearn.core.codecs.spec`), for example
``"topk:0.01+int8"``::

    payload = encode_update(vector, "topk:0.01+int8")
    vector = decode_update(payload, expected_size=model_size)   # raises on bad payloads

With a lossy codec, clients should go through :func:`encode_with_feedback`, which
keeps what was not sent and adds it to the next round's update.
"""

from fedlearn.core.codecs.base import MAX_ELEMENTS, ValueCodec
from fedlearn.core.codecs.error_feedback import ErrorFeedbackState, encode_with_feedback
from fedlearn.core.codecs.lowrank import LowRank
from fedlearn.core.codecs.quantize import Float16Values, Int8Values, RawValues
from fedlearn.core.codecs.sparse import TopK
from fedlearn.core.codecs.spec import VALUE_CODECS, CodecSpec, available_codecs, parse_codec
from fedlearn.core.codecs.ternary import SignValues
from fedlearn.core.codecs.wire import (
    CodecHeader,
    basis_of_payload,
    compression_ratio,
    decode_update,
    encode_update,
    read_header,
)

__all__ = [
    "MAX_ELEMENTS",
    "VALUE_CODECS",
    "CodecHeader",
    "CodecSpec",
    "ErrorFeedbackState",
    "Float16Values",
    "Int8Values",
    "LowRank",
    "RawValues",
    "SignValues",
    "TopK",
    "ValueCodec",
    "available_codecs",
    "basis_of_payload",
    "compression_ratio",
    "decode_update",
    "encode_update",
    "encode_with_feedback",
    "parse_codec",
    "read_header",
]
