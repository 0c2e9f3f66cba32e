"""``fedlearn coordinator``: serve a federated run over gRPC."""

from __future__ import annotations

import ctypes
import logging
import signal
import time
from pathlib import Path
from typing import Annotated

import threadpoolctl
import typer

from fedlearn.cli.central_dp_opts import (
    CentralDpClipOpt,
    CentralDpDeltaOpt,
    CentralDpEpsilonOpt,
    CentralDpExpectedClientsOpt,
    CentralDpNoiseOpt,
    central_dp_config,
)
from fedlearn.cli.common import (
    CacheDirOpt,
    LogLevelOpt,
    codec_name,
    default_cache_dir,
    download_codec_name,
    setup_logging,
)
from fedlearn.core.strategy import make_strategy
from fedlearn.core.types import RoundConfig
from fedlearn.errors import FedLearnError
from fedlearn.service.messages import CoordinatorConfig, RunState
from fedlearn.transport.server import ServerOptions

__all__ = ["coordinator", "limit_blas_threads", "tune_malloc"]

logger = logging.getLogger(__name__)
MiB = 1 << 20
_M_ARENA_MAX = -8  # from glibc malloc.h
_M_MMAP_THRESHOLD = -3  # from glibc malloc.h
_M_TRIM_THRESHOLD = -1  # from glibc malloc.h
_MMAP_THRESHOLD_BYTES = 16 << 20
_TRIM_THRESHOLD_BYTES = 32 << 20


def coordinator(
    address: Annotated[
        str,
        typer.Option(envvar="FEDLEARN_ADDRESS", help="host:port to bind (port 0: any free port)."),
    ] = "127.0.0.1:50051",
    port_file: Annotated[
        Path | None, typer.Option(help="Write the bound port to this file once serving.")
    ] = None,
    database_url: Annotated[
        str,
        typer.Option(
            envvar="FEDLEARN_DATABASE_URL",
            help="SQLAlchemy URL: sqlite:///path.db or postgresql+psycopg://user@host/db.",
        ),
    ] = "sqlite:///fedlearn-state/fedlearn.db",
    model_dir: Annotated[
        Path,
        typer.Option(
            envvar="FEDLEARN_MODEL_DIR",
            help="Folder of the model store (global models, updates); on a cluster, a "
            "folder every replica shares (a shared volume).",
        ),
    ] = Path("fedlearn-state/models"),
    redis_url: Annotated[
        str | None,
        typer.Option(
            envvar="FEDLEARN_REDIS_URL",
            help="Run as one replica of a coordinator cluster sharing this Redis, the "
            "(PostgreSQL) database and the model folder, e.g. redis://127.0.0.1:6379/0. "
            "The schema must be current: run `fedlearn db upgrade` first. "
            "[default: a coordinator on its own]",
        ),
    ] = None,
    replica_id: Annotated[
        str | None,
        typer.Option(
            envvar="FEDLEARN_REPLICA_ID",
            help="This replica's name in the cluster [default: host name and process id].",
        ),
    ] = None,
    lease_ttl: Annotated[
        float,
        typer.Option(
            min=0.5,
            envvar="FEDLEARN_LEASE_TTL",
            help="Seconds a round's lease outlives its leader's last renewal; another "
            "replica takes the round over after that.",
        ),
    ] = 3.0,
    http_address: Annotated[
        str | None,
        typer.Option(
            envvar="FEDLEARN_HTTP_ADDRESS",
            help="host:port for HTTP GET /healthz and /readyz (load balancer checks). "
            "[default: none]",
        ),
    ] = None,
    run_id: Annotated[
        str,
        typer.Option(
            envvar="FEDLEARN_RUN_ID", help="Run name; restarting with the same name resumes it."
        ),
    ] = "default",
    model: Annotated[str, typer.Option(help="Model: cnn, mlp or dpcnn.")] = "cnn",
    rounds: Annotated[int, typer.Option(min=1, help="Rounds to complete.")] = 10,
    min_clients: Annotated[
        int,
        typer.Option(
            min=1,
            help="Clients needed to open a round, and updates needed to close one at its deadline.",
        ),
    ] = 2,
    clients_per_round: Annotated[
        int | None, typer.Option(min=1, help="Clients sampled per round [default: all registered].")
    ] = None,
    fraction: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="Fraction of registered clients sampled per round."),
    ] = None,
    local_epochs: Annotated[int, typer.Option(min=1)] = 1,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    lr: Annotated[float, typer.Option(min=0.0, help="Client learning rate (SGD).")] = 0.05,
    update_codec: Annotated[
        str,
        typer.Option(
            help="Codec clients encode updates with: raw, float16, int8[:block=N], sign, "
            "topk:F, or top-k then a value codec, e.g. topk:0.01+int8 (error feedback on "
            "the client). Uncompressed updates are always accepted.",
        ),
    ] = "raw",
    download_codec: Annotated[
        str | None,
        typer.Option(
            help="Send clients that hold the previous model only the compressed change "
            "(e.g. int8, or topk:0.1+int8); others get the whole model. Deterministic "
            "codecs only. [default: whole models]",
        ),
    ] = None,
    lr_decay: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Client learning rate multiplier per round: round r uses lr * lr_decay**(r-1).",
        ),
    ] = 1.0,
    round_timeout: Annotated[
        float,
        typer.Option(
            min=0.1,
            help="Seconds before an open round closes (with >= min-clients updates) or fails.",
        ),
    ] = 300.0,
    strategy: Annotated[str, typer.Option(help="fedavg, or fedavgm (server momentum).")] = "fedavg",
    server_lr: Annotated[
        float, typer.Option(help="Server learning rate applied to the mean update.")
    ] = 1.0,
    server_momentum: Annotated[float, typer.Option(help="Momentum of fedavgm.")] = 0.9,
    seed: Annotated[
        int, typer.Option(help="Seed of client sampling and model initialisation.")
    ] = 0,
    keep_updates: Annotated[
        bool, typer.Option(help="Keep every client update blob after its round closes.")
    ] = False,
    max_norm_ratio: Annotated[
        float | None,
        typer.Option(
            min=1.0,
            help="Reject an update whose norm exceeds this multiple of the median norm of "
            "the round's accepted updates (checked once 3 were accepted) [default: never].",
        ),
    ] = None,
    max_accuracy_drop: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Roll a round back when its test accuracy falls more than this below the "
            "last good round's (needs --test-dataset) [default: only a NaN loss rolls back].",
        ),
    ] = None,
    max_rollbacks: Annotated[
        int, typer.Option(min=0, help="Rollbacks after divergence before the run fails.")
    ] = 3,
    require_dp: Annotated[
        bool,
        typer.Option(
            help="Refuse updates from clients without a DP budget or without an epsilon claim."
        ),
    ] = False,
    central_dp_clip: CentralDpClipOpt = None,
    central_dp_noise: CentralDpNoiseOpt = None,
    central_dp_epsilon: CentralDpEpsilonOpt = None,
    central_dp_delta: CentralDpDeltaOpt = 1e-5,
    central_dp_expected_clients: CentralDpExpectedClientsOpt = None,
    admin_token: Annotated[
        str | None,
        typer.Option(
            envvar="FEDLEARN_ADMIN_TOKEN",
            help="Token that `fedlearn rollback` must present [default: operator calls refused].",
        ),
    ] = None,
    test_dataset: Annotated[
        str | None,
        typer.Option(
            help="Evaluate each global model on this data set's test split (mnist or fashion)."
        ),
    ] = None,
    test_data_dir: Annotated[
        Path | None, typer.Option(help="IDX folder of the server-side test set.")
    ] = None,
    cache_dir: CacheDirOpt = None,
    no_download: Annotated[
        bool, typer.Option("--no-download", help="Never try to download MNIST.")
    ] = False,
    max_message_mb: Annotated[
        int,
        typer.Option(min=1, help="gRPC message size limit (MiB); weights are chunked below it."),
    ] = 4,
    max_workers: Annotated[int, typer.Option(min=4, help="gRPC worker threads.")] = 64,
    max_concurrent_uploads: Annotated[
        int,
        typer.Option(
            min=1, help="Uploads held in memory at once; more get RESOURCE_EXHAUSTED and retry."
        ),
    ] = 4,
    upload_slot_wait: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Seconds an upload may queue for a free slot before it gets RESOURCE_EXHAUSTED.",
        ),
    ] = 2.0,
    linger: Annotated[
        float,
        typer.Option(
            help="Seconds to keep serving after the run ends, until every client was told."
        ),
    ] = 10.0,
    log_level: LogLevelOpt = "info",
) -> None:
    """Serve a federated training run: register clients, run rounds, aggregate with FedAvg."""
    from fedlearn.bootstrap import (
        CoordinatorSettings,
        DataSettings,
        build_coordinator,
        build_health_endpoint,
    )

    setup_logging(log_level, plain=True)
    run = CoordinatorConfig(
        run_id=run_id,
        model_name=model,
        num_rounds=rounds,
        min_clients=min_clients,
        clients_per_round=clients_per_round,
        fraction=fraction,
        round_config=RoundConfig(
            local_epochs=local_epochs,
            batch_size=batch_size,
            learning_rate=lr,
            codec=codec_name(update_codec),
        ),
        download_codec=download_codec_name(download_codec),
        lr_decay=lr_decay,
        round_timeout_s=round_timeout,
        seed=seed,
        keep_updates=keep_updates,
        max_norm_ratio=max_norm_ratio,
        max_accuracy_drop=max_accuracy_drop,
        max_rollbacks=max_rollbacks,
        require_dp=require_dp,
        strategy=make_strategy(strategy, server_lr=server_lr, momentum=server_momentum),
        central_dp=central_dp_config(
            clip=central_dp_clip,
            noise=central_dp_noise,
            epsilon=central_dp_epsilon,
            delta=central_dp_delta,
            rounds=rounds,
            min_clients=min_clients,
            clients_per_round=clients_per_round,
            fraction=fraction,
            expected_clients=central_dp_expected_clients,
        ),
    )
    test = None
    if test_dataset is not None:
        test = DataSettings(
            dataset=test_dataset,
            data_dir=test_data_dir,
            cache_dir=default_cache_dir(cache_dir),
            allow_download=not no_download,
        )
    settings = CoordinatorSettings(
        server=ServerOptions(
            address=address,
            max_workers=max_workers,
            max_message_bytes=max_message_mb * MiB,
            max_concurrent_uploads=max_concurrent_uploads,
            upload_slot_wait_s=upload_slot_wait,
            admin_token=admin_token or None,
        ),
        database_url=database_url,
        model_dir=model_dir,
        run=run,
        test_data=test,
        model_seed=seed,
        redis_url=redis_url or None,
        replica_id=replica_id or None,
        lease_ttl_s=lease_ttl,
        http_address=http_address or None,
    )
    tune_malloc()
    limit_blas_threads()
    service, server = build_coordinator(settings)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    server.start()
    health = build_health_endpoint(settings, server)
    if health is not None:
        health.start()
    if port_file is not None:
        port_file.write_text(f"{server.port}\n")
    try:
        server.wait_until_finished()
        logger.info("run %s is over; serving %.0f s more so clients learn it", run_id, linger)
        end = time.monotonic() + linger
        while time.monotonic() < end and not service.all_clients_released:
            time.sleep(0.1)
    finally:
        if health is not None:
            health.stop()
        server.stop()
        service.close()
    final = service.status()
    central = final.central_privacy
    if central is not None and central.exhausted:
        logger.warning(
            "run %s ended at its central DP target: user-level epsilon %.4f of %s",
            run_id,
            central.epsilon_spent,
            central.target_epsilon,
        )
    if final.state is RunState.FAILED:
        raise FedLearnError(
            f"run {run_id} stopped: more than {run.max_failed_rounds} rounds in a row failed "
            "(see the failure_reason of each round in `fedlearn status`)"
        )


def tune_malloc(count: int = 1) -> None:
    """Cap glibc's per-thread heaps and pin its mmap and trim thresholds before the gRPC
    workers start.

    Each worker thread would otherwise get its own arena, and arenas keep the
    memory of the multi-MB payloads they once held: at 100 concurrent clients
    that doubled the coordinator's peak RSS. One arena rather than two: a payload
    freed by one thread leaves a hole any thread can reuse (with 1,000 load-generator
    clients, glibc's `malloc_info` showed both heaps holding fragmented free memory).
    With it and gRPC's 16 KiB stream lookahead (``transport.server``), peak RSS
    fell from 659-660 to 601-610 MB at 1,000 clients and from 517-527 to 485-490 MB
    at 10 (two runs each, 2026-12-06), and uploads and rounds ran no slower: the
    Python threads that allocate take the GIL in turn anyway. Ignored where glibc is
    absent.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_ARENA_MAX, count)
        # A fixed mmap threshold above payload sizes: payload buffers are reused
        # from the (two) heaps instead of being mmapped and page-faulted afresh,
        # which doubled the CPU time of an upload on this machine; fixing it also
        # stops glibc's dynamic threshold from moving to a new size after each free.
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)
        # Pinning the mmap threshold also pins glibc's trim threshold at its 128 KB
        # default: every free at the top of a heap then handed pages back, and the
        # next payload or evaluation batch faulted them in again (47,000 faults and
        # 0.44 CPU-s per evaluation of the CNN on 1,000 digits, against none and 0.28 s).
        # 32 MB holds an evaluation's buffers (16 MB did not) without letting each heap
        # keep much more: at 256 MB the peak RSS with 1,000 load-generator clients grew
        # 165 MB over 10 clients, at 32 MB 114 MB (one run each, 2026-12-04).
        libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES)
    except (OSError, AttributeError):
        logger.debug("mallopt unavailable; malloc arenas left as they are")


def limit_blas_threads() -> None:
    """Run numpy's BLAS on the calling thread only.

    The coordinator's BLAS work is small (a dot product per update and per
    round for norms) and its threads already keep the cores busy. With BLAS's
    own worker threads, each of those dots waited for a worker to wake: 8 ms
    for a 32k-element dot while client processes trained beside it, against
    3 us on one thread. SciPy's BLAS, which the FedAvg fold uses
    (``fedlearn.bootstrap.kernels``), is loaded first so that the limit covers it too.
    """
    import fedlearn.bootstrap.kernels  # noqa: F401 - loads SciPy's BLAS before the limit

    threadpoolctl.threadpool_limits(limits=1, user_api="blas")


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
