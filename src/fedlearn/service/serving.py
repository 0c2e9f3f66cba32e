"""Which bytes a client downloads: the global model, or its compressed change.

Without a download codec every client gets the current global model's payload.
With one, the coordinator serves the chain of versions of
:mod:`fedlearn.core.downstream`: each version is encoded once, when the first
client asks for it, and a client that offers the SHA-256 of the version served
before gets only the delta.
"""

from __future__ import annotations

import hashlib

from fedlearn.core.downstream import ServedModel, check_download_codec, serve
from fedlearn.service.messages import GlobalModelBlob
from fedlearn.service.model_state import GlobalModel

__all__ = ["ModelServing"]


class ModelServing:
    """The served version of the global model; guarded by the coordinator's lock."""

    def __init__(self, codec: str | None) -> None:
        self._codec = None if codec is None else check_download_codec(codec)
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
        if served is None or served.round_number != number:
            previous = served if served is not None and served.round_number < number else None
            served = serve(
                model.vector,
                round_number=number,
                specs=model.specs,
                codec=self._codec,
                previous=previous,
            )
            self._served = served
        return served
