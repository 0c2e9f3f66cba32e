"""Checks an update must pass before it may touch the aggregate."""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import numpy.typing as npt

from fedlearn.core.serialization import DecodedWeights
from fedlearn.core.types import ClientCapabilities, TensorSpec
from fedlearn.errors import ConfigError, UpdateRejectedError

__all__ = [
    "ValidatedUpdate",
    "check_norm_outlier",
    "checked_vector",
    "validate_capabilities",
    "validate_identifier",
    "validate_metrics",
    "validate_update",
]


@dataclass(frozen=True, slots=True)
class ValidatedUpdate:
    """A flat float32 update that matches the model and holds only finite values."""

    vector: npt.NDArray[np.float32]
    norm: float


def _compare_specs(got: Sequence[TensorSpec], expected: Sequence[TensorSpec]) -> None:
    got_names = [s.name for s in got]
    expected_names = [s.name for s in expected]
    if got_names != expected_names:
        missing = sorted(set(expected_names) - set(got_names))
        extra = sorted(set(got_names) - set(expected_names))
        raise UpdateRejectedError(
            "wrong_tensors",
            f"update tensors do not match the model (missing {missing}, unexpected {extra})",
        )
    for g, e in zip(got, expected, strict=True):
        if g.shape != e.shape:
            raise UpdateRejectedError(
                "wrong_shape", f"tensor {g.name!r} has shape {g.shape}, the model has {e.shape}"
            )
        if g.dtype != e.dtype:
            raise UpdateRejectedError(
                "wrong_dtype", f"tensor {g.name!r} has dtype {g.dtype}, the model has {e.dtype}"
            )


def validate_update(decoded: DecodedWeights, expected: Sequence[TensorSpec]) -> ValidatedUpdate:
    """Reject an update whose tensors differ from ``expected`` or are not finite."""
    _compare_specs(decoded.specs, expected)
    return checked_vector(cast("npt.NDArray[np.float32]", decoded.flat("float32")))


def checked_vector(vector: npt.NDArray[np.float32]) -> ValidatedUpdate:
    """``vector`` with its L2 norm; ``UpdateRejectedError`` if any value is not finite."""
    # One BLAS pass does both checks: a NaN or an infinity makes the sum of squares
    # non-finite. Only then (or if float32 squares overflowed) look closer.
    with np.errstate(over="ignore", invalid="ignore"):
        sum_sq = float(np.dot(vector, vector))
    if not math.isfinite(sum_sq):
        bad = int(np.count_nonzero(~np.isfinite(vector)))
        if bad:
            raise UpdateRejectedError("non_finite", f"update holds {bad} NaN or infinite values")
        # finite but huge: einsum accumulates in float64 without a float64 copy
        sum_sq = float(np.einsum("i,i->", vector, vector, dtype=np.float64))
    return ValidatedUpdate(vector=vector, norm=math.sqrt(sum_sq))


def check_norm_outlier(
    norm: float,
    accepted_norms: Sequence[float],
    *,
    max_ratio: float | None,
    min_accepted: int = 3,
) -> None:
    """Reject an update whose L2 norm exceeds ``max_ratio`` times the median of
    the norms accepted so far this round.

    Nothing is checked when ``max_ratio`` is ``None`` or fewer than
    ``min_accepted`` updates were accepted (a median of one or two is no baseline).
    """
    if max_ratio is None or len(accepted_norms) < max(min_accepted, 1):
        return
    median = statistics.median(accepted_norms)
    limit = max_ratio * median
    if norm > limit:
        raise UpdateRejectedError(
            "norm_outlier",
            f"update norm {norm:.6g} exceeds {max_ratio:g} x the round's median norm "
            f"{median:.6g} ({len(accepted_norms)} updates accepted)",
        )


def validate_metrics(*, num_samples: int, training_loss: float) -> None:
    """Reject metrics that would corrupt the weighted mean or the records."""
    if num_samples <= 0:
        raise UpdateRejectedError("bad_num_samples", f"num_samples must be > 0, got {num_samples}")
    if not math.isfinite(training_loss):
        raise UpdateRejectedError("non_finite", f"training_loss is not finite: {training_loss}")


_IDENTIFIER = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")


def validate_identifier(kind: str, value: str) -> None:
    """Ids end up in database keys and blob paths: 1-64 of ``[A-Za-z0-9._-]``."""
    if not _IDENTIFIER.fullmatch(value):
        raise ConfigError(
            f"invalid {kind} {value[:80]!r}: use 1-64 letters, digits, '.', '_' or '-' "
            "(not starting with '.')"
        )


def validate_capabilities(caps: ClientCapabilities) -> None:
    """Reject capabilities whose numbers cannot be stored or compared."""
    p = caps.privacy
    values = {
        "epsilon": p.epsilon,
        "delta": p.delta,
        "max_grad_norm": p.max_grad_norm,
        "noise_multiplier": p.noise_multiplier,
    }
    for name, value in values.items():
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"privacy {name} must be finite and >= 0, got {value}")
    if caps.available_samples < 0 or caps.network_bandwidth_mbps < 0:
        raise ConfigError("available_samples and network_bandwidth_mbps must be >= 0")
    for model in caps.supported_models:
        if len(model) > 64:
            raise ConfigError(f"supported model name too long: {model[:80]!r}")
