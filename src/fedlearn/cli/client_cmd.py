"""``fedlearn client``: train on local data for a coordinator.

Test hook: ``FEDLEARN_TEST_CRASH_AFTER=outbox`` makes the client SIGKILL itself right
after an update is written to its outbox (before it is sent), ``=ack`` just before an
outbox entry is deleted (after the coordinator acknowledged the update). Only the crash
recovery tests set it; it is read here and nowhere else.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fedlearn.cli.common import (
    CacheDirOpt,
    CoordinatorOpt,
    DataDirOpt,
    DatasetOpt,
    LogLevelOpt,
    default_cache_dir,
    setup_logging,
)
from fedlearn.core.retry import RetryPolicy
from fedlearn.errors import ConfigError

if TYPE_CHECKING:
    from fedlearn.client.outbox import Outbox, OutboxEntry
    from fedlearn.client.privacy import DpOptions
    from fedlearn.client.recovery import ClientState

__all__ = ["client"]

CRASH_ENV = "FEDLEARN_TEST_CRASH_AFTER"


def client(
    coordinator: CoordinatorOpt = "127.0.0.1:50051",
    client_id: Annotated[
        str | None,
        typer.Option(
            envvar="FEDLEARN_CLIENT_ID",
            help="Stable client name [default: assigned by the coordinator].",
        ),
    ] = None,
    dataset: DatasetOpt = "mnist",
    data_dir: DataDirOpt = None,
    cache_dir: CacheDirOpt = None,
    no_download: Annotated[
        bool, typer.Option("--no-download", help="Never try to download MNIST.")
    ] = False,
    partition: Annotated[
        int | None,
        typer.Option(min=0, help="Train on partition k of the data set (demos, benchmarks)."),
    ] = None,
    num_partitions: Annotated[
        int, typer.Option(min=1, help="Number of partitions the data set is cut into.")
    ] = 1,
    partitioner: Annotated[
        str, typer.Option(help="iid, shards (label-shard non-IID) or dirichlet.")
    ] = "iid",
    alpha: Annotated[float, typer.Option(help="Dirichlet concentration.")] = 0.5,
    seed: Annotated[int, typer.Option(help="Seed of the partition and of local shuffling.")] = 0,
    holdout: Annotated[
        float,
        typer.Option(min=0.0, max=0.9, help="Fraction of local data held out for evaluation."),
    ] = 0.1,
    threads: Annotated[int | None, typer.Option(min=1, help="PyTorch CPU threads.")] = None,
    retry_total: Annotated[
        float, typer.Option(help="Seconds to keep retrying an unreachable coordinator.")
    ] = 60.0,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            envvar="FEDLEARN_CLIENT_STATE_DIR",
            help="Folder for the outbox of unacknowledged updates and the training "
            "checkpoint [default: CACHE_DIR/client-state/CLIENT_ID; none without --client-id].",
        ),
    ] = None,
    dp_epsilon: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="Differential privacy (DP-SGD): the epsilon budget for the whole run; the "
            "client refuses to train past it. Needs a state folder (--state-dir or --client-id).",
        ),
    ] = None,
    dp_delta: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="DP delta of the budget.")
    ] = 1e-5,
    dp_max_grad_norm: Annotated[
        float, typer.Option(min=0.0, help="DP-SGD per-example gradient clipping norm.")
    ] = 1.0,
    dp_noise_multiplier: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="DP-SGD noise std over the clipping norm [default: derived from --dp-epsilon "
            "and --dp-rounds].",
        ),
    ] = None,
    dp_rounds: Annotated[
        int | None,
        typer.Option(
            min=1, help="Rounds the DP budget must last (to derive the noise multiplier)."
        ),
    ] = None,
    min_batch_size: Annotated[
        int,
        typer.Option(
            min=1,
            help="After out-of-memory errors, halve the batch size down to this, then skip the round.",
        ),
    ] = 1,
    slot_dir: Annotated[
        Path | None,
        typer.Option(
            help="Folder of training slots shared by the clients of this machine: at most "
            "--slots of them train at once.",
        ),
    ] = None,
    slots: Annotated[
        int, typer.Option(min=1, help="Clients sharing --slot-dir that may train at once.")
    ] = 1,
    slot_server: Annotated[
        Path | None,
        typer.Option(
            help="Unix socket of a training-slot server to wait on before each local "
            "training, first come, first served (fedlearn run serves one).",
        ),
    ] = None,
    release_heap: Annotated[
        bool,
        typer.Option(
            "--release-heap",
            help="Return free memory to the system after each round (less idle memory, "
            "slower rounds) instead of reusing it.",
        ),
    ] = False,
    log_level: LogLevelOpt = "info",
) -> None:
    """Register with a coordinator, then train each round it asks for, until the run ends."""
    from fedlearn.bootstrap import ClientSettings, DataSettings, build_client
    from fedlearn.client.memory import keep_freed_heap
    from fedlearn.client.recovery import Recovery

    if not release_heap:
        keep_freed_heap()

    setup_logging(log_level, plain=True)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    folder = state_dir
    if folder is None and client_id is not None:
        folder = default_cache_dir(cache_dir) / "client-state" / client_id
    dp = _dp_options(
        folder,
        epsilon=dp_epsilon,
        delta=dp_delta,
        max_grad_norm=dp_max_grad_norm,
        noise_multiplier=dp_noise_multiplier,
        rounds=dp_rounds,
    )
    settings = ClientSettings(
        coordinator=coordinator,
        client_id=client_id,
        data=DataSettings(
            dataset=dataset,
            data_dir=data_dir,
            cache_dir=default_cache_dir(cache_dir),
            allow_download=not no_download,
        ),
        partition=partition,
        num_partitions=num_partitions,
        partitioner=partitioner,
        dirichlet_alpha=alpha,
        seed=seed,
        holdout_fraction=holdout,
        threads=threads,
        retry=RetryPolicy(total_s=retry_total),
        dp=dp,
        slot_dir=slot_dir,
        slot_count=slots,
        slot_server=slot_server,
        release_heap=release_heap,
    )
    state = _open_state(folder) if folder is not None else None
    recovery = Recovery(state=state, min_batch_size=min_batch_size)
    report = build_client(settings).with_recovery(recovery).run()
    typer.echo(f"client {report.client_id}: trained {report.rounds_trained} rounds")


def _dp_options(
    folder: Path | None,
    *,
    epsilon: float | None,
    delta: float,
    max_grad_norm: float,
    noise_multiplier: float | None,
    rounds: int | None,
) -> DpOptions | None:
    """DP-SGD settings from the ``--dp-*`` flags; ``None`` when none asks for DP."""
    from fedlearn.client.privacy import LEDGER_FILE, DpOptions
    from fedlearn.core.types import PrivacyConfig

    if epsilon is None and noise_multiplier is None:
        if rounds is not None:
            raise ConfigError("--dp-rounds needs --dp-epsilon")
        return None
    if epsilon and folder is None:
        raise ConfigError(
            "a DP budget (--dp-epsilon) needs a state folder (--state-dir or --client-id), "
            "so that the spent epsilon survives a restart"
        )
    config = PrivacyConfig(
        epsilon=epsilon or 0.0,
        delta=delta,
        max_grad_norm=max_grad_norm,
        noise_multiplier=noise_multiplier or 0.0,
    )
    ledger = folder / LEDGER_FILE if folder is not None else None
    return DpOptions(config, planned_rounds=rounds or 0, ledger_path=ledger)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _open_state(folder: Path) -> ClientState:
    from dataclasses import replace

    from fedlearn.client.recovery import ClientState

    state = ClientState.open(folder)
    crash = os.environ.get(CRASH_ENV)
    if not crash:
        return state
    if crash not in ("outbox", "ack"):
        raise ConfigError(f"{CRASH_ENV} must be 'outbox' or 'ack', got {crash!r}")
    return replace(state, outbox=_crashing_outbox(state.outbox.directory, crash))


def _crashing_outbox(directory: Path, point: str) -> Outbox:
    """An outbox that kills this process at ``point`` (the crash-recovery test hook)."""
    from fedlearn.client.outbox import Outbox

    class CrashingOutbox(Outbox):
        def put(self, entry: OutboxEntry) -> Path:
            path = super().put(entry)
            if point == "outbox":
                os.kill(os.getpid(), signal.SIGKILL)
            return path

        def remove(self, entry: OutboxEntry) -> None:
            if point == "ack":
                os.kill(os.getpid(), signal.SIGKILL)
            super().remove(entry)

    return CrashingOutbox(directory)
