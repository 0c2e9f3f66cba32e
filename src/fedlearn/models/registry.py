"""The models fedlearn can train, built by name.

Both take a float tensor of shape ``[B, 1, 28, 28]`` (see :mod:`fedlearn.models.preprocess`)
and return ``[B, 10]`` logits:

* ``cnn``: the MNIST CNN of McMahan et al. (2017), "Communication-Efficient Learning of
  Deep Networks from Decentralized Data": two 5x5 convolutions (32 and 64 channels, 'same'
  padding) each followed by ReLU and 2x2 max pooling, a 512-unit ReLU layer and a
  10-way output. 1,663,370 parameters.
* ``dpcnn``: the small tanh CNN that DP-SGD papers train on MNIST (Papernot et al., 2021,
  "Tempered Sigmoid Activations"; Tramer and Boneh, 2021; Opacus's MNIST example): a 16
  channel 8x8 convolution with stride 2, a 32 channel 4x4 convolution with stride 2, each
  followed by tanh and 2x2 max pooling with stride 1, a 32-unit tanh layer and a 10-way
  output. 26,010 parameters; no BatchNorm, so Opacus computes its per-example gradients.
* ``mlp``: the paper's "2NN": 784-200-200-10 with ReLU. 199,210 parameters.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn

from fedlearn.core.types import TensorSpec
from fedlearn.errors import ConfigError

__all__ = [
    "MODEL_NAMES",
    "DpCNN",
    "MnistCNN",
    "MnistMLP",
    "build_model",
    "count_parameters",
    "model_specs",
]

logger = logging.getLogger(__name__)

NUM_CLASSES = 10
IMAGE_SIDE = 28


class MnistCNN(nn.Module):
    """CNN from the FedAvg paper (1,663,370 parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, kernel_size=5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=5, padding=2)
        self.pool = nn.MaxPool2d(2)
        self.relu = nn.ReLU()
        self.fc1 = nn.Linear(7 * 7 * 64, 512)
        self.fc2 = nn.Linear(512, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.conv1(x)))  # [B, 32, 14, 14]
        x = self.pool(self.relu(self.conv2(x)))  # [B, 64, 7, 7]
        x = torch.flatten(x, start_dim=1)
        x = self.relu(self.fc1(x))
        return self.fc2(x)  # type: ignore[no-any-return]


class DpCNN(nn.Module):
    """The tanh CNN of the DP-SGD literature (26,010 parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=8, stride=2, padding=3)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=4, stride=2)
        self.pool = nn.MaxPool2d(2, stride=1)
        self.tanh = nn.Tanh()
        self.fc1 = nn.Linear(32 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.tanh(self.conv1(x)))  # [B, 16, 13, 13]
        x = self.pool(self.tanh(self.conv2(x)))  # [B, 32, 4, 4]
        x = torch.flatten(x, start_dim=1)
        x = self.tanh(self.fc1(x))
        return self.fc2(x)  # type: ignore[no-any-return]


class MnistMLP(nn.Module):
    """Two hidden layers of 200 units (199,210 parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(IMAGE_SIDE * IMAGE_SIDE, 200)
        self.fc2 = nn.Linear(200, 200)
        self.fc3 = nn.Linear(200, NUM_CLASSES)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, start_dim=1)
        x = self.relu(self.fc1(x))
        x = self.relu(self.fc2(x))
        return self.fc3(x)  # type: ignore[no-any-return]


_FACTORIES: dict[str, Callable[[], nn.Module]] = {
    "cnn": MnistCNN,
    "dpcnn": DpCNN,
    "mlp": MnistMLP,
}

MODEL_NAMES: tuple[str, ...] = tuple(sorted(_FACTORIES))
"""Names accepted by :func:`build_model`: ``("cnn", "dpcnn", "mlp")``."""


def _factory(name: str) -> Callable[[], nn.Module]:
    try:
        return _FACTORIES[name]
    except KeyError:
        known = ", ".join(MODEL_NAMES)
        raise ConfigError(f"unknown model name {name!r}; expected one of: {known}") from None


def build_model(name: str, *, seed: int | None = None, channels_last: bool = False) -> nn.Module:
    """A fresh model called ``name`` on the CPU, in training mode.

    With ``seed`` the initial parameters depend only on the seed; the global torch RNG
    state is saved and restored, so callers' randomness is not disturbed. Without it the
    global torch RNG initialises the parameters as usual.

    ``channels_last`` stores 4-d parameters (the convolutions') channels-last, the layout
    whose convolution and pooling kernels run fastest on the CPU here (see
    ``TorchEvaluator`` and ``LocalTrainer``). It keeps its layout through ``copy_`` and
    ``load_state_dict``; ``model_to_weights`` still returns C-contiguous arrays.
    """
    factory = _factory(name)
    if seed is None:
        model = factory()
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = factory()
        logger.debug("built model %s with seed %d", name, seed)
    if channels_last:
        # Module.to takes memory_format at run time; torch's stubs omit it.
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters (trainable or not) of ``model``."""
    return sum(p.numel() for p in model.parameters())


def model_specs(name: str) -> tuple[TensorSpec, ...]:
    """Name, shape and dtype of every tensor in the state dict of model ``name``.

    The model is built on the ``meta`` device, so this allocates no parameter memory and
    touches no RNG.
    """
    factory = _factory(name)
    with torch.device("meta"):
        model = factory()
    return tuple(
        TensorSpec(name=key, shape=tuple(t.shape), dtype=_dtype_name(t.dtype))
        for key, t in model.state_dict().items()
    )


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
