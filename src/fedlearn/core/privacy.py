"""Update-level differential privacy: clip a whole model update, add Gaussian noise.

:func:`apply_differential_privacy` is the design's operation: the update (all tensors
together, as one vector) is scaled down to L2 norm ``clip_norm`` if it is longer, then
every coordinate gets independent ``N(0, (noise_multiplier * clip_norm)^2)`` noise. One
such release is the Gaussian mechanism with sensitivity ``clip_norm``; its cost is
accounted with :class:`RdpAccountant` (the math is in :mod:`fedlearn.core.rdp`).

Randomness comes in as ``rng``: anything with ``standard_normal(size)`` (a
:class:`GaussianSource`). Tests pass a seeded ``np.random.Generator``. Where the noise
protects privacy, pass an OS-entropy source instead
(:func:`fedlearn.client.secure_random.secure_rng`): numpy's bit generators (PCG64,
Philox, ...) are statistical, not cryptographic, generators, so an adversary who learns
or guesses their seed can subtract the noise and get the clipped update back. ``core``
never reads entropy itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from fedlearn.core.rdp import epsilon_spent
from fedlearn.core.types import Weights

__all__ = [
    "GaussianSource",
    "RdpAccountant",
    "apply_differential_privacy",
    "clip_update",
    "gaussian_noise_std",
]


class GaussianSource(Protocol):
    """A source of standard normal samples (``np.random.Generator`` is one)."""

    def standard_normal(self, size: int) -> npt.NDArray[np.float64]: ...


def clip_update(
    vector: npt.NDArray[np.floating[Any]], max_norm: float
) -> tuple[npt.NDArray[np.float64], float]:
    """``vector`` (float64) scaled to L2 norm at most ``max_norm``, and its original norm.

    A vector within the bound is returned unchanged (as float64).
    """
    if not (math.isfinite(max_norm) and max_norm > 0):
        raise ValueError(f"max_norm must be positive and finite, got {max_norm}")
    flat = np.asarray(vector, dtype=np.float64)
    norm = float(np.linalg.norm(flat.ravel()))
    if not math.isfinite(norm):
        raise ValueError("cannot clip a vector with non-finite entries")
    if norm <= max_norm:
        return flat.copy(), norm
    return flat * (max_norm / norm), norm


def gaussian_noise_std(*, noise_multiplier: float, clip_norm: float) -> float:
    """Standard deviation of the noise per coordinate: ``noise_multiplier * clip_norm``."""
    if not (noise_multiplier >= 0 and clip_norm > 0):
        raise ValueError(
            f"need noise_multiplier >= 0 and clip_norm > 0, got {noise_multiplier}, {clip_norm}"
        )
    return noise_multiplier * clip_norm


def apply_differential_privacy(
    update: Weights,
    *,
    clip_norm: float,
    noise_multiplier: float,
    rng: GaussianSource,
) -> dict[str, npt.NDArray[np.float32]]:
    """``update`` clipped to global L2 norm ``clip_norm``, plus Gaussian noise.

    The noise std is :func:`gaussian_noise_std`; the result has the update's names and
    shapes, as float32. Record each release in an :class:`RdpAccountant` with
    ``sample_rate=1.0`` (or the rate at which this client is sampled, if that is secret).
    """
    names = list(update)
    if not names:
        return {}
    arrays = [np.asarray(update[n]) for n in names]
    flat = np.concatenate([a.ravel().astype(np.float64) for a in arrays])
    clipped, _ = clip_update(flat, clip_norm)
    std = gaussian_noise_std(noise_multiplier=noise_multiplier, clip_norm=clip_norm)
    noised = clipped + std * np.asarray(rng.standard_normal(clipped.size), dtype=np.float64)
    out: dict[str, npt.NDArray[np.float32]] = {}
    start = 0
    for name, array in zip(names, arrays, strict=True):
        out[name] = noised[start : start + array.size].reshape(array.shape).astype(np.float32)
        start += array.size
    return out


@dataclass(slots=True)
class RdpAccountant:
    """Records Gaussian-mechanism steps; epsilon is computed by :mod:`fedlearn.core.rdp`.

    ``history`` holds (noise_multiplier, sample_rate, steps); consecutive steps with the
    same parameters are merged, as in Opacus's ``RDPAccountant``.
    """

    history: list[tuple[float, float, int]] = field(default_factory=list)

    def step(self, *, noise_multiplier: float, sample_rate: float, steps: int = 1) -> None:
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        if self.history and self.history[-1][:2] == (noise_multiplier, sample_rate):
            last = self.history.pop()
            steps += last[2]
        self.history.append((noise_multiplier, sample_rate, steps))

    def epsilon(self, delta: float) -> float:
        return epsilon_spent(self.history, delta=delta)

    def state_dict(self) -> dict[str, Any]:
        return {"mechanism": "rdp", "history": [list(h) for h in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("mechanism") != "rdp":
            raise ValueError(f"not an RDP accountant state: {state.get('mechanism')!r}")
        self.history = _history(state.get("history", []))


def _history(rows: Iterable[Any]) -> list[tuple[float, float, int]]:
    return [(float(nm), float(q), int(steps)) for nm, q, steps in rows]
