"""``fedlearn run``: a whole local federation, a coordinator and N client processes."""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from fedlearn.cli.central_dp_opts import (
    CentralDpClipOpt,
    CentralDpDeltaOpt,
    CentralDpEpsilonOpt,
    CentralDpNoiseOpt,
    central_dp_config,
)
from fedlearn.cli.common import (
    CacheDirOpt,
    DataDirOpt,
    DatasetOpt,
    LogLevelOpt,
    codec_name,
    default_cache_dir,
    download_codec_name,
    setup_logging,
)
from fedlearn.cli.processes import ProcessGroup, fedlearn_command, usable_cores
from fedlearn.cli.report import round_rows, rounds_table, write_plot, write_summary
from fedlearn.cli.status_cmd import central_privacy_line
from fedlearn.client.slot_server import SlotServer
from fedlearn.data.bundled import BUNDLED_SOURCE
from fedlearn.errors import FedLearnError, TransportError
from fedlearn.service.messages import RunState
from fedlearn.transport.client import fetch_status

__all__ = ["run"]

CLIENT_NICENESS = 10
"""The client processes run at a lower CPU priority than the coordinator: here they share
the machine's cores, and every client waits on the coordinator's work (serving the model,
checking, storing and folding each update) while its own training can wait a little."""
SLOTS_PER_CORE = 1
"""By default ``fedlearn run`` lets this many clients per CPU core train at once.

All clients training at once share the cores, so they all finish near the end of the
round and their uploads queue at the coordinator (at 50 clients on 2 cores the last
second of each round went to that queue), and two or more trainers on a core take
turns every few milliseconds, each evicting the other's data from the core's caches.
With slots, updates come in one by one while the others train. The slots are served
first come, first served by ``fedlearn run`` itself (:class:`SlotServer`), so a freed
slot goes to whichever client waits longest and one slot per core keeps every core
busy. Against two slots per core taken as ``flock``'d files (the earlier default),
one per core took 4.53 s a round against 4.89 s at 10 clients and 7.07 s against
7.83 s at 50 clients (2 cores, 2026-12-07, 8 and 5 rounds, 4 and 2 alternated runs of
each); three served slots on 2 cores measured 4.90 s at 10 clients."""
FINISH_WAIT_S = 1800.0
"""How long the coordinator may take, after the last round, to record the scores of
rounds still being evaluated and tell every client the run is over."""


@dataclass(frozen=True, slots=True)
class _Plan:
    clients: int
    rounds: int
    out: Path
    run_id: str
    database_url: str
    model_dir: Path
    coordinator_args: tuple[object, ...]
    client_args: tuple[object, ...]


def run(
    clients: Annotated[int, typer.Option(min=1, help="Client processes to start.")] = 10,
    rounds: Annotated[int, typer.Option(min=1, help="Rounds to train.")] = 50,
    model: Annotated[
        str, typer.Option(help="cnn, mlp, or dpcnn (a small tanh CNN for DP-SGD).")
    ] = "cnn",
    dataset: DatasetOpt = "mnist",
    data_dir: DataDirOpt = None,
    cache_dir: CacheDirOpt = None,
    partitioner: Annotated[
        str, typer.Option(help="iid, shards (2 label shards per client) or dirichlet.")
    ] = "shards",
    alpha: Annotated[float, typer.Option(help="Dirichlet concentration.")] = 0.5,
    local_epochs: Annotated[int, typer.Option(min=1)] = 1,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    lr: Annotated[float, typer.Option(min=0.0, help="Client SGD learning rate.")] = 0.05,
    update_codec: Annotated[
        str, typer.Option(help="Update codec, e.g. topk:0.01+int8 (see fedlearn coordinator).")
    ] = "raw",
    download_codec: Annotated[
        str | None,
        typer.Option(help="Global model deltas codec, e.g. int8 (see fedlearn coordinator)."),
    ] = None,
    lr_decay: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Per-round learning rate multiplier.")
    ] = 1.0,
    strategy: Annotated[
        str, typer.Option(help="fedavg, or fedavgm (server momentum).")
    ] = "fedavgm",
    server_momentum: Annotated[float, typer.Option(help="Momentum of fedavgm.")] = 0.9,
    server_lr: Annotated[float, typer.Option(help="Server learning rate.")] = 1.0,
    holdout: Annotated[
        float,
        typer.Option(
            min=0.0, max=0.9, help="Fraction of each client's data kept for its own evaluation."
        ),
    ] = 0.0,
    round_timeout: Annotated[
        float, typer.Option(help="Seconds before an open round closes or fails.")
    ] = 300.0,
    seed: Annotated[int, typer.Option(help="Seed of partition, sampling and initialisation.")] = 0,
    central_dp_clip: CentralDpClipOpt = None,
    central_dp_noise: CentralDpNoiseOpt = None,
    central_dp_epsilon: CentralDpEpsilonOpt = None,
    central_dp_delta: CentralDpDeltaOpt = 1e-5,
    threads: Annotated[int, typer.Option(min=1, help="PyTorch threads per client process.")] = 1,
    parallel_training: Annotated[
        int | None,
        typer.Option(
            min=0,
            show_default=False,
            help="Clients that may train at once, the others waiting their turn (bounds "
            "the memory of many clients on one machine); 0: no limit. "
            f"[default: {SLOTS_PER_CORE} per CPU core]",
        ),
    ] = None,
    release_heap: Annotated[
        bool,
        typer.Option(
            "--release-heap",
            help="Clients hand free memory back to the system after each round "
            "(see fedlearn client --release-heap); by default they keep it for the next.",
        ),
    ] = False,
    out: Annotated[
        Path, typer.Option(help="Folder for summary.json, global_model.pt, accuracy.png, logs.")
    ] = Path("fedlearn-run"),
    log_level: LogLevelOpt = "info",
) -> None:
    """Run a local federation on 127.0.0.1 and save its results to --out."""
    from fedlearn.bootstrap import DataSettings, load_data

    setup_logging(log_level)
    console = Console()
    central_args = _central_dp_args(
        clip=central_dp_clip,
        noise=central_dp_noise,
        epsilon=central_dp_epsilon,
        delta=central_dp_delta,
        rounds=rounds,
        clients=clients,
    )
    update_codec = codec_name(update_codec)  # bad names stop here, before anything is made
    download_codec = download_codec_name(download_codec)
    out.mkdir(parents=True, exist_ok=True)
    data = load_data(DataSettings(dataset, data_dir, default_cache_dir(cache_dir)))
    console.print(
        f"data: {dataset} from {data.source}: {len(data.train_labels)} training images "
        f"for {clients} clients ({partitioner}), {len(data.test_labels)} test images"
    )
    data_args: list[object] = ["--dataset", dataset, "--cache-dir", default_cache_dir(cache_dir)]
    if data_dir is not None:
        data_args += ["--data-dir", data_dir]
    if data.source == BUNDLED_SOURCE:
        data_args.append("--no-download")
    run_id = time.strftime("run-%Y%m%d-%H%M%S")
    state = out / "state"
    if parallel_training is None:
        parallel_training = SLOTS_PER_CORE * usable_cores()
    slots = parallel_training if parallel_training < clients else 0  # 0: no slots to wait for
    plan = _Plan(
        clients=clients,
        rounds=rounds,
        out=out,
        run_id=run_id,
        database_url=f"sqlite:///{state / 'fedlearn.db'}",
        model_dir=state / "models",
        coordinator_args=(
            "--run-id", run_id, "--model", model, "--rounds", rounds,
            "--min-clients", clients, "--local-epochs", local_epochs,
            "--batch-size", batch_size, "--lr", lr, "--lr-decay", lr_decay, "--strategy", strategy,
            "--update-codec", update_codec,
            *(["--download-codec", download_codec] if download_codec else []),
            "--server-momentum", server_momentum, "--server-lr", server_lr,
            "--round-timeout", round_timeout, "--seed", seed, "--log-level", log_level,
            "--test-dataset", dataset,
            *(["--test-data-dir", data_dir] if data_dir is not None else []),
            "--cache-dir", default_cache_dir(cache_dir),
            *(["--no-download"] if data.source == BUNDLED_SOURCE else []),
            *central_args,
        ),
        client_args=(
            *data_args, "--num-partitions", clients, "--partitioner", partitioner,
            "--alpha", alpha, "--seed", seed, "--holdout", holdout, "--threads", threads,
            "--log-level", log_level, *(["--release-heap"] if release_heap else []),
        ),
    )  # fmt: skip
    # the clients take turns to train through slots this process serves while they run
    with SlotServer(slots) if slots else nullcontext() as slot_server:
        if slot_server is not None:
            plan = replace(plan, client_args=(*plan.client_args, "--slot-server", slot_server.path))
        started = time.monotonic()
        _run_processes(plan, console)
    _finish(plan, console, seconds=time.monotonic() - started, config=_config(locals()))


def _config(values: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "clients", "rounds", "model", "dataset", "partitioner", "alpha", "local_epochs",
        "batch_size", "lr", "lr_decay", "strategy", "server_momentum", "server_lr", "holdout", "seed",
        "threads", "slots", "release_heap", "update_codec", "download_codec", "central_dp_clip", "central_dp_noise", "central_dp_epsilon", "central_dp_delta",
    )  # fmt: skip
    return {k: values[k] for k in keys}


def _central_dp_args(
    *,
    clip: float | None,
    noise: float | None,
    epsilon: float | None,
    delta: float,
    rounds: int,
    clients: int,
) -> list[object]:
    """The coordinator's ``--central-dp-*`` arguments, checked here first so that a bad
    value is a clear error rather than a coordinator that does not start."""
    central_dp_config(
        clip=clip,
        noise=noise,
        epsilon=epsilon,
        delta=delta,
        rounds=rounds,
        min_clients=clients,
        clients_per_round=None,
        fraction=None,
        expected_clients=clients if clip is not None else None,
    )
    if clip is None:
        return []
    args: list[object] = ["--central-dp-clip", clip, "--central-dp-delta", delta]
    args += ["--central-dp-expected-clients", clients]
    if noise is not None:
        args += ["--central-dp-noise", noise]
    if epsilon is not None:
        args += ["--central-dp-epsilon", epsilon]
    return args


def _run_processes(plan: _Plan, console: Console) -> None:
    group = ProcessGroup(plan.out / "logs")
    port_file = plan.out / "state" / f"{plan.run_id}.port"
    port_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        group.start(
            "coordinator",
            fedlearn_command(
                "coordinator", "--address", "127.0.0.1:0", "--port-file", port_file,
                "--database-url", plan.database_url, "--model-dir", plan.model_dir,
                *plan.coordinator_args,
            ),
        )  # fmt: skip
        target = f"127.0.0.1:{_wait_for_port(port_file, group)}"
        console.print(f"coordinator on {target}; starting {plan.clients} clients")
        for k in range(plan.clients):
            name = f"client-{k:02d}"
            group.start(
                name,
                fedlearn_command(
                    "client", "--coordinator", target, "--client-id", name,
                    "--partition", k, "--state-dir", plan.out / "state" / "clients" / name,
                    *plan.client_args,
                ),
                niceness=CLIENT_NICENESS,
            )  # fmt: skip
        _monitor(target, group, plan, console)
        group.wait(timeout_s=60)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: stopping every process[/]")
        raise typer.Exit(130) from None
    finally:
        group.stop()


def _wait_for_port(port_file: Path, group: ProcessGroup, *, timeout_s: float = 120) -> int:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if port_file.exists() and port_file.read_text().strip():
            return int(port_file.read_text())
        if not group.running("coordinator"):
            raise FedLearnError("the coordinator did not start: " + "; ".join(group.failed()))
        time.sleep(0.1)
    raise FedLearnError(f"the coordinator did not report its port within {timeout_s:.0f} s")


def _monitor(target: str, group: ProcessGroup, plan: _Plan, console: Console) -> None:
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} rounds"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("waiting for clients", total=plan.rounds)
        ended_at: float | None = None
        while True:
            if group.failed():
                raise FedLearnError("; ".join(group.failed()))
            if ended_at is not None and not group.running("coordinator"):
                return
            if ended_at is not None and time.monotonic() > ended_at + FINISH_WAIT_S:
                raise FedLearnError(
                    f"the coordinator was still running {FINISH_WAIT_S:.0f} s after the last "
                    f"round (see {plan.out / 'logs' / 'coordinator.log'})"
                )
            try:
                status = fetch_status(target, timeout_s=5.0)
            except TransportError:
                if not group.running("coordinator"):
                    return
                continue
            done = [r for r in status.rounds if r.status == "completed" and r.round_number > 0]
            accuracy = done[-1].accuracy if done else None
            over = status.state in (RunState.FINISHED, RunState.FAILED)
            scored = sum(1 for r in done if r.accuracy is not None)
            progress.update(
                bar,
                completed=status.completed_rounds,
                description=(
                    f"rounds done; {scored}/{len(done)} evaluated, the coordinator is finishing"
                    if over
                    else f"round {status.current_round}: {status.updates_received}/"
                    f"{status.updates_expected} updates, {len(status.clients)} clients"
                    + (f", accuracy {accuracy:.4f}" if accuracy is not None else "")
                ),
            )
            if over and ended_at is None:
                # The coordinator scores each round's model off the critical path and
                # tells clients the run is over only once every score is recorded: on
                # a busy machine that backlog can take minutes, so wait for it to exit.
                ended_at = time.monotonic()
                if status.central_privacy is not None:
                    console.print(central_privacy_line(status.central_privacy))
                if status.state is RunState.FAILED:
                    raise FedLearnError("the run failed: too many rounds in a row failed")
            time.sleep(0.5)


def _finish(plan: _Plan, console: Console, *, seconds: float, config: dict[str, Any]) -> None:
    from fedlearn.bootstrap import read_run
    from fedlearn.models.checkpoint import save_model_file

    result = read_run(plan.database_url, plan.model_dir, plan.run_id)
    rows = round_rows(result.rounds, result.slowest_training_s)
    model_path = plan.out / "global_model.pt"
    save_model_file(
        model_path,
        model_name=result.model_name,
        weights=result.final_weights,
        metadata={"run_id": plan.run_id, "rounds": len(rows)},
    )
    summary = write_summary(
        plan.out / "summary.json",
        config=config,
        rows=rows,
        extra={"run_id": plan.run_id, "wall_seconds": seconds},
    )
    write_plot(plan.out / "accuracy.png", rows, title=f"fedlearn {plan.run_id}")
    console.print(rounds_table(rows))
    final = summary["final_accuracy"]
    console.print(
        f"final accuracy {final:.4f} after {len(rows)} rounds in {seconds:.1f} s "
        f"(median round {summary['median_round_seconds']:.2f} s, of which "
        f"{summary['median_overhead_seconds']:.2f} s outside the slowest client's training); "
        f"results in {plan.out}/ (summary.json, global_model.pt, accuracy.png, logs/)"
    )
