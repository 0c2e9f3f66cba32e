"""The client side: local PyTorch training, the round loop and its crash recovery."""

from fedlearn.client.recovery import ClientState, Recovery
from fedlearn.client.runtime import ClientOptions, ClientReport, ClientRuntime
from fedlearn.client.trainer import LocalTrainer, TrainResult

__all__ = [
    "ClientOptions",
    "ClientReport",
    "ClientRuntime",
    "ClientState",
    "LocalTrainer",
    "Recovery",
    "TrainResult",
]
