"""The client side: local PyTorch training and the round loop."""

from fedlearn.client.runtime import ClientOptions, ClientReport, ClientRuntime
from fedlearn.client.trainer import LocalTrainer, TrainResult

__all__ = ["ClientOptions", "ClientReport", "ClientRuntime", "LocalTrainer", "TrainResult"]
