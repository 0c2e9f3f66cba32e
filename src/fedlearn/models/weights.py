"""Move parameters between torch models and plain numpy ``Weights``."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from fedlearn.core.types import Weights
from fedlearn.errors import ConfigError

__all__ = [
    "check_compatible",
    "compute_delta",
    "load_weights",
    "model_to_weights",
]

logger = logging.getLogger(__name__)


def model_to_weights(model: nn.Module) -> dict[str, npt.NDArray[np.float32]]:
    """A float32, C-contiguous numpy copy of every tensor in ``model.state_dict()``.

    Keys keep the state dict's order. The arrays share no memory with the model.
    """
    return {
        name: np.array(tensor.detach().cpu().numpy(), dtype=np.float32, order="C", copy=True)
        for name, tensor in model.state_dict().items()
    }


def check_compatible(
    expected: Mapping[str, tuple[int, ...]], weights: Weights, *, what: str = "weights"
) -> None:
    """Raise :class:`ConfigError` unless ``weights`` has exactly the expected names and shapes."""
    missing = [name for name in expected if name not in weights]
    unexpected = [name for name in weights if name not in expected]
    if missing or unexpected:
        raise ConfigError(
            f"{what} do not match the model: missing {missing}, unexpected {unexpected}"
        )
    for name, shape in expected.items():
        got = tuple(np.shape(weights[name]))
        if got != tuple(shape):
            raise ConfigError(
                f"{what} tensor {name!r} has shape {list(got)}, model expects {list(shape)}"
            )


def load_weights(model: nn.Module, weights: Weights) -> None:
    """Copy ``weights`` into ``model`` in place (strict).

    Raises :class:`ConfigError` for a missing or unexpected name, a shape mismatch or an
    array that cannot be read as float32; the model is left untouched in that case.
    """
    state = model.state_dict()
    check_compatible({name: tuple(t.shape) for name, t in state.items()}, weights)
    tensors: dict[str, torch.Tensor] = {}
    for name in state:
        try:
            array = np.asarray(weights[name], dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"weights tensor {name!r} is not numeric: {exc}") from exc
        tensors[name] = torch.from_numpy(array)
    with torch.no_grad():
        for name, target in state.items():
            target.copy_(tensors[name])


def compute_delta(new: Weights, base: Weights) -> dict[str, npt.NDArray[np.float32]]:
    """``new - base`` per tensor, as float32, in the order of ``new``.

    Raises :class:`ConfigError` unless both have the same names and shapes.
    """
    check_compatible({name: tuple(np.shape(a)) for name, a in base.items()}, new)
    return {
        name: np.subtract(
            np.asarray(array, dtype=np.float32), np.asarray(base[name], dtype=np.float32)
        )
        for name, array in new.items()
    }
