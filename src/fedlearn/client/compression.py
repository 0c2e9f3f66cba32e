"""Encoding a client's update in the codec the run asks for, with error feedback.

With a lossy codec (top-k, int8, sign, ...) what the codec drops is not thrown
away: it is kept as a residual and added to the next round's update before
encoding (error feedback), so it is only delayed. The residual lives in memory
and, when the client has a state folder, in ``STATE_DIR/runs/RUN/error_feedback.bin``
(written atomically), so that a restarted client does not lose it either, and a
new run does not inherit an old one's.

The residual is updated when the update is encoded, not when it is acknowledged:
an update that never lands (refused, or too late for its round) loses what it
carried, as an uncompressed one would.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt

from fedlearn.client.files import write_atomic
from fedlearn.core.codecs import ErrorFeedbackState, encode_with_feedback, parse_codec
from fedlearn.core.serialization import encode_weights
from fedlearn.core.update_payload import UNCOMPRESSED
from fedlearn.errors import FedLearnError

__all__ = ["UpdateEncoder"]

logger = logging.getLogger(__name__)

RESIDUAL_FILE = "error_feedback.bin"
BASIS_SUFFIX = ".basis"
"""Beside the residual: the low-rank codec's last Q factors (its next start)."""


class UpdateEncoder:
    """Turns a model delta into the payload of an update."""

    def __init__(self, *, state_dir: Path | None, rng: np.random.Generator) -> None:
        self._state_dir = state_dir
        self._path = state_dir / RESIDUAL_FILE if state_dir is not None else None
        self._rng = rng
        self._state: ErrorFeedbackState | None = None
        self._run_id = ""

    def use_run(self, run_id: str) -> None:
        """Keep the residual of run ``run_id`` (apart from other runs' residuals)."""
        if run_id != self._run_id:
            self._run_id, self._state = run_id, None
        if self._state_dir is not None:
            folder = self._state_dir / "runs" / run_id
            folder.mkdir(parents=True, exist_ok=True)
            self._path = folder / RESIDUAL_FILE

    def encode(self, delta: Mapping[str, npt.NDArray[np.float32]], codec: str) -> bytes:
        """``FLW1`` named tensors for ``raw``; else the ``FLC1`` flat vector, tensor order kept."""
        if codec in ("", UNCOMPRESSED):
            return encode_weights(delta)
        spec = parse_codec(codec)
        vector = np.concatenate([np.asarray(a, np.float32).ravel() for a in delta.values()])
        shapes = [np.shape(a) for a in delta.values()]
        payload, state = encode_with_feedback(
            vector, self._residual(vector.size), spec, rng=self._rng, shapes=shapes
        )
        self._state = state
        if self._path is not None:
            saved = state.state_dict()
            write_atomic(self._path, saved["residual"])
            basis_path = self._path.with_name(self._path.name + BASIS_SUFFIX)
            if "basis" in saved:
                write_atomic(basis_path, saved["basis"])
            else:
                basis_path.unlink(missing_ok=True)
        return payload

    @property
    def residual_norm(self) -> float:
        """L2 norm of what has not been sent yet (0 before the first lossy update)."""
        return 0.0 if self._state is None else float(np.linalg.norm(self._state.residual))

    def _residual(self, size: int) -> ErrorFeedbackState:
        if self._state is not None and self._state.residual.size == size:
            return self._state
        if self._path is not None and self._path.exists():
            try:
                saved = {"residual": self._path.read_bytes()}
                basis_path = self._path.with_name(self._path.name + BASIS_SUFFIX)
                if basis_path.exists():
                    saved["basis"] = basis_path.read_bytes()
                return ErrorFeedbackState.from_state_dict(saved, expected_size=size)
            except FedLearnError as exc:
                logger.warning("starting error feedback afresh: %s (%s)", exc, self._path)
        return ErrorFeedbackState.zeros(size)
