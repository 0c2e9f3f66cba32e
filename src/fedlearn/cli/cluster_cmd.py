"""``fedlearn cluster``: coordinator replicas behind HAProxy on this machine, for a demo.

The configuration and the process handling live in ``fedlearn.cli.haproxy`` and
``fedlearn.cli.local_cluster``; their main names are re-exported here.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fedlearn.cli.common import LogLevelOpt, setup_logging
from fedlearn.cli.haproxy import ReplicaEndpoint, haproxy_config
from fedlearn.cli.local_cluster import HAPROXY, ClusterSettings, LocalCluster
from fedlearn.errors import FedLearnError

__all__ = [
    "DEFAULT_DATABASE_URL",
    "DEFAULT_REDIS_URL",
    "ClusterSettings",
    "LocalCluster",
    "ReplicaEndpoint",
    "cluster",
    "cluster_table",
    "haproxy_config",
]

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def cluster(
    replicas: Annotated[int, typer.Option(min=1, help="Coordinator replicas to start.")] = 3,
    lb_address: Annotated[
        str, typer.Option(help="host:port where HAProxy takes the clients' gRPC calls.")
    ] = "127.0.0.1:50051",
    database_url: Annotated[
        str,
        typer.Option(
            envvar="FEDLEARN_DATABASE_URL", help="Database every replica shares (PostgreSQL)."
        ),
    ] = DEFAULT_DATABASE_URL,
    redis_url: Annotated[
        str, typer.Option(envvar="FEDLEARN_REDIS_URL", help="Redis every replica shares.")
    ] = DEFAULT_REDIS_URL,
    work_dir: Annotated[
        Path,
        typer.Option(help="Folder for haproxy.cfg, logs/ and the shared model store (models/)."),
    ] = Path("fedlearn-cluster"),
    stats_address: Annotated[
        str | None,
        typer.Option(help="host:port for HAProxy's status page [default: any free port]."),
    ] = None,
    run_id: Annotated[str | None, typer.Option(help="Run name (coordinator --run-id).")] = None,
    model: Annotated[
        str | None, typer.Option(help="cnn, mlp or dpcnn (coordinator --model).")
    ] = None,
    rounds: Annotated[
        int | None, typer.Option(min=1, help="Rounds (coordinator --rounds).")
    ] = None,
    min_clients: Annotated[
        int | None, typer.Option(min=1, help="Clients per round (coordinator --min-clients).")
    ] = None,
    log_level: LogLevelOpt = "info",
) -> None:
    """Run coordinator replicas on PostgreSQL and Redis behind HAProxy until Ctrl-C."""
    setup_logging(log_level)
    console = Console()
    forwarded = {
        "--run-id": run_id,
        "--model": model,
        "--rounds": rounds,
        "--min-clients": min_clients,
    }
    coordinator_args = [str(a) for k, v in forwarded.items() if v is not None for a in (k, v)]
    settings = ClusterSettings(
        database_url=database_url,
        redis_url=redis_url,
        work_dir=work_dir,
        replicas=replicas,
        lb_address=lb_address,
        stats_address=stats_address,
        coordinator_args=(*coordinator_args, "--log-level", log_level),
    )
    console.print(f"starting {replicas} coordinator replicas and HAProxy (logs in {work_dir}/logs)")
    try:
        with LocalCluster(settings) as local:
            console.print(cluster_table(local))
            console.print(
                f"load balancer: [bold]{local.lb_address}[/] (gRPC), "
                f"status page http://{local.stats_address}/"
            )
            console.print(
                f"point clients at it: fedlearn client --coordinator {local.lb_address} "
                "--partition 0 --num-partitions 2 ...\n"
                f"try: kill -STOP {local.pid(local.replicas[0].name)} (HAProxy drops that "
                "replica within ~1-2 s), then kill -CONT it. Ctrl-C stops everything."
            )
            _watch(local, console)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: stopping the replicas and HAProxy[/]")
        raise typer.Exit(130) from None


def cluster_table(local: LocalCluster) -> Table:
    table = Table(title="coordinator replicas")
    for column in ("name", "gRPC", "HTTP (/healthz, /readyz)", "pid", "in HAProxy"):
        table.add_column(column)
    states = local.lb_states()
    for replica in local.replicas:
        pid = str(local.pid(replica.name))
        state = states.get(replica.name, "?")
        table.add_row(replica.name, replica.grpc_address, replica.http_address, pid, state)
    table.add_row(
        HAPROXY, local.lb_address, f"{local.stats_address} (stats)", str(local.pid(HAPROXY)), ""
    )
    return table


def _watch(local: LocalCluster, console: Console) -> None:
    """Report processes that exit; return when no replica is left, fail if HAProxy dies."""
    reported: set[str] = set()
    while True:
        time.sleep(1.0)
        exited = local.exited()
        for name in exited:
            if name not in reported:
                reported.add(name)
                console.print(f"[yellow]{name} exited[/] (see {local.log_path(name)})")
        if HAPROXY in exited:
            raise FedLearnError(f"HAProxy exited (see {local.log_path(HAPROXY)})")
        if len(exited) == len(local.replicas):
            console.print("every replica has exited (the run is over, or they failed)")
            return
