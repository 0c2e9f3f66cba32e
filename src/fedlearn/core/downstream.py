"""Compressing the global model on its way down: quantised deltas between served versions.

With a download codec, the coordinator serves a chain of versions ``ref_0, ref_1, ...``
instead of the exact global models: ``ref_0`` is the initial model, and each later
version is the previous one plus the *decoded* compressed difference to the new global
model::

    delta_r = encode(global_r - ref_{r-1})
    ref_r   = ref_{r-1} + decode(delta_r)          (float32, by :func:`apply_delta`)

A client that holds ``ref_{r-1}`` downloads only ``delta_r`` and rebuilds ``ref_r``
bit for bit, since both sides run the same :func:`apply_delta`; a client without it
downloads ``ref_r`` in full. Because each delta is taken against the previous
*served* version, quantisation errors do not pile up: ``ref_r`` differs from
``global_r`` by one delta's rounding only. Each version is encoded once, however
many clients ask for it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedlearn.core.codecs import decode_update, encode_update, parse_codec
from fedlearn.core.serialization import encode_weights
from fedlearn.core.types import TensorSpec
from fedlearn.errors import ConfigError

__all__ = ["ServedModel", "apply_delta", "check_download_codec", "serve", "unflatten"]

Vector = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class ServedModel:
    """One served version: the vector clients hold, in full and as a delta."""

    round_number: int
    vector: Vector
    payload: bytes
    """``FLW1`` named tensors of ``vector``."""
    sha256: str
    """SHA-256 of ``payload``: the version's identity."""
    delta: bytes | None = None
    """``FLC1`` difference from the version served before, if there was one."""
    base_sha256: str = ""
    """Identity of the version ``delta`` applies to."""


def check_download_codec(codec: str) -> str:
    """The canonical name of a download codec; it must round deterministically."""
    spec = parse_codec(codec)
    if spec.values.needs_rng():
        raise ConfigError(
            f"download codec {spec.name!r} rounds stochastically; clients could not "
            "rebuild the same model"
        )
    return spec.name


def unflatten(vector: Vector, specs: Sequence[TensorSpec]) -> dict[str, Vector]:
    """Named tensors of ``specs``' shapes, viewing consecutive parts of ``vector``."""
    out, offset = {}, 0
    for spec in specs:
        size = int(np.prod(spec.shape, dtype=np.int64))
        out[spec.name] = vector[offset : offset + size].reshape(spec.shape)
        offset += size
    return out


def apply_delta(base: Vector, delta: bytes) -> Vector:
    """``base + decode(delta)`` in float32: the same bits on the coordinator and clients."""
    decoded = decode_update(delta, expected_size=base.size, dtype="float32")
    return np.add(base, decoded, dtype=np.float32)


def _full(round_number: int, vector: Vector, specs: Sequence[TensorSpec]) -> ServedModel:
    payload = encode_weights(unflatten(vector, specs))
    return ServedModel(round_number, vector, payload, hashlib.sha256(payload).hexdigest())


def serve(
    global_vector: npt.NDArray[np.floating],
    *,
    round_number: int,
    specs: Sequence[TensorSpec],
    codec: str | None,
    previous: ServedModel | None,
) -> ServedModel:
    """The version to serve for global model ``round_number``.

    Without a codec, or without an earlier version to take the difference from
    (the first model, a rollback, a restart), it is the global model itself.
    """
    exact = np.asarray(global_vector, dtype=np.float32)
    if codec is None or previous is None or previous.round_number >= round_number:
        return _full(round_number, exact, specs)
    delta = encode_update(np.subtract(exact, previous.vector, dtype=np.float32), codec)
    served = _full(round_number, apply_delta(previous.vector, delta), specs)
    return ServedModel(
        round_number,
        served.vector,
        served.payload,
        served.sha256,
        delta=delta,
        base_sha256=previous.sha256,
    )
