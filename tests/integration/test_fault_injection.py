"""Faults injected into a real federation: ``fedlearn coordinator`` and ``fedlearn client``
processes over gRPC on 127.0.0.1, with SQLite.

- clients SIGKILLed in the middle of training and in the middle of an upload: the round
  closes at its deadline with the survivors' updates only;
- a network cut (``tcp_proxy.TcpProxy``) while a client uploads: the update arrives once
  the network is back, and is stored exactly once;
- a rogue client speaking gRPC to a coordinator process: each bad update is refused with
  its status and reason, recorded in ``rejected_updates``, and left out of the model.

(The coordinator killed and restarted is ``test_federation_restart.py``; a client killed
between its outbox write and the send is ``test_client_recovery.py``.)
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import numpy as np
import pytest
from tcp_proxy import TcpProxy

from fedlearn.bootstrap import SystemClock
from fedlearn.core.serialization import decode_weights, encode_weights
from fedlearn.core.types import ClientCapabilities, RoundRecord, RoundStatus
from fedlearn.errors import FedLearnError
from fedlearn.models.registry import build_model
from fedlearn.models.weights import model_to_weights
from fedlearn.persistence import SqlRunStore
from fedlearn.persistence.migrate import upgrade
from fedlearn.service.coordinator import Coordinator
from fedlearn.service.messages import CoordinatorConfig, TaskKind, UpdateSubmission
from fedlearn.transport.client import GrpcCoordinatorClient
from fedlearn.transport.status_codes import REASON_KEY

if TYPE_CHECKING:
    from conftest import Federation

pytestmark = pytest.mark.slow

HOLD_AFTER_BYTES = 64 * 1024
"""Client-to-coordinator bytes a proxy forwards before it holds an upload back: far more
than registration, polls and download requests send, far less than one MLP update."""


@pytest.fixture
def proxies() -> Iterator[Callable[[int], TcpProxy]]:
    """Starts ``TcpProxy``s to a port; closed after the test."""
    started: list[TcpProxy] = []

    def start(target_port: int) -> TcpProxy:
        started.append(TcpProxy(target_port))
        return started[-1]

    yield start
    for proxy in started:
        proxy.close()


def _client_args(
    federation: Federation,
    target: str,
    name: str,
    *,
    partition: int,
    partitions: int,
    holdout: float,
    state: Path,
) -> list[object]:
    return [
        "client", "--coordinator", target, "--client-id", name, "--state-dir", state,
        "--partition", partition, "--num-partitions", partitions, "--dataset", "mnist",
        "--data-dir", federation.digits_dir, "--no-download", "--threads", 1,
        "--holdout", holdout, "--log-level", "debug",
    ]  # fmt: skip


def _coordinator_args(
    federation: Federation, url: str, *, port: int = 0, extra: Sequence[object] = ()
) -> list[object]:
    return [
        "coordinator", "--address", f"127.0.0.1:{port}", "--port-file", federation.port_file,
        "--database-url", url, "--model-dir", federation.model_dir, "--run-id", "it",
        "--model", "mlp", "--keep-updates", "--lr", 0.05, "--no-download", "--linger", 1,
        *extra,
    ]  # fmt: skip


def _flat(federation: Federation, path: str | None) -> np.ndarray:
    assert path is not None
    return np.array(decode_weights(federation.models.get(path)).flat("float32"), np.float64)


def _check_fedavg(
    federation: Federation, runs: SqlRunStore, record: RoundRecord, clients: Sequence[str]
) -> None:
    """The round's model is its base plus the sample-weighted mean delta of exactly the
    stored updates of ``clients``."""
    updates = runs.list_updates("it", record.round_number)
    assert sorted(u.client_id for u in updates) == sorted(clients), updates
    deltas = np.stack([_flat(federation, u.model_update_path) for u in updates])
    weights = [float(u.num_samples) for u in updates]
    expected = _flat(federation, record.base_model_path) + np.average(deltas, 0, weights=weights)
    stored = _flat(federation, record.global_model_path)
    np.testing.assert_allclose(stored, expected, rtol=0, atol=1e-5)


def _wait_for(condition: Callable[[], bool], what: str, *, timeout_s: float) -> None:
    end = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"{what} did not happen within {timeout_s:.0f} s")
        time.sleep(0.005)


def _preregister(federation: Federation, url: str, clients: Sequence[str]) -> None:
    """Run ``it`` with round 0 stored and ``clients`` registered, and no round open: the
    coordinator process started on it opens round 1 for all of them at once (a round
    otherwise opens as soon as ``--min-clients`` have registered)."""
    upgrade(url)
    from fedlearn.persistence import make_engine

    engine = make_engine(url)
    try:
        config = CoordinatorConfig(
            run_id="it", model_name="mlp", num_rounds=1, min_clients=len(clients) + 1
        )
        initial = model_to_weights(build_model("mlp", seed=0))
        coordinator = Coordinator(
            config, initial, runs=SqlRunStore(engine), models=federation.models, clock=SystemClock()
        )
        for name in clients:
            coordinator.register_client(name, ClientCapabilities(available_samples=100))
    finally:
        engine.dispose()


# -- the proxy itself ----------------------------------------------------------------------


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that echoes whatever each connection sends."""
    server = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                received.append(data)
                conn.sendall(data)

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = server.accept()
                threading.Thread(target=echo, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


def _echoed(port: int, data: bytes) -> bytes:
    """What comes back through ``port`` for ``data``: all of it, or less if closed."""
    got = b""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        contextlib.suppress(OSError),  # reset by a proxy that refuses
    ):
        sock.sendall(data)
        while len(got) < len(data) and (chunk := sock.recv(65536)):
            got += chunk
    return got


def test_proxy_forwards_cuts_live_connections_refuses_new_ones_and_restores(
    echo_port: int, proxies: Callable[[int], TcpProxy]
) -> None:
    proxy = proxies(echo_port)
    live = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    live.sendall(b"ping")
    assert live.recv(16) == b"ping"

    proxy.cut()

    assert live.recv(16) == b""  # closed by the proxy
    live.close()
    assert _echoed(proxy.port, b"lost") == b""
    assert proxy.refused == 1
    proxy.restore()
    assert _echoed(proxy.port, b"back") == b"back"
    assert (proxy.accepted, proxy.bytes_up, proxy.bytes_down) == (2, 8, 8)


def test_proxy_holding_uploads_forwards_only_the_allowed_bytes(
    echo_port: int, proxies: Callable[[int], TcpProxy]
) -> None:
    proxy = proxies(echo_port)
    proxy.hold_uploads(after_bytes=1000)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(b"x" * 5000)
        assert proxy.wait_until(lambda p: p.held == 4000, timeout_s=5), proxy.held
        got = b""
        while len(got) < 1000:
            got += sock.recv(65536)
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(65536)  # the connection stays open, and nothing more comes back
    assert (got, proxy.bytes_up) == (b"x" * 1000, 1000)


# -- clients killed mid-training and mid-upload ----------------------------------------


def test_round_closes_at_quorum_without_clients_killed_mid_training_and_mid_upload(
    sqlite_url: str,
    open_run_store: Callable[[str], SqlRunStore],
    federation: Federation,
    proxies: Callable[[int], TcpProxy],
    free_port: int,
    tmp_path: Path,
) -> None:
    processes = federation.processes
    clients = ("c0", "c1", "c2", "c3")
    states = {name: tmp_path / f"{name}-state" for name in clients}
    proxy = proxies(free_port)  # c3 talks through it
    proxy.hold_uploads(after_bytes=HOLD_AFTER_BYTES)
    # The round's deadline runs from the coordinator's start, so the clients start
    # first (loading torch and their data takes seconds on a busy machine) and retry
    # until it serves.
    for i, name in enumerate(clients):
        target = proxy.address if name == "c3" else f"127.0.0.1:{free_port}"
        processes.start(
            name,
            *_client_args(
                federation, target, name, partition=i, partitions=8,
                holdout=(0.3, 0.0, 0.0, 0.0)[i], state=states[name],
            ),
        )  # fmt: skip
    for name in clients:
        _wait_for(
            lambda name=name: "register failed" in processes.log(name),
            f"{name}'s start-up",
            timeout_s=120,
        )
    _preregister(federation, sqlite_url, clients)
    # Four selected, two needed at the deadline. Three epochs of training in small
    # batches, checkpointed after each epoch, leave a window to kill c2 after its first.
    extra = [
        "--rounds", 1, "--min-clients", 2, "--round-timeout", 20,
        "--local-epochs", 3, "--batch-size", 4,
    ]  # fmt: skip
    args = _coordinator_args(federation, sqlite_url, port=free_port, extra=extra)
    federation.start_coordinator("coordinator", args)
    runs = open_run_store(sqlite_url)
    opened = runs.get_round("it", 1)
    assert opened is not None and opened.selected_clients == clients, opened

    checkpoint = states["c2"] / "checkpoints" / "latest.pt"
    _wait_for(checkpoint.exists, "c2's first epoch checkpoint", timeout_s=60)
    processes.kill("c2")
    c2_outbox = list((states["c2"] / "outbox").glob("*.update"))
    assert proxy.wait_until(lambda p: p.held > 0, timeout_s=60), "c3 never uploaded"
    processes.kill("c3")
    c3_outbox = list((states["c3"] / "outbox").glob("*.update"))

    codes = processes.wait_all(timeout_s=60)

    assert c2_outbox == [], "c2 was killed after training, not during it"
    assert len(c3_outbox) == 1, "c3 was killed before its update was ready"
    assert codes == {
        "coordinator": 0, "c0": 0, "c1": 0, "c2": -signal.SIGKILL, "c3": -signal.SIGKILL,
    }  # fmt: skip
    round_1 = runs.get_round("it", 1)
    assert round_1 is not None and round_1.status is RoundStatus.COMPLETED, round_1
    assert round_1.selected_clients == clients
    assert round_1.participating_clients == 2
    assert round_1.completed_at is not None and round_1.completed_at >= round_1.deadline_at
    _check_fedavg(federation, runs, round_1, ["c0", "c1"])
    # c3's half-sent update was not refused either: only a missed deadline may be noted
    assert {(r.client_id, r.reason) for r in runs.list_rejections("it", 1)} <= {
        ("c2", "deadline_missed"),
        ("c3", "deadline_missed"),
    }
    for name in ("c0", "c1"):
        assert f"client {name}: trained 1 rounds" in processes.log(name)


# -- a network cut during an upload ----------------------------------------------------


def test_update_cut_off_mid_upload_arrives_once_after_the_network_returns(
    sqlite_url: str,
    open_run_store: Callable[[str], SqlRunStore],
    federation: Federation,
    proxies: Callable[[int], TcpProxy],
    tmp_path: Path,
) -> None:
    processes = federation.processes
    port = federation.start_coordinator(
        "coordinator",
        _coordinator_args(
            federation,
            sqlite_url,
            extra=["--rounds", 1, "--min-clients", 2, "--round-timeout", 90],
        ),
    )
    proxy = proxies(port)  # c0 talks through it
    proxy.hold_uploads(after_bytes=HOLD_AFTER_BYTES)
    for i, (name, target) in enumerate((("c0", proxy.address), ("c1", f"127.0.0.1:{port}"))):
        processes.start(
            name,
            *_client_args(
                federation, target, name, partition=i, partitions=2,
                holdout=(0.3, 0.0)[i], state=tmp_path / f"{name}-state",
            ),
        )  # fmt: skip
    assert proxy.wait_until(lambda p: p.held > 0, timeout_s=60), "c0 never uploaded"
    proxy.cut()  # the upload is in flight: its first 64 KiB reached the coordinator
    cut_at = time.time()
    time.sleep(3.0)  # several retry delays (0.1-0.2 s, then doubling) and reconnects
    refused_during_cut = proxy.refused
    restored_at = time.time()
    proxy.restore()

    codes = processes.wait_all(timeout_s=60)

    assert codes == {"coordinator": 0, "c0": 0, "c1": 0}
    runs = open_run_store(sqlite_url)
    round_1 = runs.get_round("it", 1)
    assert round_1 is not None and round_1.status is RoundStatus.COMPLETED, round_1
    assert round_1.participating_clients == 2
    mine = [u for u in runs.list_updates("it", 1) if u.client_id == "c0"]
    assert len(mine) == 1, mine
    assert mine[0].submitted_at >= restored_at, (cut_at, restored_at, mine[0].submitted_at)
    federation.check_fedavg_history(runs, rounds=1, clients=("c0", "c1"))
    assert runs.count_rejections("it") == {}
    log = processes.log("c0")
    # the client did retry: its submit call, or later from its outbox
    assert "submit failed" in log or "kept in the outbox" in log, log[-3000:]
    assert refused_during_cut > 0
    assert log.count(f"round 1: update {mine[0].update_id} accepted") == 1, log[-3000:]
    assert "client c0: trained 1 rounds" in log


# -- a rogue client over gRPC ------------------------------------------------------------

ROGUES = ("r0", "r1", "r2", "r3", "r4")


def _start_rogue_round(federation: Federation, url: str) -> tuple[GrpcCoordinatorClient, bytes]:
    """A coordinator process with round 1 open for ``ROGUES``, a client for it, and the
    round's base model (serialized)."""
    extra = [
        "--rounds", 2, "--min-clients", len(ROGUES), "--round-timeout", 120,
        "--max-norm-ratio", 5,
    ]  # fmt: skip
    port = federation.start_coordinator(
        "coordinator", _coordinator_args(federation, url, extra=extra)
    )
    api = GrpcCoordinatorClient(f"127.0.0.1:{port}", call_timeout_s=30)
    for name in ROGUES:
        api.register(name, ClientCapabilities(available_samples=100))
    task = api.poll_task("r0", wait_s=2)
    assert (task.kind, task.round_number) == (TaskKind.TRAIN, 1), task
    return api, api.download_model("r0", 1).payload


def _delta(base: bytes, seed: int, scale: float = 0.01) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    tensors = decode_weights(base).tensors
    return {k: rng.normal(0.0, scale, np.shape(v)).astype(np.float32) for k, v in tensors.items()}


def _submission(
    client: str, delta: dict[str, np.ndarray], *, update_id: str, round_number: int = 1
) -> UpdateSubmission:
    return UpdateSubmission(
        client_id=client,
        round_number=round_number,
        update_id=update_id,
        payload=encode_weights(delta),
        num_samples=(100 + 50 * ROGUES.index(client)) if client in ROGUES else 100,
        training_loss=0.5,
    )


def _refusal(api: GrpcCoordinatorClient, sub: UpdateSubmission) -> tuple[str, str | None]:
    """The gRPC status name and the reason in the trailing metadata of a refused update."""
    with pytest.raises(FedLearnError) as info:
        api.submit_update(sub)
    cause = info.value.__cause__
    assert isinstance(cause, grpc.RpcError), info.value
    return cause.code().name, dict(cause.trailing_metadata() or ()).get(REASON_KEY)


def _mean_of(base: bytes, subs: Sequence[UpdateSubmission]) -> np.ndarray:
    deltas = [np.array(decode_weights(s.payload).flat("float32"), np.float64) for s in subs]
    weights = [float(s.num_samples) for s in subs]
    flat_base = np.array(decode_weights(base).flat("float32"), np.float64)
    return flat_base + np.average(np.stack(deltas), 0, weights=weights)


def test_rogue_updates_are_refused_with_their_reason_recorded_and_left_out_of_the_model(
    sqlite_url: str,
    open_run_store: Callable[[str], SqlRunStore],
    federation: Federation,
) -> None:
    api, base = _start_rogue_round(federation, sqlite_url)
    with api:
        api.register("late", ClientCapabilities(available_samples=100))  # after round 1 opened
        honest = [_submission(c, _delta(base, i), update_id=f"{c}-1") for i, c in enumerate(ROGUES)]
        for sub in honest[:3]:  # the norm check needs three accepted updates
            api.submit_update(sub)
        huge = {k: v * 1000 for k, v in _delta(base, 9).items()}
        nan = _delta(base, 10)
        nan["fc1.weight"][3, 5] = np.nan
        wrong_shape = _delta(base, 11)
        wrong_shape["fc1.weight"] = wrong_shape["fc1.weight"][:, :-1].copy()
        rogue = {
            "norm_outlier": _submission("r3", huge, update_id="r3-huge"),
            "non_finite": _submission("r3", nan, update_id="r3-nan"),
            "wrong_shape": _submission("r3", wrong_shape, update_id="r3-shape"),
            "stale_round": _submission("r3", _delta(base, 12), update_id="r3-r2", round_number=2),
            "not_selected": _submission("late", _delta(base, 13), update_id="late-1"),
            "already_submitted": _submission("r0", _delta(base, 14), update_id="r0-again"),
            "update_id_taken": _submission("r4", _delta(base, 15), update_id="r1-1"),
            "unknown_client": _submission("ghost", _delta(base, 16), update_id="ghost-1"),
        }
        before = api.download_model("r0", 0).payload
        refusals = {reason: _refusal(api, sub) for reason, sub in rogue.items()}
        after = api.download_model("r0", 0).payload
        for sub in honest[3:]:  # the round closes with the five honest updates
            api.submit_update(sub)
        # round 2 is open now: an update for round 1 comes too late
        stale = _submission("r3", _delta(base, 17), update_id="r3-late")
        refusals["stale_round_late"] = _refusal(api, stale)

    invalid, precondition = "INVALID_ARGUMENT", "FAILED_PRECONDITION"
    assert refusals == {
        "norm_outlier": (invalid, "norm_outlier"),
        "non_finite": (invalid, "non_finite"),
        "wrong_shape": (invalid, "wrong_shape"),
        "stale_round": (precondition, "stale_round"),
        "not_selected": (precondition, "not_selected"),
        "already_submitted": (precondition, "already_submitted"),
        "update_id_taken": (precondition, "update_id_taken"),
        "unknown_client": ("NOT_FOUND", "NotFoundError"),
        "stale_round_late": (precondition, "stale_round"),
    }
    assert after == before  # nothing moved the global model while round 1 was open
    runs = open_run_store(sqlite_url)
    stored = {
        (r.reason, r.client_id, r.update_id, r.round_number)
        for n in (1, 2)
        for r in runs.list_rejections("it", n)
    }
    expected = {(reason, s.client_id, s.update_id, s.round_number) for reason, s in rogue.items()}
    expected.add(("stale_round", "r3", "r3-late", 1))
    assert stored == expected
    assert runs.count_rejections("it") == {
        "norm_outlier": 1, "non_finite": 1, "wrong_shape": 1, "stale_round": 2,
        "not_selected": 1, "already_submitted": 1, "update_id_taken": 1, "unknown_client": 1,
    }  # fmt: skip
    round_1 = runs.get_round("it", 1)
    assert round_1 is not None and round_1.status is RoundStatus.COMPLETED, round_1
    updates = runs.list_updates("it", 1)
    assert sorted(u.update_id for u in updates) == sorted(s.update_id for s in honest)
    np.testing.assert_allclose(
        _flat(federation, round_1.global_model_path), _mean_of(base, honest), rtol=0, atol=1e-6
    )


def test_resent_update_id_is_acknowledged_each_time_and_counted_once(
    sqlite_url: str,
    open_run_store: Callable[[str], SqlRunStore],
    federation: Federation,
) -> None:
    api, base = _start_rogue_round(federation, sqlite_url)
    with api:
        honest = [_submission(c, _delta(base, i), update_id=f"{c}-1") for i, c in enumerate(ROGUES)]
        first = api.submit_update(honest[0])
        again = api.submit_update(honest[0])
        for sub in honest[1:]:
            api.submit_update(sub)
        after_close = api.submit_update(honest[0])  # round 2 is open now

    assert (first.duplicate, first.updates_received) == (False, 1)
    assert (again.duplicate, again.updates_received) == (True, 1)
    assert (after_close.duplicate, after_close.round_number) == (True, 1)
    runs = open_run_store(sqlite_url)
    assert [u.update_id for u in runs.list_updates("it", 1)].count("r0-1") == 1
    assert runs.list_updates("it", 2) == []
    assert runs.count_rejections("it") == {}
    round_1 = runs.get_round("it", 1)
    assert round_1 is not None and round_1.status is RoundStatus.COMPLETED, round_1
    assert round_1.participating_clients == len(ROGUES)
    np.testing.assert_allclose(
        _flat(federation, round_1.global_model_path), _mean_of(base, honest), rtol=0, atol=1e-6
    )
