"""Central, user-level differential privacy: DP-FedAvg (McMahan et al., ICLR 2018).

The coordinator, trusted with the raw updates, releases each round's aggregate as

    mean = (sum_i clip(delta_i, C) + N(0, (z * C)^2 I)) / n

where ``clip`` scales a client's whole delta to L2 norm at most ``C``, ``z`` is the
noise multiplier and ``n`` the number of clients that actually reported. Each client
counts once, whatever its sample count (an unweighted mean): adding or removing one
client changes the clipped sum by at most ``C``, so the noised sum is the Gaussian
mechanism with sensitivity ``C`` and noise multiplier ``z``, at the level of users
(all of a client's data), not of examples. The per-coordinate std of the noise in the
*mean* is therefore ``z * C / n`` (:func:`aggregate_noise_std`).

Two assumptions, which the README states as limitations:

- ``n`` is treated as public (the coordinator reports it in every round's status):
  the division by ``n`` is post-processing only under that assumption, as in Flower's
  server-side fixed clipping. The noise is calibrated to the ``n`` that reported, so
  fewer reports mean more noise in the mean, never less privacy.
- Rounds are accounted as the *sampled* Gaussian mechanism with sample rate
  ``q = selected / eligible clients`` (:func:`sample_rate`), i.e. as if every client
  joined the round independently with probability ``q`` (Poisson sampling). The
  coordinator draws a fixed-size uniform subset instead (the common approximation of
  TF Federated and of the DP-FedAvg paper); the amplification also needs the selection
  to be secret, so under central DP it is drawn from the secure noise source
  (:func:`secret_sample`), not from the run's public seed.

:class:`DpFedAvg` wraps any running-mean aggregator (``StreamingFedAvg``): it clips at
fold time, so memory stays one model-sized vector, and noises at :meth:`DpFedAvg.mean`.
Randomness comes in as a :class:`NoiseSource`; ``core`` never reads entropy itself.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from fedlearn.core.privacy import clip_update
from fedlearn.core.rdp import DEFAULT_ORDERS, epsilon_spent, rdp_sampled_gaussian, rdp_to_epsilon
from fedlearn.errors import ConfigError

__all__ = [
    "Aggregator",
    "CentralDpConfig",
    "DpFedAvg",
    "NoiseSource",
    "aggregate_noise_std",
    "noise_multiplier_for",
    "projected_epsilon",
    "sample_rate",
    "secret_sample",
    "user_level_epsilon",
]

History = Sequence[tuple[float, float, int]]


class NoiseSource(Protocol):
    """Standard normals and uniforms (``np.random.Generator`` and
    ``fedlearn.client.secure_random.SecureRandom`` are both one)."""

    def standard_normal(self, size: int) -> npt.NDArray[np.float64]: ...

    def random(self, size: int) -> npt.NDArray[np.float64]: ...


class Aggregator(Protocol):
    """A running mean of model-sized vectors (``StreamingFedAvg`` is one)."""

    @property
    def count(self) -> int: ...

    def add(self, vector: npt.NDArray[np.floating], weight: float) -> None: ...

    def mean(self) -> npt.NDArray[np.float64]: ...


@dataclass(frozen=True, slots=True)
class CentralDpConfig:
    """Central DP of a run: clip norm ``C``, noise multiplier ``z``, the accounting
    ``delta``, and an optional user-level ``target_epsilon`` that stops the run
    before a round would exceed it (``None``: account, never stop)."""

    clip_norm: float
    noise_multiplier: float
    delta: float = 1e-5
    target_epsilon: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.clip_norm) and self.clip_norm > 0):
            raise ConfigError(f"central DP clip norm must be > 0, got {self.clip_norm}")
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0):
            raise ConfigError(
                f"central DP noise multiplier must be > 0, got {self.noise_multiplier}"
            )
        if not 0 < self.delta < 1:
            raise ConfigError(f"central DP delta must be in (0, 1), got {self.delta}")
        target = self.target_epsilon
        if target is not None and not (math.isfinite(target) and target > 0):
            raise ConfigError(f"central DP target epsilon must be > 0, got {target}")


def aggregate_noise_std(*, clip_norm: float, noise_multiplier: float, reported: int) -> float:
    """Per-coordinate noise std of the mean of ``reported`` clipped updates: ``z*C/n``."""
    if reported < 1:
        raise ValueError(f"need at least one reported update, got {reported}")
    if not (clip_norm > 0 and noise_multiplier >= 0):
        raise ValueError(f"need clip_norm > 0 and z >= 0, got {clip_norm}, {noise_multiplier}")
    return noise_multiplier * clip_norm / reported


class DpFedAvg:
    """Wraps a running-mean aggregator: every update is clipped to ``clip_norm`` and
    counted with weight 1; :meth:`mean` adds ``N(0, (z*C/n)^2)`` to each coordinate.

    Each call to :meth:`mean` draws fresh noise: call it once per release.
    """

    __slots__ = ("_clipped", "_inner", "_noise", "clip_norm", "noise_multiplier")

    def __init__(
        self,
        inner: Aggregator,
        *,
        clip_norm: float,
        noise_multiplier: float,
        noise: NoiseSource,
    ) -> None:
        self._inner = inner
        self._noise = noise
        self._clipped = 0
        self.clip_norm = clip_norm
        self.noise_multiplier = noise_multiplier

    @property
    def count(self) -> int:
        return self._inner.count

    @property
    def clipped(self) -> int:
        """How many of the added updates were longer than ``clip_norm``."""
        return self._clipped

    def add(self, vector: npt.NDArray[np.floating], weight: float) -> None:
        """Fold ``vector`` clipped to ``clip_norm``; ``weight`` is ignored (each client
        counts once, which is what bounds the sensitivity by ``clip_norm``)."""
        clipped, norm = clip_update(vector, self.clip_norm)
        self._clipped += int(norm > self.clip_norm)
        self._inner.add(clipped, 1.0)

    def mean(self) -> npt.NDArray[np.float64]:
        """The unweighted mean of the clipped updates plus calibrated Gaussian noise."""
        mean = self._inner.mean()
        std = aggregate_noise_std(
            clip_norm=self.clip_norm, noise_multiplier=self.noise_multiplier, reported=self.count
        )
        noise = np.asarray(self._noise.standard_normal(mean.size), dtype=np.float64)
        return mean + std * noise


def sample_rate(selected: int, eligible: int) -> float:
    """The user-level sample rate of a round: ``selected / eligible`` clients."""
    if not 0 < selected <= eligible:
        raise ValueError(f"need 0 < selected <= eligible, got {selected} of {eligible}")
    return selected / eligible


def secret_sample(candidates: Sequence[str], k: int, *, source: NoiseSource) -> tuple[str, ...]:
    """``k`` distinct clients, uniformly, from ``source``'s uniforms (sorted)."""
    if not 0 <= k <= len(candidates):
        raise ValueError(f"cannot select {k} clients out of {len(candidates)}")
    pool = sorted(candidates)
    keys = np.asarray(source.random(len(pool)), dtype=np.float64)
    chosen = np.argsort(keys, kind="stable")[:k]
    return tuple(sorted(pool[int(i)] for i in chosen))


@functools.lru_cache(maxsize=1024)
def _round_rdp(noise_multiplier: float, sample_rate: float) -> tuple[float, ...]:
    """RDP of one round at each default order (memoised: a run repeats few ``(z, q)``,
    and the fractional orders of the sampled Gaussian take a fraction of a second)."""
    rdp = rdp_sampled_gaussian(sample_rate=sample_rate, noise_multiplier=noise_multiplier)
    return tuple(float(x) for x in rdp)


def user_level_epsilon(history: History, *, delta: float) -> float:
    """Epsilon at ``delta`` of the rounds in ``history`` ((z, q, rounds) triples, as
    ``RdpAccountant.history``); the same number as :func:`fedlearn.core.rdp.epsilon_spent`,
    computed once per distinct ``(z, q)``."""
    total = np.zeros(len(DEFAULT_ORDERS))
    for noise_multiplier, rate, steps in history:
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        if steps:
            total += np.asarray(_round_rdp(noise_multiplier, rate)) * steps
    if not total.any():
        return 0.0
    return rdp_to_epsilon(orders=DEFAULT_ORDERS, rdp=total, delta=delta)[0]


def projected_epsilon(
    history: History, *, noise_multiplier: float, sample_rate: float, delta: float
) -> float:
    """Epsilon at ``delta`` once one more round ``(z, q)`` is composed onto ``history``."""
    return user_level_epsilon([*history, (noise_multiplier, sample_rate, 1)], delta=delta)


def noise_multiplier_for(
    *,
    target_epsilon: float,
    delta: float,
    rounds: int,
    sample_rate: float,
    tolerance: float = 1e-3,
) -> float:
    """The smallest noise multiplier (to ``tolerance``) whose ``rounds`` rounds at
    ``sample_rate`` spend at most ``target_epsilon`` at ``delta``; bisection, as
    Opacus's ``get_noise_multiplier``. ``ConfigError`` if no ``z <= 1e4`` reaches it."""
    if not (target_epsilon > 0 and rounds >= 1 and 0 < sample_rate <= 1):
        raise ConfigError(
            f"need target epsilon > 0, rounds >= 1 and 0 < q <= 1, got {target_epsilon}, "
            f"{rounds}, {sample_rate}"
        )

    def eps(z: float) -> float:
        return epsilon_spent([(z, sample_rate, rounds)], delta=delta)

    low, high = 0.0, 1.0
    while eps(high) > target_epsilon:
        low, high = high, 2 * high
        if high > 1e4:
            raise ConfigError(f"no noise multiplier reaches epsilon {target_epsilon}")
    while high - low > tolerance:
        mid = (low + high) / 2
        if eps(mid) > target_epsilon:
            low = mid
        else:
            high = mid
    return high
