"""The ClientApp: one round of fedlearn's ``LocalTrainer`` on this SuperNode's partition.

The SuperNode's node config gives ``partition-id`` and ``num-partitions``; the run config
gives the partitioner, seed, model and SGD settings. The reply carries the trained
weights, the sample count (FedAvg's weight, under ``num-examples``) and the seconds spent
in ``LocalTrainer.train`` alone (``train-seconds``), so that the ServerApp can tell the
framework's share of a round from the slowest client's training.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedlearn.client.trainer import LocalTrainer
from fedlearn.core.types import RoundConfig
from flowerbench.task import client_seed, load_data, partition_indices

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received global model for ``local-epochs`` on the local partition."""
    started = time.perf_counter()
    run_cfg = context.run_config
    partition = int(context.node_config["partition-id"])
    num_partitions = int(context.node_config["num-partitions"])
    torch.set_num_threads(int(run_cfg["threads"]))
    seed = int(run_cfg["seed"])
    model_name = str(run_cfg["model"])

    data = load_data(str(run_cfg["data-dir"]))
    indices = partition_indices(
        data.train_labels, num_partitions, str(run_cfg["partitioner"]), seed, partition
    )
    trainer = LocalTrainer(
        model_name,
        data.train_images[indices],
        data.train_labels[indices],
        seed=client_seed(seed, partition),
    )
    arrays = msg.content["arrays"]
    assert isinstance(arrays, ArrayRecord)
    trainer.set_weights({name: array.numpy() for name, array in arrays.items()})
    config = msg.content["config"]
    round_config = RoundConfig(
        local_epochs=int(config["local-epochs"]),  # type: ignore[arg-type]
        batch_size=int(config["batch-size"]),  # type: ignore[arg-type]
        learning_rate=float(config["lr"]),  # type: ignore[arg-type]
    )
    result = trainer.train(round_config, round_number=int(config["server-round"]))  # type: ignore[arg-type]
    weights = trainer.get_weights()
    reply = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in weights.items()}),
            "metrics": MetricRecord(
                {
                    "num-examples": result.samples,
                    "train-loss": result.loss,
                    "train-seconds": result.seconds,
                    "clientapp-seconds": time.perf_counter() - started,
                }
            ),
        }
    )
    return Message(content=reply, reply_to=msg)
