"""Renyi-DP accounting of the (Poisson-subsampled) Gaussian mechanism, in pure Python.

One *step* releases ``f(batch) + N(0, (noise_multiplier * sensitivity)^2)`` where every
record joins the batch independently with probability ``sample_rate`` (Poisson
subsampling; ``sample_rate = 1`` is the plain Gaussian mechanism). Its RDP at order
``alpha`` is computed exactly as in Mironov, Talwar and Zhang (2019), "Renyi Differential
Privacy of the Sampled Gaussian Mechanism", section 3.3: the closed-form binomial sum for
integer orders and the convergent two-sided series for fractional ones. RDP adds up over
steps; the total is turned into (epsilon, delta) with Balle et al. (2020), "Hypothesis
testing interpretations and Renyi differential privacy", theorem 21, minimised over the
orders.

This is the computation of Opacus's ``RDPAccountant`` (and TF Privacy's), with the same
default orders, written without scipy so that ``core`` stays numpy + stdlib. The bound is
for Poisson subsampling under add/remove-one adjacency: a trainer that draws fixed-size
shuffled batches instead gets no exact guarantee from it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULT_ORDERS",
    "epsilon_spent",
    "rdp_sampled_gaussian",
    "rdp_to_epsilon",
]

DEFAULT_ORDERS: tuple[float, ...] = tuple(
    [1 + x / 10.0 for x in range(1, 100)] + [float(a) for a in range(12, 64)]
)
"""Opacus's default RDP orders (1.1 ... 10.9, 12 ... 63)."""

_SERIES_CUTOFF = -30.0
"""Stop the fractional-order series once both new log-terms are below this."""


def _log_add(x: float, y: float) -> float:
    low, high = min(x, y), max(x, y)
    if low == -math.inf:
        return high
    return math.log1p(math.exp(low - high)) + high


def _log_sub(x: float, y: float) -> float:
    """log(exp(x) - exp(y)) for x >= y."""
    if y == -math.inf:
        return x
    if x <= y:
        return -math.inf
    try:
        return math.log(math.expm1(x - y)) + y
    except OverflowError:
        return x


def _log_erfc(x: float) -> float:
    """log(erfc(x)), accurate where erfc underflows (asymptotic series for large x)."""
    if x < 25.0:  # erfc(25) ~ 8e-274, still a normal double
        return math.log(math.erfc(x))
    inv = 1.0 / (2.0 * x * x)
    term, series = 1.0, 1.0
    for k in range(1, 8):  # erfc(x) ~ exp(-x^2)/(x sqrt(pi)) * sum (-1)^k (2k-1)!! / (2x^2)^k
        term *= -(2 * k - 1) * inv
        series += term
    return -x * x - math.log(x) - 0.5 * math.log(math.pi) + math.log(series)


def _log_a_int(q: float, sigma: float, alpha: int) -> float:
    log_a = -math.inf
    for i in range(alpha + 1):
        log_binom = math.lgamma(alpha + 1) - math.lgamma(i + 1) - math.lgamma(alpha - i + 1)
        log_coef = log_binom + i * math.log(q) + (alpha - i) * math.log1p(-q)
        log_a = _log_add(log_a, log_coef + (i * i - i) / (2 * sigma**2))
    return log_a


def _log_a_frac(q: float, sigma: float, alpha: float) -> float:
    log_a0, log_a1 = -math.inf, -math.inf
    z0 = sigma**2 * math.log(1 / q - 1) + 0.5
    log_binom, positive, i = 0.0, True, 0  # log|binom(alpha, i)| and its sign
    while True:
        j = alpha - i
        log_t0 = log_binom + i * math.log(q) + j * math.log1p(-q)
        log_t1 = log_binom + j * math.log(q) + i * math.log1p(-q)
        log_e0 = math.log(0.5) + _log_erfc((i - z0) / (math.sqrt(2) * sigma))
        log_e1 = math.log(0.5) + _log_erfc((z0 - j) / (math.sqrt(2) * sigma))
        log_s0 = log_t0 + (i * i - i) / (2 * sigma**2) + log_e0
        log_s1 = log_t1 + (j * j - j) / (2 * sigma**2) + log_e1
        if positive:
            log_a0, log_a1 = _log_add(log_a0, log_s0), _log_add(log_a1, log_s1)
        else:
            log_a0, log_a1 = _log_sub(log_a0, log_s0), _log_sub(log_a1, log_s1)
        if max(log_s0, log_s1) < _SERIES_CUTOFF:
            return _log_add(log_a0, log_a1)
        # binom(alpha, i + 1) = binom(alpha, i) * (alpha - i) / (i + 1)
        log_binom += math.log(abs(alpha - i)) - math.log(i + 1)
        positive = positive == (alpha - i > 0)
        i += 1


def _rdp_one(q: float, sigma: float, alpha: float) -> float:
    if q == 0:
        return 0.0
    if sigma == 0:
        return math.inf
    if q == 1.0:
        return alpha / (2 * sigma**2)
    if float(alpha).is_integer():
        return _log_a_int(q, sigma, int(alpha)) / (alpha - 1)
    return _log_a_frac(q, sigma, alpha) / (alpha - 1)


def rdp_sampled_gaussian(
    *, sample_rate: float, noise_multiplier: float, orders: Sequence[float] = DEFAULT_ORDERS
) -> npt.NDArray[np.float64]:
    """RDP of one step of the sampled Gaussian mechanism at each of ``orders`` (> 1)."""
    if not 0.0 <= sample_rate <= 1.0:
        raise ValueError(f"sample_rate must be in [0, 1], got {sample_rate}")
    if not noise_multiplier >= 0.0:
        raise ValueError(f"noise_multiplier must be >= 0, got {noise_multiplier}")
    if any(not a > 1.0 for a in orders):
        raise ValueError("RDP orders must be > 1")
    return np.array([_rdp_one(sample_rate, noise_multiplier, a) for a in orders])


def rdp_to_epsilon(
    *, orders: Sequence[float], rdp: npt.NDArray[np.float64], delta: float
) -> tuple[float, float]:
    """The smallest epsilon over ``orders`` for ``delta``, and the order that gives it."""
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    alphas = np.asarray(orders, dtype=np.float64)
    if alphas.shape != rdp.shape:
        raise ValueError(f"{alphas.size} orders but {rdp.size} RDP values")
    with np.errstate(invalid="ignore"):
        eps = rdp - (math.log(delta) + np.log(alphas)) / (alphas - 1) + np.log1p(-1 / alphas)
    if np.isnan(eps).all():
        return math.inf, math.nan
    best = int(np.nanargmin(eps))
    return max(float(eps[best]), 0.0), float(alphas[best])


def epsilon_spent(
    history: Iterable[tuple[float, float, int]],
    *,
    delta: float,
    orders: Sequence[float] = DEFAULT_ORDERS,
) -> float:
    """Epsilon at ``delta`` after the steps of ``history``: (noise_multiplier,
    sample_rate, steps) triples, composed. An empty history has spent nothing."""
    total = np.zeros(len(orders))
    empty = True
    for noise_multiplier, sample_rate, steps in history:
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        if steps == 0:
            continue
        rdp = rdp_sampled_gaussian(
            sample_rate=sample_rate, noise_multiplier=noise_multiplier, orders=orders
        )
        total = total + rdp * steps
        empty = False
    if empty:
        return 0.0
    return rdp_to_epsilon(orders=orders, rdp=total, delta=delta)[0]
