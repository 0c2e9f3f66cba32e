"""A fedlearn coordinator on a CNN-sized model, served over gRPC until SIGTERM.

``python -m benchmarks.coordinator_server --port-file F --min-clients N [--store memory|sql]``

The transport benchmark runs it as a separate process (its own interpreter and
GIL, as in a deployment) without importing torch: the initial model is random
float32 tensors shaped like the CNN's. ``--store memory`` uses the in-memory run
and model stores; ``--store sql`` a SQLite database and a file model store under
``--state-dir``, as ``fedlearn coordinator`` does.
"""

from __future__ import annotations

import argparse
import signal
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.common import cnn_weights
from fedlearn.cli.coordinator_cmd import limit_blas_threads, tune_malloc
from fedlearn.persistence import (
    FileModelStore,
    InMemoryModelStore,
    InMemoryRunStore,
    SqlRunStore,
    make_engine,
)
from fedlearn.persistence.migrate import upgrade
from fedlearn.service.coordinator import Coordinator
from fedlearn.service.messages import CoordinatorConfig
from fedlearn.transport.server import CoordinatorServer, ServerOptions

__all__ = ["main"]


class _Clock:
    def now(self) -> float:
        return time.time()


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--min-clients", type=int, required=True)
    parser.add_argument("--store", choices=("memory", "sql"), default="memory")
    parser.add_argument("--state-dir", type=Path)
    parser.add_argument("--max-workers", type=int, default=64)
    return parser.parse_args()


def main() -> None:
    args = _parse()
    tune_malloc()  # as `fedlearn coordinator` does
    limit_blas_threads()
    if args.store == "sql":
        if args.state_dir is None:
            raise SystemExit("--store sql needs --state-dir")
        url = f"sqlite:///{args.state_dir / 'fedlearn.db'}"
        upgrade(url)
        runs: InMemoryRunStore | SqlRunStore = SqlRunStore(make_engine(url))
        models: InMemoryModelStore | FileModelStore = FileModelStore(args.state_dir / "models")
    else:
        runs, models = InMemoryRunStore(), InMemoryModelStore()
    config = CoordinatorConfig(
        run_id="transport",
        model_name="cnn",
        num_rounds=1_000_000,
        min_clients=args.min_clients,
        round_timeout_s=3600.0,
    )
    initial = cnn_weights(np.random.default_rng(0), scale=0.05)
    coordinator = Coordinator(config, initial, runs=runs, models=models, clock=_Clock())
    server = CoordinatorServer(
        coordinator, ServerOptions(address="127.0.0.1:0", max_workers=args.max_workers)
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    args.port_file.write_text(f"{server.port}\n")
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop(0.5)


if __name__ == "__main__":
    main()
