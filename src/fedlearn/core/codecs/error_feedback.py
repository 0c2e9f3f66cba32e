"""Error feedback: what a lossy codec did not send is kept and sent later.

Before encoding, the client adds the residual it kept from earlier rounds to the new
update; after encoding, the new residual is that sum minus what the coordinator will
decode. So ``sent + new_residual == update + old_residual``: nothing is lost, only
delayed (Seide et al. 2014; Stich et al. 2018; Karimireddy et al. 2019).

:class:`ErrorFeedbackState` is immutable: :func:`encode_with_feedback` takes one and
returns the next. ``state_dict`` / ``from_state_dict`` let the client persist it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedlearn.core.codecs.base import FloatVector
from fedlearn.core.codecs.spec import CodecSpec
from fedlearn.core.codecs.wire import decode_update, encode_update, read_header

__all__ = ["ErrorFeedbackState", "encode_with_feedback"]


@dataclass(frozen=True, slots=True)
class ErrorFeedbackState:
    """The part of past updates that has not been sent yet (never mutated)."""

    residual: FloatVector

    @classmethod
    def zeros(cls, size: int, *, dtype: str = "float32") -> ErrorFeedbackState:
        """The state of a client that has sent nothing yet."""
        return cls(np.zeros(size, dtype=np.dtype(dtype)))

    def state_dict(self) -> dict[str, bytes]:
        """A plain dict to persist; the residual travels in the lossless ``raw`` codec."""
        return {"residual": encode_update(self.residual, "raw")}

    @classmethod
    def from_state_dict(
        cls, state: Mapping[str, bytes], *, expected_size: int
    ) -> ErrorFeedbackState:
        """Rebuild a state written by :meth:`state_dict`; raise if it does not fit.

        A residual of the wrong length (the model changed), a lossy codec or a
        corrupt blob raises :class:`~fedlearn.errors.UpdateRejectedError`.
        """
        blob = state["residual"]
        header = read_header(blob)
        if header.spec.name != "raw":
            raise ValueError(f"a residual is stored raw, not as {header.spec.name!r}")
        return cls(decode_update(blob, expected_size=expected_size))


def encode_with_feedback(
    update: FloatVector,
    state: ErrorFeedbackState,
    spec: CodecSpec | str,
    *,
    rng: np.random.Generator | None = None,
) -> tuple[bytes, ErrorFeedbackState]:
    """Encode ``update + state.residual``; return the payload and the next state.

    The residual keeps the dtype of ``update``. Raise ``ValueError`` when the
    residual's length differs from the update's.
    """
    if state.residual.shape != update.shape:
        raise ValueError(f"residual has shape {state.residual.shape}, the update {update.shape}")
    corrected = update + state.residual.astype(update.dtype, copy=False)
    payload = encode_update(corrected, spec, rng=rng)
    sent = decode_update(payload, expected_size=corrected.size)
    return payload, ErrorFeedbackState(corrected - sent)
