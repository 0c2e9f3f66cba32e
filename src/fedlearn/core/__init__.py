"""Pure numpy kernels and rules: no torch, grpc, SQL, clock or global RNG."""

from fedlearn.core.aggregation import StreamingFedAvg, weighted_mean
from fedlearn.core.serialization import decode_weights, encode_weights
from fedlearn.core.strategy import FedAvg, FedAvgM, Strategy, make_strategy
from fedlearn.core.validation import validate_update

__all__ = [
    "FedAvg",
    "FedAvgM",
    "Strategy",
    "StreamingFedAvg",
    "decode_weights",
    "encode_weights",
    "make_strategy",
    "validate_update",
    "weighted_mean",
]
