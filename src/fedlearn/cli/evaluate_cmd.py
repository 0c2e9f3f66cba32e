"""``fedlearn evaluate``: accuracy of a saved model on IDX test files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from fedlearn.cli.common import DataDirOpt, DatasetOpt, default_cache_dir

__all__ = ["evaluate"]


def evaluate(
    model: Annotated[
        Path,
        typer.Option(
            "--model",
            exists=True,
            dir_okay=False,
            help="A global_model.pt written by fedlearn run.",
        ),
    ],
    dataset: DatasetOpt = "mnist",
    data_dir: DataDirOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help='Print {"accuracy", "loss", "samples"}.')
    ] = False,
) -> None:
    """Evaluate a saved global model on a test split (t10k-* IDX files in --data-dir)."""
    from fedlearn.data import load_dataset, load_test_split
    from fedlearn.models.checkpoint import load_model_file
    from fedlearn.models.evaluate import evaluate_model

    _, net = load_model_file(model)
    if data_dir is not None:
        images, labels = load_test_split(data_dir)
    else:
        data = load_dataset(dataset, cache_dir=default_cache_dir(None))
        images, labels = data.test_images, data.test_labels
    result = evaluate_model(net, images, labels)
    if as_json:
        typer.echo(
            json.dumps(
                {"accuracy": result.accuracy, "loss": result.loss, "samples": result.samples}
            )
        )
    else:
        typer.echo(
            f"accuracy {result.accuracy:.4f}  loss {result.loss:.4f}  on {result.samples} images"
        )
