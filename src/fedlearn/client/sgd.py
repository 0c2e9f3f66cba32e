"""Plain SGD (no momentum, no weight decay), the update of a client's local training,
without ``torch.optim``.

``torch.optim.Optimizer`` wraps ``add_param_group``, ``zero_grad`` and ``state_dict`` in
``torch._disable_dynamo``, which imports ``torch._dynamo`` on first use: some 800 modules
and ~110 MB of memory in every client process, the largest item after PyTorch itself,
for an update that is one line per tensor. :class:`PlainSgd` makes exactly the update
``torch.optim.SGD(params, lr=lr, momentum=0)`` makes on CPU tensors (its single-tensor
path, ``param.add_(grad, alpha=-lr)`` without autograd), so the weights are the same bit
for bit, and reads and writes the same ``state_dict`` as that optimizer, which the
per-epoch checkpoints keep.

DP-SGD still uses ``torch.optim.SGD``: Opacus's ``DPOptimizer`` wraps a real optimizer.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from fedlearn.errors import ConfigError

__all__ = ["PlainSgd"]

logger = logging.getLogger(__name__)

_SGD_DEFAULTS: Mapping[str, Any] = {
    "momentum": 0.0,
    "dampening": 0,
    "weight_decay": 0,
    "nesterov": False,
    "maximize": False,
    "foreach": None,
    "differentiable": False,
    "fused": None,
}
"""The rest of a ``torch.optim.SGD(momentum=0)`` parameter group, as its state dict has it."""


class PlainSgd:
    """``param -= lr * grad`` for each parameter that has a gradient."""

    __slots__ = ("lr", "params")

    def __init__(self, params: Iterable[torch.Tensor], *, lr: float) -> None:
        if not (math.isfinite(lr) and lr > 0):
            raise ConfigError(f"learning rate must be positive, got {lr}")
        self.params = list(params)
        self.lr = float(lr)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop the gradients (``set_to_none``), or zero them in place."""
        for param in self.params:
            if param.grad is None:
                continue
            if set_to_none:
                param.grad = None
            else:
                param.grad.detach_()
                param.grad.zero_()

    def step(self) -> None:
        with torch.no_grad():
            for param in self.params:
                if param.grad is not None:
                    param.add_(param.grad, alpha=-self.lr)

    def state_dict(self) -> dict[str, Any]:
        """What ``torch.optim.SGD(momentum=0).state_dict()`` returns: no per-parameter
        state, one group."""
        group = {"lr": self.lr, **_SGD_DEFAULTS, "params": list(range(len(self.params)))}
        return {"state": {}, "param_groups": [group]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Take the learning rate of a state saved by this class or by ``torch.optim.SGD``
        without momentum; :class:`ConfigError` for anything else (other parameters,
        momentum buffers), which this optimizer could not continue from."""
        try:
            (group,) = state["param_groups"]
            lr, params, momentum = group["lr"], group["params"], group.get("momentum", 0.0)
            buffers = state["state"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"not the state of a plain SGD optimizer: {exc!r}") from exc
        if len(params) != len(self.params):
            raise ConfigError(
                f"optimizer state for {len(params)} parameters, this one has {len(self.params)}"
            )
        if momentum != 0 or any(v.get("momentum_buffer") is not None for v in buffers.values()):
            raise ConfigError("optimizer state with momentum: plain SGD cannot continue it")
        self.lr = float(lr)
