"""Model files: a torch file holding the model name, its state dict and metadata.

The layout, readable with ``torch.load(path, weights_only=True)``::

    {"model_name": "cnn", "state_dict": {name: float32 tensor}, "metadata": {...}}

Metadata values must be plain data (str, int, float, bool, None, and lists, tuples and
string-keyed dicts of these) so that the file loads without unpickling arbitrary objects.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from fedlearn.core.types import Weights
from fedlearn.errors import ConfigError, DataError
from fedlearn.models.registry import MODEL_NAMES, build_model, model_specs
from fedlearn.models.weights import check_compatible, load_weights

__all__ = [
    "ModelFile",
    "load_model_file",
    "read_model_file",
    "save_model_file",
]

logger = logging.getLogger(__name__)

_PLAIN_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True, slots=True)
class ModelFile:
    """The contents of a model file, with the weights as numpy arrays."""

    model_name: str
    weights: dict[str, npt.NDArray[np.float32]]
    metadata: dict[str, Any] = field(default_factory=dict)


def save_model_file(
    path: str | os.PathLike[str],
    *,
    model_name: str,
    weights: Weights,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Write a model file atomically (temporary file in the same folder, then rename).

    Raises :class:`ConfigError` for an unknown model name, weights that do not fit the
    model, or metadata that is not plain data.
    """
    if model_name not in MODEL_NAMES:
        raise ConfigError(f"unknown model name {model_name!r}; expected one of {MODEL_NAMES}")
    expected = {spec.name: spec.shape for spec in model_specs(model_name)}
    check_compatible(expected, weights)
    meta = dict(metadata or {})
    _check_plain(meta, where="metadata")
    payload = {
        "model_name": model_name,
        "state_dict": {
            name: torch.from_numpy(np.array(weights[name], dtype=np.float32, order="C"))
            for name in expected
        },
        "metadata": meta,
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    logger.debug("saved %s model to %s", model_name, target)


def read_model_file(path: str | os.PathLike[str]) -> ModelFile:
    """Read and check a model file; :class:`DataError` if it is missing, corrupt or unknown."""
    target = Path(path)
    if not target.is_file():
        raise DataError(f"model file {str(target)!r} does not exist")
    try:
        payload = torch.load(target, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many kinds on foreign or damaged files
        raise DataError(
            f"model file {str(target)!r} is corrupt or not a fedlearn model file "
            f"({type(exc).__name__})"
        ) from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("state_dict"), dict):
        raise DataError(f"model file {str(target)!r} has no state_dict")
    model_name = payload.get("model_name")
    if not isinstance(model_name, str) or model_name not in MODEL_NAMES:
        raise DataError(f"model file {str(target)!r} names an unknown model {model_name!r}")
    state = payload["state_dict"]
    if not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise DataError(f"model file {str(target)!r} holds a state_dict entry that is no tensor")
    weights = {
        str(name): np.array(t.detach().numpy(), dtype=np.float32, order="C")
        for name, t in state.items()
    }
    expected = {spec.name: spec.shape for spec in model_specs(model_name)}
    try:
        check_compatible(expected, weights, what=f"model file {str(target)!r}")
    except ConfigError as exc:
        raise DataError(str(exc)) from exc
    metadata = payload.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise DataError(f"model file {str(target)!r} has metadata that is not a dict")
    return ModelFile(model_name=model_name, weights=weights, metadata=metadata)


def load_model_file(path: str | os.PathLike[str]) -> tuple[str, nn.Module]:
    """The model name and a CPU model (in eval mode) holding the file's weights."""
    contents = read_model_file(path)
    model = build_model(contents.model_name, seed=0)
    load_weights(model, contents.weights)
    model.eval()
    return contents.model_name, model


def _check_plain(value: object, *, where: str) -> None:
    # Exact types: subclasses (numpy scalars, enums, named tuples) would not load.
    kind = type(value)
    if kind in _PLAIN_SCALARS:
        return
    if isinstance(value, list | tuple) and kind in (list, tuple):
        for index, item in enumerate(value):
            _check_plain(item, where=f"{where}[{index}]")
        return
    if isinstance(value, dict) and kind is dict:
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(f"{where} has a non-string key {key!r}")
            _check_plain(item, where=f"{where}[{key!r}]")
        return
    raise ConfigError(f"{where} holds a {type(value).__name__}; only plain data can be saved")
