"""Per-epoch checkpoints of local training, so a killed client resumes its round.

After each local epoch the trainer saves the model, the optimizer, the shuffling
generator and the number of finished epochs. One checkpoint is kept (``latest.pt``),
keyed by the round it belongs to: run, client, round number and the SHA-256 of the global
model the round started from. A checkpoint with another key, or one written for other
training settings (the trainer's ``fingerprint``), is discarded rather than resumed.
"""

from __future__ import annotations

import io
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fedlearn.client.files import write_atomic

__all__ = ["CheckpointStore", "EpochState", "RoundCheckpoints", "round_key"]

logger = logging.getLogger(__name__)

_FILE = "latest.pt"


def round_key(run_id: str, client_id: str, round_number: int, base_digest: str) -> str:
    """The identity of one round's training on one client."""
    return f"{run_id}/{client_id}/{round_number}/{base_digest}"


@dataclass(frozen=True, slots=True)
class EpochState:
    """Local training after ``epochs_done`` epochs of a round."""

    epochs_done: int
    fingerprint: str
    """The trainer's description of its settings (model, seed, data size, config)."""
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    generator: torch.Tensor
    """``torch.Generator.get_state()`` after the last finished epoch."""
    loss: float
    """Mean training loss of the last finished epoch."""


class CheckpointStore:
    """The checkpoint folder of one client."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def path(self) -> Path:
        return self.directory / _FILE

    def for_round(self, key: str) -> RoundCheckpoints:
        return RoundCheckpoints(self, key)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


class RoundCheckpoints:
    """The checkpoints of one round, as the trainer uses them."""

    def __init__(self, store: CheckpointStore, key: str) -> None:
        self._store = store
        self.key = key

    def load(self, fingerprint: str) -> EpochState | None:
        """The latest state of this round with these settings; others are discarded."""
        path = self._store.path
        if not path.exists():
            return None
        try:
            saved = torch.load(io.BytesIO(path.read_bytes()), weights_only=True)
            key, state = saved["key"], EpochState(**saved["state"])
        except (
            OSError,
            RuntimeError,
            KeyError,
            TypeError,
            EOFError,
            pickle.UnpicklingError,
        ) as exc:
            logger.warning("discarding unreadable checkpoint %s: %s", path, exc)
            self._store.clear()
            return None
        if key != self.key or state.fingerprint != fingerprint:
            logger.info("discarding the checkpoint of another round or setting (%s)", key)
            self._store.clear()
            return None
        return state

    def save(self, state: EpochState) -> None:
        buffer = io.BytesIO()
        torch.save({"key": self.key, "state": _as_dict(state)}, buffer)
        write_atomic(self._store.path, buffer.getbuffer())

    def clear(self) -> None:
        self._store.clear()


def _as_dict(state: EpochState) -> dict[str, Any]:
    return {name: getattr(state, name) for name in EpochState.__slots__}
