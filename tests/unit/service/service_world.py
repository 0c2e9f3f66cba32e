"""A coordinator over in-memory stores, and helpers to build updates."""

from __future__ import annotations

import numpy as np
from fedlearn_testing import FakeClock

from fedlearn.core.serialization import encode_weights
from fedlearn.core.strategy import FedAvg
from fedlearn.core.types import ClientCapabilities, EvalResult, RoundConfig
from fedlearn.persistence import InMemoryModelStore, InMemoryRunStore
from fedlearn.service.coordinator import Coordinator
from fedlearn.service.messages import CoordinatorConfig, UpdateSubmission

INITIAL = {"w": np.zeros((2, 3), np.float32), "b": np.ones(2, np.float32)}


class CountingEvaluator:
    def __init__(self) -> None:
        self.calls = 0

    def evaluate(self, weights):
        self.calls += 1
        return EvalResult(accuracy=0.5 + 0.01 * self.calls, loss=1.0 / self.calls, samples=10)


class World:
    """A coordinator over in-memory stores that tests can restart."""

    def __init__(self, evaluator=None, noise=None, initial=None, **config) -> None:
        self.noise = noise
        self.initial = INITIAL if initial is None else initial
        self.runs = InMemoryRunStore()
        self.models = InMemoryModelStore()
        self.clock = FakeClock(1_000.0)
        self.evaluator = evaluator or CountingEvaluator()
        defaults = {
            "run_id": "r",
            "model_name": "toy",
            "num_rounds": 3,
            "min_clients": 2,
            "round_config": RoundConfig(local_epochs=1, batch_size=8, learning_rate=0.1),
            "round_timeout_s": 60.0,
            "strategy": FedAvg(),
        }
        defaults.update(config)
        self.config = CoordinatorConfig(**defaults)
        self.coordinator = self.restart()

    def restart(self) -> Coordinator:
        self.coordinator = Coordinator(
            self.config,
            self.initial,
            runs=self.runs,
            models=self.models,
            clock=self.clock,
            evaluator=self.evaluator,
            noise=self.noise,
        )
        return self.coordinator

    def register(self, *names: str) -> None:
        for name in names:
            self.coordinator.register_client(name, ClientCapabilities(available_samples=10))


def delta(value: float, *, shape_w=(2, 3)) -> dict[str, np.ndarray]:
    return {"w": np.full(shape_w, value, np.float32), "b": np.full(2, value, np.float32)}


def submission(
    client: str,
    round_number: int,
    weights,
    *,
    samples: int = 10,
    update_id: str | None = None,
    loss: float = 0.5,
):
    return UpdateSubmission(
        client_id=client,
        round_number=round_number,
        update_id=update_id or f"{client}-{round_number}",
        payload=encode_weights(weights),
        num_samples=samples,
        training_loss=loss,
    )
