"""Upload and download throughput of model updates through a coordinator over gRPC.

A coordinator (``benchmarks.coordinator_server``, a separate process) serves a
CNN-sized model on 127.0.0.1. Synthetic clients, each a ``GrpcCoordinatorClient``,
download the global model (``GetGlobalModel``) and submit CNN-sized deltas
(``SubmitUpdate``) with 1 or more concurrent streams; every client is selected
each round, and the last upload of a round also closes it (aggregation, new
global model). GB/s is payload bytes over the wall time of the phase. Raw
loopback TCP is measured in the same run by sending the same bytes over plain
sockets with the same number of connections. The durable stores' ceiling is measured
in the same run too: the same payload written as blobs through ``FileModelStore``
(temporary file, fsync, rename, folder fsync) on the same number of threads, in the
folder the coordinator's SQLite store uses.
"""

from __future__ import annotations

import itertools
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np

from benchmarks import grpc_sink
from benchmarks.common import Child, cnn_weights, wait_for_port_file
from benchmarks.report import Plot, Result, Series, Target
from fedlearn.core.retry import RetryPolicy
from fedlearn.core.serialization import encode_weights
from fedlearn.core.types import ClientCapabilities
from fedlearn.persistence.model_store import FileModelStore
from fedlearn.service.messages import TaskKind, UpdateSubmission
from fedlearn.transport.chunks import data_chunk_message, split
from fedlearn.transport.client import GrpcCoordinatorClient

__all__ = ["run"]

GB = 1e9
TARGET_UPLOAD_GBS = 0.5
TCP_TIMEOUT_S = 60.0
COLUMNS = (
    "store", "streams", "upload GB/s", "download GB/s", "bare gRPC upload GB/s",
    "upload / bare gRPC", "raw TCP GB/s", "upload / TCP", "download / TCP",
    "fsynced blob writes GB/s", "upload / blob writes",
)  # fmt: skip
CAPS = ClientCapabilities(available_samples=400, supported_models=("cnn",))


def _parallel(fn: Callable[[int], object], count: int, streams: int) -> float:
    """Run ``fn(0..count-1)`` on ``streams`` threads; the wall time in seconds."""
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=streams) as pool:
        for _ in pool.map(fn, range(count)):
            pass
    return time.perf_counter() - started


class _Federation:
    """Registered synthetic clients of one coordinator, moving round by round."""

    def __init__(self, target: str, clients: int) -> None:
        retry = RetryPolicy(initial_s=0.05, max_delay_s=0.5, total_s=30.0)
        self.ids = [f"c{k:04d}" for k in range(clients)]
        self.apis = [GrpcCoordinatorClient(target, retry=retry) for _ in self.ids]
        for api, cid in zip(self.apis, self.ids, strict=True):
            api.register(cid, CAPS)
        self.payload = encode_weights(cnn_weights(np.random.default_rng(1)))

    def close(self) -> None:
        for api in self.apis:
            api.close()

    def round(self, streams: int) -> tuple[float, float, int]:
        """One round: every client downloads, then uploads. (down s, up s, model bytes)."""
        task = self.apis[0].poll_task(self.ids[0], wait_s=5.0)
        if task.kind is not TaskKind.TRAIN:
            raise RuntimeError(f"expected a training round, got {task}")
        number = task.round_number
        sizes: list[int] = []

        def download(k: int) -> None:
            sizes.append(len(self.apis[k].download_model(self.ids[k], number).payload))

        def upload(k: int) -> None:
            submission = UpdateSubmission(
                client_id=self.ids[k],
                round_number=number,
                update_id=uuid.uuid4().hex,
                payload=self.payload,
                num_samples=400,
                training_loss=1.0,
            )
            self.apis[k].submit_update(submission)

        down = _parallel(download, len(self.ids), streams)
        up = _parallel(upload, len(self.ids), streams)
        return down, up, sizes[0]


def _grpc_rates(
    store: str, clients: int, streams_list: tuple[int, ...], rounds: int, tmp: Path
) -> tuple[dict[int, tuple[float, float]], bytes]:
    port_file = tmp / f"{store}.port"
    command = [
        *(sys.executable, "-m", "benchmarks.coordinator_server", "--port-file", str(port_file)),
        *("--min-clients", str(clients), "--store", store, "--state-dir", str(tmp / store)),
    ]
    server = Child(command, tmp / f"{store}.log")
    try:
        target = f"127.0.0.1:{wait_for_port_file(port_file, server)}"
        federation = _Federation(target, clients)
        try:
            federation.round(streams_list[0])  # warm-up: connections, first allocations
            results = {}
            for streams in streams_list:
                timings = [federation.round(streams) for _ in range(rounds)]
                up_bytes = clients * len(federation.payload)
                down_bytes = clients * timings[0][2]
                results[streams] = (
                    statistics.median(down_bytes / t[0] for t in timings) / GB,
                    statistics.median(up_bytes / t[1] for t in timings) / GB,
                )
            return results, federation.payload
        finally:
            federation.close()
    finally:
        server.stop()


def _bare_grpc_rate(payload: bytes, count: int, streams: int, repeat: int, tmp: Path) -> float:
    """GB/s of ``count`` uploads of ``payload``, cut and framed as fedlearn clients do,
    into a gRPC server that only counts bytes (``benchmarks.grpc_sink``)."""
    port_file = tmp / f"sink-{uuid.uuid4().hex[:8]}.port"
    sink = Child([sys.executable, "-m", "benchmarks.grpc_sink", "--port-file", str(port_file)],
                 port_file.with_suffix(".log"))  # fmt: skip
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{wait_for_port_file(port_file, sink)}")
        upload = channel.stream_unary(
            grpc_sink.METHOD, request_serializer=bytes, response_deserializer=bytes
        )
        header = b"\x0a\x00"  # an UpdateChunk with an empty header; the sink parses nothing

        def one(_: int) -> None:
            messages = (data_chunk_message(data) for data in split(payload))
            upload(itertools.chain((header,), messages), timeout=TCP_TIMEOUT_S)

        _parallel(one, streams, streams)  # warm-up: connection, first allocations
        best = min(_parallel(one, count, streams) for _ in range(repeat))
        channel.close()
        return count * len(payload) / best / GB
    finally:
        sink.stop()


def _blob_write_rate(payload: bytes, count: int, streams: int, repeat: int, tmp: Path) -> float:
    """GB/s of ``count`` durable blob writes of ``payload`` on ``streams`` threads: the
    coordinator's own write path (``FileModelStore.put``) with nothing else around it."""
    store = FileModelStore(tmp / "sql" / "blob-write-reference")
    written: list[str] = []

    def one(k: int) -> None:
        written.append(store.put(f"round-{k % 2}/{uuid.uuid4().hex}.flw", payload))

    def batch() -> float:
        seconds = _parallel(one, count, streams)
        while written:  # outside the timing, as the coordinator deletes them at close
            store.delete(written.pop())
        return seconds

    batch()  # warm-up: folders, first allocations
    best = min(batch() for _ in range(repeat))
    return count * len(payload) / best / GB


def _tcp_rate(payload_bytes: int, count: int, streams: int, repeat: int) -> float:
    """GB/s of ``count`` payloads sent over ``streams`` loopback TCP connections."""
    payload = bytes(payload_bytes)
    per_stream = [count // streams + (1 if k < count % streams else 0) for k in range(streams)]
    best = min(_tcp_once(payload, per_stream) for _ in range(repeat))
    return count * payload_bytes / best / GB


def _tcp_once(payload: bytes, per_stream: list[int]) -> float:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(TCP_TIMEOUT_S)
        address = listener.getsockname()
        receivers = [threading.Thread(target=_receive, args=(listener,)) for _ in per_stream]
        for thread in receivers:
            thread.start()

        def send(k: int) -> None:
            with socket.create_connection(address, timeout=TCP_TIMEOUT_S) as conn:
                conn.sendall(struct.pack("<Q", per_stream[k] * len(payload)))
                for _ in range(per_stream[k]):
                    conn.sendall(payload)
                conn.recv(1)

        seconds = _parallel(send, len(per_stream), len(per_stream))
        for thread in receivers:
            thread.join()
    return seconds


def _receive(listener: socket.socket) -> None:
    """Accept one connection, read the byte count it announces and that many bytes, ack."""
    conn, _ = listener.accept()
    conn.settimeout(TCP_TIMEOUT_S)
    with conn:
        header = b""
        while len(header) < 8:
            part = conn.recv(8 - len(header))
            if not part:
                return
            header += part
        expected = struct.unpack("<Q", header)[0]
        buffer = memoryview(bytearray(4 << 20))
        got = 0
        while got < expected:
            n = conn.recv_into(buffer, min(len(buffer), expected - got))
            if n == 0:
                return
            got += n
        conn.sendall(b"k")


def run(quick: bool) -> Result:
    clients = 10 if quick else 20
    rounds = 3 if quick else 5
    streams_list = (1, 4) if quick else (1, 4, 8)
    stores = ("memory", "sql")
    rows: list[list[object]] = []
    best: dict[str, tuple[float, int]] = {}
    series: dict[str, list[float]] = {"upload": [], "download": [], "raw TCP": []}
    labels: list[str] = []
    with tempfile.TemporaryDirectory(prefix="fedlearn-bench-transport-") as tmp:
        for store in stores:
            rates, payload = _grpc_rates(store, clients, streams_list, rounds, Path(tmp))
            payload_bytes = len(payload)
            for streams, (down, up) in rates.items():
                bare = _bare_grpc_rate(payload, clients, streams, rounds, Path(tmp))
                tcp = _tcp_rate(payload_bytes, clients, streams, repeat=rounds)
                disk: list[object] = ["-", "-"]
                if store == "sql":
                    blobs = _blob_write_rate(payload, clients, streams, rounds, Path(tmp))
                    disk = [round(blobs, 3), round(up / blobs, 3)]
                rows.append(
                    [store, streams, round(up, 3), round(down, 3), round(bare, 3),
                     round(up / bare, 3), round(tcp, 2), round(up / tcp, 3), round(down / tcp, 3),
                     *disk]
                )  # fmt: skip
                labels.append(f"{store}, {streams} stream{'s' if streams > 1 else ''}")
                series["upload"].append(up)
                series["download"].append(down)
                series["raw TCP"].append(tcp)
                if up > best.get(store, (0.0, 0))[0]:
                    best[store] = (up, streams)
    store_names = {"memory": "in-memory stores", "sql": "SQLite + file model store, as deployed"}
    targets = [
        Target(
            name=f"upload through the coordinator ({store_names[store]})",
            target=f">= {TARGET_UPLOAD_GBS} GB/s",
            measured=f"{up:.3f} GB/s ({streams} stream{'s' if streams > 1 else ''})",
            met=up >= TARGET_UPLOAD_GBS,
        )
        for store, (up, streams) in best.items()
    ]
    return Result(
        name="transport",
        title="Transport: model updates through the coordinator over gRPC",
        columns=COLUMNS,
        rows=rows,
        targets=targets,
        notes=[
            f"{clients} clients, all selected every round; payload {payload_bytes / 1e6:.2f} MB "
            f"(CNN delta, FLW1 format, 1 MiB chunks); median of {rounds} rounds after a "
            "warm-up round. The coordinator is a separate process (benchmarks.coordinator_server).",
            "Upload time includes the client's XXH3-128 checksum, the server's reassembly, "
            "checksum check, decode, validation (finite check and norm), storing the blob "
            "and the fold; the last upload of each round also closes the round.",
            "Bare gRPC: the same chunk messages, the same number of streams and the same "
            "server options (grpc.aio, message limits, no BDP probing) into a server that "
            "only counts bytes (benchmarks.grpc_sink, its own process): what gRPC Python "
            "itself allows on this machine. 'upload / bare gRPC' is the share of it that "
            "the coordinator keeps.",
            "Client and coordinator share the machine's cores, as do the raw TCP sender "
            "and receiver (threads of this process).",
            "Where an upload's time goes (development profile, 2026-12-03, CPU time from "
            "/proc): with in-memory stores the coordinator spends about 13 ms of CPU and "
            "the client about 5.5 ms per 6.65 MB upload; the bare gRPC server alone spends "
            "5.5-8 ms. Updates carry an XXH3-128 checksum (0.1 ms) instead of SHA-256 "
            "(3.7 ms on each side), their chunk messages are framed by hand and read as "
            "views of gRPC's buffers, and the coordinator's BLAS runs on one thread (with "
            "BLAS worker threads, each small dot product waited milliseconds for a worker "
            "while clients trained beside it). With the SQLite and file stores each upload "
            "also writes and fsyncs its blob, then commits its row with the coordinator's "
            "lock held, and the update blobs of a round are deleted once the next round is "
            "open. Blobs of 1 MiB and more are written with O_DIRECT from a reused aligned "
            "buffer: through the page cache, writing and later deleting each blob cost the "
            "coordinator about 3 ms more kernel CPU (in-process microbenchmark, 2026-12-06: "
            "4.2 against 1.1-1.3 ms of kernel CPU per update). The queries of each upload "
            "are built once (a client lookup took 0.22 ms, now 0.09 ms).",
            "'fsynced blob writes' is the first of those costs alone, measured in the same "
            "run: FileModelStore.put of the same payload on the same number of threads "
            "(temporary file written with O_DIRECT, fsync, rename, folder fsync), best of the "
            "rounds, nothing else "
            "running. On this machine's virtual disk it ranged from 0.2 to 1.7 GB/s from one "
            "minute to the next (2026-12-03); 'upload / blob writes' is the share of it the "
            "deployed coordinator keeps.",
        ],
        figures=[
            Plot(
                file="transport.png",
                title="Throughput on 127.0.0.1 (GB/s, higher is better)",
                xlabel="",
                ylabel="GB/s",
                kind="bar",
                logy=True,
                series=[Series(name, x=labels, y=values) for name, values in series.items()],
            )
        ],
        data={"clients": clients, "rounds": rounds, "payload_bytes": payload_bytes},
    )
