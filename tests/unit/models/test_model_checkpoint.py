from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedlearn.errors import ConfigError, DataError
from fedlearn.models.checkpoint import load_model_file, read_model_file, save_model_file
from fedlearn.models.registry import build_model
from fedlearn.models.weights import model_to_weights


@pytest.mark.parametrize("name", ["cnn", "mlp"])
def test_save_then_load_round_trips_name_and_weights(tmp_path: Path, name: str) -> None:
    weights = model_to_weights(build_model(name, seed=5))
    path = tmp_path / "global" / "round-1.pt"
    save_model_file(path, model_name=name, weights=weights, metadata={"round": 1})
    loaded_name, model = load_model_file(path)
    assert loaded_name == name
    loaded = model_to_weights(model)
    assert list(loaded) == list(weights)
    for key in weights:
        np.testing.assert_array_equal(loaded[key], weights[key])


def test_saved_file_has_documented_layout_and_loads_weights_only(tmp_path: Path) -> None:
    weights = model_to_weights(build_model("mlp", seed=0))
    path = tmp_path / "m.pt"
    metadata = {"round": 3, "accuracy": 0.5, "tags": ["a", "b"], "extra": {"x": None}}
    save_model_file(path, model_name="mlp", weights=weights, metadata=metadata)
    payload = torch.load(path, weights_only=True)
    assert set(payload) == {"model_name", "state_dict", "metadata"}
    assert payload["model_name"] == "mlp"
    assert payload["metadata"] == metadata
    assert all(t.dtype == torch.float32 for t in payload["state_dict"].values())
    contents = read_model_file(path)
    assert contents.model_name == "mlp"
    assert contents.metadata == metadata


def test_save_overwrites_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    for seed in (1, 2):
        weights = model_to_weights(build_model("mlp", seed=seed))
        save_model_file(path, model_name="mlp", weights=weights)
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]
    np.testing.assert_array_equal(read_model_file(path).weights["fc1.bias"], weights["fc1.bias"])


def test_save_rejects_unknown_model_name(tmp_path: Path) -> None:
    weights = model_to_weights(build_model("mlp", seed=0))
    with pytest.raises(ConfigError):
        save_model_file(tmp_path / "m.pt", model_name="resnet", weights=weights)


def test_save_rejects_weights_that_do_not_fit_the_model(tmp_path: Path) -> None:
    weights = model_to_weights(build_model("mlp", seed=0))
    with pytest.raises(ConfigError):
        save_model_file(tmp_path / "m.pt", model_name="cnn", weights=weights)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("bad", [np.float64(1.0), {"k": object()}, {1: "a"}])
def test_save_rejects_metadata_that_is_not_plain_data(tmp_path: Path, bad: object) -> None:
    weights = model_to_weights(build_model("mlp", seed=0))
    with pytest.raises(ConfigError, match="metadata"):
        save_model_file(tmp_path / "m.pt", model_name="mlp", weights=weights, metadata={"v": bad})


def test_load_rejects_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_model_file(tmp_path / "absent.pt")


@pytest.mark.parametrize("content", [b"", b"not a torch file at all", b"PK\x03\x04garbage"])
def test_load_rejects_corrupt_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(DataError, match="corrupt"):
        load_model_file(path)


def test_load_rejects_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    save_model_file(path, model_name="mlp", weights=model_to_weights(build_model("mlp", seed=0)))
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DataError):
        load_model_file(path)


def test_load_rejects_unknown_model_name_in_file(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    state = {k: torch.from_numpy(v) for k, v in model_to_weights(build_model("mlp")).items()}
    torch.save({"model_name": "resnet", "state_dict": state, "metadata": {}}, path)
    with pytest.raises(DataError, match="unknown model"):
        load_model_file(path)


def test_load_rejects_state_dict_that_does_not_fit_named_model(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    state = {k: torch.from_numpy(v) for k, v in model_to_weights(build_model("mlp")).items()}
    torch.save({"model_name": "cnn", "state_dict": state, "metadata": {}}, path)
    with pytest.raises(DataError):
        load_model_file(path)


def test_load_rejects_file_holding_something_else(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(DataError, match="state_dict"):
        load_model_file(path)
