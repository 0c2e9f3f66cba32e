"""Records to rows and back, and what every ``RunStore`` backend checks before storing.

The in-memory store calls the same ``prepare_*`` functions as the SQL store,
so an over-long id or a NaN fails the same way (``StorageError``) on every
backend, and what is stored reads back the same everywhere: tuples for
sequences, ``None`` for a NaN optional metric (SQLite turns NaN into NULL).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Collection, Mapping
from typing import Any, TypeVar

from fedlearn.core.types import (
    CentralPrivacyState,
    ClientCapabilities,
    ClientRecord,
    ComputePowerLevel,
    PrivacyConfig,
    PrivacySpend,
    RejectionRecord,
    RoundConfig,
    RoundRecord,
    RoundStatus,
    RoundTimings,
    RunRecord,
    UpdateRecord,
)
from fedlearn.errors import ConflictError, StaleRoundError, StorageError
from fedlearn.persistence.tables import (
    ID_LENGTH,
    MESSAGE_LENGTH,
    NAME_LENGTH,
    PATH_LENGTH,
    REASON_LENGTH,
)

__all__ = [
    "central_privacy_from_row",
    "central_privacy_to_row",
    "client_from_row",
    "client_to_row",
    "prepare_central_privacy",
    "prepare_client",
    "prepare_rejection",
    "prepare_privacy",
    "prepare_round",
    "prepare_run",
    "prepare_update",
    "privacy_from_row",
    "privacy_to_row",
    "rejection_from_row",
    "rejection_to_row",
    "check_round_open",
    "check_update_set",
    "round_from_row",
    "round_to_row",
    "run_from_row",
    "run_to_row",
    "second_update_error",
    "update_from_row",
    "update_to_row",
]

Row = Mapping[Any, Any]
_Record = TypeVar(
    "_Record", RunRecord, ClientRecord, RoundRecord, UpdateRecord, RoundConfig, RejectionRecord
)


def _check_length(what: str, value: str | None, limit: int) -> None:
    if value is not None and len(value) > limit:
        raise StorageError(f"{what} is {len(value)} characters long; the limit is {limit}")


def _without_nan(record: _Record) -> _Record:
    """NaN in an optional float (default ``None``) becomes ``None``, as SQLite stores it;
    NaN anywhere else is refused, since SQLite cannot store it in a NOT NULL column."""
    changes: dict[str, Any] = {}
    for field in dataclasses.fields(record):
        value = getattr(record, field.name)
        if isinstance(value, float) and math.isnan(value):
            if field.default is not None:
                name = type(record).__name__
                raise StorageError(f"{name}.{field.name} is NaN, which cannot be stored")
            changes[field.name] = None
    return dataclasses.replace(record, **changes) if changes else record


def prepare_run(run: RunRecord) -> RunRecord:
    """The run as every backend stores it; ``StorageError`` if it cannot be stored."""
    _check_length("run_id", run.run_id, ID_LENGTH)
    _check_length("model_name", run.model_name, NAME_LENGTH)
    return _without_nan(run)


def prepare_client(client: ClientRecord) -> ClientRecord:
    """The client as every backend stores it; ``StorageError`` if it cannot be stored."""
    _check_length("run_id", client.run_id, ID_LENGTH)
    _check_length("client_id", client.client_id, ID_LENGTH)
    caps = client.capabilities
    privacy = caps.privacy
    for name in ("epsilon", "delta", "max_grad_norm", "noise_multiplier"):
        if math.isnan(getattr(privacy, name)):
            raise StorageError(f"PrivacyConfig.{name} is NaN, which cannot be stored")
    if not isinstance(caps.supported_models, tuple):
        caps = dataclasses.replace(caps, supported_models=tuple(caps.supported_models))
        client = dataclasses.replace(client, capabilities=caps)
    return _without_nan(client)


def prepare_round(round_: RoundRecord) -> RoundRecord:
    """The round as every backend stores it; ``StorageError`` if it cannot be stored."""
    _check_length("run_id", round_.run_id, ID_LENGTH)
    _check_length("base_model_path", round_.base_model_path, PATH_LENGTH)
    _check_length("global_model_path", round_.global_model_path, PATH_LENGTH)
    _check_length("server_state_path", round_.server_state_path, PATH_LENGTH)
    _without_nan(round_.config)
    if not isinstance(round_.selected_clients, tuple):
        round_ = dataclasses.replace(round_, selected_clients=tuple(round_.selected_clients))
    return _without_nan(round_)


def prepare_update(update: UpdateRecord) -> UpdateRecord:
    """The update as every backend stores it; ``StorageError`` if it cannot be stored."""
    _check_length("run_id", update.run_id, ID_LENGTH)
    _check_length("update_id", update.update_id, ID_LENGTH)
    _check_length("client_id", update.client_id, ID_LENGTH)
    _check_length("model_update_path", update.model_update_path, PATH_LENGTH)
    return _without_nan(update)


def prepare_rejection(rejection: RejectionRecord) -> RejectionRecord:
    """The rejection as every backend stores it: a message longer than the column
    is truncated (it is only for people), anything else that cannot be stored
    raises ``StorageError``."""
    _check_length("run_id", rejection.run_id, ID_LENGTH)
    _check_length("client_id", rejection.client_id, ID_LENGTH)
    _check_length("update_id", rejection.update_id, ID_LENGTH)
    _check_length("reason", rejection.reason, REASON_LENGTH)
    if len(rejection.message) > MESSAGE_LENGTH:
        message = rejection.message[: MESSAGE_LENGTH - 3] + "..."
        rejection = dataclasses.replace(rejection, message=message)
    return _without_nan(rejection)


def run_to_row(run: RunRecord) -> dict[str, Any]:
    return {"run_id": run.run_id, "model_name": run.model_name, "created_at": run.created_at}


def run_from_row(row: Row) -> RunRecord:
    return RunRecord(row["run_id"], row["model_name"], created_at=row["created_at"])


def client_to_row(client: ClientRecord) -> dict[str, Any]:
    caps = client.capabilities
    return {
        "run_id": client.run_id,
        "client_id": client.client_id,
        "compute_power": caps.compute_power.value,
        "network_bandwidth_mbps": caps.network_bandwidth_mbps,
        "available_samples": caps.available_samples,
        "supported_models": list(caps.supported_models),
        "codecs": list(caps.codecs),
        "privacy_epsilon": caps.privacy.epsilon,
        "privacy_delta": caps.privacy.delta,
        "privacy_max_grad_norm": caps.privacy.max_grad_norm,
        "privacy_noise_multiplier": caps.privacy.noise_multiplier,
        "budget_exhausted": caps.budget_exhausted,
        "registered_at": client.registered_at,
        "last_seen_at": client.last_seen_at,
    }


def client_from_row(row: Row) -> ClientRecord:
    privacy = PrivacyConfig(
        epsilon=row["privacy_epsilon"],
        delta=row["privacy_delta"],
        max_grad_norm=row["privacy_max_grad_norm"],
        noise_multiplier=row["privacy_noise_multiplier"],
    )
    capabilities = ClientCapabilities(
        compute_power=ComputePowerLevel(row["compute_power"]),
        network_bandwidth_mbps=row["network_bandwidth_mbps"],
        available_samples=row["available_samples"],
        supported_models=tuple(row["supported_models"]),
        codecs=tuple(row["codecs"] or ()),
        privacy=privacy,
        budget_exhausted=bool(row["budget_exhausted"]),
    )
    return ClientRecord(
        client_id=row["client_id"],
        run_id=row["run_id"],
        capabilities=capabilities,
        registered_at=row["registered_at"],
        last_seen_at=row["last_seen_at"],
    )


# RoundRecord fields stored in a column of the same name, unchanged.
_ROUND_PLAIN = (
    "run_id",
    "round_number",
    "started_at",
    "deadline_at",
    "base_model_path",
    "global_model_path",
    "server_state_path",
    "participating_clients",
    "completed_at",
    "accuracy",
    "loss",
    "client_eval_accuracy",
    "client_eval_loss",
    "training_loss",
    "update_norm",
    "model_delta_norm",
    "convergence_score",
    "bytes_up",
    "raw_bytes_up",
    "bytes_down",
    "failure_reason",
)


def round_to_row(round_: RoundRecord) -> dict[str, Any]:
    row = {name: getattr(round_, name) for name in _ROUND_PLAIN}
    row["status"] = round_.status.value
    row["selected_clients"] = list(round_.selected_clients)
    row["local_epochs"] = round_.config.local_epochs
    row["batch_size"] = round_.config.batch_size
    row["learning_rate"] = round_.config.learning_rate
    row["codec"] = round_.config.codec
    row["timings"] = dataclasses.asdict(round_.timings)
    return row


def round_from_row(row: Row) -> RoundRecord:
    config = RoundConfig(
        local_epochs=row["local_epochs"],
        batch_size=row["batch_size"],
        learning_rate=row["learning_rate"],
        codec=row["codec"],
    )
    return RoundRecord(
        status=RoundStatus(row["status"]),
        selected_clients=tuple(row["selected_clients"]),
        config=config,
        timings=RoundTimings(**(row["timings"] or {})),
        **{name: row[name] for name in _ROUND_PLAIN},
    )


# UpdateRecord stores every field in a column of the same name.
_UPDATE_FIELDS = tuple(UpdateRecord.__dataclass_fields__)


def update_to_row(update: UpdateRecord) -> dict[str, Any]:
    return {name: getattr(update, name) for name in _UPDATE_FIELDS}


def update_from_row(row: Row) -> UpdateRecord:
    return UpdateRecord(**{name: row[name] for name in _UPDATE_FIELDS})


# RejectionRecord stores every field in a column of the same name.
_REJECTION_FIELDS = tuple(RejectionRecord.__dataclass_fields__)


def rejection_to_row(rejection: RejectionRecord) -> dict[str, Any]:
    return {name: getattr(rejection, name) for name in _REJECTION_FIELDS}


def rejection_from_row(row: Row) -> RejectionRecord:
    return RejectionRecord(**{name: row[name] for name in _REJECTION_FIELDS})


def prepare_privacy(spend: PrivacySpend) -> PrivacySpend:
    """The ledger line as every backend stores it; ``StorageError`` if it cannot be."""
    _check_length("run_id", spend.run_id, ID_LENGTH)
    _check_length("client_id", spend.client_id, ID_LENGTH)
    for name in ("epsilon_spent", "epsilon_budget", "delta", "updated_at"):
        value = getattr(spend, name)
        if not math.isfinite(value) or value < 0:
            raise StorageError(f"{name} must be finite and >= 0, got {value}")
    return spend


def privacy_to_row(spend: PrivacySpend) -> dict[str, Any]:
    return dataclasses.asdict(spend)


def privacy_from_row(row: Row) -> PrivacySpend:
    return PrivacySpend(**{f.name: row[f.name] for f in dataclasses.fields(PrivacySpend)})


def prepare_central_privacy(state: CentralPrivacyState) -> CentralPrivacyState:
    """The accountant state as every backend stores it: its ``accountant`` as a JSON
    round trip returns it (lists, not tuples); ``StorageError`` if it cannot be stored."""
    _check_length("run_id", state.run_id, ID_LENGTH)
    for name in ("pending_sample_rate", "epsilon_spent", "delta", "updated_at"):
        value = getattr(state, name)
        if not math.isfinite(value) or value < 0:
            raise StorageError(f"{name} must be finite and >= 0, got {value}")
    if state.last_round < 0 or state.pending_round < 0:
        raise StorageError("round numbers must be >= 0")
    try:
        accountant = json.loads(json.dumps(dict(state.accountant), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise StorageError(f"the accountant state is not plain finite JSON: {exc}") from exc
    return dataclasses.replace(state, accountant=accountant)


def central_privacy_to_row(state: CentralPrivacyState) -> dict[str, Any]:
    row = {f.name: getattr(state, f.name) for f in dataclasses.fields(CentralPrivacyState)}
    row["accountant"] = dict(state.accountant)
    return row


def central_privacy_from_row(row: Row) -> CentralPrivacyState:
    fields = dataclasses.fields(CentralPrivacyState)
    return CentralPrivacyState(**{f.name: row[f.name] for f in fields})


def check_round_open(round_: RoundRecord) -> None:
    """``StaleRoundError`` unless the stored round is open (it takes updates)."""
    if round_.status is not RoundStatus.OPEN:
        raise StaleRoundError(
            f"round {round_.round_number} of run {round_.run_id!r} is {round_.status.value}, "
            "not open"
        )


def check_update_set(
    round_: RoundRecord, stored: Collection[str], expected: Collection[str]
) -> None:
    """``ConflictError`` (reason ``updates_changed``) unless the round's stored update
    ids are exactly ``expected``."""
    if set(stored) != set(expected):
        extra = sorted(set(stored) - set(expected))
        missing = sorted(set(expected) - set(stored))
        raise ConflictError(
            f"round {round_.round_number} of run {round_.run_id!r} changed: "
            f"{len(extra)} stored updates were not expected, {len(missing)} expected are missing",
            reason="updates_changed",
        )


def second_update_error(update: UpdateRecord) -> ConflictError:
    """The error for a client's second update in one round."""
    return ConflictError(
        f"client {update.client_id} already submitted an update for round {update.round_number}",
        reason="already_submitted",
    )
