"""Error feedback: what a lossy codec did not send is kept and sent later.

Before encoding, the client adds the residual it kept from earlier rounds to the new
update; after encoding, the new residual is that sum minus what the coordinator will
decode. So ``sent + new_residual == update + old_residual``: nothing is lost, only
delayed (Seide et al. 2014; Stich et al. 2018; Karimireddy et al. 2019).

:class:`ErrorFeedbackState` is immutable: :func:`encode_with_feedback` takes one and
returns the next. ``state_dict`` / ``from_state_dict`` let the client persist it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedlearn.core.codecs.base import FloatVector
from fedlearn.core.codecs.spec import CodecSpec
from fedlearn.core.codecs.wire import (
    basis_of_payload,
    decode_update,
    encode_update,
    read_header,
)

__all__ = ["ErrorFeedbackState", "encode_with_feedback"]


@dataclass(frozen=True, slots=True)
class ErrorFeedbackState:
    """The part of past updates that has not been sent yet (never mutated).

    With a ``lowrank`` codec it also keeps ``basis``, the ``Q`` factors last sent:
    the next round's subspace step starts from them.
    """

    residual: FloatVector
    basis: FloatVector | None = None

    @classmethod
    def zeros(cls, size: int, *, dtype: str = "float32") -> ErrorFeedbackState:
        """The state of a client that has sent nothing yet."""
        return cls(np.zeros(size, dtype=np.dtype(dtype)))

    def state_dict(self) -> dict[str, bytes]:
        """A plain dict to persist; the vectors travel in the lossless ``raw`` codec."""
        state = {"residual": encode_update(self.residual, "raw")}
        if self.basis is not None:
            state["basis"] = encode_update(self.basis, "raw")
        return state

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
        basis = None
        if "basis" in state:
            size = read_header(state["basis"]).size
            basis = decode_update(state["basis"], expected_size=size)
        return cls(decode_update(blob, expected_size=expected_size), basis)


def encode_with_feedback(
    update: FloatVector,
    state: ErrorFeedbackState,
    spec: CodecSpec | str,
    *,
    rng: np.random.Generator | None = None,
    shapes: Sequence[tuple[int, ...]] | None = None,
) -> tuple[bytes, ErrorFeedbackState]:
    """Encode ``update + state.residual``; return the payload and the next state.

    The residual keeps the dtype of ``update``. ``shapes``: the tensors that make
    up the vector (``lowrank`` needs them). Raise ``ValueError`` when the
    residual's length differs from the update's.
    """
    if state.residual.shape != update.shape:
        raise ValueError(f"residual has shape {state.residual.shape}, the update {update.shape}")
    corrected = update + state.residual.astype(update.dtype, copy=False)
    payload = encode_update(corrected, spec, rng=rng, shapes=shapes, basis=state.basis)
    sent = decode_update(payload, expected_size=corrected.size)
    return payload, ErrorFeedbackState(corrected - sent, basis_of_payload(payload))
