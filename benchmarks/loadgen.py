"""Load generator: many synthetic clients that speak fedlearn's gRPC protocol.

``python -m benchmarks.loadgen --coordinator HOST:PORT --clients N [--prefix p] --stats F``

Each simulated client is a thread with its own ``GrpcCoordinatorClient`` and does
what ``ClientRuntime`` does, without training: register, long-poll for a task,
download the global model, and submit a delta of the model's real size (random
float32 tensors shaped like the downloaded model, built once per process). It
stops when the coordinator says the run is finished, or dies on an error a real
client would die on (``TransportError`` once retries are spent). The statistics
(calls, latencies, errors, and the transient failures the client library
retried, counted from its debug log) go to ``--stats`` as JSON when every client is done
or ``--deadline`` passes.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from fedlearn.core.serialization import decode_weights, encode_weights
from fedlearn.core.types import ClientCapabilities
from fedlearn.errors import ConflictError, FedLearnError, NotFoundError, StaleRoundError
from fedlearn.service.messages import Task, TaskKind, UpdateSubmission
from fedlearn.transport.client import GrpcCoordinatorClient

__all__ = ["LoadStats", "SyntheticClient", "main"]

SAMPLES = 400


class LoadStats:
    """Thread-safe counters and call latencies of every simulated client of a process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.latencies: dict[str, list[float]] = collections.defaultdict(list)
        self.errors: collections.Counter[str] = collections.Counter()
        self.retries: collections.Counter[str] = collections.Counter()
        self.first_errors: list[str] = []
        self.rounds_trained = 0
        self.finished_clients = 0
        self.dead_clients = 0

    def timed(self, call: str, seconds: float) -> None:
        with self._lock:
            self.latencies[call].append(seconds)

    def error(self, kind: str, exc: BaseException, *, fatal: bool = False) -> None:
        with self._lock:
            self.errors[f"{kind}: {type(exc).__name__}"] += 1
            if len(self.first_errors) < 5:
                self.first_errors.append(f"{kind}: {exc}"[:300])
            self.dead_clients += int(fatal)

    def retry(self, what: str) -> None:
        with self._lock:
            self.retries[what] += 1

    def count(self, *, trained: int = 0, finished: int = 0) -> None:
        with self._lock:
            self.rounds_trained += trained
            self.finished_clients += finished

    def summary(self, clients: int, wall_s: float) -> dict[str, Any]:
        with self._lock:
            latency = {
                call: {
                    "calls": len(values),
                    "p50_s": float(np.percentile(values, 50)),
                    "p95_s": float(np.percentile(values, 95)),
                    "max_s": max(values),
                }
                for call, values in self.latencies.items()
                if values
            }
            return {
                "clients": clients,
                "finished_clients": self.finished_clients,
                "dead_clients": self.dead_clients,
                "rounds_trained": self.rounds_trained,
                "errors": dict(self.errors),
                "retries": dict(self.retries),
                "first_errors": list(self.first_errors),
                "latency": latency,
                "wall_s": wall_s,
            }


class _RetryCounter(logging.Handler):
    """Counts the transient failures ``GrpcCoordinatorClient`` retries (its debug log)."""

    def __init__(self, stats: LoadStats) -> None:
        super().__init__(logging.DEBUG)
        self._stats = stats

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        message = str(record.msg)
        if "retrying" not in message or len(args) < 2:
            return
        # "%s refused as busy, retrying in %.2f s" carries the delay, not a status code
        busy = "refused as busy" in message
        code = "busy" if busy else getattr(args[1], "name", str(args[1]))
        self._stats.retry(f"{args[0]}: {code}")


def _count_retries(stats: LoadStats) -> None:
    client_log = logging.getLogger(GrpcCoordinatorClient.__module__)
    client_log.setLevel(logging.DEBUG)
    client_log.propagate = False
    client_log.addHandler(_RetryCounter(stats))


class _DeltaCache:
    """One synthetic delta per process, shaped like the first model downloaded."""

    def __init__(self, seed: int) -> None:
        self._lock = threading.Lock()
        self._payload: bytes | None = None
        self._seed = seed

    def payload_for(self, model_payload: bytes) -> bytes:
        with self._lock:
            if self._payload is None:
                rng = np.random.default_rng(self._seed)
                tensors = decode_weights(model_payload).tensors
                delta = {
                    name: rng.standard_normal(t.shape, dtype=np.float32) * np.float32(1e-4)
                    for name, t in tensors.items()
                }
                self._payload = encode_weights(delta)
            return self._payload


class SyntheticClient:
    """One simulated client: ``ClientRuntime``'s loop with a fake, instant training."""

    def __init__(
        self, target: str, client_id: str, *, stats: LoadStats, deltas: _DeltaCache, poll_s: float
    ) -> None:
        self._api = GrpcCoordinatorClient(target)
        self._id = client_id
        self._stats = stats
        self._deltas = deltas
        self._poll_s = poll_s
        self._caps = ClientCapabilities(available_samples=SAMPLES, supported_models=("cnn",))

    def _timed(self, call: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self._stats.timed(call, time.perf_counter() - started)

    def run(self) -> None:
        try:
            self._timed("register", self._api.register, self._id, self._caps)
            while True:
                try:
                    task = self._timed("poll", self._api.poll_task, self._id, wait_s=self._poll_s)
                except NotFoundError:
                    self._timed("register", self._api.register, self._id, self._caps)
                    continue
                if task.kind is TaskKind.FINISHED:
                    self._stats.count(finished=1)
                    return
                if task.kind is TaskKind.TRAIN:
                    self._round(task)
        except FedLearnError as exc:  # a real client process would exit here
            self._stats.error("fatal", exc, fatal=True)
        finally:
            self._api.close()

    def _round(self, task: Task) -> None:
        try:
            blob = self._timed("download", self._api.download_model, self._id, task.round_number)
        except StaleRoundError:
            return
        submission = UpdateSubmission(
            client_id=self._id,
            round_number=task.round_number,
            update_id=uuid.uuid4().hex,
            payload=self._deltas.payload_for(blob.payload),
            num_samples=SAMPLES,
            training_loss=1.0,
        )
        try:
            self._timed("submit", self._api.submit_update, submission)
            self._stats.count(trained=1)
        except (StaleRoundError, ConflictError) as exc:
            self._stats.error("submit not taken", exc)


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--coordinator", required=True, help="host:port")
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--prefix", default="sim", help="client ids are PREFIX-00000 ...")
    parser.add_argument("--poll-wait", type=float, default=5.0, help="long-poll seconds")
    parser.add_argument("--deadline", type=float, default=3600.0, help="give up after (s)")
    parser.add_argument("--stats", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def main() -> None:
    args = _parse()
    stats = LoadStats()
    _count_retries(stats)
    deltas = _DeltaCache(args.seed)
    started = time.monotonic()
    threads = []
    for k in range(args.clients):
        client = SyntheticClient(
            args.coordinator,
            f"{args.prefix}-{k:05d}",
            stats=stats,
            deltas=deltas,
            poll_s=args.poll_wait,
        )
        thread = threading.Thread(target=client.run, name=f"client-{k}", daemon=True)
        thread.start()
        threads.append(thread)
    end = started + args.deadline
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    summary = stats.summary(args.clients, time.monotonic() - started)
    summary["timed_out"] = any(t.is_alive() for t in threads)
    args.stats.write_text(json.dumps(summary, indent=2) + "\n")
    os._exit(0)  # do not wait for clients still blocked in a call past the deadline


if __name__ == "__main__":
    main()
