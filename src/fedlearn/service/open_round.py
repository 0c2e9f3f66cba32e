"""The in-memory side of the round that is open: who reported, the running sum."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from fedlearn.core.central_dp import Aggregator
from fedlearn.core.types import RoundRecord, RoundTimings, TensorSpec, UpdateRecord
from fedlearn.core.update_payload import decode_update_payload
from fedlearn.errors import ConflictError
from fedlearn.service.ports import ModelStore, RunStore

__all__ = ["OpenRound", "take_in_stored", "weighted_metric"]


@dataclass(slots=True)
class OpenRound:
    """Mutable bookkeeping of one open round; guarded by the coordinator's lock."""

    record: RoundRecord
    aggregator: Aggregator
    """``StreamingFedAvg``, or ``DpFedAvg`` wrapping it under central DP."""
    received: dict[str, UpdateRecord] = field(default_factory=dict)
    in_flight: set[str] = field(default_factory=set)
    declined: set[str] = field(default_factory=set)
    """Selected clients that said they cannot train (out of privacy budget)."""
    bytes_up: int = 0
    raw_bytes_up: int = 0
    """What the accepted updates would have been as float32 (the compression baseline)."""
    bytes_down: int = 0
    timings: RoundTimings = field(default_factory=RoundTimings)

    @property
    def number(self) -> int:
        return self.record.round_number

    @property
    def complete(self) -> bool:
        expected = len(self.record.selected_clients) - len(self.declined)
        return len(self.received) >= expected

    @property
    def accepted_norms(self) -> list[float]:
        """L2 norms of the updates accepted so far, the baseline of the outlier check."""
        return [u.update_norm for u in self.received.values()]

    def expects(self, client_id: str) -> bool:
        """True while a selected client has neither reported nor started uploading."""
        return (
            client_id in self.record.selected_clients
            and client_id not in self.received
            and client_id not in self.in_flight
            and client_id not in self.declined
        )

    def closed(self, **changes: object) -> RoundRecord:
        """The stored record of this round once it completes or fails."""
        updates = list(self.received.values())
        return replace(
            self.record,
            participating_clients=len(updates),
            bytes_up=self.bytes_up,
            raw_bytes_up=self.raw_bytes_up,
            bytes_down=self.bytes_down,
            timings=self.timings,
            training_loss=weighted_metric([(u.training_loss, u.num_samples) for u in updates]),
            client_eval_accuracy=weighted_metric(
                [(u.eval_accuracy, u.eval_samples) for u in updates]
            ),
            client_eval_loss=weighted_metric([(u.eval_loss, u.eval_samples) for u in updates]),
            **changes,  # type: ignore[arg-type]
        )


def take_in_stored(
    open_: OpenRound,
    *,
    runs: RunStore,
    models: ModelStore,
    specs: tuple[TensorSpec, ...],
    fold: bool,
) -> None:
    """Take in the round's stored updates that ``open_`` has not seen: with ``fold``
    (the process that aggregates the round) their blobs are folded into the running
    sum, else only who reported is noted."""
    for update in runs.list_updates(open_.record.run_id, open_.number):
        if update.client_id in open_.received:
            continue
        if fold:
            if update.model_update_path is None:
                raise ConflictError(f"update {update.update_id} of an open round has no blob")
            payload = models.get(update.model_update_path)
            checked = decode_update_payload(payload, specs).update
            open_.aggregator.add(checked.vector, float(update.num_samples))
            open_.raw_bytes_up += checked.vector.nbytes
        open_.received[update.client_id] = update
        open_.bytes_up += update.wire_bytes


def weighted_metric(pairs: list[tuple[float | None, int]]) -> float | None:
    """Sample-weighted mean of the values that are present; ``None`` if none are."""
    present = [(v, w) for v, w in pairs if v is not None and w > 0]
    total = sum(w for _, w in present)
    if total == 0:
        return None
    return sum(v * w for v, w in present) / total
