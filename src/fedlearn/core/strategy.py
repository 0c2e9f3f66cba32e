"""Server-side update rules applied to the aggregated client update.

Clients send deltas (their trained weights minus the global model they
started from). A strategy turns the weighted mean delta into the next global
model. :class:`FedAvg` adds it as is; :class:`FedAvgM` keeps server momentum
(Hsu et al., 2019), which converges much faster on non-IID splits.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedlearn.errors import ConfigError

__all__ = ["FedAvg", "FedAvgM", "ServerStep", "Strategy", "make_strategy"]

Vector = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class ServerStep:
    """The new global model and the state to carry into the next round."""

    weights: Vector
    state: Vector | None


class Strategy(ABC):
    """Computes the next global model from the current one and the mean delta.

    Contract: ``step`` is pure (it returns new arrays and never mutates its
    inputs) and returns float32 weights of the same size as ``weights``;
    ``state`` is whatever the strategy needs next round (``None`` if stateless).
    """

    name: str

    @abstractmethod
    def step(
        self, weights: Vector, mean_delta: npt.NDArray[np.float64], state: Vector | None
    ) -> ServerStep: ...


@dataclass(frozen=True, slots=True)
class FedAvg(Strategy):
    """McMahan et al.: the new model is the sample-weighted mean of client models."""

    server_lr: float = 1.0
    name: str = "fedavg"

    def step(
        self, weights: Vector, mean_delta: npt.NDArray[np.float64], state: Vector | None
    ) -> ServerStep:
        return ServerStep(weights=_stepped(weights, mean_delta, self.server_lr), state=None)


@dataclass(frozen=True, slots=True)
class FedAvgM(Strategy):
    """FedAvg with server momentum: ``v = beta * v + delta; w = w + lr * v``."""

    momentum: float = 0.9
    server_lr: float = 1.0
    name: str = "fedavgm"

    def step(
        self, weights: Vector, mean_delta: npt.NDArray[np.float64], state: Vector | None
    ) -> ServerStep:
        velocity = mean_delta if state is None else self.momentum * state + mean_delta
        velocity32 = velocity.astype(np.float32)
        return ServerStep(weights=_stepped(weights, velocity, self.server_lr), state=velocity32)


_BLOCK = 1 << 15


def _stepped(
    weights: Vector, direction: npt.NDArray[np.float64], lr: float
) -> npt.NDArray[np.float32]:
    """``float32(weights + lr * direction)``, computed in float64 block by block.

    The same operations in the same order as the whole-vector expression (so
    the same bits), without its two model-sized float64 temporaries, whose
    fresh pages cost more than the arithmetic.
    """
    out = np.empty(weights.shape, dtype=np.float32)
    for start in range(0, weights.size, _BLOCK):
        stop = start + _BLOCK
        block = direction[start:stop] * lr
        block += weights[start:stop]
        out[start:stop] = block
    return out


def make_strategy(name: str, *, server_lr: float = 1.0, momentum: float = 0.9) -> Strategy:
    if server_lr <= 0:
        raise ConfigError(f"server learning rate must be > 0, got {server_lr}")
    if name == "fedavg":
        return FedAvg(server_lr=server_lr)
    if name == "fedavgm":
        if not 0 <= momentum < 1:
            raise ConfigError(f"server momentum must be in [0, 1), got {momentum}")
        return FedAvgM(momentum=momentum, server_lr=server_lr)
    raise ConfigError(f"unknown strategy {name!r}: choose fedavg or fedavgm")
