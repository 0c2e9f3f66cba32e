"""Which bytes a client downloads: the global model, or its compressed change.

Without a download codec every client gets the current global model's payload.
With one, the coordinator serves the chain of versions of
:mod:`fedlearn.core.downstream`: each version is encoded once, when the first
client asks for it, and a client that offers the SHA-256 of the version served
before gets only the delta. Each served version is also stored beside its global
model (``served.flw``), so that a restarted coordinator serves the same bytes as
before: clients that hold it keep their identity of the model (their pending
updates stay valid) and keep getting deltas.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np

from fedlearn.core.downstream import ServedModel, check_download_codec, serve
from fedlearn.core.serialization import decode_weights
from fedlearn.errors import NotFoundError
from fedlearn.service.messages import GlobalModelBlob
from fedlearn.service.model_state import GlobalModel
from fedlearn.service.ports import ModelStore

__all__ = ["ModelServing"]


class ModelServing:
    """The served version of the global model; guarded by the coordinator's lock."""

    def __init__(
        self, codec: str | None, *, store: ModelStore, key_of: Callable[[int], str]
    ) -> None:
        self._codec = None if codec is None else check_download_codec(codec)
        self._store = store
        self._key_of = key_of
        self._served: ServedModel | None = None

    def blob(self, model: GlobalModel, *, have_sha256: str) -> GlobalModelBlob:
        if self._codec is None:
            return model.blob
        served = self._version(model)
        if served.delta is not None and have_sha256 and have_sha256 == served.base_sha256:
            return GlobalModelBlob(
                model.round_number,
                served.delta,
                hashlib.sha256(served.delta).hexdigest(),
                base_sha256=served.base_sha256,
                model_sha256=served.sha256,
            )
        return GlobalModelBlob(model.round_number, served.payload, served.sha256)

    def _version(self, model: GlobalModel) -> ServedModel:
        """The served version of ``model``; a rollback (an older round) restarts the chain."""
        served, number = self._served, model.round_number
        if served is None:
            served = self._stored(number)
        if served is None or served.round_number != number:
            previous = served if served is not None and served.round_number < number else None
            served = serve(
                model.vector,
                round_number=number,
                specs=model.specs,
                codec=self._codec,
                previous=previous,
            )
            self._store.put(self._path(number), served.payload)
        self._served = served
        return served

    def _path(self, round_number: int) -> str:
        return f"{self._key_of(round_number)}/served.flw"

    def _stored(self, round_number: int) -> ServedModel | None:
        """The version served for ``round_number`` before a restart, if one was stored."""
        try:
            payload = self._store.get(self._path(round_number))
        except NotFoundError:
            return None
        vector = np.ascontiguousarray(decode_weights(payload).flat("float32"), dtype=np.float32)
        return ServedModel(round_number, vector, payload, hashlib.sha256(payload).hexdigest())
