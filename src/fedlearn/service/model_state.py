"""The current global model: flat vector, cached payload and server state."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedlearn.core.serialization import decode_weights, encode_weights, spec_of
from fedlearn.core.types import TensorSpec, Weights
from fedlearn.errors import ConfigError
from fedlearn.service.messages import GlobalModelBlob
from fedlearn.service.ports import ModelStore

__all__ = ["GlobalModel", "flatten", "specs_of", "unflatten"]

Vector = npt.NDArray[np.float32]


def flatten(weights: Weights) -> Vector:
    parts = [np.asarray(a, dtype=np.float32).ravel() for a in weights.values()]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def unflatten(vector: Vector, specs: tuple[TensorSpec, ...]) -> dict[str, Vector]:
    out: dict[str, Vector] = {}
    offset = 0
    for spec in specs:
        size = int(np.prod(spec.shape, dtype=np.int64))
        out[spec.name] = vector[offset : offset + size].reshape(spec.shape)
        offset += size
    return out


@dataclass(frozen=True, slots=True)
class GlobalModel:
    """One version of the global model, encoded once and served many times."""

    round_number: int
    vector: Vector
    specs: tuple[TensorSpec, ...]
    blob: GlobalModelBlob
    path: str
    server_state: Vector | None = None
    server_state_path: str | None = None

    @staticmethod
    def from_vector(
        round_number: int,
        vector: Vector,
        *,
        specs: tuple[TensorSpec, ...],
        store: ModelStore,
        key_prefix: str,
        server_state: Vector | None = None,
    ) -> GlobalModel:
        """Encode, store durably, and wrap a new global model."""
        payload = encode_weights(unflatten(vector, specs))
        path = store.put(f"{key_prefix}/global.flw", payload)
        state_path = None
        if server_state is not None:
            state_path = store.put(
                f"{key_prefix}/server_state.flw", encode_weights({"state": server_state})
            )
        blob = GlobalModelBlob(round_number, payload, hashlib.sha256(payload).hexdigest())
        return GlobalModel(round_number, vector, specs, blob, path, server_state, state_path)

    @staticmethod
    def load(
        round_number: int,
        path: str,
        *,
        specs: tuple[TensorSpec, ...],
        store: ModelStore,
        server_state_path: str | None,
    ) -> GlobalModel:
        """Read a stored global model back; ``ConfigError`` if it is another model."""
        payload = store.get(path)
        decoded = decode_weights(payload)
        if decoded.specs != specs:
            raise ConfigError(
                f"stored global model {path} does not match the configured model's tensors"
            )
        vector = np.array(decoded.flat("float32"), dtype=np.float32)
        state = None
        if server_state_path is not None:
            state_decoded = decode_weights(store.get(server_state_path))
            state = np.array(state_decoded.tensors["state"], dtype=np.float32)
        blob = GlobalModelBlob(round_number, payload, hashlib.sha256(payload).hexdigest())
        return GlobalModel(round_number, vector, specs, blob, path, state, server_state_path)

    def weights(self) -> dict[str, Vector]:
        return unflatten(self.vector, self.specs)


def specs_of(weights: Weights) -> tuple[TensorSpec, ...]:
    specs = spec_of(weights)
    for spec in specs:
        if spec.dtype != "float32":
            raise ConfigError(f"tensor {spec.name!r} is {spec.dtype}; fedlearn needs float32")
    return specs
