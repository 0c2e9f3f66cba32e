"""The ServerApp: Flower's own FedAvg, timed, with server-side evaluation every round.

The initial model is ``build_model(model, seed=0)`` (as fedlearn's coordinator), the
train config carries the SGD settings, every connected SuperNode trains every round
(``fraction_train=1``, no client-side evaluation) and the global model is evaluated on
the data set's test split after each round, with fedlearn's evaluator.

Each round appends one JSON line to the run config's ``results-file``: the round's wall
time from the moment its train messages are ready until the aggregate is built (what
fedlearn counts as a round: it evaluates off the critical path, so evaluation is timed
apart here), the slowest client's seconds inside ``LocalTrainer.train``, the payload
bytes sent and received (the ``ArrayRecord`` sizes, not counting framing), the test
accuracy and loss, and this process's peak RSS.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from fedlearn.models.evaluate import TorchEvaluator
from fedlearn.models.registry import build_model
from flowerbench.task import load_data

app = ServerApp()


def _peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


class TimedFedAvg(FedAvg):
    """Flower's FedAvg, unchanged, plus timestamps and byte counts per round."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rounds: dict[int, dict[str, Any]] = {}

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = list(super().configure_train(server_round, arrays, config, grid))
        self.rounds[server_round] = {
            "round": server_round,
            "clients": len(messages),
            "bytes_down": len(messages) * arrays.count_bytes(),
            "started": time.time(),
        }
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        received = time.time()
        good = [m for m in replies if not m.has_error()]
        train_s = [float(m.content["metrics"]["train-seconds"]) for m in good]  # type: ignore[arg-type]
        app_s = [float(m.content["metrics"]["clientapp-seconds"]) for m in good]  # type: ignore[arg-type]
        arrays, metrics = super().aggregate_train(server_round, replies)
        record = self.rounds[server_round]
        record.update(
            {
                "replies": len(good),
                "errors": len(replies) - len(good),
                "bytes_up": sum(m.content["arrays"].count_bytes() for m in good),
                "received": received,
                "aggregated": time.time(),
                "slowest_client_train_seconds": max(train_s, default=0.0),
                "slowest_clientapp_seconds": max(app_s, default=0.0),
            }
        )
        return arrays, metrics


def _evaluate_fn(
    evaluator: TorchEvaluator, strategy: TimedFedAvg, names: list[str], out: Path | None
) -> Callable[[int, ArrayRecord], MetricRecord]:
    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        started = time.time()
        weights = {name: arrays[name].numpy() for name in names}
        result = evaluator.evaluate(weights)
        ended = time.time()
        record = dict(strategy.rounds.get(server_round, {"round": server_round}))
        record.update(
            {
                "accuracy": result.accuracy,
                "loss": result.loss,
                "eval_seconds": ended - started,
                "evaluated": ended,
                "serverapp_peak_rss_bytes": _peak_rss_bytes(),
            }
        )
        if "started" in record and "aggregated" in record:
            record["seconds"] = record["aggregated"] - record["started"]
            record["overhead_seconds"] = record["seconds"] - record["slowest_client_train_seconds"]
        if out is not None:
            with out.open("a") as fh:
                fh.write(json.dumps(record) + "\n")
        return MetricRecord({"accuracy": result.accuracy, "loss": result.loss})

    return evaluate


@app.main()
def main(grid: Grid, context: Context) -> None:
    """FedAvg for ``num-server-rounds`` rounds on every SuperNode."""
    cfg = context.run_config
    num_clients = int(cfg["num-clients"])
    model_name = str(cfg["model"])
    out = Path(str(cfg["results-file"])) if cfg["results-file"] else None
    data = load_data(str(cfg["data-dir"]))
    evaluator = TorchEvaluator(model_name, data.test_images, data.test_labels)
    model = build_model(model_name, seed=0)
    names = list(model.state_dict())
    initial = ArrayRecord(model.state_dict())
    strategy = TimedFedAvg(
        fraction_train=1.0,
        fraction_evaluate=0.0,
        min_train_nodes=num_clients,
        min_evaluate_nodes=0,
        min_available_nodes=num_clients,
    )
    if out is not None:
        with out.open("a") as fh:
            fh.write(
                json.dumps(
                    {
                        "event": "serverapp-start",
                        "time": time.time(),
                        "source": data.source,
                        "torch_threads": torch.get_num_threads(),
                    }
                )
                + "\n"
            )
    strategy.start(
        grid=grid,
        initial_arrays=initial,
        num_rounds=int(cfg["num-server-rounds"]),
        train_config=ConfigRecord(
            {
                "local-epochs": int(cfg["local-epochs"]),
                "batch-size": int(cfg["batch-size"]),
                "lr": float(cfg["lr"]),
            }
        ),
        evaluate_fn=_evaluate_fn(evaluator, strategy, names, out),
    )
    if out is not None:
        with out.open("a") as fh:
            fh.write(json.dumps({"event": "serverapp-end", "time": time.time()}) + "\n")
