"""Accuracy per round, rounds to target accuracy, and the centralised baseline.

Federated runs are ``fedlearn run`` (real processes, FedAvg, the CNN, server-side
test accuracy after every round). The centralised baseline trains the same CNN,
from the same initial weights, with the same optimiser settings on all the
training data for as many epochs as the federation made passes over it (rounds x
local epochs), and is evaluated on the same test set after every epoch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.federation import HYPERPARAMETERS, rounds_to, run_federation
from benchmarks.report import Plot, Result, Series

__all__ = ["THRESHOLDS", "Setting", "centralised", "run"]

THRESHOLDS = {"mnist": (0.91, 0.95, 0.97, 0.99), "fashion": (0.85, 0.88, 0.90)}
DATASET_NAMES = {"mnist": "MNIST", "fashion": "Fashion-MNIST"}


@dataclass(frozen=True, slots=True)
class Setting:
    dataset: str
    partitioner: str
    clients: int
    rounds: int


QUICK = (Setting("mnist", "shards", 10, 5),)
FULL = (
    Setting("mnist", "iid", 10, 20),
    Setting("mnist", "shards", 10, 20),
    Setting("mnist", "shards", 50, 20),
    Setting("fashion", "iid", 10, 5),
    Setting("fashion", "shards", 10, 5),
    Setting("fashion", "iid", 50, 5),
    Setting("fashion", "shards", 50, 5),
)
"""Every data set and partition at 10 and 50 clients. A 50-client run starts 50 client
processes, each reading only its own partition (about 0.35 GB each with the CNN). A
Fashion-MNIST round trains on all 60,000 images (about a minute on 2 cores), so those
settings run 5 rounds: the whole full mode takes about 45 minutes there."""


def centralised(dataset: str, epochs: int) -> tuple[list[float], float]:
    """Test accuracy after each epoch of centralised training, and the seconds it took."""
    import torch  # noqa: PLC0415 - torch only for this benchmark

    from benchmarks.common import mnist_dir  # noqa: PLC0415
    from fedlearn.client.trainer import LocalTrainer  # noqa: PLC0415
    from fedlearn.core.types import RoundConfig  # noqa: PLC0415
    from fedlearn.data import load_dataset  # noqa: PLC0415
    from fedlearn.models.evaluate import TorchEvaluator  # noqa: PLC0415

    torch.set_num_threads(HYPERPARAMETERS["threads"])
    data_dir: Path | None = mnist_dir()[0] if dataset == "mnist" else None
    data = load_dataset(dataset, data_dir=data_dir)
    p = HYPERPARAMETERS
    trainer = LocalTrainer(p["model"], data.train_images, data.train_labels, seed=p["seed"])
    evaluator = TorchEvaluator(p["model"], data.test_images, data.test_labels)
    config = RoundConfig(local_epochs=1, batch_size=p["batch_size"], learning_rate=p["lr"])
    accuracies = []
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        trainer.train(config, round_number=epoch)
        accuracies.append(evaluator.evaluate(trainer.get_weights()).accuracy)
    return accuracies, time.perf_counter() - started


def _reached(accuracies: list[float | None], thresholds: tuple[float, ...]) -> str:
    found = rounds_to(accuracies, thresholds)
    return ", ".join(f"{k}: {'-' if v is None else v}" for k, v in found.items())


def _row(
    dataset: str, partition: str, clients: int | None, curve: list[float | None], seconds: float
) -> list[object]:
    known = [a for a in curve if a is not None]
    return [
        DATASET_NAMES[dataset],
        partition,
        clients,
        len(curve),
        curve[-1] if curve else None,
        max(known) if known else None,
        _reached(curve, THRESHOLDS[dataset]),
        round(seconds, 1),
    ]


COLUMNS = (
    "data", "partition", "clients", "rounds (epochs)", "final accuracy", "best accuracy",
    "rounds (epochs) to reach", "seconds",
)  # fmt: skip


def run(quick: bool) -> Result:
    settings = QUICK if quick else FULL
    rows: list[list[object]] = []
    curves: dict[str, dict[str, list[float | None]]] = {}
    sources: dict[str, str] = {}
    failures: list[str] = []
    for index, s in enumerate(settings, start=1):
        print(
            f"  [{index}/{len(settings)}] {DATASET_NAMES[s.dataset]}, {s.partitioner}, "
            f"{s.clients} clients, {s.rounds} rounds ...",
            flush=True,
        )
        try:
            fed = run_federation(
                clients=s.clients, rounds=s.rounds, dataset=s.dataset, partitioner=s.partitioner
            )
        except RuntimeError as exc:  # one failed setting must not lose the others
            print(f"      failed: {str(exc)[:300]}", flush=True)
            failures.append(
                f"{DATASET_NAMES[s.dataset]}, {s.partitioner}, {s.clients} "
                f"clients failed: {str(exc)[:500]}"
            )
            rows.append(_row(s.dataset, s.partitioner, s.clients, [], 0.0))
            continue
        curve = [r["accuracy"] for r in fed.summary["rounds"]]
        print(
            f"      final accuracy {curve[-1]}, {fed.summary.get('wall_seconds', 0):.0f} s",
            flush=True,
        )
        curves.setdefault(s.dataset, {})[f"{s.partitioner}, {s.clients} clients"] = curve
        sources[s.dataset] = fed.data_source
        rows.append(
            _row(s.dataset, s.partitioner, s.clients, curve, fed.summary.get("wall_seconds", 0))
        )
    if not curves:
        raise RuntimeError("every setting failed: " + "; ".join(failures))
    for dataset, by_label in curves.items():
        epochs = max(s.rounds for s in settings if s.dataset == dataset)
        epochs *= HYPERPARAMETERS["local_epochs"]
        print(f"  centralised {DATASET_NAMES[dataset]}, {epochs} epochs ...", flush=True)
        curve, seconds = centralised(dataset, epochs)
        by_label["centralised (per epoch)"] = list(curve)
        rows.append(_row(dataset, "centralised", None, list(curve), seconds))
    return Result(
        name="accuracy",
        title="Accuracy per round and rounds to target accuracy",
        columns=COLUMNS,
        rows=rows,
        notes=[
            f"Hyperparameters: {HYPERPARAMETERS}. Data: "
            + "; ".join(f"{DATASET_NAMES[d]}: {src}" for d, src in sources.items())
            + ". Accuracy is on the server-side test split after each round.",
            "Centralised baseline: the same CNN, initial weights and SGD settings on all the "
            "training data, one epoch per federated round (same total epochs), in one process.",
            "Thresholds: "
            + "; ".join(
                f"{DATASET_NAMES[d]} {', '.join(f'{t:.0%}' for t in ts)}"
                for d, ts in THRESHOLDS.items()
            )
            + " ('-': not reached within the rounds run). Shards: 2 label shards per client.",
            "The comparison with Flower on identical work is the flower benchmark.",
            *failures,
        ],
        figures=[
            Plot(
                file=f"accuracy_{dataset}.png",
                title=f"{DATASET_NAMES[dataset]}: test accuracy per round",
                xlabel="round (centralised: epoch)",
                ylabel="test accuracy",
                series=[
                    Series(label, list(range(1, len(curve) + 1)), curve)
                    for label, curve in by_label.items()
                ],
            )
            for dataset, by_label in curves.items()
        ],
        data=_data(curves),
    )


def _data(curves: dict[str, dict[str, list[float | None]]]) -> dict[str, Any]:
    return {
        "curves": curves,
        "thresholds": {d: list(t) for d, t in THRESHOLDS.items()},
        "hyperparameters": HYPERPARAMETERS,
    }
