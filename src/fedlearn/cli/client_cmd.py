"""``fedlearn client``: train on local data for a coordinator."""

from __future__ import annotations

import signal
from typing import Annotated

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

__all__ = ["client"]


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
    log_level: LogLevelOpt = "info",
) -> None:
    """Register with a coordinator, then train each round it asks for, until the run ends."""
    from fedlearn.bootstrap import ClientSettings, DataSettings, build_client

    setup_logging(log_level, plain=True)
    signal.signal(signal.SIGTERM, _raise_interrupt)
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
    )
    report = build_client(settings).run()
    typer.echo(f"client {report.client_id}: trained {report.rounds_trained} rounds")


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
